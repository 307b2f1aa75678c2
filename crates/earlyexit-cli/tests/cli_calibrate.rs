//! The run-folder commands end to end on a tiny run made by `earlyexit train` whose **test files
//! are corrupted after training**: calibration, sweeps on validation and exit pruning must still
//! work, because they never read the test split; `eval --split test` must fail on them.

mod common;

use burn::tensor::Device;
use common::{earlyexit_text, write_idx};
use earlyexit::model::io;

#[test]
fn run_commands_work_without_ever_reading_the_test_split() {
    let root = std::env::temp_dir().join(format!("earlyexit-cli-run-{}", std::process::id()));
    let data = root.join("data");
    let run = root.join("run");
    std::fs::create_dir_all(&data).unwrap();
    // 1200 official training samples: the MNIST split holds out 1/12 of them (100) for validation.
    write_idx(&data, "train", 1200, 7, 200);
    write_idx(&data, "t10k", 50, 9, 200);
    let config = root.join("tiny.toml");
    std::fs::write(
        &config,
        format!(
            "seed = 3\nepochs = 1\n\n[model]\nbackbone = \"eenet8\"\ninput = \"1x28x28\"\nclasses = 10\n\
             exits = \"cuts:1,2\"\n\n[data]\ndataset = \"mnist\"\ndir = {:?}\nbatch_size = 32\n\
             train_limit = 256\neval_batch_size = 100\n\n[objective]\nkind = \"joint\"\n\n\
             [optimizer]\nkind = \"adam\"\nlr = 0.001\n\n[checkpoint]\nevery_secs = 0\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let (ok, out) = earlyexit_text(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "-q",
    ]);
    assert!(ok, "{out}");
    // Corrupt test files: from now on any read of the test split fails.
    std::fs::write(data.join("t10k-images-idx3-ubyte"), b"corrupt").unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), b"corrupt").unwrap();
    let device = Device::flex();
    let r = run.to_str().unwrap();

    let (ok, out) = earlyexit_text(&[
        "calibrate",
        "--run",
        r,
        "--max-accuracy-drop",
        "1",
        "--per-exit",
        "--budget-curve",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("MSDNet") && out.contains("val split (100 samples)"),
        "{out}"
    );
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("policy.json")).unwrap()).unwrap();
    assert_eq!(policy["split"], "val");
    let val_acc = policy["validation"]["accuracy"].as_f64().unwrap();
    let full = policy["full_accuracy"].as_f64().unwrap();
    assert!(val_acc >= full - 0.01 - 1e-12);

    let (ok, out) = earlyexit_text(&["sweep", "--run", r, "--steps", "5"]);
    assert!(ok, "{out}");
    let pruned = root.join("pruned");
    let (ok, out) = earlyexit_text(&[
        "prune-exits",
        "--run",
        r,
        "--th",
        "0.9",
        "--apply",
        "--out",
        pruned.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("eq. 4"), "{out}");
    // The pruned folder is a loadable model whose exits are a subset of the original's.
    let (arch, _) = io::load_model(&pruned, &device).unwrap();
    assert!(arch.cuts.iter().all(|c| [1, 2].contains(c)), "{:?}", arch.cuts);
    assert!(pruned.join("config.toml").exists() && pruned.join("policy.json").exists());

    // `eval` on validation picks up policy.json and reports the required JSON fields.
    let (ok, out) = earlyexit_text(&[
        "eval",
        "--run",
        r,
        "--split",
        "val",
        "--json",
        "--timing-samples",
        "5",
        "--large-batch",
        "16",
    ]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["policy"], policy["policy"]);
    for key in ["accuracy", "relative_cost", "measured_speedup", "ece", "overthinking"] {
        assert!(v[key].is_number(), "{key} in {out}");
    }
    let exits = v["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 3);
    assert!(
        exits
            .iter()
            .all(|e| e["coverage"].is_number() && e.get("accuracy").is_some())
    );
    assert!((v["accuracy"].as_f64().unwrap() - val_acc).abs() < 1e-9);

    // The test split really is unreadable, and the error names the file.
    let (ok, out) = earlyexit_text(&["eval", "--run", r, "--split", "test"]);
    assert!(!ok && out.contains("t10k-images"), "{out}");
    // Bad arguments name the flag and the value.
    let (ok, out) = earlyexit_text(&["calibrate", "--run", r, "--budget", "-2"]);
    assert!(!ok && out.contains("--budget") && out.contains("-2"), "{out}");
    let (ok, out) = earlyexit_text(&[
        "calibrate",
        "--run",
        r,
        "--max-accuracy-drop",
        "1",
        "--policy-kind",
        "bogus",
    ]);
    assert!(!ok && out.contains("bogus"), "{out}");
    std::fs::remove_dir_all(&root).ok();
}

//! `earlyexit class-exit` end to end on a tiny untrained baseline: tables, JSON and plots; bad
//! options rejected by name; `--from-json` rewrites the report.

mod common;

use burn::tensor::Device;
use common::{earlyexit_text, write_idx};
use earlyexit::classexit::ClassExitReport;
use earlyexit::model::{ModelDescription, Shape};

fn tiny_run(root: &std::path::Path) -> std::path::PathBuf {
    let data = root.join("data");
    let run = root.join("run");
    std::fs::create_dir_all(&data).unwrap();
    // 1800 official training images: the MNIST split holds out 1/12 (150) for validation.
    write_idx(&data, "train", 1800, 7, 250);
    write_idx(&data, "t10k", 200, 9, 250);
    let desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "none".parse().unwrap());
    let net = desc.resolve().unwrap().init_seeded(&Device::flex(), 3);
    earlyexit::model::io::save_model(&run, &desc, &net).unwrap();
    // The run's configuration, as `earlyexit train` writes it (an untrained baseline is enough).
    std::fs::write(
        run.join(earlyexit::train::CONFIG_FILE),
        format!(
            "seed = 3\nepochs = 1\n\n[model]\nbackbone = \"eenet8\"\ninput = \"1x28x28\"\nclasses = 10\n\
             exits = \"none\"\n\n[data]\ndataset = \"mnist\"\ndir = {:?}\nbatch_size = 32\n\n\
             [objective]\nkind = \"joint\"\n\n[optimizer]\nkind = \"adam\"\nlr = 0.001\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    run
}

#[test]
fn cli_writes_tables_json_and_plot_and_the_pick_keeps_accuracy() {
    let root = std::env::temp_dir().join(format!("earlyexit-class-exit-{}", std::process::id()));
    let run = tiny_run(&root);
    let out = root.join("out");
    let (ok, text) = earlyexit_text(&[
        "class-exit",
        "--baseline",
        run.to_str().unwrap(),
        "--class",
        "1,2",
        "--max-epochs",
        "4",
        "--patience",
        "2",
        "--timing-reps",
        "2",
        "--exits",
        "2",
        "--alpha",
        "0.5:1.0:0.05",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    for f in ["class-exit.json", "class-exit.md", "gain-loss.png", "gain-loss.svg"] {
        let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 100, "{f}: {len} bytes\n{text}");
    }
    let r: ClassExitReport = serde_json::from_slice(&std::fs::read(out.join("class-exit.json")).unwrap()).unwrap();
    assert_eq!(r.classes.iter().map(|c| c.k).collect::<Vec<_>>(), [1, 2]);
    // eenet8 has 3 cut points; both connection types.
    assert_eq!(r.places.len(), 3);
    assert_eq!(r.branches.len(), 6);
    assert!(r.times.t > 0.0 && r.times.delta.windows(2).all(|w| w[0] > 0.0 && w[1] > 0.0));
    for c in &r.classes {
        assert_eq!(c.candidates.len(), 6);
        for d in &c.candidates {
            // Viability is exactly eq. 5–7 plus a time gain.
            assert_eq!(
                d.viable,
                d.assessment.keeps_accuracy() && d.assessment.gamma > 0.0 && d.gain > 1.0
            );
            // Loss is eq. 1 over t.
            assert!((d.loss - (r.times.t + d.e) / r.times.t).abs() < 1e-9);
        }
        if let Some(i) = c.chosen {
            let d = &c.candidates[i];
            assert!(d.viable && d.pareto);
            assert!(d.assessment.acc_b_other >= c.baseline.beta - 1e-12);
            assert!(d.assessment.acc_global >= c.baseline.eta - 1e-12);
            assert!(c.test.is_some());
        }
    }
    // Table 4: B first, then one row per class with a design.
    assert_eq!(r.false_negatives[0].k, None);
    assert_eq!(r.false_negatives_split, "test");
    let md = std::fs::read_to_string(out.join("class-exit.md")).unwrap();
    assert!(
        md.contains("Table 3") && md.contains("Table 4") && md.contains("Second exit"),
        "{md}"
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn cli_rejects_bad_options_by_name() {
    let root = std::env::temp_dir().join(format!("earlyexit-class-exit-bad-{}", std::process::id()));
    let run = tiny_run(&root);
    let b = run.to_str().unwrap();
    for (args, needle) in [
        (vec!["--class", "12"], "class"),
        (vec!["--class", "x"], "--class"),
        (vec!["--class", "1", "--kp", "maybe"], "--kp"),
        (vec!["--class", "1", "--alpha", "1.0:0.9:0.01"], "alpha"),
        (vec!["--class", "1", "--exits", "3"], "exits"),
        (vec!["--class", "1", "--places", "sample:99"], "sample:99"),
        (vec!["--class", "1", "--patience", "0"], "patience"),
        (vec!["--class", "1", "--grid", "0"], "grid"),
    ] {
        let mut all = vec!["class-exit", "--baseline", b];
        all.extend(args.iter());
        let (ok, text) = earlyexit_text(&all);
        assert!(!ok, "{args:?} succeeded: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn from_json_rewrites_the_report_without_a_baseline() {
    let root = std::env::temp_dir().join(format!("earlyexit-class-exit-json-{}", std::process::id()));
    let run = tiny_run(&root);
    let out = root.join("out");
    let (ok, text) = earlyexit_text(&[
        "class-exit",
        "--baseline",
        run.to_str().unwrap(),
        "--class",
        "3",
        "--max-epochs",
        "2",
        "--timing-reps",
        "1",
        "--no-test",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    std::fs::remove_file(out.join("class-exit.md")).unwrap();
    let json = out.join("class-exit.json");
    let (ok, text) = earlyexit_text(&["class-exit", "--from-json", json.to_str().unwrap()]);
    assert!(ok, "{text}");
    let md = std::fs::read_to_string(out.join("class-exit.md")).unwrap();
    assert!(md.contains("Table 2") && md.contains("{3}"), "{md}");
    let (ok, text) = earlyexit_text(&["class-exit", "--from-json", root.join("nope.json").to_str().unwrap()]);
    assert!(!ok && text.contains("nope.json"), "{text}");
    std::fs::remove_dir_all(&root).ok();
}

/// `--apply` writes a run folder that deploys the design: `eval` runs its class policy on real
/// exits and sets the measured gain beside the time model's; `--apply` again onto that folder,
/// and `--apply` from a report folder without branches, are refused by name.
#[test]
fn apply_writes_a_run_that_eval_runs_with_its_class_policy() {
    let root = std::env::temp_dir().join(format!("earlyexit-class-exit-apply-{}", std::process::id()));
    let run = tiny_run(&root);
    // Class 3 lit all over (what even the untrained baseline's pooled features tell apart), so
    // that the design has an exit to apply.
    for (prefix, n) in [("train", 1800), ("t10k", 200)] {
        let path = root.join("data").join(format!("{prefix}-images-idx3-ubyte"));
        let mut images = std::fs::read(&path).unwrap();
        for i in (3..n).step_by(10) {
            for v in &mut images[16 + i * 784..16 + (i + 1) * 784] {
                *v = v.saturating_add(150);
            }
        }
        std::fs::write(&path, images).unwrap();
    }
    let out = root.join("out");
    let applied = root.join("applied");
    let args = |target: &std::path::Path| {
        vec![
            "class-exit".to_string(),
            "--baseline".into(),
            run.to_str().unwrap().into(),
            "--class".into(),
            "3,5".into(),
            "--kp".into(),
            "off".into(),
            "--max-epochs".into(),
            "6".into(),
            "--patience".into(),
            "3".into(),
            "--timing-reps".into(),
            "2".into(),
            "--alpha".into(),
            "0.5:1.0:0.05".into(),
            "--no-test".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--apply".into(),
            target.to_str().unwrap().into(),
        ]
    };
    let a = args(&applied);
    let (ok, text) = earlyexit_text(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{text}");
    assert!(out.join("branches.safetensors").exists(), "{text}");
    let r: ClassExitReport = serde_json::from_slice(&std::fs::read(out.join("class-exit.json")).unwrap()).unwrap();
    let designed: Vec<usize> = r.classes.iter().filter(|c| c.chosen.is_some()).map(|c| c.k).collect();
    assert!(!designed.is_empty(), "no class has a design: {text}");
    let policy = std::fs::read_to_string(applied.join("policy.json")).unwrap();
    assert!(policy.contains("class:"), "{policy}");
    for f in ["config.toml", "model.json", "weights.safetensors", "class-design.json"] {
        assert!(applied.join(f).exists(), "{f}\n{text}");
    }

    let (ok, text) = earlyexit_text(&[
        "eval",
        "--run",
        applied.to_str().unwrap(),
        "--split",
        "val",
        "--timing-samples",
        "20",
        "--large-batch",
        "16",
        "--json",
    ]);
    assert!(ok, "{text}");
    let eval: serde_json::Value = serde_json::from_str(&text).unwrap();
    let classes = eval["class_specific"]["classes"].as_array().expect("a class section");
    assert_eq!(
        classes
            .iter()
            .map(|c| c["k"].as_u64().unwrap() as usize)
            .collect::<Vec<_>>(),
        designed
    );
    for c in classes {
        assert!(c["predicted_gain"].as_f64().is_some_and(|g| g > 0.0), "{c}");
        assert!(c["gain"].as_f64().is_some_and(|g| g > 0.0), "{c}");
    }
    let (ok, text) = earlyexit_text(&[
        "eval",
        "--run",
        applied.to_str().unwrap(),
        "--split",
        "val",
        "--timing-samples",
        "5",
        "--large-batch",
        "8",
    ]);
    assert!(
        ok && text.contains("predicted gain") && text.contains("the rest"),
        "{text}"
    );

    // Onto an existing folder: refused before anything is trained.
    let (ok, text) = earlyexit_text(&args(&applied).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && text.contains("already exists"), "{text}");
    // Only some classes' designs: a class the report did not design is refused by name.
    let one = root.join("one");
    let (ok, text) = earlyexit_text(&[
        "class-exit",
        "--from-json",
        out.join("class-exit.json").to_str().unwrap(),
        "--baseline",
        run.to_str().unwrap(),
        "--apply",
        one.to_str().unwrap(),
        "--apply-class",
        "7",
    ]);
    assert!(
        !ok && text.contains("class 7 was not designed") && !one.exists(),
        "{text}"
    );
    // From a report folder without its branches.
    std::fs::remove_file(out.join("branches.safetensors")).unwrap();
    let again = root.join("again");
    let (ok, text) = earlyexit_text(&[
        "class-exit",
        "--from-json",
        out.join("class-exit.json").to_str().unwrap(),
        "--baseline",
        run.to_str().unwrap(),
        "--apply",
        again.to_str().unwrap(),
    ]);
    assert!(
        !ok && text.contains("branches.safetensors") && !again.exists(),
        "{text}"
    );
    // A run that applies no class-specific design has no class section.
    let (ok, text) = earlyexit_text(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--policy",
        "never",
        "--split",
        "val",
        "--timing-samples",
        "2",
        "--large-batch",
        "4",
        "--json",
    ]);
    assert!(ok && !text.contains("class_specific"), "{text}");
    std::fs::remove_dir_all(&root).ok();
}

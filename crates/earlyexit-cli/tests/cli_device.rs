//! `--device`: every computing command takes it; a bad value or an unavailable GPU is a clear
//! error with a non-zero exit, never a panic. The small benches run on the CPU.

mod common;

use common::earlyexit;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const TINY: &[&str] = &[
    "--model", "eenet8", "--input", "1x28x28", "--exits", "cuts:1,2", "--reps", "1",
];

#[test]
fn every_computing_command_takes_device() {
    let mut cmds = vec![
        "train",
        "quickstart",
        "eval",
        "calibrate",
        "sweep",
        "report",
        "bench",
        "prune-exits",
    ];
    if cfg!(feature = "serve") {
        cmds.extend(["serve", "tier", "plan-tiers"]);
    }
    for c in cmds {
        let o = earlyexit(&[c, "--help"]);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("--device <DEVICE>"), "{c} --help lacks --device:\n{help}");
    }
}

#[test]
fn a_bad_device_names_the_value() {
    let o = earlyexit(&["bench", "--device", "tpu:3", "--forward"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("tpu:3") && e.contains("expected cpu, vulkan or vulkan:N"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

#[cfg(not(feature = "vulkan"))]
#[test]
fn vulkan_without_the_feature_is_a_clear_error() {
    for args in [
        &["bench", "--device", "vulkan", "--forward"][..],
        &["bench", "--device", "vulkan:1", "--rebatch"][..],
        &[
            "train",
            "--device",
            "vulkan",
            "--config",
            "configs/resnet56-fashion-mnist-gpu.toml",
            "--out",
            "/nonexistent/x",
        ][..],
    ] {
        let o = earlyexit(args);
        assert!(!o.status.success(), "{args:?}");
        let e = stderr(&o);
        assert!(
            e.contains("built without the `vulkan` feature") && e.contains("rebuild with `--features vulkan`"),
            "{args:?}: {e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
}

#[test]
fn cpu_benches_run() {
    let mut a = vec![
        "bench",
        "--device",
        "cpu",
        "--forward",
        "--batch",
        "1,4",
        "--warmup",
        "0",
        "--json",
    ];
    a.extend(TINY);
    let o = earlyexit(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(v[1]["images_per_second"].as_f64().unwrap() > 0.0);

    let mut a = vec![
        "bench",
        "--rebatch",
        "--batch",
        "8",
        "--stream",
        "3",
        "--pool",
        "32",
        "--shares",
        "0.3,0.3",
    ];
    a.extend(["--json"]);
    a.extend(TINY);
    let o = earlyexit(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["samples"].as_u64(), Some(24));
    assert_eq!(v[0]["same_answers"].as_bool(), Some(true));
    assert_eq!(v[0]["rebatch_stage_batch"][0].as_f64(), Some(8.0));

    let mut a = vec!["bench", "--train-step", "--batch", "4", "--warmup", "1", "--json"];
    a.extend(TINY);
    let o = earlyexit(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v[0]["seconds_per_step"].as_f64().unwrap() > 0.0);
}

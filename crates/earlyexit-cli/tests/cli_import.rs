//! `earlyexit import`: a PyTorch checkpoint into a model folder that the other commands open;
//! a checkpoint that does not fit leaves nothing behind and exits non-zero.

mod common;

use common::{earlyexit, import_checkpoint, scratch};

#[test]
fn imports_with_exits_into_a_folder_inspect_reads() {
    let dir = scratch("import-ok");
    let out_dir = dir.join("imported");
    let out = import_checkpoint(&out_dir, &["--classes", "10", "--exits", "cuts:3,5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("`resnet20_a`") && text.contains("2 fresh exits"),
        "{text}"
    );
    let inspect = earlyexit(&["inspect", "--description", out_dir.to_str().unwrap(), "--json"]);
    assert!(inspect.status.success());
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["backbone"], "resnet20_a");
    assert_eq!(v["exits"].as_array().unwrap().len(), 3);
}

#[test]
fn a_checkpoint_that_does_not_fit_writes_nothing() {
    let dir = scratch("import-bad");
    let out_dir = dir.join("imported");
    let out = import_checkpoint(&out_dir, &["--classes", "100"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("linear.weight: [10, 64], expected [100, 64]"), "{err}");
    assert!(!out_dir.exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no temporary folder left behind"
    );
}

#[test]
fn with_its_dataset_the_folder_is_a_run_folder() {
    let dir = scratch("import-run");
    let out_dir = dir.join("run");
    let data = common::repo_root().join("data");
    let out = import_checkpoint(
        &out_dir,
        &[
            "--classes",
            "10",
            "--data",
            "mnist",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = std::fs::read_to_string(out_dir.join("config.toml")).unwrap();
    assert!(config.contains("dataset = \"mnist\""), "{config}");
    // --data without --data-dir is a usage error.
    let out = import_checkpoint(&dir.join("x"), &["--classes", "10", "--data", "mnist"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
}

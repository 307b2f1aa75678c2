//! `earlyexit export`: an imported model folder out as ONNX (graphs and manifest) and for
//! PyTorch; a bad request exits non-zero and writes nothing.

mod common;

use common::{earlyexit, import_checkpoint, scratch};

fn imported(dir: &std::path::Path) -> String {
    let model = dir.join("imported");
    let out = import_checkpoint(&model, &["--classes", "10", "--exits", "cuts:3,5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    model.to_str().unwrap().to_string()
}

#[test]
fn onnx_and_torch_folders_from_a_model_folder() {
    let dir = scratch("export-ok");
    let model = imported(&dir);
    let onnx = dir.join("onnx");
    let out = earlyexit(&[
        "export",
        "--model",
        &model,
        "--policy",
        "maxprob:0.9,0.8",
        "--out",
        onnx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(onnx.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["stages"].as_array().unwrap().len(), 3);
    assert_eq!(m["policy"], "maxprob:0.9,0.8");
    for f in [
        "stage_0.onnx",
        "stage_2.onnx",
        "exit_0.onnx",
        "exit_1.onnx",
        "classifier.onnx",
    ] {
        assert!(onnx.join(f).is_file(), "{f}");
    }
    let torch = dir.join("torch");
    let out = earlyexit(&[
        "export",
        "--model",
        &model,
        "--policy",
        "entropy:0.2",
        "--format",
        "torch",
        "--out",
        torch.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["model.safetensors", "architecture.json", "earlyexit_model.py"] {
        assert!(torch.join(f).is_file(), "{f}");
    }
}

#[test]
fn a_policy_that_does_not_fit_writes_nothing() {
    let dir = scratch("export-bad");
    let model = imported(&dir);
    let onnx = dir.join("onnx");
    let out = earlyexit(&[
        "export",
        "--model",
        &model,
        "--policy",
        "maxprob:0.9,0.8,0.7,0.6",
        "--out",
        onnx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy"), "{err}");
    assert!(!onnx.exists());
    // A bare folder without policy.json needs --policy.
    let out = earlyexit(&["export", "--model", &model, "--out", onnx.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--policy"));
}

//! `earlyexit train` rejects bad configurations with the file and the field, and a non-zero exit.

mod common;

fn train(args: &[&str]) -> std::process::Output {
    common::command().arg("train").args(args).output().expect("runs")
}

#[test]
fn bad_configurations_fail_with_file_and_field() {
    let out = train(&[
        "--config",
        "configs/eenet8-mnist.toml",
        "--set",
        "objective.lamda=1",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("configs/eenet8-mnist.toml") && err.contains("lamda"),
        "{err}"
    );

    let out = train(&[
        "--config",
        "configs/eenet8-mnist.toml",
        "--set",
        "optimizer.lr=-1",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("optimizer.lr"), "{err}");

    let empty = std::env::temp_dir().join(format!("earlyexit-noresume-{}", std::process::id()));
    let out = train(&["--resume", "--out", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.toml"));
}

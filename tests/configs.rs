//! Every shipped configuration parses, validates and builds its model; `earlyexit train` rejects
//! bad configurations with the file and the field, and a non-zero exit.

use std::path::Path;
use std::process::Command;

use earlyexit::train::TrainConfig;

fn configs() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn shipped_configs_are_valid() {
    let all = configs();
    assert!(all.len() >= 6, "{all:?}");
    for path in all {
        let cfg = TrainConfig::from_file(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
        let arch = cfg.architecture().unwrap();
        cfg.objective(&arch).unwrap();
        // The resolved form round-trips.
        let again = TrainConfig::from_toml(&cfg.resolved().to_toml(), &path, &[]).unwrap();
        assert_eq!(again, cfg.resolved(), "{}", path.display());
    }
    // The seeds' setups.
    let eenet = TrainConfig::from_file(Path::new("configs/eenet8-mnist.toml"), &[]).unwrap();
    assert_eq!(eenet.data.batch_size, 32);
    assert_eq!(eenet.optimizer.lr, 1e-3);
    assert_eq!(eenet.objective.lambda, Some(1.0));
    let resnet = TrainConfig::from_file(Path::new("configs/resnet20-cifar10.toml"), &[]).unwrap();
    assert_eq!(
        (
            resnet.optimizer.lr,
            resnet.optimizer.momentum,
            resnet.optimizer.weight_decay
        ),
        (0.1, 0.9, 1e-4)
    );
}

fn train(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_earlyexit"))
        .arg("train")
        .args(args)
        .output()
        .expect("runs")
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

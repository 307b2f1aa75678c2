//! Every shipped configuration parses, validates and builds its model.

use std::path::Path;

use earlyexit::model::MacConvention;
use earlyexit::train::{ScheduleKind, TrainConfig};

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
    // The quickstart's first exit costs under a fifth of the network, earlier heads included, so
    // a relative cost ≤ 0.40 is within reach when most digits leave there.
    let qs = TrainConfig::from_file(Path::new("configs/quickstart.toml"), &[]).unwrap();
    let costs = qs.architecture().unwrap().cost.relative(MacConvention::All);
    assert!(costs.len() == 4 && costs[0] < 0.2, "{costs:?}");
    assert_eq!(qs.schedule.kind, ScheduleKind::OneCycle);
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

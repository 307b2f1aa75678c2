//! End to end on real MNIST (a small slice of it): a run folder is written as documented,
//! `--resume` after an interruption reaches exactly the metrics of an uninterrupted run, and a
//! diverging run stops with the epoch and step of its first non-finite loss. The tests run in
//! parallel threads, as a user's sweep would: each run owns its randomness.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use earlyexit::Error;
use earlyexit::ExecChoice;
use earlyexit::run::Run;
use earlyexit::train::checkpoint::{last_checkpoint_path, load_checkpoint};
use earlyexit::train::{DataSplit, EpochMetrics, RunProgress, STATE_FILE, TrainConfig, TrainOptions, train};

fn config(extra: &[&str]) -> TrainConfig {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut o: Vec<String> = vec![
        format!("data.dir=\"{}\"", data.display()),
        "epochs=2".into(),
        "data.train_limit=480".into(),
        "data.val_limit=200".into(),
        "data.eval_batch_size=100".into(),
        "checkpoint.every_secs=0".into(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/eenet8-mnist.toml");
    TrainConfig::from_file(&file, &o).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("earlyexit-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn opts() -> TrainOptions {
    TrainOptions::default()
}

/// Everything but the wall-clock seconds.
fn comparable(m: &[EpochMetrics]) -> Vec<EpochMetrics> {
    m.iter()
        .cloned()
        .map(|mut e| {
            e.seconds = 0.0;
            e
        })
        .collect()
}

#[test]
fn run_folder_holds_config_model_checkpoint_and_metrics() {
    let cfg = config(&["epochs=1"]);
    let dir = tmp("folder");
    let out = train(&cfg, &dir, &opts()).unwrap();
    assert_eq!(out.metrics.len(), 1);
    for f in [
        "config.toml",
        "model.json",
        "weights.safetensors",
        "metrics.jsonl",
        "state.json",
        "checkpoints/last.safetensors",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let run = Run::open(&dir).unwrap();
    assert_eq!(run.config, cfg.resolved());
    assert_eq!(run.policy().unwrap().to_string(), "confidence:0.5");
    let m = run.metrics().unwrap();
    assert_eq!(comparable(&m), comparable(&out.metrics));
    assert_eq!(m[0].val_exit_counts.iter().sum::<usize>(), 200);
    assert_eq!(m[0].val_exit_accuracy.len(), 3);
    let model = run.load_model(&Device::flex()).unwrap();
    assert_eq!(model.arch.num_exits(), 2);
    let data = run.data().unwrap();
    assert_eq!(data.len(DataSplit::Train), 480);
    assert_eq!(data.len(DataSplit::Val), 200);
    assert_eq!(data.len(DataSplit::Test), 10_000);
    // The validation indices never meet the training indices.
    assert!(
        data.splits
            .val
            .iter()
            .all(|i| data.splits.train.binary_search(i).is_err())
    );
    // Calibration's policy.json takes precedence.
    std::fs::write(
        dir.join("policy.json"),
        r#"{"policy": "maxprob:0.8", "note": "written by hand"}"#,
    )
    .unwrap();
    assert_eq!(run.policy().unwrap().to_string(), "maxprob:0.8");
    assert_eq!(run.calibration().unwrap(), None);
    // A file that claims to be a calibration must be one.
    std::fs::write(
        dir.join("policy.json"),
        r#"{"policy": "maxprob:0.8", "goal": "whatever"}"#,
    )
    .unwrap();
    assert!(run.policy().unwrap_err().to_string().contains("not a calibration"));
    std::fs::write(dir.join("policy.json"), r#""entropy:0.3""#).unwrap();
    assert_eq!(run.policy().unwrap().to_string(), "entropy:0.3");
    std::fs::write(dir.join("policy.json"), r#"{"policy": "bogus"}"#).unwrap();
    assert!(run.policy().unwrap_err().to_string().contains("policy.json"));
    // A second run into the same folder refuses without --resume/--force.
    let e = train(&cfg, &dir, &opts()).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn resume_reaches_the_same_metrics_as_an_uninterrupted_run() {
    // 480 samples / 32 = 15 steps per epoch. Stop inside the first epoch (step 7), at an epoch
    // end (step 15) and in the middle of the second epoch (step 22); resume each; all must agree
    // exactly. The run folder says how far each got.
    let cfg = config(&[]);
    let straight = tmp("straight");
    let a = train(&cfg, &straight, &opts()).unwrap();
    assert_eq!(a.metrics.len(), 2);
    for stop in [7u64, 15, 22] {
        let dir = tmp(&format!("resumed-{stop}"));
        let first = train(
            &cfg,
            &dir,
            &TrainOptions {
                stop_after: Some(stop),
                ..opts()
            },
        )
        .unwrap();
        assert!(first.interrupted);
        let ck = load_checkpoint(&last_checkpoint_path(&dir)).unwrap();
        assert_eq!(ck.state.iteration, stop);
        assert_eq!(
            (ck.state.epoch, ck.state.batch),
            match stop {
                7 => (0, 7),
                15 => (1, 0),
                _ => (1, 7),
            }
        );
        let run = Run::open(&dir).unwrap();
        let trained = usize::from(stop >= 15);
        assert_eq!(
            run.progress().unwrap(),
            Some(RunProgress {
                trained_epochs: trained,
                epochs: 2
            })
        );
        // Stopped before epoch 1 ended, the weights on disk are the initial ones: refused.
        match run.load_model(&Device::flex()) {
            Err(e) if trained == 0 => {
                let e = e.to_string();
                assert!(e.contains("no trained epoch") && e.contains(STATE_FILE), "{e}");
            }
            Ok(_) if trained == 1 => {}
            other => panic!("stopped at step {stop}: {:?}", other.map(|_| "loaded")),
        }
        let b = train(&cfg, &dir, &TrainOptions { resume: true, ..opts() }).unwrap();
        assert!(!b.interrupted);
        let done = Run::open(&dir).unwrap().progress().unwrap().unwrap();
        assert!(done.finished() && done.trained_epochs == 2, "{done:?}");
        assert_eq!(comparable(&b.metrics), comparable(&a.metrics), "stopped at {stop}");
        let wa = load_checkpoint(&last_checkpoint_path(&straight)).unwrap();
        let wb = load_checkpoint(&last_checkpoint_path(&dir)).unwrap();
        assert_eq!(wa.optimizer, wb.optimizer, "optimizer state after resume from {stop}");
        let _ = std::fs::remove_dir_all(dir);
    }
    // Resuming with another configuration is refused.
    let e = train(
        &config(&["seed=99"]),
        &straight,
        &TrainOptions { resume: true, ..opts() },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("differs"), "{e}");
    let _ = std::fs::remove_dir_all(straight);
}

#[test]
fn non_finite_loss_stops_with_epoch_and_step() {
    let cfg = config(&[
        "optimizer.kind=\"sgd\"",
        "optimizer.lr=1e30",
        "objective.kind=\"joint\"",
        "objective.lambda=",
        "epochs=1",
    ]);
    let dir = tmp("nan");
    match train(&cfg, &dir, &opts()) {
        Err(Error::NonFiniteLoss { epoch, step, .. }) => {
            assert_eq!(epoch, 1);
            assert!(step >= 2, "the first step starts from finite weights");
        }
        other => panic!("expected a non-finite loss error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_scheme_trains_a_step() {
    // One short epoch of each scheme: finite metrics, and the frozen parts stay frozen.
    let base = tmp("heads-base");
    let plain = config(&[
        "epochs=1",
        "objective.kind=\"joint\"",
        "objective.lambda=",
        "data.train_limit=64",
    ]);
    train(&plain, &base, &opts()).unwrap();
    let before = Run::open(&base).unwrap().load_model(&Device::flex()).unwrap();
    for (name, extra) in [
        ("v1", vec!["objective.kind=\"eenet-v1\""]),
        ("mc", vec!["objective.kind=\"mc\""]),
        ("cost", vec!["objective.kind=\"cost\""]),
        ("soft", vec!["objective.kind=\"soft-conditional\""]),
        ("warm", vec!["objective.warmup=1"]),
        ("freezeout", vec!["schedule.kind=\"freezeout\""]),
        (
            "layerwise",
            vec!["objective.kind=\"layerwise\"", "objective.lambda=", "epochs=3"],
        ),
        (
            "heads",
            vec!["objective.kind=\"heads-only\"", "objective.base=\"eenet-v2\""],
        ),
    ] {
        let mut e: Vec<String> = vec!["data.train_limit=64".into()];
        e.extend(extra.iter().map(|s| s.to_string()));
        if name == "heads" {
            e.push(format!("init=\"{}\"", base.display()));
        }
        let e: Vec<&str> = e.iter().map(|s| s.as_str()).collect();
        let cfg = config(&e);
        let dir = tmp(&format!("scheme-{name}"));
        let out = train(&cfg, &dir, &opts()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for m in &out.metrics {
            assert!(m.train_loss.is_finite() && m.val_loss.is_finite(), "{name}: {m:?}");
        }
        if name == "layerwise" {
            assert_eq!(
                out.metrics.iter().map(|m| m.phase).collect::<Vec<_>>(),
                vec![Some(0), Some(1), Some(2)]
            );
        }
        if name == "heads" {
            let after = Run::open(&dir).unwrap().load_model(&Device::flex()).unwrap();
            let bb = |m: &earlyexit::infer::MultiExitModel| {
                let mut n = m.net.backbone.clone();
                n = burn::module::Module::valid(&n);
                let x = burn::tensor::Tensor::<4>::ones([2, 1, 28, 28], &Device::flex());
                n.forward(x).into_data().try_to_vec::<f32>().unwrap()
            };
            assert_eq!(bb(&before), bb(&after), "heads-only must not move the backbone");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(base);
}

/// The native CPU backbone pass trains a ResNet as Burn does: the same training loss within float
/// rounding over an epoch of real steps (and not bit for bit, so it did run). Rounding differences
/// grow with every step through BatchNorm, so after 8 steps the tolerance is 0.3 %; the
/// gradients themselves are compared tightly in `tests/native_train.rs`.
#[test]
fn native_backbone_pass_trains_as_burn_does() {
    let cfg = config(&[
        "model.backbone=\"resnet20\"",
        "model.exits=\"cuts:3,6\"",
        "epochs=1",
        "data.train_limit=256",
        "data.val_limit=100",
    ]);
    let run = |path: ExecChoice| {
        let dir = tmp(&format!("native-{path:?}"));
        let out = train(&cfg, &dir, &TrainOptions { path, ..opts() }).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        out.metrics
    };
    let (burn, native) = (run(ExecChoice::Burn), run(ExecChoice::Auto));
    let (b, n) = (&burn[0], &native[0]);
    assert_ne!(b.train_loss, n.train_loss, "the native pass did not run");
    assert!(
        (b.train_loss - n.train_loss).abs() < 3e-3 * b.train_loss,
        "{} vs {}",
        b.train_loss,
        n.train_loss
    );
    // Validation runs the eval-mode network on running statistics blended from just two batches:
    // it amplifies every rounding difference, so only the accuracy is compared, loosely.
    assert!(
        (b.val_accuracy - n.val_accuracy).abs() <= 0.05,
        "{} vs {}",
        b.val_accuracy,
        n.val_accuracy
    );
}

/// On the native backbone pass too, `--resume` after an interruption reaches exactly the metrics
/// and optimiser state of an uninterrupted run (same thread count).
#[test]
fn native_pass_resumes_exactly() {
    let cfg = config(&[
        "model.backbone=\"resnet20\"",
        "model.exits=\"cuts:3,6\"",
        "data.train_limit=256",
        "data.val_limit=100",
    ]);
    let straight = tmp("native-straight");
    let a = train(&cfg, &straight, &opts()).unwrap();
    let dir = tmp("native-resumed");
    let first = train(
        &cfg,
        &dir,
        &TrainOptions {
            stop_after: Some(11),
            ..opts()
        },
    )
    .unwrap();
    assert!(first.interrupted);
    let b = train(&cfg, &dir, &TrainOptions { resume: true, ..opts() }).unwrap();
    assert_eq!(comparable(&b.metrics), comparable(&a.metrics));
    let wa = load_checkpoint(&last_checkpoint_path(&straight)).unwrap();
    let wb = load_checkpoint(&last_checkpoint_path(&dir)).unwrap();
    assert_eq!(wa.optimizer, wb.optimizer);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(straight);
}

/// A hyper-parameter sweep in threads: each run reaches exactly the metrics it reaches alone,
/// on both training paths (the runs draw their weights from generators of their own).
#[test]
fn trainings_in_parallel_threads_match_one_at_a_time() {
    let cfgs: Vec<(TrainConfig, ExecChoice)> = [
        ("1", ExecChoice::Burn),
        ("2", ExecChoice::Auto),
        ("3", ExecChoice::Auto),
    ]
    .into_iter()
    .map(|(seed, path)| {
        let seed = format!("seed={seed}");
        (
            config(&["epochs=1", "data.train_limit=192", "data.val_limit=100", &seed]),
            path,
        )
    })
    .collect();
    let run = |i: usize, tag: &str| {
        let (cfg, path) = &cfgs[i];
        let dir = tmp(&format!("sweep-{tag}-{i}"));
        let out = train(cfg, &dir, &TrainOptions { path: *path, ..opts() }).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        comparable(&out.metrics)
    };
    let alone: Vec<_> = (0..cfgs.len()).map(|i| run(i, "alone")).collect();
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfgs.len()).map(|i| s.spawn(move || run(i, "together"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(alone[1], alone[2], "different seeds must give different runs");
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "run {i} changed when others trained beside it");
    }
}

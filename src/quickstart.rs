//! The quickstart: train a small early-exit CNN on the bundled MNIST, then test it with real
//! per-sample exits and measure the speed-up over the same network without exits.
//!
//! Also the building block for any "test this run" report: [`test_run`] evaluates a run's best
//! model on its test split with real per-sample exits ([`Executor::infer`]) and times it against
//! [`Policy::Never`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::choice::ExecChoice;
use crate::error::{Error, Result};
use crate::infer::{Executor, Policy};
use crate::model::MacConvention;
use crate::run::Run;
use crate::train::data::batch_tensors;
use crate::train::{DataSplit, Observer, TrainConfig, TrainOptions, train};

/// The quickstart's configuration (`configs/quickstart.toml`).
pub const QUICKSTART_CONFIG: &str = include_str!("../configs/quickstart.toml");

/// Options of [`quickstart`].
#[derive(Clone, Debug)]
pub struct QuickstartOptions {
    /// Folder holding MNIST (`mnist/` or the IDX files themselves).
    pub data_dir: PathBuf,
    /// Run folder (replaced if it exists).
    pub out: PathBuf,
    /// Epochs (default: the configuration's).
    pub epochs: Option<usize>,
    /// Receives the training's progress events (default: none).
    pub observer: Observer,
    /// Where to train and test.
    pub device: Device,
    /// Which code trains and runs the network ([`ExecChoice::Auto`]: the fastest that supports
    /// it).
    pub path: ExecChoice,
}

/// Test-set results with real per-sample exits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    /// The policy.
    pub policy: String,
    /// Test samples.
    pub samples: usize,
    /// Accuracy with early exits.
    pub accuracy: f64,
    /// Accuracy of the same weights without exits (`never`: the plain backbone).
    pub accuracy_no_exits: f64,
    /// Samples answered at each exit, final classifier last.
    pub exit_counts: Vec<usize>,
    /// Relative MAC cost of each exit (earlier heads included), final last.
    pub exit_costs: Vec<f64>,
    /// Mean MACs per sample with early exits over the plain backbone's MACs.
    pub relative_macs: f64,
    /// Wall-clock seconds for the test set with early exits (best of the repetitions).
    pub seconds_exits: f64,
    /// Wall-clock seconds for the test set without exits (best of the repetitions).
    pub seconds_no_exits: f64,
    /// `seconds_no_exits / seconds_exits`.
    pub speedup: f64,
    /// Batch size of the timing.
    pub batch_size: usize,
    /// The code that was timed ([`Executor::describe`]).
    #[serde(default)]
    pub implementation: String,
}

/// What the quickstart did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuickstartReport {
    /// The run folder.
    pub run: PathBuf,
    /// Epochs trained.
    pub epochs: usize,
    /// Seconds spent training (validation included).
    pub train_seconds: f64,
    /// Best validation accuracy under the policy.
    pub val_accuracy: f64,
    /// The test results.
    pub test: TestReport,
    /// Total wall-clock seconds.
    pub seconds: f64,
}

/// Evaluates the run's best model on its test split with real per-sample exits under `policy`,
/// and times it against the same weights without exits (same batches, best of `reps`), on the
/// implementation `path` selects.
pub fn test_run(
    run: &Run,
    policy: &Policy,
    batch_size: usize,
    reps: usize,
    device: &Device,
    path: ExecChoice,
) -> Result<TestReport> {
    let data = run.data()?;
    let loader = run.loader(&data, DataSplit::Test, batch_size)?;
    let mut model = run.load_model(device)?;
    model.net = model.net.fold_bn();
    let batches: Vec<(Tensor<4>, Tensor<1, Int>, Vec<u32>)> = loader
        .epoch(0)
        .map(|b| {
            let (x, y) = batch_tensors(&b, device);
            (x, y, b.labels)
        })
        .collect();
    let exec = Executor::new(model, device, path)?;
    test_batches(&exec, &batches, policy, batch_size, reps)
}

fn test_batches(
    exec: &Executor,
    batches: &[(Tensor<4>, Tensor<1, Int>, Vec<u32>)],
    policy: &Policy,
    batch_size: usize,
    reps: usize,
) -> Result<TestReport> {
    let model = exec.model();
    let n_out = model.net.num_exits() + 1;
    let backbone_macs = model.arch.cost.backbone.macs(MacConvention::All) as f64;
    let run_all = |p: &Policy| -> Result<(f64, Vec<crate::infer::Answers>)> {
        let t = Instant::now();
        let answers = batches
            .iter()
            .map(|(x, _, _)| exec.infer(x.clone(), p))
            .collect::<Result<Vec<_>>>()?;
        Ok((t.elapsed().as_secs_f64(), answers))
    };
    // Warm up both paths once, then alternate the timed repetitions.
    let (_, with) = run_all(policy)?;
    let (_, without) = run_all(&Policy::Never)?;
    let (mut t_with, mut t_without) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps.max(1) {
        t_with = t_with.min(run_all(policy)?.0);
        t_without = t_without.min(run_all(&Policy::Never)?.0);
    }
    let mut counts = vec![0usize; n_out];
    let (mut correct, mut correct_plain, mut macs, mut samples) = (0usize, 0usize, 0f64, 0usize);
    for (((_, _, labels), a), b) in batches.iter().zip(&with).zip(&without) {
        for (i, &l) in labels.iter().enumerate() {
            counts[a.exit[i]] += 1;
            correct += usize::from(a.class[i] == l as usize);
            correct_plain += usize::from(b.class[i] == l as usize);
            macs += a.macs[i] as f64;
        }
        samples += labels.len();
    }
    let d = samples.max(1) as f64;
    Ok(TestReport {
        policy: policy.to_string(),
        samples,
        accuracy: correct as f64 / d,
        accuracy_no_exits: correct_plain as f64 / d,
        exit_counts: counts,
        exit_costs: model.arch.cost.relative(MacConvention::All),
        relative_macs: macs / d / backbone_macs,
        seconds_exits: t_with,
        seconds_no_exits: t_without,
        speedup: t_without / t_with,
        batch_size,
        implementation: exec.describe(),
    })
}

/// Finds the MNIST folder: `dir` if it holds MNIST, else the repository's `data/`.
pub fn find_mnist(dir: &Path) -> Result<PathBuf> {
    use crate::data::{DatasetKind, Split, find_dataset_dir};
    let candidates = [dir.to_path_buf(), crate::data::repo_data_dir()];
    for c in &candidates {
        if find_dataset_dir(DatasetKind::Mnist, c, Split::Train).is_ok() {
            return Ok(c.clone());
        }
    }
    Err(find_dataset_dir(DatasetKind::Mnist, dir, Split::Train)
        .err()
        .map(Error::from)
        .unwrap_or_else(|| Error::invalid("data", "MNIST not found")))
}

/// Trains the quickstart network, tests it with real exits and reports.
pub fn quickstart(opts: &QuickstartOptions) -> Result<QuickstartReport> {
    let started = Instant::now();
    let data_dir = find_mnist(&opts.data_dir)?;
    let mut overrides = vec![format!("data.dir={}", toml_string(&data_dir.to_string_lossy()))];
    if let Some(e) = opts.epochs {
        overrides.push(format!("epochs={e}"));
    }
    let cfg = TrainConfig::from_toml(QUICKSTART_CONFIG, Path::new("configs/quickstart.toml"), &overrides)?;
    let outcome = train(
        &cfg,
        &opts.out,
        &TrainOptions {
            force: true,
            observer: opts.observer.clone(),
            device: opts.device.clone(),
            path: opts.path,
            ..TrainOptions::default()
        },
    )?;
    let train_seconds = outcome.seconds;
    let run = Run::open(&opts.out)?;
    let policy = run.policy()?;
    let test = test_run(&run, &policy, 1000, 2, &opts.device, opts.path)?;
    Ok(QuickstartReport {
        run: opts.out.clone(),
        epochs: cfg.epochs,
        train_seconds,
        val_accuracy: outcome.best.map_or(0.0, |b| b.accuracy),
        test,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "test accuracy     {:.2}% with early exits ({}), {:.2}% without",
            100.0 * self.accuracy,
            self.policy,
            100.0 * self.accuracy_no_exits
        )?;
        writeln!(f, "exit distribution (of {} test samples):", self.samples)?;
        let n = self.exit_counts.len();
        for (k, (&c, &cost)) in self.exit_counts.iter().zip(&self.exit_costs).enumerate() {
            let name = if k + 1 == n {
                "final".to_string()
            } else {
                format!("exit {k}")
            };
            writeln!(
                f,
                "  {name:<8} {c:>6}  {:>5.1}%   relative cost {cost:.3}",
                100.0 * c as f64 / self.samples.max(1) as f64
            )?;
        }
        writeln!(
            f,
            "relative MAC cost {:.3} of the network without exits (earlier heads included)",
            self.relative_macs
        )?;
        write!(
            f,
            "measured speed-up {:.2}x  ({:.3} s with exits vs {:.3} s without, batch {}, best of repeated runs)",
            self.speedup, self.seconds_exits, self.seconds_no_exits, self.batch_size
        )?;
        write!(f, "\ntimed on: {}", self.implementation)
    }
}

impl fmt::Display for QuickstartReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trained {} epochs in {:.0} s, best validation accuracy {:.2}%; run in {}",
            self.epochs,
            self.train_seconds,
            100.0 * self.val_accuracy,
            self.run.display()
        )?;
        writeln!(f, "{}", self.test)?;
        write!(f, "total {:.0} s", self.seconds)
    }
}

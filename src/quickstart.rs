//! The quickstart: train a small early-exit ResNet on the bundled MNIST, choose the exits'
//! thresholds on validation, then answer the test set with real per-sample exits, measure the
//! speed-up over the same weights without exits, and write a report with the accuracy-vs-cost
//! plot — every step a library call a user's own script makes the same way.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::choice::ExecChoice;
use crate::error::{Error, Result};
use crate::infer::{
    Calibration, EvalOptions, EvalReport, Executor, Goal, ScoreKind, SplitKind, calibrate_split, evaluate_with_table,
    host_samples,
};
use crate::report::{ReportInputs, eval_text, gallery_rows, write_report};
use crate::run::Run;
use crate::train::{Observer, TrainConfig, TrainOptions, train};

/// The quickstart's configuration (`configs/quickstart.toml`).
pub const QUICKSTART_CONFIG: &str = include_str!("../configs/quickstart.toml");

/// The quickstart's calibration goal: the cheapest per-exit `maxprob` thresholds that lose no
/// accuracy against the full network on the validation split.
pub const QUICKSTART_GOAL: Goal = Goal::MaxAccuracyDrop(0.0);

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

/// What the quickstart did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuickstartReport {
    /// The run folder.
    pub run: PathBuf,
    /// Epochs trained.
    pub epochs: usize,
    /// Seconds spent training (validation included).
    pub train_seconds: f64,
    /// Best validation accuracy under the training's own policy (the epoch kept).
    pub val_accuracy: f64,
    /// Thresholds chosen on the validation split ([`QUICKSTART_GOAL`]), written to the run's
    /// `policy.json`.
    pub calibration: Calibration,
    /// The test split with real exits under the calibrated policy, timed at batch 1 and 256
    /// against the same weights without exits: what `earlyexit eval --run RUN --split test`
    /// reports.
    pub test: EvalReport,
    /// The report (`report.md`, with the accuracy-vs-cost plot beside it).
    pub report: PathBuf,
    /// Total wall-clock seconds.
    pub seconds: f64,
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

/// Trains the quickstart network, calibrates its exits on validation, tests them with real
/// exits and writes the report.
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
    let run = Run::open(&opts.out)?;
    let model = run.load_model(&opts.device)?;
    let exec = Executor::new(model.clone(), &opts.device, opts.path)?;
    let val = run.split(SplitKind::Val)?;
    let (calibration, val_table) = calibrate_split(&exec, &val, QUICKSTART_GOAL, ScoreKind::MaxProb, true, 256)?;
    run.write_calibration(&calibration)?;
    let test_split = run.split(SplitKind::Test)?;
    let eval_opts = EvalOptions {
        path: opts.path,
        ..EvalOptions::default()
    };
    let (test, test_table) = evaluate_with_table(&model, &test_split, &calibration.policy, &eval_opts, &opts.device)?;
    let mut inputs = ReportInputs::simulated(
        "quickstart",
        &val_table,
        &test_table,
        calibration.policy.clone(),
        Some(calibration.clone()),
        Some(test.clone()),
    )?;
    inputs.metrics = std::fs::read_to_string(opts.out.join("metrics.jsonl")).ok();
    inputs.gallery = gallery_rows(&test_table, &calibration.policy, 8, |i| host_samples(&test_split, i))?;
    let files = write_report(&opts.out.join("report"), &inputs)?;
    let report = files
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "md"))
        .ok_or_else(|| Error::invalid("report", "no report.md was written"))?;
    Ok(QuickstartReport {
        run: opts.out.clone(),
        epochs: cfg.epochs,
        train_seconds: outcome.seconds,
        val_accuracy: outcome.best.map_or(0.0, |b| b.accuracy),
        calibration,
        test,
        report,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl fmt::Display for QuickstartReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trained {} epochs in {:.0} s; run in {}",
            self.epochs,
            self.train_seconds,
            self.run.display()
        )?;
        let c = &self.calibration;
        writeln!(
            f,
            "thresholds chosen on validation ({} samples, {}): {}\n",
            c.samples, c.goal, c.policy
        )?;
        writeln!(f, "{}\n", eval_text(&self.test).trim_end())?;
        let t = &self.test;
        writeln!(
            f,
            "with exits: {:.2}% at {:.3} of the network's cost ({:+.2} points against the same weights without exits)",
            100.0 * t.accuracy,
            t.relative_cost,
            100.0 * (t.accuracy - t.full_accuracy)
        )?;
        writeln!(
            f,
            "speed-up: {:.2}x predicted from MACs, {:.2}x measured at batch 1, {:.2}x at batch {}",
            t.predicted_speedup,
            t.measured_speedup,
            t.measured_speedup_large,
            t.timing.last().map_or(0, |x| x.batch)
        )?;
        writeln!(f, "report: {}", self.report.display())?;
        write!(f, "total {:.0} s", self.seconds)
    }
}

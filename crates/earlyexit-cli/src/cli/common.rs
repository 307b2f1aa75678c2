//! What the run-folder commands share: opening a run, its splits and its calibrated policy.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::Device;
use earlyexit::device::DeviceSpec;
use earlyexit::infer::{Calibration, EvalOptions, Executor, InMemorySplit, MultiExitModel, Policy, SplitKind};
use earlyexit::run::Run;
use earlyexit::{Choice, ExecChoice};

/// Shared `--exits`, `--head` and `--no-confidence`: the exits a command attaches.
#[derive(clap::Args, Debug)]
pub struct ExitArgs {
    /// Exit placement: pareto:N, golden:N, fine:N, linear:N, quadratic:N, every, sample:P, cuts:I,J,…, none.
    #[arg(long, default_value = "none")]
    pub exits: earlyexit::model::Placement,
    /// Exit head: plain, pool, bnpool, branchy, dense.
    #[arg(long, default_value = "pool")]
    pub head: earlyexit::model::HeadKind,
    /// Heads without a confidence branch.
    #[arg(long)]
    pub no_confidence: bool,
}

/// `--run DIR` (and `--device`).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArg {
    /// The run folder (runs/NAME) written by `earlyexit train`.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub device: DeviceArg,
}

impl RunArg {
    /// Opens the run on `--device`.
    pub fn open(&self) -> anyhow::Result<Opened> {
        open_on(&self.run, self.device.device()?)
    }
}

/// `--device cpu|vulkan[:N]`, shared by every command that computes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArg {
    /// Where to compute: `cpu`, or `vulkan` / `vulkan:N` for a GPU through Vulkan (needs a build
    /// with `--features vulkan`).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceSpec,
}

impl DeviceArg {
    /// The device, brought up and checked; a GPU is named on stderr.
    pub fn device(&self) -> anyhow::Result<Device> {
        let (device, desc) = self.device.open()?;
        if self.device.is_gpu() {
            eprintln!("device {desc}");
        }
        Ok(device)
    }
}

pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse::<DeviceSpec>().map_err(|e| e.to_string())
}

/// `--run`, `--split` and `--policy`: what `eval` and `report` measure.
#[derive(clap::Args, Debug, Clone)]
pub struct MeasureArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// Split to measure on: val or test (thresholds always come from validation).
    #[arg(long, default_value = "test", value_parser = parse_split)]
    pub split: SplitKind,
    /// Exit policy (default: the run's calibrated policy.json).
    #[arg(long, value_parser = parse_policy)]
    pub policy: Option<Policy>,
}

impl MeasureArgs {
    /// The opened run (on `--device`) and the policy to measure (`--policy`, else the run's).
    pub fn open(&self) -> anyhow::Result<(Opened, Policy)> {
        let r = self.run.open()?;
        let policy = r.policy(self.policy.as_ref())?;
        Ok((r, policy))
    }
}

/// `--timing-samples` and `--large-batch`: the wall-clock measurement of `eval` and `report`.
#[derive(clap::Args, Debug, Clone)]
pub struct TimingArgs {
    /// Samples timed one at a time (batch 1).
    #[arg(long, default_value_t = 300)]
    pub timing_samples: usize,
    /// The large timing batch.
    #[arg(long, default_value_t = 256)]
    pub large_batch: usize,
    #[command(flatten)]
    pub path: PathArg,
}

/// `--path`: which code runs the model, the same option on every command.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PathArg {
    /// Which code runs the model: `auto` (the compiled CPU path, or for training the native
    /// pass, where it supports the model on the CPU; the Burn module otherwise), `compiled`,
    /// `compiled-gemm` (im2col + GEMM convolutions), `burn` (the Burn module on `--device`).
    #[arg(long = "path", default_value = "auto", value_parser = choice::<ExecChoice>(), alias = "timing-path")]
    pub path: ExecChoice,
}

impl TimingArgs {
    /// Evaluation options with these timings (the large batch timed on at least 2048 samples).
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            timing_samples: self.timing_samples,
            large_batch: self.large_batch,
            large_batch_samples: (8 * self.large_batch).max(2048),
            path: self.path.path,
            ..EvalOptions::default()
        }
    }
}

/// The folder name of a run, for labels.
pub fn run_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A loaded run.
pub struct Opened {
    pub dir: PathBuf,
    pub model: MultiExitModel,
    pub run: Box<Run>,
    pub device: Device,
}

/// Opens a run on the CPU (commands without `--device`).
pub fn open(dir: &Path) -> anyhow::Result<Opened> {
    open_on(dir, Device::flex())
}

/// Says on stderr when `run` stopped before its last epoch (its weights are the best of the
/// epochs trained so far); a run with no trained epoch is refused by `Run::load_model`.
pub fn warn_unfinished(run: &Run) -> anyhow::Result<()> {
    if let Some(p) = run.progress()?
        && p.has_trained_epoch()
        && !p.finished()
    {
        eprintln!(
            "warning: run {} is unfinished: {}; its weights are the best of the epochs trained so far",
            run.dir.display(),
            p.describe()
        );
    }
    Ok(())
}

/// Opens a run with its model on `device`.
pub fn open_on(dir: &Path, device: Device) -> anyhow::Result<Opened> {
    let run = Box::new(Run::open(dir)?);
    warn_unfinished(&run)?;
    let model = run
        .load_model(&device)
        .with_context(|| format!("cannot load the model of run {}", dir.display()))?;
    Ok(Opened {
        dir: dir.to_path_buf(),
        model,
        run,
        device,
    })
}

impl Opened {
    pub fn split(&self, kind: SplitKind) -> anyhow::Result<InMemorySplit> {
        self.run
            .split(kind)
            .with_context(|| format!("cannot read the {kind} split of run {}", self.dir.display()))
    }

    /// The run's model on the code `path` selects (a copy: the run keeps its model).
    pub fn executor(&self, path: ExecChoice) -> anyhow::Result<Executor> {
        Ok(Executor::new(self.model.clone(), &self.device, path)?)
    }

    pub fn calibration(&self) -> anyhow::Result<Option<Calibration>> {
        Ok(self.run.calibration()?)
    }

    /// `--policy` if given, else the run's `policy.json`, else its configuration's eval policy
    /// (the one fallback of every command: [`Run::policy_or`]).
    pub fn policy(&self, given: Option<&Policy>) -> anyhow::Result<Policy> {
        Ok(self.run.policy_or(given)?)
    }
}

pub fn parse_split(s: &str) -> Result<SplitKind, String> {
    s.parse::<SplitKind>().map_err(|e| e.to_string())
}

pub fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse::<Policy>().map_err(|e| e.to_string())
}

/// A parser for a library enum named by [`Choice::NAMES`]: `--help` lists the names and any other
/// value is rejected by clap with that list.
pub fn choice<T: Choice + Send + Sync + Clone>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    let names = T::NAMES.iter().map(|(n, _)| *n);
    clap::builder::PossibleValuesParser::new(names).try_map(|s: String| T::parse(&s))
}

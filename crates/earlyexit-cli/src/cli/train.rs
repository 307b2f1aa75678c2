//! `earlyexit train`: train a network from a TOML configuration into a run folder.

use std::path::PathBuf;

use anyhow::{Context, bail};
use earlyexit::ExecChoice;
use earlyexit::train::{CONFIG_FILE, TrainConfig, TrainOptions, train};

use super::common::{DeviceArg, choice};
use super::progress::training_observer;

/// Arguments of `train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The training configuration (TOML); optional with --resume (the run's own is used).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder (default: runs/<config file name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a configuration value, e.g. --set objective.lambda=0.5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Override the number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override the seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start over in a folder that already holds a run.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// No progress bar or epoch lines.
    #[arg(long, short)]
    quiet: bool,
    /// Stop after this many iterations (right after a checkpoint), as if killed: for testing --resume.
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
    #[command(flatten)]
    device: DeviceArg,
    /// `auto`: the native CPU pass on `flex` where the network allows it, Burn otherwise;
    /// `compiled`: the native pass or an error; `burn`: Burn's autodiff (the reference).
    #[arg(long = "path", default_value = "auto", value_parser = choice::<ExecChoice>(), alias = "train-path")]
    path: ExecChoice,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut overrides = a.overrides.clone();
    if let Some(e) = a.epochs {
        overrides.push(format!("epochs={e}"));
    }
    if let Some(s) = a.seed {
        overrides.push(format!("seed={s}"));
    }
    let out = match (&a.out, &a.config) {
        (Some(o), _) => o.clone(),
        (None, Some(c)) => PathBuf::from("runs").join(c.file_stem().unwrap_or_default()),
        (None, None) => bail!("give --config (and optionally --out), or --resume with --out"),
    };
    let cfg = match &a.config {
        Some(path) => TrainConfig::from_file(path, &overrides)?,
        None if a.resume => TrainConfig::from_file(&out.join(CONFIG_FILE), &overrides)
            .with_context(|| format!("cannot read the configuration of the run in {}", out.display()))?,
        None => bail!("--config is required unless --resume"),
    };
    let outcome = train(
        &cfg,
        &out,
        &TrainOptions {
            resume: a.resume,
            force: a.force,
            observer: training_observer(a.quiet),
            stop_after: a.stop_after,
            device: a.device.device()?,
            path: a.path,
        },
    )
    .with_context(|| format!("training into {} failed", out.display()))?;
    if outcome.interrupted {
        eprintln!(
            "stopped after {} iterations as asked; continue with: earlyexit train --resume --out {}",
            a.stop_after.unwrap_or_default(),
            out.display()
        );
        return Ok(());
    }
    if let Some(m) = outcome.metrics.last() {
        println!(
            "{}: {} epochs in {:.0} s; last epoch: val accuracy {:.2}% ({}), exits {:?}, relative cost {:.3}",
            out.display(),
            m.epoch,
            outcome.seconds,
            100.0 * m.val_accuracy,
            m.policy,
            m.val_exit_counts,
            m.val_expected_cost
        );
    }
    if let Some(b) = &outcome.best {
        println!(
            "best: epoch {} with val accuracy {:.2}% (model.json + weights.safetensors)",
            b.epoch,
            100.0 * b.accuracy
        );
    }
    Ok(())
}

//! `earlyexit perf`: time one standard figure, for `scripts/bench-vs-torch`.

use std::path::PathBuf;

use earlyexit::bench::{Figure, export_figure_model, measure};

use super::common::PathArg;

/// Arguments of `perf`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The figures, comma-separated: resnet20-forward-b1, resnet56-forward-b128, engine-b256,
    /// train-step-b128, …
    #[arg(long, value_delimiter = ',', required = true)]
    figure: Vec<Figure>,
    /// Timed iterations per figure (the median is reported).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// The code timed; for the training step, `auto` and `compiled` are the native backbone
    /// pass that `train` runs on the CPU, the others Burn's autodiff.
    #[command(flatten)]
    path: PathArg,
    /// Print JSON (one object per figure, every iteration's time included).
    #[arg(long)]
    json: bool,
    /// Instead of timing: write each figure's network (fresh weights; an engine figure's forced
    /// thresholds as its policy) as a PyTorch export to DIR/<figure>, for
    /// `scripts/torch_perf.py --export DIR`.
    #[arg(long, value_name = "DIR")]
    export_torch: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(dir) = &a.export_torch {
        for f in &a.figure {
            let out = dir.join(f.to_string());
            export_figure_model(f, &out)?;
            println!("exported {f} to {}", out.display());
        }
        return Ok(());
    }
    for f in &a.figure {
        let m = measure(f, a.reps, a.path.path)?;
        if a.json {
            println!("{}", serde_json::to_string(&m)?);
        } else {
            // The fourth column, multiply-adds per iteration, gives the script its GFLOP/s.
            println!("figure {} {:.6} {:.0}", m.figure, m.seconds, m.macs);
        }
    }
    Ok(())
}

//! `earlyexit perf`: time one standard figure, for `scripts/bench-vs-torch`.

use earlyexit::bench::{Figure, measure};

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
}

pub fn run(a: Args) -> anyhow::Result<()> {
    for f in &a.figure {
        let m = measure(f, a.reps, a.path.path)?;
        if a.json {
            println!("{}", serde_json::to_string(&m)?);
        } else {
            println!("figure {} {:.6}", m.figure, m.seconds);
        }
    }
    Ok(())
}

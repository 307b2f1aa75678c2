//! `earlyexit sweep`: accuracy against relative cost over a grid of shared thresholds.

use earlyexit::infer::{ExitTable, ScoreKind, SplitKind, sweep};
use earlyexit::report::curve_markdown;

use super::common::{PathArg, RunArg, parse_split};

/// Arguments of `sweep`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    run: RunArg,
    #[command(flatten)]
    path: PathArg,
    /// Split: val or test.
    #[arg(long, default_value = "val", value_parser = parse_split)]
    split: SplitKind,
    /// Score: maxprob, entropy or confidence.
    #[arg(long, default_value = "maxprob", value_parser = |s: &str| s.parse::<ScoreKind>().map_err(|e| e.to_string()))]
    policy_kind: ScoreKind,
    /// Grid steps between 0 and 1.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let r = a.run.open()?;
    let data = r.split(a.split)?;
    let table = ExitTable::collect(&r.executor(a.path.path)?, &data, 256)?;
    let points = sweep(&table, a.policy_kind, a.steps)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&points)?);
    } else {
        println!(
            "{} on {} ({} samples); full network accuracy {:.2}%\n",
            a.policy_kind,
            a.split,
            table.len(),
            100.0 * table.full_accuracy()
        );
        print!("{}", curve_markdown(&points, "threshold"));
    }
    Ok(())
}

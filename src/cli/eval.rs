//! `earlyexit eval`: real exits on a split, honest cost, ECE, over-thinking and measured speed-up.

use earlyexit::infer::{EvalOptions, Policy, SplitKind, evaluate};
use earlyexit::report::{eval_markdown, eval_text};

use super::common::{RunArg, parse_policy, parse_split};

/// Arguments of `eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    run: RunArg,
    /// Split to evaluate: val or test.
    #[arg(long, default_value = "test", value_parser = parse_split)]
    split: SplitKind,
    /// Exit policy (default: the run's calibrated policy.json).
    #[arg(long, value_parser = parse_policy)]
    policy: Option<Policy>,
    /// Print one JSON object.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print Markdown.
    #[arg(long)]
    markdown: bool,
    /// Samples timed one at a time (batch 1).
    #[arg(long, default_value_t = 300)]
    timing_samples: usize,
    /// The large timing batch.
    #[arg(long, default_value_t = 256)]
    large_batch: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let r = a.run.open()?;
    let policy = r.policy(a.policy.as_ref())?;
    let data = r.split(a.split)?;
    let opts = EvalOptions {
        timing_samples: a.timing_samples,
        large_batch: a.large_batch,
        large_batch_samples: (8 * a.large_batch).max(2048),
        ..EvalOptions::default()
    };
    let report = evaluate(&r.model, &data, &policy, &opts, &r.device)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.markdown {
        print!("{}", eval_markdown(&report));
    } else {
        print!("{}", eval_text(&report));
    }
    Ok(())
}

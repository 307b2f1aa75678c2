//! `earlyexit eval`: real exits on a split, honest cost, ECE, over-thinking and measured speed-up.

use earlyexit::infer::evaluate;
use earlyexit::report::{eval_markdown, eval_text};

use super::common::{MeasureArgs, TimingArgs};

/// Arguments of `eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: MeasureArgs,
    /// Print one JSON object.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print Markdown.
    #[arg(long)]
    markdown: bool,
    #[command(flatten)]
    timing: TimingArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // Every count checked before the model and data are read.
    let opts = a.timing.options();
    opts.check()?;
    let (r, policy) = a.target.open()?;
    let data = r.split(a.target.split)?;
    let mut report = evaluate(&r.model, &data, &policy, &opts, &r.device)?;
    // An applied class-specific design: its time model's gain beside the measured one.
    r.run.predict_class_gains(&mut report)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if a.markdown {
        print!("{}", eval_markdown(&report));
    } else {
        print!("{}", eval_text(&report));
    }
    Ok(())
}

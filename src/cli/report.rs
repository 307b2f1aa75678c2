//! `earlyexit report`: report.md with PNG and SVG plots for a run.

use std::path::PathBuf;

use earlyexit::infer::{EvalOptions, ExitTable, Policy, SplitKind, evaluate};
use earlyexit::report::{ReportInputs, write_report};

use super::common::{RunArg, open_on, parse_policy, parse_split};

/// Arguments of `report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    run: RunArg,
    /// Split the figures are measured on (thresholds always come from validation).
    #[arg(long, default_value = "test", value_parser = parse_split)]
    split: SplitKind,
    /// Exit policy (default: the run's calibrated policy.json).
    #[arg(long, value_parser = parse_policy)]
    policy: Option<Policy>,
    /// Output folder (default: RUN/report).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A run trained without exits to mark on the trade-off plot (its final classifier on the
    /// same split, relative cost 1).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Samples timed one at a time.
    #[arg(long, default_value_t = 300)]
    timing_samples: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let r = a.run.open()?;
    let policy = r.policy(a.policy.as_ref())?;
    let val = ExitTable::collect(&r.model, &r.split(SplitKind::Val)?, 256, &r.device)?;
    let data = r.split(a.split)?;
    let table = ExitTable::collect(&r.model, &data, 256, &r.device)?;
    let opts = EvalOptions {
        timing_samples: a.timing_samples,
        ..EvalOptions::default()
    };
    let eval = evaluate(&r.model, &data, &policy, &opts, &r.device)?;
    let name = r
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut inputs = ReportInputs::simulated(&name, &val, &table, policy, r.calibration()?, Some(eval))?;
    inputs.metrics = std::fs::read_to_string(r.dir.join("metrics.jsonl")).ok();
    inputs.extra = Some(format!(
        "## Model\n\n```text\n{}```\n",
        r.model.arch.summary(earlyexit::model::MacConvention::All)
    ));
    if let Some(b) = &a.baseline {
        let base = open_on(b, r.device.clone())?;
        let t = ExitTable::collect(&base.model, &base.split(a.split)?, 256, &base.device)?;
        let acc = t.full_accuracy();
        let label = b
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        inputs.marks.push(earlyexit::report::plot::Mark {
            label: format!("{label} (trained without exits)"),
            x: 1.0,
            y: 100.0 * acc,
        });
        inputs.extra = Some(format!(
            "{}\n## Baseline\n\n`{label}`, trained without exits: {:.2} % on {}.\n",
            inputs.extra.take().unwrap_or_default(),
            100.0 * acc,
            a.split
        ));
    }
    let out = a.out.unwrap_or_else(|| r.dir.join("report"));
    for f in write_report(&out, &inputs)? {
        println!("{}", f.display());
    }
    Ok(())
}

//! `earlyexit report`: report.md with PNG and SVG plots for a run.

use std::path::PathBuf;

use earlyexit::infer::{ExitTable, SplitKind, evaluate_with_table};
use earlyexit::report::{ReportInputs, write_report};

use super::common::{MeasureArgs, TimingArgs, open_on, run_name};

/// Arguments of `report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: MeasureArgs,
    /// Output folder (default: RUN/report).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A run trained without exits to mark on the trade-off plot (its final classifier on the
    /// same split, relative cost 1).
    #[arg(long)]
    baseline: Option<PathBuf>,
    #[command(flatten)]
    timing: TimingArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // What can be checked without computing, first: the counts, and that --out can be a folder.
    a.timing.options().check()?;
    if let Some(out) = &a.out
        && out.exists()
        && !out.is_dir()
    {
        anyhow::bail!(
            "--out {} is a file; the report is a folder (report.md and its plots)",
            out.display()
        );
    }
    let (r, policy) = a.target.open()?;
    let split = a.target.split;
    let exec = r.executor(a.timing.path.path)?;
    let val = ExitTable::collect(&exec, &r.split(SplitKind::Val)?, 256)?;
    let data = r.split(split)?;
    let (mut eval, table) = evaluate_with_table(&r.model, &data, &policy, &a.timing.options(), &r.device)?;
    r.run.predict_class_gains(&mut eval)?;
    let mut inputs = ReportInputs::simulated(&run_name(&r.dir), &val, &table, policy, r.calibration()?, Some(eval))?;
    inputs.metrics = std::fs::read_to_string(r.dir.join("metrics.jsonl")).ok();
    inputs.gallery = earlyexit::report::gallery_rows(&table, &inputs.eval.policy, 8, |i| {
        earlyexit::infer::host_samples(&data, i)
    })?;
    inputs.extra = Some(format!(
        "## Model\n\n```text\n{}```\n",
        r.model.arch.summary(earlyexit::model::MacConvention::All)
    ));
    if let Some(b) = &a.baseline {
        let base = open_on(b, r.device.clone())?;
        let t = ExitTable::collect(&base.executor(a.timing.path.path)?, &base.split(split)?, 256)?;
        let acc = t.full_accuracy();
        let label = run_name(b);
        inputs.marks.push(earlyexit::report::plot::Mark {
            label: format!("{label} (trained without exits)"),
            x: 1.0,
            y: 100.0 * acc,
        });
        inputs.extra = Some(format!(
            "{}\n## Baseline\n\n`{label}`, trained without exits: {:.2} % on {}.\n",
            inputs.extra.take().unwrap_or_default(),
            100.0 * acc,
            split
        ));
    }
    let out = a.out.unwrap_or_else(|| r.dir.join("report"));
    for f in write_report(&out, &inputs)? {
        println!("{}", f.display());
    }
    Ok(())
}

//! `earlyexit calibrate`: thresholds chosen on the validation split for a stated goal, written
//! to the run's policy.json.

use anyhow::Context;
use earlyexit::infer::{Goal, ScoreKind, SplitKind, budget_curve, calibrate_split};
use earlyexit::report::{calibration_markdown, curve_markdown};
use earlyexit::run::POLICY_FILE;

use super::common::{PathArg, RunArg};

/// Arguments of `calibrate`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("goal").required(true).args(["max_accuracy_drop", "budget"])))]
pub struct Args {
    #[command(flatten)]
    run: RunArg,
    #[command(flatten)]
    path: PathArg,
    /// Cheapest policy whose validation accuracy is within P percentage points of the full network's.
    #[arg(long, value_name = "P")]
    max_accuracy_drop: Option<f64>,
    /// Most accurate policy whose expected relative cost (validation) is at most C.
    #[arg(long, value_name = "C")]
    budget: Option<f64>,
    /// Search one threshold per exit (otherwise one shared value).
    #[arg(long)]
    per_exit: bool,
    /// Score the thresholds compare: maxprob, entropy or confidence.
    #[arg(long, default_value = "maxprob", value_parser = |s: &str| s.parse::<ScoreKind>().map_err(|e| e.to_string()))]
    policy_kind: ScoreKind,
    /// Also print MSDNet's budgeted protocol (p = 1/20 … 39/20) on validation.
    #[arg(long)]
    budget_curve: bool,
    /// Do not write policy.json.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let goal = match (a.max_accuracy_drop, a.budget) {
        (Some(p), None) => Goal::MaxAccuracyDrop(p),
        (None, Some(c)) => Goal::Budget(c),
        _ => unreachable!("clap requires exactly one goal"),
    };
    goal.check()?;
    let r = a.run.open()?;
    // Only the validation split is opened.
    let val = r.split(SplitKind::Val)?;
    let exec = r.executor(a.path.path)?;
    let (cal, table) = calibrate_split(&exec, &val, goal, a.policy_kind, a.per_exit, 256)?;
    if !a.dry_run {
        r.run
            .write_calibration(&cal)
            .with_context(|| format!("writing {}", r.dir.join(POLICY_FILE).display()))?;
    }
    let curve = if a.budget_curve {
        Some(budget_curve(&table, a.policy_kind)?)
    } else {
        None
    };
    if a.json {
        let v = serde_json::json!({ "calibration": cal, "budget_curve": curve });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", calibration_markdown(&cal));
        if let Some(c) = curve {
            println!("\nMSDNet budget protocol on validation:\n\n{}", curve_markdown(&c, "p"));
        }
        if !a.dry_run {
            println!("\nwritten to {}", r.dir.join(POLICY_FILE).display());
        }
    }
    Ok(())
}

//! `earlyexit prune-exits`: which exits pay for themselves (survey eq. 4 and eq. 5), and with
//! `--apply` a model without the others.

use std::path::PathBuf;

use anyhow::Context;
use earlyexit::infer::{ExitTable, Policy, SplitKind, prune_plan};
use earlyexit::model::io;
use earlyexit::report::prune_markdown;

use super::common::{PathArg, RunArg, parse_policy};

/// Arguments of `prune-exits`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    run: RunArg,
    #[command(flatten)]
    path: PathArg,
    /// Accuracy knob TH of the greedy keep-rule (survey eq. 5), in [0, 1]; lower drops more.
    #[arg(long, default_value_t = 1.0)]
    th: f64,
    /// Exit policy whose exit rates are measured (default: the run's calibrated policy).
    #[arg(long, value_parser = parse_policy)]
    policy: Option<Policy>,
    /// Write the pruned model (same weights minus the dropped heads).
    #[arg(long)]
    apply: bool,
    /// Folder for the pruned run (default: RUN-pruned).
    #[arg(long, requires = "apply")]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let r = a.run.open()?;
    let policy = r.policy(a.policy.as_ref())?;
    // Exit rates are measured on validation.
    let table = ExitTable::collect(&r.executor(a.path.path)?, &r.split(SplitKind::Val)?, 256)?;
    let plan = prune_plan(&r.model.arch, &table, &policy, a.th)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", prune_markdown(&plan));
    }
    if a.apply {
        let out = a.out.unwrap_or_else(|| {
            let mut s = r.dir.as_os_str().to_owned();
            s.push("-pruned");
            PathBuf::from(s)
        });
        let arch = r.model.arch.retain_exits(&plan.keep)?;
        let net = r.model.net.clone().retain_exits(&plan.keep)?;
        io::save_model(&out, &arch.description, &net).with_context(|| format!("writing {}", out.display()))?;
        let mut cfg = r.run.config.clone();
        cfg.model = arch.description.clone();
        io::write_atomic(&out.join(earlyexit::train::CONFIG_FILE), cfg.to_toml().as_bytes())?;
        // The pruned run is as far trained as the run it comes from.
        if let Some(p) = r.run.progress()? {
            earlyexit::train::progress::write_progress(&out, p)?;
        }
        if let Some(mut cal) = r.calibration()? {
            cal.policy = plan.pruned_policy.clone();
            cal.validation = plan.after.clone();
            earlyexit::run::write_calibration(&out, &cal)?;
        }
        if !a.json {
            println!("pruned model (exits {:?} kept) written to {}", plan.keep, out.display());
        }
    }
    Ok(())
}

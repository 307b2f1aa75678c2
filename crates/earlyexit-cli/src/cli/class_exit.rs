//! `earlyexit class-exit`: class-specific early exits on a frozen baseline (the class-specific
//! seed), over the library's [`earlyexit::classexit::design`].

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use earlyexit::classexit::{
    AlphaGrid, BRANCHES_FILE, Branch, ClassExitConfig, ClassExitReport, Kp, Splits, apply, design, load_branches,
    save_branches,
};
use earlyexit::infer::SplitKind;
use earlyexit::model::Placement;
use earlyexit::report::class_exit::{design_label, summary, write_class_exit_report};

use super::common::{Opened, PathArg, open};

/// Arguments of `class-exit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The baseline B: a run folder written by `earlyexit train` (its exits, if any, are ignored).
    #[arg(long, required_unless_present = "from_json")]
    baseline: Option<PathBuf>,
    /// Target class k: a label, a comma list (`1,5,7`) or `all`.
    #[arg(long = "class", value_name = "K", required_unless_present = "from_json")]
    class: Option<String>,
    /// Only write the tables and the plot again from a `class-exit.json` (into --out, default its
    /// folder; class names from --baseline if the file has none); nothing is trained or measured.
    #[arg(long, value_name = "FILE")]
    from_json: Option<PathBuf>,
    /// Connection type: `on` (dense branch over every earlier cut point), `off`, or `both`.
    #[arg(long, default_value = "both")]
    kp: String,
    /// Candidate places: `every` cut point, `sample:P` evenly spread ones, or `cuts:I,J,…`.
    #[arg(long, default_value = "every")]
    places: String,
    /// α range FROM:TO:STEP, inclusive.
    #[arg(long, default_value = "0.95:1.0:0.01")]
    alpha: String,
    /// Early exits per design: 1, or 2 to search a second exit after the first.
    #[arg(long, default_value_t = 1)]
    exits: usize,
    /// Stop a branch when its validation accuracy has not improved for this many epochs.
    #[arg(long, default_value_t = 10)]
    patience: usize,
    /// At most this many epochs per branch.
    #[arg(long, default_value_t = 100)]
    max_epochs: usize,
    /// Train the branches on the first N training samples only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Adam learning rate of the branches.
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Timed runs per measured time (the best is kept).
    #[arg(long, default_value_t = 30)]
    timing_reps: usize,
    /// Pooling grid of the branch: each feature map is averaged to G×G before the dense layer
    /// (1: global average pooling).
    #[arg(long, default_value_t = 1)]
    grid: usize,
    /// Which code times B and its prefixes (see `eval --path`); the branches run on Burn.
    #[command(flatten)]
    path: PathArg,
    /// Seed of the branches' shuffling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip the test split (no primed columns).
    #[arg(long)]
    no_test: bool,
    /// Output folder (default: BASELINE/class-exit).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a run folder at this path that deploys the design: the baseline with the
    /// chosen branches as exits and the class-specific policy (`eval`, `report`, `serve`, `tier`
    /// run it). With --from-json, the branches are read from the report's folder and --baseline
    /// must be the run the design was made on.
    #[arg(long, value_name = "RUN")]
    apply: Option<PathBuf>,
    /// With --apply: only these classes' designs (default: every class with a viable design).
    #[arg(long, value_name = "K,L,…", requires = "apply")]
    apply_class: Option<String>,
}

fn parse_classes(s: &str, n: usize) -> anyhow::Result<Vec<usize>> {
    if s.trim() == "all" {
        return Ok((0..n).collect());
    }
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .with_context(|| format!("--class: `{p}` is not a class label (expected K, K,L,… or all)"))
        })
        .collect()
}

fn parse_kp(s: &str) -> anyhow::Result<Vec<Kp>> {
    Ok(match s {
        "on" => vec![Kp::On],
        "off" => vec![Kp::Off],
        "both" => vec![Kp::Off, Kp::On],
        _ => bail!("--kp: `{s}` is not a connection type (expected on, off or both)"),
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    if let Some(json) = &a.from_json {
        let text = std::fs::read(json).with_context(|| format!("cannot read {}", json.display()))?;
        let mut report: ClassExitReport =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a class-exit report", json.display()))?;
        if report.class_names.is_none()
            && let Some(b) = &a.baseline
        {
            let run = earlyexit::run::Run::open(b)?;
            report.class_names = run.data()?.train_set.class_names().map(<[String]>::to_vec);
        }
        let folder = json.parent().map(PathBuf::from).unwrap_or_default();
        let out = a.out.clone().unwrap_or_else(|| folder.clone());
        print_and_write(&report, &out, started)?;
        if let Some(target) = &a.apply {
            let Some(b) = &a.baseline else {
                bail!("--apply with --from-json needs --baseline: the run the design was made on");
            };
            let path = folder.join(BRANCHES_FILE);
            if !path.exists() {
                bail!(
                    "{} has no trained branches ({} is missing): rerun `earlyexit class-exit --baseline …` to train them",
                    folder.display(),
                    path.display()
                );
            }
            let branches = load_branches(&path)?;
            let chosen = only(&report, a.apply_class.as_deref())?;
            write_applied(&open(b)?, &chosen, &branches, target)?;
        }
        return Ok(());
    }
    let baseline = a.baseline.clone().expect("required unless --from-json");
    if let Some(target) = a.apply.as_ref().filter(|t| t.exists()) {
        bail!(
            "--apply: {} already exists: give a new folder for the applied design",
            target.display()
        );
    }
    let r = open(&baseline)?;
    let n_classes = r.model.arch.description.classes;
    let mut cfg = ClassExitConfig::new(parse_classes(a.class.as_deref().unwrap_or("all"), n_classes)?);
    cfg.kp = parse_kp(&a.kp)?;
    cfg.places = a
        .places
        .parse::<Placement>()
        .map_err(|e| anyhow::anyhow!("--places: {e}"))?;
    cfg.alpha = a
        .alpha
        .parse::<AlphaGrid>()
        .map_err(|e| anyhow::anyhow!("--alpha: {e}"))?;
    cfg.exits = a.exits;
    cfg.train.patience = a.patience;
    cfg.train.max_epochs = a.max_epochs;
    cfg.train.lr = a.lr;
    cfg.train.seed = a.seed;
    cfg.train_limit = a.train_limit;
    cfg.timing_reps = a.timing_reps;
    cfg.grid = a.grid;
    cfg.path = a.path.path;
    // Bad options fail before the splits are read.
    cfg.validate(n_classes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let names: Option<Vec<String>> = r
        .run
        .data()
        .ok()
        .and_then(|d| d.train_set.class_names().map(<[String]>::to_vec));
    let train = r.split(SplitKind::Train)?;
    let val = r.split(SplitKind::Val)?;
    let test = if a.no_test {
        None
    } else {
        Some(r.split(SplitKind::Test)?)
    };
    let mut report = design(
        &r.model,
        Splits {
            train: &train,
            val: &val,
            test: test.as_ref().map(|t| t as &dyn earlyexit::infer::LabelledData),
        },
        &cfg,
        &r.device,
    )?;
    report.class_names = names;
    let out = a.out.unwrap_or_else(|| baseline.join("class-exit"));
    print_and_write(&report, &out, started)?;
    let path = out.join(BRANCHES_FILE);
    save_branches(&path, &report.branch_weights)?;
    println!("wrote {}", path.display());
    if let Some(target) = &a.apply {
        let chosen = only(&report, a.apply_class.as_deref())?;
        write_applied(&r, &chosen, &report.branch_weights, target)?;
    }
    Ok(())
}

/// The report with only the classes of `--apply-class` (all when not given).
fn only(report: &ClassExitReport, classes: Option<&str>) -> anyhow::Result<ClassExitReport> {
    let Some(list) = classes else {
        return Ok(report.clone());
    };
    let keep = parse_classes(list, report.num_classes)?;
    if let Some(k) = keep.iter().find(|&&k| !report.classes.iter().any(|c| c.k == k)) {
        bail!(
            "--apply-class: class {k} was not designed (the report has classes {:?})",
            report.classes.iter().map(|c| c.k).collect::<Vec<_>>()
        );
    }
    let mut r = report.clone();
    r.classes.retain(|c| keep.contains(&c.k));
    Ok(r)
}

/// Applies the report's designs to the baseline run and writes the deployable run folder.
fn write_applied(
    r: &Opened,
    report: &ClassExitReport,
    branches: &[Branch],
    target: &std::path::Path,
) -> anyhow::Result<()> {
    let applied = apply(&r.model, report, branches, &r.device)?;
    earlyexit::run::write_applied_run(&r.run, &applied, target)?;
    println!(
        "wrote {}: {} exit(s) after blocks {:?}, policy {}",
        target.display(),
        applied.design.exits.len(),
        applied.design.exits.iter().map(|e| e.cut).collect::<Vec<_>>(),
        applied.policy
    );
    println!(
        "next: earlyexit eval --run {} (measured gain beside the design's)",
        target.display()
    );
    Ok(())
}

fn print_and_write(report: &ClassExitReport, out: &std::path::Path, started: Instant) -> anyhow::Result<()> {
    let files =
        write_class_exit_report(out, report).with_context(|| format!("writing the report to {}", out.display()))?;
    for c in &report.classes {
        match (design_label(c), c.design_figures()) {
            (Some((kp, place, alpha)), Some((g, l, _))) => println!(
                "class {}: KP={kp} i={place} α={alpha} gain {g:.2}× loss {l:.3}×{}",
                c.k,
                c.test.as_ref().map_or(String::new(), |t| format!(
                    " | test gain {:.2}× loss {:.3}×",
                    t.gain, t.loss
                ))
            ),
            _ => println!("class {}: no viable design", c.k),
        }
    }
    if let Some(sm) = summary(report) {
        println!(
            "mean gain {:.2}×, largest loss {:.3}× (validation)",
            sm.mean_gain, sm.max_loss
        );
    }
    for f in files {
        println!("wrote {}", f.display());
    }
    println!("{:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

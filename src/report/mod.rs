//! Reports: evaluation, calibration, sweeps and exit pruning as plain text, Markdown and
//! plots. Plain data in, text and image files out; no tensors here.
//!
//! ```
//! use earlyexit::infer::{ExitColumn, ExitTable, SplitKind};
//! use earlyexit::report::{ReportInputs, write_report};
//! let col = |pred: Vec<usize>, s: Vec<f32>| ExitColumn {
//!     pred, maxprob: s.clone(), certainty: s, confidence: None, top_sigmoid: vec![] };
//! let table = ExitTable {
//!     split: SplitKind::Val,
//!     labels: vec![0, 1, 1, 0],
//!     exits: vec![col(vec![0, 1, 0, 1], vec![0.9, 0.8, 0.4, 0.3]), col(vec![0, 1, 1, 0], vec![1.0; 4])],
//!     exit_macs: vec![20, 105],
//!     backbone_macs: 100,
//! };
//! let dir = std::env::temp_dir().join(format!("earlyexit-doc-report-{}", std::process::id()));
//! let inputs = ReportInputs::simulated("demo", &table, &table, "maxprob:0.6".parse()?, None, None)?;
//! let files = write_report(&dir, &inputs)?;
//! assert!(files.iter().any(|f| f.ends_with("report.md")));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod class_exit;
pub mod plot;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::infer::{
    Calibration, CurvePoint, EvalReport, ExitTable, Policy, PrunePlan, ScoreKind, Thresholds, budget_curve, sweep,
};
use crate::model::io::write_atomic;

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("–".into(), pct)
}

/// Exit names `exit 0`, …, `final`.
pub fn exit_names(n_outputs: usize) -> Vec<String> {
    (0..n_outputs)
        .map(|k| {
            if k + 1 == n_outputs {
                "final".to_string()
            } else {
                format!("exit {k}")
            }
        })
        .collect()
}

/// A plain-text table of an evaluation.
pub fn eval_text(r: &EvalReport) -> String {
    let mut s = String::new();
    let names = exit_names(r.exits.len());
    let _ = writeln!(s, "policy {} on {} ({} samples)", r.policy, r.split, r.samples);
    let _ = writeln!(
        s,
        "accuracy {}%  (full network {}%)   relative cost {:.4}   predicted speed-up {:.2}x",
        pct(r.accuracy),
        pct(r.full_accuracy),
        r.relative_cost,
        r.predicted_speedup
    );
    for t in &r.timing {
        let _ = writeln!(
            s,
            "batch {:>4}: {:>9.1} µs/sample with exits, {:>9.1} µs/sample without  → measured speed-up {:.2}x",
            t.batch, t.policy_us, t.plain_us, t.speedup
        );
    }
    if !r.implementation.is_empty() {
        let _ = writeln!(s, "timed on: {}", r.implementation);
    }
    let _ = writeln!(
        s,
        "ECE (15 bins) {:.4}   over-thinking {} ({} of the answers)",
        r.ece, r.overthinking, r.overthinking_answered
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<8} {:>10} {:>8} {:>14} {:>16} {:>14}",
        "exit", "coverage%", "count", "accuracy%", "acc. if all%", "rel. cost"
    );
    for (e, name) in r.exits.iter().zip(&names) {
        let _ = writeln!(
            s,
            "{:<8} {:>10} {:>8} {:>14} {:>16} {:>14.4}",
            name,
            pct(e.coverage),
            e.count,
            opt_pct(e.accuracy),
            pct(e.accuracy_all),
            e.relative_cost
        );
    }
    if let Some(c) = &r.class_specific {
        let _ = write!(s, "\n{}", class_specific_markdown(c));
    }
    s
}

/// The class-specific section of an evaluation (under a `class:` policy): per target class and
/// for the rest, accuracy, precision, the share leaving early and the time per sample at batch 1
/// against B's, with the design's predicted gain and loss where the run records its design.
pub fn class_specific_markdown(c: &crate::infer::ClassSpecificEval) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| samples | n | accuracy % | precision % | leave early % | wrong early | µs/sample (B) | measured gain | predicted gain | measured / predicted | loss t'/t |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("–".to_string(), f);
    for k in &c.classes {
        let _ = writeln!(
            s,
            "| class {} | {} | {} | {} | {} | {} | {:.1} ({:.1}) | {:.2}× | {} | {} | {} |",
            k.k,
            k.samples,
            pct(k.accuracy),
            opt_pct(k.precision),
            pct(k.early_share),
            k.early_wrong,
            k.policy_us,
            k.plain_us,
            k.gain,
            opt(k.predicted_gain, &|g| format!("{g:.2}×")),
            opt(k.predicted_gain, &|g| format!("{:.3}", k.gain / g)),
            opt(k.predicted_loss, &|l| format!("{l:.3}×")),
        );
    }
    let r = &c.rest;
    let _ = writeln!(
        s,
        "| the rest | {} | {} | {} | {} | {} | {:.1} ({:.1}) | {:.2}× | – | – | measured {:.3}× |",
        r.samples,
        pct(r.accuracy),
        opt_pct(r.precision),
        pct(r.early_share),
        (r.early_share * r.samples as f64).round() as usize,
        r.policy_us,
        r.plain_us,
        1.0 / r.slowdown,
        r.slowdown,
    );
    s
}

/// An evaluation as Markdown.
pub fn eval_markdown(r: &EvalReport) -> String {
    let mut s = String::new();
    let names = exit_names(r.exits.len());
    let _ = writeln!(
        s,
        "Policy `{}` on the {} split ({} samples).\n",
        r.policy, r.split, r.samples
    );
    let _ = writeln!(s, "| metric | value |\n|---|---|");
    let _ = writeln!(s, "| accuracy | {} % |", pct(r.accuracy));
    let _ = writeln!(s, "| full network accuracy | {} % |", pct(r.full_accuracy));
    let _ = writeln!(
        s,
        "| relative cost (MACs of the exits taken / plain network) | {:.4} |",
        r.relative_cost
    );
    let _ = writeln!(
        s,
        "| predicted speed-up (plain MACs / mean MACs) | {:.2}× |",
        r.predicted_speedup
    );
    for t in &r.timing {
        let _ = writeln!(
            s,
            "| measured speed-up at batch {} | {:.2}× ({:.1} vs {:.1} µs/sample) |",
            t.batch, t.speedup, t.policy_us, t.plain_us
        );
    }
    if !r.implementation.is_empty() {
        let _ = writeln!(s, "| timed on | {} |", r.implementation);
    }
    let _ = writeln!(s, "| ECE (15 bins) | {:.4} |", r.ece);
    let _ = writeln!(
        s,
        "| over-thinking (an earlier exit right, the final wrong) | {} |",
        r.overthinking
    );
    let _ = writeln!(
        s,
        "\n| exit | coverage % | accuracy % | accuracy if all leave here % | relative cost |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (e, name) in r.exits.iter().zip(&names) {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {:.4} |",
            pct(e.coverage),
            opt_pct(e.accuracy),
            pct(e.accuracy_all),
            e.relative_cost
        );
    }
    if let Some(c) = &r.class_specific {
        let _ = write!(s, "\nClass-specific exits (batch 1):\n\n{}", class_specific_markdown(c));
    }
    s
}

/// A calibration result as Markdown.
pub fn calibration_markdown(c: &Calibration) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Goal: {}; thresholds on `{}` scores, {}; fitted on the {} split ({} samples).\n",
        c.goal,
        c.kind,
        if c.per_exit { "one per exit" } else { "one shared" },
        c.split,
        c.samples
    );
    let _ = writeln!(s, "Chosen policy: `{}`\n", c.policy);
    let _ = writeln!(s, "| on validation | accuracy % | relative cost |\n|---|---:|---:|");
    let _ = writeln!(s, "| full network | {} | 1.0000 |", pct(c.full_accuracy));
    let _ = writeln!(
        s,
        "| calibrated | {} | {:.4} |",
        pct(c.validation.accuracy),
        c.validation.relative_cost
    );
    let cov: Vec<String> = c.validation.coverage.iter().map(|x| pct(*x)).collect();
    let _ = writeln!(s, "\nExit shares on validation (%): {}", cov.join(" / "));
    s
}

/// A curve (sweep or budget protocol) as a Markdown table.
pub fn curve_markdown(points: &[CurvePoint], param: &str) -> String {
    let mut s = String::new();
    let n_out = points.first().map_or(0, |p| p.outcome.coverage.len());
    let names = exit_names(n_out);
    let _ = write!(s, "| {param} | accuracy % | relative cost |");
    for n in &names {
        let _ = write!(s, " {n} % |");
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---:|---:|---:|");
    for _ in &names {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for p in points {
        let _ = write!(
            s,
            "| {:.3} | {} | {:.4} |",
            p.param,
            pct(p.outcome.accuracy),
            p.outcome.relative_cost
        );
        for c in &p.outcome.coverage {
            let _ = write!(s, " {} |", pct(*c));
        }
        let _ = writeln!(s);
    }
    s
}

/// A pruning plan as Markdown.
pub fn prune_markdown(p: &PrunePlan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Exit rates measured with `{}`; TH = {}. `I` = share of samples reaching the exit, costs relative to the plain network.\n",
        p.policy, p.th
    );
    let _ = writeln!(
        s,
        "| exit | cut | I_i | I_i+1 | cm_i | γ_i | γ_i+1 | γ_f_i | γ_f_i+1 | γ_c_i | eq. 4 | net saving | eq. 5 value | eq. 5 | verdict |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"
    );
    for c in &p.checks {
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.5} | {} | {:+.4} | {:.4} | {} | {} |",
            c.exit,
            c.cut,
            c.reach,
            c.reach_next,
            c.cm,
            c.gamma,
            c.gamma_next,
            c.gamma_f,
            c.gamma_f_next,
            c.gamma_c,
            if c.eq4 { "pays" } else { "does not pay" },
            c.net_saving,
            c.eq5_value,
            if c.eq5 { "keep" } else { "drop" },
            if c.kept { "**keep**" } else { "**drop**" }
        );
    }
    let _ = writeln!(
        s,
        "\nKept exits: {:?}; policy for the pruned network: `{}`.\n",
        p.keep, p.pruned_policy
    );
    let _ = writeln!(
        s,
        "Verdict: kept iff eq. 4 and eq. 5 hold, checked greedily from the first exit (dropped exits' samples go on). \
         *Net saving* is our cost model's direct figure, (γ_i+1 − γ_i)(I_i − I_i+1) − γ_c_i·I_i: where it is positive \
         but eq. 4 fails, the exit saves MACs yet does not meet the survey's stricter condition.\n"
    );
    let _ = writeln!(s, "| | accuracy % | relative cost |\n|---|---:|---:|");
    let _ = writeln!(
        s,
        "| all exits | {} | {:.4} |",
        pct(p.before.accuracy),
        p.before.relative_cost
    );
    let _ = writeln!(
        s,
        "| kept exits | {} | {:.4} |",
        pct(p.after.accuracy),
        p.after.relative_cost
    );
    s
}

/// Panels of training curves from a `metrics.jsonl` log: one JSON object per line; the x axis
/// is `epoch` (or `step`); numeric fields are grouped into loss, accuracy and cost panels.
pub fn metrics_panels(jsonl: &str) -> Vec<plot::Panel> {
    let mut groups: Vec<(&str, &str, Vec<plot::Series>)> = vec![
        ("Training loss", "loss (nats)", vec![]),
        ("Accuracy", "accuracy (%)", vec![]),
        ("Relative cost", "relative cost (MACs / plain network)", vec![]),
    ];
    let mut x_name = "epoch";
    for (line_no, line) in jsonl.lines().enumerate() {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let x = match (
            obj.get("epoch").and_then(|v| v.as_f64()),
            obj.get("step").and_then(|v| v.as_f64()),
        ) {
            (Some(e), _) => e,
            (None, Some(s)) => {
                x_name = "step";
                s
            }
            _ => line_no as f64,
        };
        let exits = obj
            .get("val_exit_accuracy")
            .and_then(|v| v.as_array())
            .map_or(0, |a| a.len());
        let mut flat = Vec::new();
        flatten("", &serde_json::Value::Object(obj.clone()), &mut flat);
        for (key, v) in flat {
            if key == "epoch" || key == "step" || key.ends_with("lr") || key.contains("time") || key.contains("seconds")
            {
                continue;
            }
            let g = if key.contains("loss") {
                0
            } else if key.contains("acc") {
                1
            } else if key.contains("cost") {
                2
            } else {
                continue;
            };
            let y = if g == 1 && v <= 1.0 { 100.0 * v } else { v };
            let key = match (key.as_str(), exit_index(&key)) {
                // The trainer's per-exit validation accuracies: the last one is the final classifier.
                (_, Some(i)) if i + 1 == exits => "val accuracy, final classifier".to_string(),
                (_, Some(i)) => format!("val accuracy, exit {i}"),
                ("val_accuracy", None) => "val accuracy (eval policy)".to_string(),
                _ => pretty_key(&key),
            };
            let series = &mut groups[g].2;
            match series.iter_mut().find(|s| s.label == key) {
                Some(s) => s.points.push((x, y)),
                None => series.push(plot::Series {
                    label: key.clone(),
                    points: vec![(x, y)],
                }),
            }
        }
    }
    groups
        .into_iter()
        .filter(|g| !g.2.is_empty())
        .map(|(title, y, series)| plot::Panel {
            title: title.into(),
            x_label: x_name.into(),
            y_label: y.into(),
            series: series.into_iter().take(plot::LINE_COLORS.len()).collect(),
        })
        .collect()
}

/// `i` of a `val_exit_accuracy[i]` key.
fn exit_index(key: &str) -> Option<usize> {
    key.strip_prefix("val_exit_accuracy[")?.strip_suffix(']')?.parse().ok()
}

/// `val_accuracy_exit[1]` → `val accuracy exit 1`.
fn pretty_key(key: &str) -> String {
    key.replace(['_', '.'], " ").replace('[', " ").replace(']', "")
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Array(a) if a.len() <= 8 => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        _ => {}
    }
}

/// Everything a run report shows.
#[derive(Clone, Debug)]
pub struct ReportInputs {
    /// Run name.
    pub name: String,
    /// The evaluation on the reported split (usually test).
    pub eval: EvalReport,
    /// The calibration, when one was made.
    pub calibration: Option<Calibration>,
    /// The score the threshold sweep and histograms use.
    pub kind: ScoreKind,
    /// Shared-threshold sweep on the reported split.
    pub sweep: Vec<CurvePoint>,
    /// MSDNet budget curve: thresholds fitted on validation, outcome on the reported split.
    pub budget: Vec<CurvePoint>,
    /// Per early exit: scores and correctness on the reported split.
    pub histograms: Vec<plot::ScoreHistogram>,
    /// The training log (`metrics.jsonl`), when there is one.
    pub metrics: Option<String>,
    /// Extra Markdown appended at the end (model summary, pruning).
    pub extra: Option<String>,
    /// Extra points on the trade-off plot (e.g. a network trained without exits).
    pub marks: Vec<plot::Mark>,
    /// Samples answered at each exit ([`gallery_rows`]), shown as a grid when not empty.
    pub gallery: Vec<plot::GalleryRow>,
}

impl ReportInputs {
    /// Builds the curves and histograms from a validation table and a table of the reported
    /// split; `eval` holds the measured evaluation (or, when `None`, one simulated on `table`
    /// without timing).
    pub fn simulated(
        name: &str,
        val: &ExitTable,
        table: &ExitTable,
        policy: Policy,
        calibration: Option<Calibration>,
        eval: Option<EvalReport>,
    ) -> Result<Self> {
        let kind = ScoreKind::of(&policy).unwrap_or(ScoreKind::MaxProb);
        let kind = if table.scores(kind).is_ok() {
            kind
        } else {
            ScoreKind::MaxProb
        };
        let eval = match eval {
            Some(e) => e,
            None => simulated_eval(table, &policy)?,
        };
        let sweep = sweep(table, kind, 50)?;
        let budget = budget_curve(val, kind)?
            .into_iter()
            .map(|p| {
                Ok(CurvePoint {
                    outcome: table.outcome(&p.policy)?,
                    ..p
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let scores = table.scores(kind)?;
        let histograms = scores
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let (mut correct, mut wrong) = (Vec::new(), Vec::new());
                for (i, &x) in s.iter().enumerate() {
                    if table.correct(k, i) {
                        correct.push(x)
                    } else {
                        wrong.push(x)
                    }
                }
                let threshold = match (&policy, kind) {
                    (Policy::MaxProb(_), ScoreKind::MaxProb)
                    | (Policy::Confidence(_), ScoreKind::Confidence)
                    | (Policy::Entropy(_), ScoreKind::Entropy) => {
                        policy.cutoff(k).filter(|c| c.is_finite()).map(f64::from)
                    }
                    _ => None,
                };
                plot::ScoreHistogram {
                    title: format!(
                        "exit {k}: accuracy if all leave {:.1}%",
                        100.0 * table.exit_accuracy_all(k)
                    ),
                    correct,
                    wrong,
                    threshold,
                }
            })
            .collect();
        Ok(Self {
            name: name.into(),
            eval,
            calibration,
            kind,
            sweep,
            budget,
            histograms,
            metrics: None,
            extra: None,
            marks: Vec::new(),
            gallery: Vec::new(),
        })
    }
}

/// The first `per_exit` samples of `table`'s split that leave at each exit under `policy` (the
/// final classifier last), with their labels, answers and scores, for [`plot::exit_gallery`].
/// `pixels(indices)` reads those samples (`[C, H, W]` and their values, e.g.
/// [`crate::infer::host_samples`]): the report holds no data of its own. A policy without
/// per-sample exits (`ensemble`) has no gallery.
pub fn gallery_rows(
    table: &ExitTable,
    policy: &Policy,
    per_exit: usize,
    pixels: impl Fn(&[usize]) -> Result<([usize; 3], Vec<f32>)>,
) -> Result<Vec<plot::GalleryRow>> {
    if matches!(policy, Policy::Ensemble) || per_exit == 0 {
        return Ok(Vec::new());
    }
    let exits = table.simulate(policy)?;
    let kind = ScoreKind::of(policy).unwrap_or(ScoreKind::MaxProb);
    let names = exit_names(table.exits.len());
    let early_scores = table.scores(kind)?;
    let mut rows = Vec::new();
    for (k, name) in names.into_iter().enumerate() {
        let chosen: Vec<usize> = (0..table.len()).filter(|&i| exits[i] == k).take(per_exit).collect();
        if chosen.is_empty() {
            continue;
        }
        let (shape, values) = pixels(&chosen)?;
        let per = shape.iter().product::<usize>();
        let scores = if k < table.num_exits() {
            early_scores[k]
        } else {
            &table.exits[k].maxprob[..]
        };
        let samples = chosen
            .iter()
            .enumerate()
            .map(|(j, &i)| plot::GallerySample {
                shape,
                pixels: values[j * per..(j + 1) * per].to_vec(),
                label: table.labels[i],
                pred: table.exits[k].pred[i],
                score: scores[i],
            })
            .collect();
        rows.push(plot::GalleryRow { title: name, samples });
    }
    Ok(rows)
}

/// An evaluation computed on a table alone (no timing: the speed-ups are `NaN`).
pub fn simulated_eval(table: &ExitTable, policy: &Policy) -> Result<EvalReport> {
    let exits = table.simulate(policy)?;
    let n = table.len();
    let mut answers = crate::infer::Answers {
        classes: 1,
        class: Vec::with_capacity(n),
        probs: Vec::with_capacity(n),
        exit: exits.clone(),
        confidence: Vec::with_capacity(n),
        macs: Vec::with_capacity(n),
    };
    for (i, &e) in exits.iter().enumerate() {
        answers.class.push(table.exits[e].pred[i]);
        // Only the top probability is known on the host: enough for ECE.
        answers.probs.push(table.exits[e].maxprob[i]);
        answers.confidence.push(table.exits[e].maxprob[i]);
        answers.macs.push(table.exit_macs[e]);
    }
    Ok(crate::infer::eval::report_from(&answers, &table.labels, table, policy))
}

fn score_label(kind: ScoreKind) -> &'static str {
    match kind {
        ScoreKind::MaxProb => "largest softmax probability",
        ScoreKind::Entropy => "certainty 1 − H/ln K",
        ScoreKind::Confidence => "learned confidence (sigmoid)",
    }
}

/// Writes `report.md` and the plots (PNG and SVG) into `dir`; returns every file written.
pub fn write_report(dir: &Path, r: &ReportInputs) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    let mut md = String::new();
    let _ = writeln!(md, "# Run `{}`\n", r.name);

    // Trade-off plot.
    let sweep_series = plot::Series {
        label: format!("one shared {} threshold, swept 0–1", r.kind),
        points: r
            .sweep
            .iter()
            .map(|p| (p.outcome.relative_cost, 100.0 * p.outcome.accuracy))
            .collect(),
    };
    let budget_series = plot::Series {
        label: "MSDNet budget protocol (p = 0.05…1.95, fitted on val)".into(),
        points: r
            .budget
            .iter()
            .map(|p| (p.outcome.relative_cost, 100.0 * p.outcome.accuracy))
            .collect(),
    };
    let mut marks = vec![
        plot::Mark {
            label: format!("policy {} (calibrated)", short(&r.eval.policy)),
            x: r.eval.relative_cost,
            y: 100.0 * r.eval.accuracy,
        },
        plot::Mark {
            label: "same weights without exits (final classifier)".into(),
            x: 1.0,
            y: 100.0 * r.eval.full_accuracy,
        },
    ];
    marks.extend(r.marks.iter().cloned());
    files.extend(plot::tradeoff(
        &dir.join("tradeoff"),
        &format!(
            "{}: accuracy vs cost on {} ({} samples)",
            r.name, r.eval.split, r.eval.samples
        ),
        &[sweep_series, budget_series],
        &marks,
    )?);
    let bars: Vec<plot::ExitBar> = r
        .eval
        .exits
        .iter()
        .zip(exit_names(r.eval.exits.len()))
        .map(|(e, name)| plot::ExitBar {
            label: format!("{name} (cost {:.2})", e.relative_cost),
            share: 100.0 * e.coverage,
            accuracy: e.accuracy.map(|a| 100.0 * a),
        })
        .collect();
    files.extend(plot::exit_distribution(
        &dir.join("exits"),
        &format!("{}: where samples leave, policy {}", r.name, short(&r.eval.policy)),
        &bars,
    )?);
    if !r.histograms.is_empty() {
        files.extend(plot::score_histograms(
            &dir.join("confidence"),
            &format!(
                "{}: exit scores of correct and wrong answers ({})",
                r.name, r.eval.split
            ),
            score_label(r.kind),
            &r.histograms,
        )?);
    }
    let panels = r.metrics.as_deref().map(metrics_panels).unwrap_or_default();
    if !panels.is_empty() {
        files.extend(plot::panels(&dir.join("training"), &panels)?);
    }

    if !r.gallery.is_empty() {
        files.extend(plot::exit_gallery(
            &dir.join("gallery"),
            &format!("{}: samples answered at each exit ({})", r.name, r.eval.split),
            &r.gallery,
        )?);
    }

    let _ = writeln!(md, "## Evaluation\n\n{}", eval_markdown(&r.eval));
    if let Some(c) = &r.calibration {
        let _ = writeln!(md, "## Calibration\n\n{}", calibration_markdown(c));
    }
    let _ = writeln!(
        md,
        "## Accuracy against cost\n\n![accuracy vs relative cost](tradeoff.png)\n\n![exit distribution](exits.png)\n"
    );
    if !r.histograms.is_empty() {
        let _ = writeln!(md, "![exit scores](confidence.png)\n");
    }
    if !panels.is_empty() {
        let _ = writeln!(md, "![training curves](training.png)\n");
    }
    if !r.gallery.is_empty() {
        let _ = writeln!(
            md,
            "## Samples answered at each exit\n\nThe first samples of the split that leave at each exit under the policy; under each, `label→answer score` (red: wrong).\n\n![samples per exit](gallery.png)\n"
        );
    }
    let every = (r.sweep.len() / 10).max(1);
    let sampled: Vec<CurvePoint> = r.sweep.iter().step_by(every).cloned().collect();
    let _ = writeln!(
        md,
        "### Shared-threshold sweep ({} on {})\n\n{}",
        r.kind,
        r.eval.split,
        curve_markdown(&sampled, "threshold")
    );
    let budget: Vec<CurvePoint> = r.budget.iter().step_by(4).cloned().collect();
    let _ = writeln!(
        md,
        "### MSDNet budget protocol (thresholds fitted on val, measured on {})\n\n{}",
        r.eval.split,
        curve_markdown(&budget, "p")
    );
    if let Some(extra) = &r.extra {
        let _ = writeln!(md, "{extra}");
    }
    let path = dir.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    files.push(path);
    Ok(files)
}

/// A policy's text, shortened for legends.
fn short(p: &Policy) -> String {
    let t = |t: &Thresholds| t.to_text(Some(3));
    match p {
        Policy::MaxProb(x) => format!("maxprob:{}", t(x)),
        Policy::Entropy(x) => format!("entropy:{}", t(x)),
        Policy::Confidence(x) => format!("confidence:{}", t(x)),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::metrics_panels;

    /// The gallery shows, per exit, the first samples the policy sends there, with the exit's
    /// answer and score, and the report draws it.
    #[test]
    fn the_gallery_shows_the_first_samples_of_each_exit_with_their_answers() {
        use super::*;
        use crate::infer::{ExitColumn, SplitKind};
        let col = |pred: Vec<usize>, s: Vec<f32>| ExitColumn {
            pred,
            maxprob: s.clone(),
            certainty: s,
            confidence: None,
            top_sigmoid: vec![],
        };
        let table = ExitTable {
            split: SplitKind::Test,
            labels: vec![0, 1, 1, 0, 1],
            exits: vec![
                col(vec![0, 1, 0, 1, 1], vec![0.9, 0.8, 0.4, 0.3, 0.95]),
                col(vec![0, 1, 1, 0, 0], vec![1.0, 0.9, 0.7, 0.6, 0.5]),
            ],
            exit_macs: vec![20, 105],
            backbone_macs: 100,
        };
        let policy: Policy = "maxprob:0.6".parse().unwrap();
        // Sample i is a 2×3 image of value i.
        let asked = std::cell::RefCell::new(Vec::new());
        let pixels = |idx: &[usize]| {
            asked.borrow_mut().push(idx.to_vec());
            Ok(([1, 2, 3], idx.iter().flat_map(|&i| vec![i as f32; 6]).collect()))
        };
        let rows = gallery_rows(&table, &policy, 2, pixels).unwrap();
        assert_eq!(*asked.borrow(), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(
            rows.iter().map(|r| r.title.as_str()).collect::<Vec<_>>(),
            ["exit 0", "final"]
        );
        let s = &rows[1].samples[0];
        assert_eq!((s.label, s.pred, s.score, s.pixels[0]), (1, 1, 0.7, 2.0));
        assert_eq!((rows[0].samples[1].pred, rows[0].samples[1].score), (1, 0.8));
        assert!(
            gallery_rows(&table, &Policy::Ensemble, 2, |_| unreachable!())
                .unwrap()
                .is_empty()
        );

        let dir = std::env::temp_dir().join(format!("earlyexit-gallery-{}", std::process::id()));
        let val = ExitTable {
            split: SplitKind::Val,
            ..table.clone()
        };
        let mut inputs = ReportInputs::simulated("g", &val, &table, policy, None, None).unwrap();
        inputs.gallery = rows;
        let files = write_report(&dir, &inputs).unwrap();
        let png = files.iter().find(|f| f.ends_with("gallery.png")).expect("gallery.png");
        let img = image::open(png).unwrap();
        // Two rows of two 96×96 cells (3 px images scaled by 32) beside the row titles.
        assert!(
            img.width() >= 110 + 2 * 96 && img.height() >= 44 + 2 * 96,
            "{}x{}",
            img.width(),
            img.height()
        );
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("![samples per exit](gallery.png)"), "{md}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn training_curves_keep_and_name_every_exit() {
        let line = r#"{"epoch":1,"train_loss":0.9,"train_accuracy":0.93,"val_loss":0.8,"val_accuracy":0.92,"val_exit_accuracy":[0.87,0.88,0.88,0.91,0.92,0.92,0.93],"val_expected_cost":0.33,"lr":0.01,"seconds":331.0}"#;
        let jsonl = format!("{line}\n{}\n", line.replace("\"epoch\":1", "\"epoch\":2"));
        let panels = metrics_panels(&jsonl);
        let acc = panels
            .iter()
            .find(|p| p.title == "Accuracy")
            .expect("an accuracy panel");
        let labels: Vec<&str> = acc.series.iter().map(|s| s.label.as_str()).collect();
        // Seven exits, the training and the policy accuracy: none dropped.
        assert_eq!(labels.len(), 9, "{labels:?}");
        assert!(labels.contains(&"val accuracy, exit 0"), "{labels:?}");
        assert!(labels.contains(&"val accuracy, exit 5"), "{labels:?}");
        assert!(labels.contains(&"val accuracy, final classifier"), "{labels:?}");
        assert!(labels.contains(&"val accuracy (eval policy)"), "{labels:?}");
        assert!(acc.series.iter().all(|s| s.points.len() == 2 && s.points[1].0 == 2.0));
        // Accuracies are plotted in percent; lr and seconds are not plotted.
        assert!(acc.series.iter().all(|s| s.points[0].1 > 1.0));
        assert!(panels.iter().all(|p| p.series.iter().all(|s| !s.label.contains("lr"))));
    }
}

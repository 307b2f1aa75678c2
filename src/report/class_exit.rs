//! The class-specific method's report: Markdown tables in the layout of the seed's Tables 2–4,
//! the measured times, and the gain–loss plot with the Pareto front.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::plot::{GainLossPanel, GainLossPoint, gain_loss_panels};
use crate::classexit::{ClassExitReport, ClassResult, Kp};
use crate::error::Result;
use crate::model::io::write_atomic;

fn f3(x: f64) -> String {
    format!("{x:.3}")
}

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

fn ms(s: f64) -> String {
    format!("{:.3}", 1e3 * s)
}

fn class_label(k: usize, names: Option<&[String]>) -> String {
    match names.and_then(|n| n.get(k)) {
        Some(n) => format!("{{{k}}} {n}"),
        None => format!("{{{k}}}"),
    }
}

fn holds(h: [bool; 3]) -> String {
    h.iter()
        .map(|&b| if b { "✓" } else { "✗" })
        .collect::<Vec<_>>()
        .join("")
}

/// Mean gain and largest loss of the kept designs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DesignSummary {
    /// Classes with a viable design.
    pub designs: usize,
    /// Mean gain on validation.
    pub mean_gain: f64,
    /// Largest loss on validation.
    pub max_loss: f64,
    /// Mean gain and largest loss on the test split, if evaluated.
    pub test: Option<(f64, f64)>,
}

/// [`DesignSummary`] over the classes with a design; `None` when no class has one.
pub fn summary(r: &ClassExitReport) -> Option<DesignSummary> {
    let figures: Vec<(f64, f64)> = r
        .classes
        .iter()
        .filter_map(|c| c.design_figures().map(|(g, l, _)| (g, l)))
        .collect();
    if figures.is_empty() {
        return None;
    }
    let n = figures.len() as f64;
    let tests: Vec<_> = r.classes.iter().filter_map(|c| c.test.as_ref()).collect();
    Some(DesignSummary {
        designs: figures.len(),
        mean_gain: figures.iter().map(|f| f.0).sum::<f64>() / n,
        max_loss: figures.iter().map(|f| f.1).fold(0.0, f64::max),
        test: (!tests.is_empty()).then(|| {
            (
                tests.iter().map(|t| t.gain).sum::<f64>() / tests.len() as f64,
                tests.iter().map(|t| t.loss).fold(0.0, f64::max),
            )
        }),
    })
}

/// `KP`, `i` and `α` of a class's design (`first/second` for two exits).
pub fn design_label(c: &ClassResult) -> Option<(String, String, String)> {
    let (d, s) = c.design()?;
    Some(match s {
        Some(s) => (
            format!("{}/{}", d.kp, s.kp),
            format!("{}+{}", d.cut, s.cut),
            format!("{:.2}/{:.2}", d.alpha, s.alpha),
        ),
        None => (d.kp.to_string(), d.cut.to_string(), format!("{:.2}", d.alpha)),
    })
}

/// The report as Markdown (class names from [`ClassExitReport::class_names`]).
pub fn class_exit_markdown(r: &ClassExitReport) -> String {
    let mut s = String::new();
    let c = &r.config;
    let _ = writeln!(s, "# Class-specific early exits on {} ({})\n", r.backbone, r.input);
    let _ = writeln!(
        s,
        "Baseline B frozen; B's accuracy {:.2}% (validation), {:.2}% (test). Branches: ReLU → average pooling to {g}×{g} per feature map → one dense layer with a sigmoid per target class, trained on {} training samples{}, stopped when the validation accuracy has not improved for {} epochs (at most {}); α tuned on {} validation samples over {}; places `{}`; KP {}; {} exit(s). Test: {} samples.\n",
        100.0 * r.baseline_accuracy[0],
        100.0 * r.baseline_accuracy[1],
        r.samples[0],
        c.train_limit.map_or(String::new(), |_| " (a subset)".into()),
        c.train.patience,
        c.train.max_epochs,
        r.samples[1],
        c.alpha,
        c.places,
        c.kp.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(" and "),
        c.exits,
        r.samples[2],
        g = c.grid,
    );
    let _ = writeln!(
        s,
        "**gain** = `t / t''` (eq. 3 with the share `tp/|k|` of the samples of k that leave early: how many times faster a sample of k is on average); **loss** = `t' / t` (eq. 1: how many times slower a sample that does not leave is). Accuracies: eq. 5 (`B_V−k`), eq. 6 (`EE_i`, the branch's binary accuracy over V), eq. 7 (`EE_iG`, the design's accuracy on k); β, η, ζ are B's accuracy on V−k, on k and its precision on k (validation). A design is viable when eq. 5–7 hold and `t − t'' > 0`; the pick maximises gain/loss on the Pareto front (§3.4).\n"
    );
    if let Some(DesignSummary {
        designs,
        mean_gain: g,
        max_loss: l,
        test,
    }) = summary(r)
    {
        let _ = write!(
            s,
            "**Summary:** {designs}/{} classes have a viable design; mean gain {g:.2}×, largest loss {l:.3}× (validation)",
            r.classes.len()
        );
        if let Some((tg, tl)) = test {
            let _ = write!(s, "; mean gain' {tg:.2}×, largest loss' {tl:.3}× (test)");
        }
        let _ = writeln!(s, ".\n");
    }

    times_table(&mut s, r);
    table2_selection(&mut s, r);
    table3_classes(&mut s, r);
    overall_accuracy(&mut s, r);
    second_exits(&mut s, r);
    table4_false_negatives(&mut s, r);
    branch_training(&mut s, r);
    let _ = writeln!(
        s,
        "\nPhases: B's passes {:.0} s, branch training {:.0} s, timing {:.0} s, search {:.1} s.",
        r.seconds.features, r.seconds.training, r.seconds.timing, r.seconds.search
    );
    s
}

/// Measured times: B end to end, and up to every candidate place i (δ_i).
fn times_table(s: &mut String, r: &ClassExitReport) {
    let c = &r.config;
    let _ = writeln!(
        s,
        "## Measured times (batch 1, best of {} runs)\n\n`t` = {} ms for B end to end. B and its prefixes ran on {}; {}.\n",
        r.times.reps,
        ms(r.times.t),
        if r.times.implementation.is_empty() {
            "the Burn module"
        } else {
            &r.times.implementation
        },
        match (c.grid, r.times.implementation.is_empty()) {
            (_, true) => "the branches on the Burn module",
            (1, false) => "the branches as the exit heads `--apply` deploys (`relupool`, `dense`), on the same code",
            _ =>
                "KP=Off branches as the `relupool` heads `--apply` deploys, on the same code; KP=On branches on the Burn module",
        }
    );
    let mut head = "| i | block | MACs up to i | δ_i (ms) | δ_i / t |".to_string();
    let mut rule = "|---|---|---|---|---|".to_string();
    for kp in &c.kp {
        let _ = write!(head, " e_i KP={kp} (ms) |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    for p in &r.places {
        let d = r.times.delta[p.cut];
        let _ = write!(
            s,
            "| {} | {} | {:.1}% | {} | {:.3} |",
            p.cut,
            p.block,
            100.0 * p.mac_share,
            ms(d),
            d / r.times.t
        );
        for &kp in &c.kp {
            let _ = write!(s, " {} |", r.times.e(p.cut, kp).map_or("–".into(), ms));
        }
        let _ = writeln!(s);
    }
}

/// Table 2's layout: the best viable design per connection type (validation).
fn table2_selection(s: &mut String, r: &ClassExitReport) {
    let (c, names) = (&r.config, r.class_names.as_deref());
    let _ = writeln!(
        s,
        "\n## Table 2 layout: best viable design per connection type (validation)\n\n| KP | k | i | α | β | η | gain (×) | loss (×) | B_V−k | EE_i | EE_iG |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (j, &kp) in c.kp.iter().enumerate() {
        for cr in &r.classes {
            match cr.best_per_kp[j] {
                Some(i) => {
                    let d = &cr.candidates[i];
                    let a = &d.assessment;
                    let _ = writeln!(
                        s,
                        "| {kp} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        class_label(cr.k, names),
                        d.cut,
                        f2(d.alpha),
                        f3(cr.baseline.beta),
                        f3(cr.baseline.eta),
                        f2(d.gain),
                        f3(d.loss),
                        f3(a.acc_b_other),
                        f3(a.acc_ee),
                        f3(a.acc_global)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "| {kp} | {} | – | – | {} | {} | no viable design | | | | |",
                        class_label(cr.k, names),
                        f3(cr.baseline.beta),
                        f3(cr.baseline.eta)
                    );
                }
            }
        }
    }
}

/// Table 3's layout: the design per class on validation and on test.
fn table3_classes(s: &mut String, r: &ClassExitReport) {
    let names = r.class_names.as_deref();
    let _ = writeln!(
        s,
        "\n## Table 3 layout: the design per class, validation and test (')\n\nThe design is the pick (§3.4), with the second exit when it raises gain/loss (`i+j`, `α_i/α_j`). The primed columns apply the validation α to the test split; `holds'` says whether eq. 5, 6, 7 hold on test against the validation β, η (as the seed) / against the test split's own β', η'.\n\n| k | KP | i | α | β | η | ζ | gain | loss | B_V−k | EE_i | EE_iG | prec | gain' | loss' | B'_V−k | EE_i' | EE_iG' | prec' | β' | η' | holds' |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for cr in &r.classes {
        let (Some((kp, place, alpha)), Some((g, l, a))) = (design_label(cr), cr.design_figures()) else {
            let _ = writeln!(
                s,
                "| {} | – | – | – | {} | {} | {} | no viable design | | | | | | | | | | | | | | |",
                class_label(cr.k, names),
                f3(cr.baseline.beta),
                f3(cr.baseline.eta),
                f3(cr.baseline.zeta)
            );
            continue;
        };
        let _ = write!(
            s,
            "| {} | {kp} | {place} | {alpha} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            class_label(cr.k, names),
            f3(cr.baseline.beta),
            f3(cr.baseline.eta),
            f3(cr.baseline.zeta),
            f2(g),
            f3(l),
            f3(a.acc_b_other),
            f3(a.acc_ee),
            f3(a.acc_global),
            f3(a.precision)
        );
        match &cr.test {
            Some(t) => {
                let ta = &t.assessment;
                let _ = writeln!(
                    s,
                    " {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                    f2(t.gain),
                    f3(t.loss),
                    f3(ta.acc_b_other),
                    f3(ta.acc_ee),
                    f3(ta.acc_global),
                    f3(ta.precision),
                    f3(t.baseline.beta),
                    f3(t.baseline.eta),
                    holds(ta.holds),
                    holds(t.holds_vs_test_baseline)
                );
            }
            None => {
                let _ = writeln!(s, " – | – | – | – | – | – | – | – | – |");
            }
        }
    }
}

/// Accuracy over every class, B against each class's design, validation and test.
fn overall_accuracy(s: &mut String, r: &ClassExitReport) {
    let names = r.class_names.as_deref();
    let _ = writeln!(
        s,
        "\nAccuracy over every class (not a criterion of the seed: a false positive at the exit counts as an error here, while eq. 5 leaves it out): B {:.2}% / {:.2}% (validation / test).\n\n| k | design, validation | design, test |\n|---|---|---|",
        100.0 * r.baseline_accuracy[0],
        100.0 * r.baseline_accuracy[1]
    );
    for cr in &r.classes {
        if let Some((_, _, a)) = cr.design_figures() {
            let _ = writeln!(
                s,
                "| {} | {:.2}% | {} |",
                class_label(cr.k, names),
                100.0 * a.accuracy_all,
                cr.test
                    .as_ref()
                    .map_or("–".into(), |t| format!("{:.2}%", 100.0 * t.assessment.accuracy_all))
            );
        }
    }
}

/// The best second exit after each pick (eq. 8–12), when the design asks for two.
fn second_exits(s: &mut String, r: &ClassExitReport) {
    let (c, names) = (&r.config, r.class_names.as_deref());
    if c.exits == 2 {
        let _ = writeln!(
            s,
            "\n## Second exit (eq. 8–12, validation)\n\nThe best second exit after the pick; it joins the design (and the test columns above) only if it raises gain/loss.\n\n| k | first i | j | KP | α_j | γ_j (eq. 12) | gain (×) | loss (×) | B_V−k | EE | EE_G | improves |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for cr in &r.classes {
            let first = cr.chosen.map(|i| cr.candidates[i].cut);
            match (&cr.second, first) {
                (Some(x), Some(f)) => {
                    let a = &x.assessment;
                    let _ = writeln!(
                        s,
                        "| {} | {f} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        class_label(cr.k, names),
                        x.cut,
                        x.kp,
                        f2(x.alpha),
                        f3(x.gamma_j),
                        f2(x.gain),
                        f3(x.loss),
                        f3(a.acc_b_other),
                        f3(a.acc_ee),
                        f3(a.acc_global),
                        if x.improves { "yes" } else { "no" }
                    );
                }
                (None, Some(f)) => {
                    let _ = writeln!(
                        s,
                        "| {} | {f} | – | – | – | – | – | – | – | – | – | no viable second exit |",
                        class_label(cr.k, names)
                    );
                }
                _ => {}
            }
        }
    }
}

/// Table 4's layout: false negatives at B's classifier.
fn table4_false_negatives(s: &mut String, r: &ClassExitReport) {
    let names = r.class_names.as_deref();
    let _ = writeln!(
        s,
        "\n## Table 4 layout: false negatives at Out:B ({} split)\n\nSamples of each class that reach B's classifier and get another class.\n",
        r.false_negatives_split
    );
    let mut head = "| design | i | α |".to_string();
    let mut rule = "|---|---|---|".to_string();
    for k in 0..r.num_classes {
        let _ = write!(head, " {{{k}}} |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{head} total | % |\n{rule}---|---|");
    for row in &r.false_negatives {
        let name = row.k.map_or("Model B".into(), |k| class_label(k, names));
        let _ = write!(
            s,
            "| {name} | {} | {} |",
            row.cut.map_or("-".into(), |c| c.to_string()),
            row.alpha.map_or("-".into(), f2)
        );
        for v in &row.per_class {
            let _ = write!(s, " {v} |");
        }
        let _ = writeln!(s, " {} | {:.2} |", row.total, row.change_pct);
    }
}

/// How each branch trained.
fn branch_training(s: &mut String, r: &ClassExitReport) {
    let _ = writeln!(
        s,
        "\n## Branch training\n\n| i | KP | inputs | epochs | kept epochs (per k) | val. binary accuracy (min–max over k) |\n|---|---|---|---|---|---|"
    );
    for b in &r.branches {
        let lo = b.val_accuracy.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = b.val_accuracy.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.4}–{:.4} |",
            b.cut,
            b.kp,
            b.width,
            b.epochs,
            b.best_epoch.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" "),
            lo,
            hi
        );
    }
}

/// Writes `class-exit.json`, `class-exit.md` and `gain-loss.png`/`.svg` into `dir`; returns the
/// paths.
pub fn write_class_exit_report(dir: &Path, r: &ClassExitReport) -> Result<Vec<PathBuf>> {
    let names = r.class_names.as_deref();
    std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io(dir, e))?;
    let json = dir.join("class-exit.json");
    write_atomic(&json, &serde_json::to_vec_pretty(r).expect("serialisable"))?;
    let md = dir.join("class-exit.md");
    write_atomic(&md, class_exit_markdown(r).as_bytes())?;
    let panels: Vec<GainLossPanel> = r
        .classes
        .iter()
        .map(|cr| GainLossPanel {
            title: format!("k = {}", class_label(cr.k, names).replace(['{', '}'], "")),
            points: cr
                .candidates
                .iter()
                .enumerate()
                .map(|(i, d)| GainLossPoint {
                    loss: d.loss,
                    gain: d.gain,
                    kp_on: d.kp == Kp::On,
                    viable: d.viable,
                    pareto: d.pareto,
                    chosen: cr.chosen == Some(i),
                })
                .collect(),
        })
        .collect();
    let title = format!(
        "Class-specific early exits on {}: gain for k vs loss for V−k, every place × KP at its best α (validation)",
        r.backbone
    );
    let mut files = vec![json, md];
    files.extend(gain_loss_panels(&dir.join("gain-loss"), &title, &panels)?);
    Ok(files)
}

//! Calibration: choosing per-exit thresholds on the validation split against a stated goal.
//!
//! Two goals ([`Goal`]): the cheapest policy whose validation accuracy is within `P` points of
//! the full network's, or the most accurate policy whose expected relative cost is at most `C`.
//! Thresholds are searched per exit over quantiles of that exit's validation scores by greedy
//! moves (best cost saved per accuracy lost) followed by coordinate descent; every candidate is
//! scored with the exact comparison [`Policy::simulate`] uses, so the goal holds on validation
//! by construction. Also the budgeted protocol of MSDNet ([`budget_curve`]).
//!
//! Everything here runs on an [`ExitTable`] and refuses any table that is not of the
//! validation split.
//!
//! ```
//! use earlyexit::infer::{Goal, ScoreKind, calibrate, ExitTable, ExitColumn, SplitKind};
//! // Two exits on four validation samples: exit 0 is right on the confident ones.
//! let table = ExitTable {
//!     split: SplitKind::Val,
//!     labels: vec![0, 1, 1, 0],
//!     exits: vec![
//!         ExitColumn { pred: vec![0, 1, 0, 1], maxprob: vec![0.9, 0.8, 0.4, 0.3],
//!                      certainty: vec![0.7, 0.6, 0.1, 0.1], confidence: None, top_sigmoid: vec![] },
//!         ExitColumn { pred: vec![0, 1, 1, 0], maxprob: vec![1.0; 4],
//!                      certainty: vec![1.0; 4], confidence: None, top_sigmoid: vec![] },
//!     ],
//!     exit_macs: vec![20, 105],
//!     backbone_macs: 100,
//! };
//! let cal = calibrate(&table, Goal::MaxAccuracyDrop(0.0), ScoreKind::MaxProb, true)?;
//! assert_eq!(cal.validation.accuracy, 1.0);
//! assert!(cal.validation.relative_cost < 0.7); // the two confident samples leave at exit 0
//! # Ok::<(), earlyexit::Error>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::{ExitTable, Outcome, ScoreKind, SplitKind};
use crate::policy::{Policy, Thresholds, score_cutoff, threshold_for_cutoff};

/// Number of candidate thresholds per exit (score quantiles).
pub const QUANTILES: usize = 100;

/// What calibration aims at.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// The cheapest policy whose validation accuracy is at least the full network's minus this
    /// many percentage points.
    MaxAccuracyDrop(f64),
    /// The most accurate policy whose expected relative cost (validation) is at most this.
    Budget(f64),
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Goal::MaxAccuracyDrop(p) => write!(f, "accuracy within {p} points of the full network"),
            Goal::Budget(c) => write!(f, "relative cost at most {c}"),
        }
    }
}

impl Goal {
    /// Checks the goal's number.
    pub fn check(&self) -> Result<()> {
        match *self {
            Goal::MaxAccuracyDrop(p) if !(p.is_finite() && (0.0..=100.0).contains(&p)) => Err(Error::invalid(
                "--max-accuracy-drop",
                format!("`{p}`: expected percentage points in 0..=100"),
            )),
            Goal::Budget(c) if !(c.is_finite() && c > 0.0) => Err(Error::invalid(
                "--budget",
                format!("`{c}`: expected a relative cost > 0 (1 = the plain network)"),
            )),
            _ => Ok(()),
        }
    }
}

/// The result of calibration, written to a run's `policy.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The chosen policy.
    pub policy: Policy,
    /// The goal it was chosen for.
    pub goal: Goal,
    /// Which score the thresholds compare.
    pub kind: ScoreKind,
    /// Whether thresholds were searched per exit (otherwise one shared value).
    pub per_exit: bool,
    /// The split it was fitted on (always `val`).
    pub split: SplitKind,
    /// Number of validation samples.
    pub samples: usize,
    /// Accuracy of the full network (final classifier) on validation.
    pub full_accuracy: f64,
    /// What the chosen policy does on validation.
    pub validation: Outcome,
}

/// Refuses tables not read from the validation split.
pub fn require_validation(table: &ExitTable) -> Result<()> {
    if table.split != SplitKind::Val {
        return Err(Error::invalid(
            "split",
            format!(
                "calibration reads the validation split only, this table is from `{}`",
                table.split
            ),
        ));
    }
    if table.is_empty() {
        return Err(Error::invalid("split", "the validation split is empty"));
    }
    Ok(())
}

/// Candidate thresholds of one exit and each sample's level among them.
///
/// Candidates are policy threshold values, increasing in strictness; candidate `j` fires for a
/// sample iff `level[i] >= j`. Candidate `len` (one past the last) never fires.
struct Grid {
    values: Vec<f32>,
    level: Vec<Vec<u16>>,
}

fn make_policy(kind: ScoreKind, t: Thresholds) -> Policy {
    match kind {
        ScoreKind::MaxProb => Policy::MaxProb(t),
        ScoreKind::Entropy => Policy::Entropy(t),
        ScoreKind::Confidence => Policy::Confidence(t),
    }
}

fn grid(scores: &[&[f32]], kind: ScoreKind, shared: bool) -> Grid {
    // Candidate score cut-offs: midpoints between neighbouring distinct scores at quantile
    // positions (midpoints keep rounding from flipping a sample), plus one below everything.
    let mut all: Vec<f32> = if shared {
        scores.iter().flat_map(|s| s.iter().copied()).collect()
    } else {
        scores[0].to_vec()
    };
    all.retain(|x| x.is_finite());
    all.sort_by(f32::total_cmp);
    all.dedup();
    let mut cuts: Vec<f32> = Vec::new();
    if let Some(&lo) = all.first() {
        cuts.push(lo - 1e-3);
        let m = all.len();
        let q = QUANTILES.min(m.saturating_sub(1));
        for j in 1..=q {
            let p = (j * m) / (q + 1);
            let p = p.clamp(1, m - 1);
            cuts.push(0.5 * (all[p - 1] + all[p]));
        }
        cuts.dedup();
    }
    let values: Vec<f32> = cuts.iter().map(|&c| threshold_for_cutoff(kind, c)).collect();
    let eff: Vec<f32> = values.iter().map(|&t| score_cutoff(kind, t)).collect();
    let level = scores
        .iter()
        .map(|s| {
            s.iter()
                .map(|&x| {
                    // Number of candidates that fire for x, minus one: candidates are increasing
                    // in effective value.
                    let fires = eff.partition_point(|&e| x >= e);
                    fires as u16
                })
                .collect()
        })
        .collect();
    Grid { values, level }
}

/// Fast evaluation of threshold-index vectors on a table.
struct Evaluator<'a> {
    table: &'a ExitTable,
    grids: Vec<Grid>,
    /// Per early exit (or one shared grid).
    shared: bool,
    correct: Vec<Vec<bool>>,
}

impl<'a> Evaluator<'a> {
    fn new(table: &'a ExitTable, kind: ScoreKind, shared: bool) -> Result<Self> {
        let scores = table.scores(kind)?;
        let grids = if shared {
            vec![grid(&scores, kind, true)]
        } else {
            scores.iter().map(|s| grid(&[*s], kind, false)).collect()
        };
        let correct = (0..table.exits.len())
            .map(|k| (0..table.len()).map(|i| table.correct(k, i)).collect())
            .collect();
        Ok(Self {
            table,
            grids,
            shared,
            correct,
        })
    }

    fn levels(&self, k: usize) -> &[u16] {
        if self.shared {
            &self.grids[0].level[k]
        } else {
            &self.grids[k].level[0]
        }
    }

    fn n_candidates(&self, c: usize) -> usize {
        self.grids[c].values.len()
    }

    /// (correct count, total MACs) of threshold indices `t` (one per coordinate; an index equal
    /// to the number of candidates never fires).
    fn eval(&self, t: &[usize]) -> (usize, f64) {
        let ne = self.table.num_exits();
        let n = self.table.len();
        let mut right = 0usize;
        let mut macs = 0f64;
        for i in 0..n {
            let mut e = ne;
            for k in 0..ne {
                let tk = if self.shared { t[0] } else { t[k] };
                if (self.levels(k)[i] as usize) > tk {
                    e = k;
                    break;
                }
            }
            right += self.correct[e][i] as usize;
            macs += self.table.exit_macs[e] as f64;
        }
        (right, macs)
    }

    fn policy(&self, kind: ScoreKind, t: &[usize]) -> Policy {
        let value = |c: usize, j: usize| self.grids[c].values.get(j).copied().unwrap_or(Thresholds::OFF);
        if self.shared {
            make_policy(kind, Thresholds::Shared(value(0, t[0])))
        } else {
            make_policy(
                kind,
                Thresholds::PerExit(t.iter().enumerate().map(|(k, &j)| value(k, j)).collect()),
            )
        }
    }
}

/// Chooses thresholds of `kind` on a validation table for `goal`; `per_exit` searches one
/// threshold per exit, otherwise one shared value.
///
/// With [`Goal::MaxAccuracyDrop`] the result always satisfies the goal on the table (at worst
/// no sample leaves early). With [`Goal::Budget`] it is an error when no threshold reaches the
/// budget.
pub fn calibrate(table: &ExitTable, goal: Goal, kind: ScoreKind, per_exit: bool) -> Result<Calibration> {
    require_validation(table)?;
    goal.check()?;
    let ne = table.num_exits();
    if ne == 0 {
        return Err(Error::invalid("model", "the network has no early exit to calibrate"));
    }
    let ev = Evaluator::new(table, kind, !per_exit)?;
    let coords = if per_exit { ne } else { 1 };
    let n = table.len() as f64;
    let budget_macs = |c: f64| c * table.backbone_macs as f64 * n;
    let (full_right, _) = ev.eval(&vec![usize::MAX; coords]);
    // Most conservative start: nothing leaves early.
    let mut t: Vec<usize> = (0..coords).map(|c| ev.n_candidates(c)).collect();
    let mut cur = ev.eval(&t);
    debug_assert_eq!(cur.0, full_right);

    let feasible = |(right, macs): (usize, f64)| match goal {
        // right/n ≥ full/n − P/100, in counts, with a small tolerance for the division only.
        Goal::MaxAccuracyDrop(p) => right as f64 + 1e-9 >= full_right as f64 - p / 100.0 * n,
        Goal::Budget(c) => macs <= budget_macs(c) * (1.0 + 1e-12),
    };

    // Phase 1 (budget only): reach the budget, losing the least accuracy per MAC saved.
    if let Goal::Budget(_) = goal {
        while !feasible(cur) {
            let mut best: Option<(f64, Vec<usize>, (usize, f64))> = None;
            for c in 0..coords {
                for j in 0..t[c] {
                    let mut cand = t.clone();
                    cand[c] = j;
                    let r = ev.eval(&cand);
                    let saved = cur.1 - r.1;
                    if saved <= 0.0 {
                        continue;
                    }
                    let lost = cur.0 as f64 - r.0 as f64;
                    let score = lost / saved;
                    if best.as_ref().is_none_or(|b| score < b.0) {
                        best = Some((score, cand, r));
                    }
                }
            }
            match best {
                Some((_, cand, r)) => {
                    t = cand;
                    cur = r;
                }
                None => {
                    return Err(Error::invalid(
                        "--budget",
                        format!(
                            "no {kind} thresholds reach a relative cost of {}: the cheapest has {:.4}",
                            match goal {
                                Goal::Budget(c) => c,
                                _ => 0.0,
                            },
                            cur.1 / n / table.backbone_macs as f64
                        ),
                    ));
                }
            }
        }
    }

    // Phase 2: greedy moves among feasible policies. Accuracy drop: save the most MACs per
    // correct answer lost. Budget: gain the most correct answers (then save MACs).
    loop {
        let mut best: Option<(f64, Vec<usize>, (usize, f64))> = None;
        for c in 0..coords {
            for j in 0..=ev.n_candidates(c) {
                if j == t[c] {
                    continue;
                }
                let mut cand = t.clone();
                cand[c] = j;
                let r = ev.eval(&cand);
                if !feasible(r) {
                    continue;
                }
                let score = match goal {
                    Goal::MaxAccuracyDrop(_) => {
                        let saved = cur.1 - r.1;
                        if saved <= 0.0 {
                            continue;
                        }
                        let lost = (cur.0 as f64 - r.0 as f64).max(0.0);
                        saved / (lost + 0.5)
                    }
                    Goal::Budget(_) => {
                        let gained = r.0 as f64 - cur.0 as f64;
                        let saved = cur.1 - r.1;
                        if gained < 0.0 || (gained == 0.0 && saved <= 0.0) {
                            continue;
                        }
                        gained + saved / (n * table.backbone_macs as f64)
                    }
                };
                if best.as_ref().is_none_or(|b| score > b.0) {
                    best = Some((score, cand, r));
                }
            }
        }
        match best {
            Some((_, cand, r)) => {
                t = cand;
                cur = r;
            }
            None => break,
        }
    }

    let policy = ev.policy(kind, &t);
    // The reported figures come from the public rule, not from the search's bookkeeping.
    let validation = table.outcome(&policy)?;
    Ok(Calibration {
        policy,
        goal,
        kind,
        per_exit,
        split: table.split,
        samples: table.len(),
        full_accuracy: full_right as f64 / n,
        validation,
    })
}

/// Reads the validation split once through the code `exec` runs ([`ExitTable::collect`]) and
/// calibrates on it. Refuses, before reading a single sample, any source that is not the
/// validation split.
pub fn calibrate_split(
    exec: &super::executor::Executor,
    val: &dyn super::table::LabelledData,
    goal: Goal,
    kind: ScoreKind,
    per_exit: bool,
    batch: usize,
) -> Result<(Calibration, ExitTable)> {
    if val.split() != SplitKind::Val {
        return Err(Error::invalid(
            "split",
            format!("calibration reads the validation split only, not `{}`", val.split()),
        ));
    }
    goal.check()?;
    let table = ExitTable::collect(exec, val, batch)?;
    Ok((calibrate(&table, goal, kind, per_exit)?, table))
}

/// One point of a threshold sweep or budget curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The policy.
    pub policy: Policy,
    /// The parameter that produced it (shared threshold for a sweep, `p` for the budget curve).
    pub param: f64,
    /// What it does on the table it was computed on.
    pub outcome: Outcome,
}

/// Accuracy against relative cost for one shared threshold over a grid: `maxprob` and
/// `confidence` from 0 to 1, `entropy` from 1 to 0, `steps + 1` points.
///
/// ```
/// use earlyexit::infer::{ExitColumn, ExitTable, ScoreKind, SplitKind, sweep};
/// let col = |pred: Vec<usize>, s: Vec<f32>| ExitColumn { pred, maxprob: s.clone(), certainty: s, confidence: None, top_sigmoid: vec![] };
/// let table = ExitTable {
///     split: SplitKind::Test,
///     labels: vec![0, 1],
///     exits: vec![col(vec![0, 0], vec![0.9, 0.6]), col(vec![0, 1], vec![1.0, 1.0])],
///     exit_macs: vec![30, 101],
///     backbone_macs: 100,
/// };
/// let points = sweep(&table, ScoreKind::MaxProb, 10)?;
/// assert_eq!(points.len(), 11);
/// // Threshold 0.7: sample 0 leaves early (right), sample 1 goes on (right).
/// assert_eq!(points[7].outcome.accuracy, 1.0);
/// assert!((points[7].outcome.relative_cost - 0.655).abs() < 1e-9);
/// # Ok::<(), earlyexit::Error>(())
/// ```
pub fn sweep(table: &ExitTable, kind: ScoreKind, steps: usize) -> Result<Vec<CurvePoint>> {
    let steps = steps.max(1);
    (0..=steps)
        .map(|j| {
            let s = j as f64 / steps as f64;
            let t = match kind {
                ScoreKind::Entropy => 1.0 - s,
                _ => s,
            } as f32;
            let policy = make_policy(kind, Thresholds::Shared(t));
            Ok(CurvePoint {
                outcome: table.outcome(&policy)?,
                policy,
                param: t as f64,
            })
        })
        .collect()
}

/// The exit shares of MSDNet's budgeted protocol: `q_k ∝ p^(k+1)` over the early exits and
/// the final classifier, normalised to sum to 1.
pub fn msdnet_shares(p: f64, outputs: usize) -> Vec<f64> {
    let raw: Vec<f64> = (1..=outputs).map(|k| p.powi(k as i32)).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|r| r / sum).collect()
}

/// MSDNet's budgeted protocol on a validation table: for `p = 1/20, 2/20, …, 39/20`, exit `k`
/// takes a share `q_k ∝ p^(k+1)` of the samples, and its threshold is fitted so that this share
/// of all samples (the most confident of those still in) leaves there.
pub fn budget_curve(table: &ExitTable, kind: ScoreKind) -> Result<Vec<CurvePoint>> {
    require_validation(table)?;
    (1..40)
        .map(|j| {
            let p = j as f64 / 20.0;
            let policy = fit_shares(table, kind, &msdnet_shares(p, table.exits.len()))?;
            Ok(CurvePoint {
                outcome: table.outcome(&policy)?,
                policy,
                param: p,
            })
        })
        .collect()
}

/// Thresholds such that about `shares[k]` of all samples leave at early exit `k`.
pub fn fit_shares(table: &ExitTable, kind: ScoreKind, shares: &[f64]) -> Result<Policy> {
    require_validation(table)?;
    let scores = table.scores(kind)?;
    let n = table.len();
    let mut alive: Vec<usize> = (0..n).collect();
    let mut thresholds = Vec::with_capacity(table.num_exits());
    let mut cum = 0.0;
    for (k, s) in scores.iter().enumerate() {
        cum += shares[k];
        let already = n - alive.len();
        let want = ((cum * n as f64).round() as usize)
            .saturating_sub(already)
            .min(alive.len());
        let mut v: Vec<f32> = alive.iter().map(|&i| s[i]).collect();
        v.sort_by(|a, b| b.total_cmp(a));
        let cut = if want == 0 {
            f32::INFINITY
        } else if want >= v.len() {
            v[v.len() - 1] - 1e-3
        } else if v[want - 1] > v[want] {
            0.5 * (v[want - 1] + v[want])
        } else {
            // Ties: take them all or none, whichever is closer to the share.
            let x = v[want];
            let above = v.iter().filter(|&&y| y > x).count();
            let upto = v.iter().filter(|&&y| y >= x).count();
            if want - above <= upto - want {
                let next = v.iter().copied().filter(|&y| y > x).fold(f32::INFINITY, f32::min);
                if next.is_finite() {
                    0.5 * (x + next)
                } else {
                    f32::INFINITY
                }
            } else {
                let below = v.iter().copied().filter(|&y| y < x).fold(f32::NEG_INFINITY, f32::max);
                if below.is_finite() { 0.5 * (x + below) } else { x - 1e-3 }
            }
        };
        let t = threshold_for_cutoff(kind, cut);
        let e = score_cutoff(kind, t);
        alive.retain(|&i| s[i] < e);
        thresholds.push(t);
    }
    Ok(make_policy(kind, Thresholds::PerExit(thresholds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::ExitColumn;
    use rand::{Rng, SeedableRng};

    /// A random table where later exits are more accurate and confidence correlates with being
    /// right.
    pub(crate) fn random_table(seed: u64, n: usize, exits: usize, split: SplitKind) -> ExitTable {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..10)).collect();
        let cols = (0..=exits)
            .map(|k| {
                let skill = 0.45 + 0.45 * k as f64 / exits as f64;
                let mut col = ExitColumn {
                    pred: vec![],
                    maxprob: vec![],
                    certainty: vec![],
                    confidence: (k < exits).then(Vec::new),
                    top_sigmoid: vec![],
                };
                for &y in &labels {
                    let right = rng.random_bool(skill);
                    col.pred.push(if right {
                        y
                    } else {
                        (y + 1 + rng.random_range(0..9)) % 10
                    });
                    let base: f32 = if right { 0.55 } else { 0.3 };
                    let s = (base + rng.random::<f32>() * 0.45).min(1.0);
                    col.maxprob.push(s);
                    col.certainty.push((s * s).min(1.0));
                    if let Some(c) = col.confidence.as_mut() {
                        c.push(rng.random::<f32>() * 0.5 + if right { 0.4 } else { 0.1 });
                    }
                }
                col
            })
            .collect();
        let exit_macs = (0..=exits)
            .map(|k| 100 + 900 * k as u64 / exits as u64 + 5 * k as u64)
            .collect();
        ExitTable {
            split,
            labels,
            exits: cols,
            exit_macs,
            backbone_macs: 1000,
        }
    }

    /// A calibrated policy is written as text (`policy.json`): every threshold in it lies in
    /// `[0, 1]` or is `off`, and the text reads back as the same policy.
    fn assert_written_policy_reads_back(table: &ExitTable, policy: &Policy) {
        let text = policy.to_string();
        let back: Policy = text
            .parse()
            .unwrap_or_else(|e| panic!("`{text}` does not read back: {e}"));
        assert_eq!(table.outcome(&back).unwrap(), table.outcome(policy).unwrap(), "{text}");
        let values = match policy {
            Policy::MaxProb(t) | Policy::Entropy(t) | Policy::Confidence(t) => match t {
                Thresholds::Shared(v) => vec![*v],
                Thresholds::PerExit(v) => v.clone(),
            },
            _ => vec![],
        };
        for v in values {
            assert!((0.0..=1.0).contains(&v) || v == Thresholds::OFF, "{text}: {v}");
        }
    }

    #[test]
    fn max_accuracy_drop_holds_on_validation_by_construction() {
        for seed in 0..6 {
            let table = random_table(seed, 600, 1 + seed as usize % 4, SplitKind::Val);
            let full = table.full_accuracy();
            for p in [0.0, 0.5, 1.0, 3.0, 10.0] {
                for kind in [ScoreKind::MaxProb, ScoreKind::Entropy, ScoreKind::Confidence] {
                    for per_exit in [false, true] {
                        let cal = calibrate(&table, Goal::MaxAccuracyDrop(p), kind, per_exit).unwrap();
                        // Checked independently through Policy::simulate on the same table.
                        let o = table.outcome(&cal.policy).unwrap();
                        assert!(
                            o.accuracy >= full - p / 100.0 - 1e-12,
                            "seed {seed} P {p} {kind}: {} < {full} - {p}",
                            o.accuracy
                        );
                        assert_eq!(o, cal.validation);
                        assert!(o.relative_cost <= table.full_relative_cost() + 1e-12);
                        assert_written_policy_reads_back(&table, &cal.policy);
                    }
                }
            }
        }
    }

    #[test]
    fn a_larger_drop_never_costs_more_and_per_exit_search_beats_shared() {
        let table = random_table(42, 800, 3, SplitKind::Val);
        let mut last = f64::INFINITY;
        let mut wins = 0;
        for p in [0.0, 1.0, 2.0, 5.0, 20.0] {
            let per = calibrate(&table, Goal::MaxAccuracyDrop(p), ScoreKind::MaxProb, true).unwrap();
            let shared = calibrate(&table, Goal::MaxAccuracyDrop(p), ScoreKind::MaxProb, false).unwrap();
            assert!(matches!(per.policy, Policy::MaxProb(Thresholds::PerExit(ref v)) if v.len() == 3));
            assert!(per.validation.relative_cost <= last + 0.02, "P {p}");
            last = per.validation.relative_cost;
            if per.validation.relative_cost < shared.validation.relative_cost - 1e-9 {
                wins += 1;
            }
        }
        // The per-exit search must find cheaper policies than one shared value at least once;
        // at P = 20 points it must save a lot.
        assert!(wins >= 1);
        assert!(last < 0.6, "{last}");
    }

    #[test]
    fn budget_goal_holds_and_spends_it() {
        let table = random_table(7, 500, 3, SplitKind::Val);
        for c in [0.3, 0.5, 0.8] {
            let cal = calibrate(&table, Goal::Budget(c), ScoreKind::MaxProb, true).unwrap();
            assert!(cal.validation.relative_cost <= c + 1e-9, "{c}: {:?}", cal.validation);
            // The cheapest exit costs 0.1: a looser budget buys accuracy.
            assert!(cal.validation.accuracy > table.exit_accuracy_all(0));
        }
        let e = calibrate(&table, Goal::Budget(0.05), ScoreKind::MaxProb, true).unwrap_err();
        assert!(e.to_string().contains("--budget"), "{e}");
    }

    #[test]
    fn calibration_refuses_the_test_split() {
        let table = random_table(1, 100, 2, SplitKind::Test);
        let e = calibrate(&table, Goal::MaxAccuracyDrop(1.0), ScoreKind::MaxProb, true).unwrap_err();
        assert!(e.to_string().contains("validation split only"), "{e}");
        assert!(budget_curve(&table, ScoreKind::MaxProb).is_err());
    }

    #[test]
    fn msdnet_shares_follow_p_to_the_k() {
        let q = msdnet_shares(0.5, 3);
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((q[0] / q[1] - 2.0).abs() < 1e-12 && (q[1] / q[2] - 2.0).abs() < 1e-12);
        let table = random_table(3, 1000, 3, SplitKind::Val);
        let curve = budget_curve(&table, ScoreKind::MaxProb).unwrap();
        assert_eq!(curve.len(), 39);
        for kind in [ScoreKind::MaxProb, ScoreKind::Entropy] {
            for shares in [
                vec![0.0, 0.0, 0.0, 1.0],
                msdnet_shares(0.5, 4),
                vec![1.0, 0.0, 0.0, 0.0],
            ] {
                assert_written_policy_reads_back(&table, &fit_shares(&table, kind, &shares).unwrap());
            }
        }
        // Small p: most samples leave at exit 0; large p: most reach the end.
        assert!(curve[0].outcome.coverage[0] > 0.9);
        assert!(curve[38].outcome.coverage[3] > 0.4);
        for pt in &curve {
            let want = msdnet_shares(pt.param, 4);
            for (got, w) in pt.outcome.coverage.iter().zip(&want) {
                assert!(
                    (got - w).abs() < 0.02,
                    "p {}: {:?} vs {want:?}",
                    pt.param,
                    pt.outcome.coverage
                );
            }
        }
    }
}

//! The design-space exploration of the class-specific method: the α sweep per branch (§3.3),
//! the viable designs and their Pareto front of gain against loss (§3.4), a second exit after
//! the first (§3.1.1), and the chosen design on the test split (Tables 3 and 4).
//!
//! Everything here runs on host-side counts: branch probabilities, B's predictions and labels
//! in, the seed's quantities out.

use serde::{Deserialize, Serialize};

use super::branch::Kp;
use super::criteria::{Assessment, Baseline, Counts, gamma_second};
use super::time::{gain, loss, t_max, t_mean, t_mean_two};
use crate::error::{Error, Result};

/// The α values to try, `from:to:step` inclusive (seed §3.3: 0.95 to 1.0).
#[derive(Clone, Copy, Debug, PartialEq, serde_with::SerializeDisplay, serde_with::DeserializeFromStr)]
pub struct AlphaGrid {
    /// Smallest α.
    pub from: f64,
    /// Largest α.
    pub to: f64,
    /// Step.
    pub step: f64,
}

impl Default for AlphaGrid {
    fn default() -> Self {
        Self {
            from: 0.95,
            to: 1.0,
            step: 0.01,
        }
    }
}

impl std::fmt::Display for AlphaGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.from, self.to, self.step)
    }
}

impl std::str::FromStr for AlphaGrid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(
                "alpha",
                format!("`{s}`: {why}; expected FROM:TO:STEP such as 0.95:1.0:0.01"),
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return Err(bad("three numbers separated by `:` needed"));
        }
        let v: Vec<f64> = parts
            .iter()
            .map(|p| p.trim().parse::<f64>().map_err(|_| bad("not a number")))
            .collect::<Result<_>>()?;
        let g = AlphaGrid {
            from: v[0],
            to: v[1],
            step: v[2],
        };
        g.validate().map_err(|_| bad("need 0 ≤ FROM ≤ TO ≤ 1 and STEP > 0"))?;
        Ok(g)
    }
}

impl AlphaGrid {
    /// Checks `0 ≤ from ≤ to ≤ 1` and `step > 0`.
    pub fn validate(&self) -> Result<()> {
        let ok = self.from.is_finite()
            && self.to.is_finite()
            && self.step.is_finite()
            && 0.0 <= self.from
            && self.from <= self.to
            && self.to <= 1.0
            && self.step > 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "alpha",
                format!("{self}: need 0 ≤ from ≤ to ≤ 1 and step > 0"),
            ))
        }
    }

    /// The values, increasing, `to` included (within rounding).
    pub fn values(&self) -> Vec<f64> {
        let n = ((self.to - self.from) / self.step + 1e-9).floor() as usize;
        (0..=n)
            .map(|i| ((self.from + i as f64 * self.step) * 1e9).round() / 1e9)
            .collect()
    }
}

/// One branch `(cut, kp)` for one target class at its best α on validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Cut point `i` (block index).
    pub cut: usize,
    /// Name of the block the branch follows.
    pub block: String,
    /// Connection type.
    pub kp: Kp,
    /// The α that maximises γ (eq. 4); the largest α of the grid when none keeps accuracy.
    pub alpha: f64,
    /// Counts at that α.
    pub counts: Counts,
    /// Eq. 4–7 at that α.
    pub assessment: Assessment,
    /// `δ_i`, seconds.
    pub delta: f64,
    /// `e_i`, seconds.
    pub e: f64,
    /// Share of the samples of `k` that leave early, `tp / |k|`.
    pub rate_k: f64,
    /// `t / t''` with eq. 3 at `rate_k`: how many times faster a sample of `k` is on average.
    pub gain: f64,
    /// `t / t''` with eq. 3 at the seed's γ (eq. 4, which also counts false positives; capped
    /// at 1).
    pub gain_eq4: f64,
    /// `t' / t` (eq. 1): how many times slower a sample that does not leave early is.
    pub loss: f64,
    /// Mean time of a sample of `V − k` over `t` (the false positives leave early too).
    pub loss_mean: f64,
    /// Eq. 5–7 hold and `t − t'' > 0`.
    pub viable: bool,
    /// On the Pareto front of the viable designs (gain up, loss down).
    pub pareto: bool,
}

/// What the α sweep needs about one split for one class.
pub struct Split<'a> {
    /// Labels.
    pub labels: &'a [usize],
    /// B's predictions.
    pub b_pred: &'a [usize],
}

/// The best α of the grid for probabilities `p` (σ of the branch output for `k`): the one
/// with the largest γ (eq. 4), the larger α on ties; the largest α when γ is 0 everywhere.
pub fn best_alpha(k: usize, p: &[f32], split: &Split, base: &Baseline, grid: &AlphaGrid) -> (f64, Counts, Assessment) {
    let mut best: Option<(f64, Counts, Assessment)> = None;
    let mut exited = vec![false; p.len()];
    for alpha in grid.values() {
        for (e, &pi) in exited.iter_mut().zip(p) {
            *e = pi as f64 >= alpha;
        }
        let c = Counts::tally(k, split.labels, split.b_pred, &exited);
        let a = Assessment::of(&c, base);
        let better = match &best {
            None => true,
            Some((_, _, b)) => a.gamma >= b.gamma,
        };
        if better {
            best = Some((alpha, c, a));
        }
    }
    best.expect("the grid has at least one value")
}

/// Builds a candidate from its counts and the measured times (`t`, `δ_i`, `e_i`, seconds).
#[allow(clippy::too_many_arguments)]
pub fn candidate(
    cut: usize,
    block: &str,
    kp: Kp,
    alpha: f64,
    counts: Counts,
    assessment: Assessment,
    t: f64,
    delta: f64,
    e: f64,
) -> Candidate {
    let rate_k = ratio(counts.tp_ee, counts.k);
    let g = gain(t, t_mean(t, delta, e, rate_k));
    let others = counts.n - counts.k;
    Candidate {
        cut,
        block: block.into(),
        kp,
        alpha,
        counts,
        assessment,
        delta,
        e,
        rate_k,
        gain: g,
        gain_eq4: gain(t, t_mean(t, delta, e, assessment.gamma.min(1.0))),
        loss: loss(t, t_max(t, e)),
        loss_mean: t_mean(t, delta, e, ratio(counts.fp_ee, others)) / t,
        viable: assessment.keeps_accuracy() && assessment.gamma > 0.0 && g > 1.0,
        pareto: false,
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Marks the Pareto front of the viable candidates (no other viable candidate has a gain at
/// least as high and a loss at least as low, one of them strictly) and returns the index of
/// the pick: the viable candidate with the largest gain / loss (always on the front).
pub fn pareto_pick(cands: &mut [Candidate]) -> Option<usize> {
    let viable: Vec<usize> = (0..cands.len()).filter(|&i| cands[i].viable).collect();
    for &i in &viable {
        let (g, l) = (cands[i].gain, cands[i].loss);
        cands[i].pareto = !viable
            .iter()
            .any(|&j| j != i && cands[j].gain >= g && cands[j].loss <= l && (cands[j].gain > g || cands[j].loss < l));
    }
    viable.into_iter().max_by(|&a, &b| {
        let (ra, rb) = (cands[a].gain / cands[a].loss, cands[b].gain / cands[b].loss);
        ra.partial_cmp(&rb)
            .expect("finite ratios")
            // Ties: the earlier exit.
            .then(cands[b].cut.cmp(&cands[a].cut))
    })
}

/// A second exit after the chosen first one (seed §3.1.1, eq. 8–12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecondExit {
    /// Cut point `j > i`.
    pub cut: usize,
    /// Name of the block it follows.
    pub block: String,
    /// Connection type.
    pub kp: Kp,
    /// Its α.
    pub alpha: f64,
    /// Counts of the two-exit design (both exits' acceptances as `Out:EE`).
    pub counts: Counts,
    /// Eq. 5–7 of the two-exit design (its `gamma` is the combined rate; see `gamma_j`).
    pub assessment: Assessment,
    /// Eq. 12: γ_j.
    pub gamma_j: f64,
    /// Share of the samples of `k` reaching `j` that leave there.
    pub rate_j: f64,
    /// Time of B from `i` to `j` (`δ_j` of eq. 9), seconds.
    pub delta_j: f64,
    /// `e_j`, seconds.
    pub e_j: f64,
    /// `t / t̂''` (eq. 11) for the samples of `k`.
    pub gain: f64,
    /// `(t + e_i + e_j) / t`.
    pub loss: f64,
    /// Whether gain / loss beats the one-exit design.
    pub improves: bool,
}

/// One branch's probabilities for class `k`, with where it sits and what it costs.
pub struct Scored<'a> {
    /// Cut point.
    pub cut: usize,
    /// Block name.
    pub block: &'a str,
    /// Connection type.
    pub kp: Kp,
    /// σ for `k`, one per sample.
    pub p: &'a [f32],
    /// `δ` of the cut point (from the start), seconds.
    pub delta: f64,
    /// `e`, seconds.
    pub e: f64,
}

/// The best second exit after `first` (accepting where `p_first ≥ alpha_first`) among `later`
/// (all with `cut > first.cut`), by gain / loss of eq. 11 under eq. 5–7 and eq. 12.
#[allow(clippy::too_many_arguments)]
pub fn second_exit(
    k: usize,
    first: &Scored,
    alpha_first: f64,
    later: &[Scored],
    split: &Split,
    base: &Baseline,
    grid: &AlphaGrid,
    t: f64,
) -> Option<SecondExit> {
    let first_exit: Vec<bool> = first.p.iter().map(|&p| p as f64 >= alpha_first).collect();
    let c1 = Counts::tally(k, split.labels, split.b_pred, &first_exit);
    let one = gain(t, t_mean(t, first.delta, first.e, ratio(c1.tp_ee, c1.k))) / loss(t, t_max(t, first.e));
    let mut best: Option<SecondExit> = None;
    for s in later.iter().filter(|s| s.cut > first.cut) {
        let mut pick: Option<(f64, Counts, Assessment, f64)> = None;
        for alpha in grid.values() {
            let exited: Vec<bool> = first_exit
                .iter()
                .zip(s.p)
                .map(|(&f, &p)| f || p as f64 >= alpha)
                .collect();
            let c = Counts::tally(k, split.labels, split.b_pred, &exited);
            let a = Assessment::of(&c, base);
            let gj = if a.keeps_accuracy() {
                gamma_second(c.k, c1.exited(), c.exited() - c1.exited())
            } else {
                0.0
            };
            if pick.as_ref().is_none_or(|p| gj >= p.3) {
                pick = Some((alpha, c, a, gj));
            }
        }
        let (alpha, c, a, gamma_j) = pick.expect("non-empty grid");
        if gamma_j <= 0.0 {
            continue;
        }
        let rate_i = ratio(c1.tp_ee, c1.k);
        let rate_j = ratio(c.tp_ee - c1.tp_ee, c1.k - c1.tp_ee);
        let delta_j = (s.delta - first.delta).max(0.0);
        let g = gain(t, t_mean_two(t, first.delta, first.e, rate_i, delta_j, s.e, rate_j));
        let l = loss(t, t + first.e + s.e);
        let cand = SecondExit {
            cut: s.cut,
            block: s.block.into(),
            kp: s.kp,
            alpha,
            counts: c,
            assessment: a,
            gamma_j,
            rate_j,
            delta_j,
            e_j: s.e,
            gain: g,
            loss: l,
            improves: g / l > one,
        };
        if best.as_ref().is_none_or(|b| cand.gain / cand.loss > b.gain / b.loss) {
            best = Some(cand);
        }
    }
    best
}

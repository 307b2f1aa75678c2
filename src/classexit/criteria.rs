//! The accuracy criteria of the class-specific method (seed eq. 4–7), on counts.
//!
//! Every sample either leaves at the early exit (`Out:EE`, a binary "is it k?" decision) or
//! reaches the baseline's own classifier (`Out:B`, multi-class). The counts below are what the
//! seed's equations read; they are pure numbers so that the equations can be checked against
//! hand-computed tables, and so that the α sweep runs on the host without touching the network.

use serde::{Deserialize, Serialize};

/// Outcome counts of an early-exit design for target class `k` on one split.
///
/// `tp_ee`/`fp_ee`: samples of / not of `k` that leave early; `tn_ee`/`fn_ee`: samples not of /
/// of `k` that go on to `Out:B`. At `Out:B` only the samples that reach it count: `tp_b` are
/// all of them that B classifies right, `tp_k_b`/`fn_k_b` the samples of `k` among them that B
/// classifies right / wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// |V|: samples in the split.
    pub n: usize,
    /// |k|: samples of the target class.
    pub k: usize,
    /// Samples of `k` accepted at the early exit.
    pub tp_ee: usize,
    /// Samples of other classes accepted at the early exit.
    pub fp_ee: usize,
    /// Samples of other classes passed on to `Out:B`.
    pub tn_ee: usize,
    /// Samples of `k` passed on to `Out:B`.
    pub fn_ee: usize,
    /// Samples reaching `Out:B` that B classifies right (every class).
    pub tp_b: usize,
    /// Samples of `k` reaching `Out:B` that B classifies right.
    pub tp_k_b: usize,
    /// Samples of `k` reaching `Out:B` that B classifies wrong.
    pub fn_k_b: usize,
}

impl Counts {
    /// Tallies `labels`, the baseline's predictions `b_pred` and which samples left early.
    ///
    /// # Panics
    /// If the three slices differ in length (a programming error, never user input).
    pub fn tally(k: usize, labels: &[usize], b_pred: &[usize], exited: &[bool]) -> Self {
        assert!(
            labels.len() == b_pred.len() && labels.len() == exited.len(),
            "one entry per sample"
        );
        let mut c = Counts {
            n: labels.len(),
            ..Counts::default()
        };
        for ((&y, &b), &e) in labels.iter().zip(b_pred).zip(exited) {
            let is_k = y == k;
            c.k += is_k as usize;
            match (e, is_k) {
                (true, true) => c.tp_ee += 1,
                (true, false) => c.fp_ee += 1,
                (false, false) => {
                    c.tn_ee += 1;
                    c.tp_b += (b == y) as usize;
                }
                (false, true) => {
                    c.fn_ee += 1;
                    c.tp_b += (b == y) as usize;
                    c.tp_k_b += (b == y) as usize;
                    c.fn_k_b += (b != y) as usize;
                }
            }
        }
        c
    }

    /// Samples accepted early, `tp + fp` at `Out:EE`.
    pub fn exited(&self) -> usize {
        self.tp_ee + self.fp_ee
    }
}

/// What the baseline B itself achieves for target class `k` (every sample at `Out:B`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// β: accuracy of B on the samples of the other classes `V − k`.
    pub beta: f64,
    /// η: accuracy (recall) of B on the samples of `k`.
    pub eta: f64,
    /// ζ: precision of B for `k` (samples B calls `k` that are `k`).
    pub zeta: f64,
    /// Accuracy of B over every class.
    pub accuracy: f64,
}

impl Baseline {
    /// β, η, ζ of B for class `k` from labels and B's predictions.
    pub fn of(k: usize, labels: &[usize], b_pred: &[usize]) -> Self {
        let (mut other, mut other_ok, mut kk, mut k_ok, mut called_k, mut all_ok) = (0, 0, 0, 0, 0, 0);
        for (&y, &b) in labels.iter().zip(b_pred) {
            all_ok += (y == b) as usize;
            called_k += (b == k) as usize;
            if y == k {
                kk += 1;
                k_ok += (b == k) as usize;
            } else {
                other += 1;
                other_ok += (b == y) as usize;
            }
        }
        Self {
            beta: ratio(other_ok, other),
            eta: ratio(k_ok, kk),
            zeta: ratio(k_ok, called_k),
            accuracy: ratio(all_ok, labels.len()),
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The seed's quantities for one design on one split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Eq. 5: `acc_out:B(V−k)`, accuracy at `Out:B` on the other classes that reach it.
    pub acc_b_other: f64,
    /// Eq. 6: `acc_out:EE`, the early exit's binary accuracy over the whole split `V`
    /// (`(tp + tn) / |V|`; §5 of the seed: "true and false classifications are from the whole
    /// set V").
    pub acc_ee: f64,
    /// Eq. 7: `acc_out:EE Global`, accuracy of the whole design on the samples of `k`.
    pub acc_global: f64,
    /// Precision at the early exit, `tp / (tp + fp)` (0 when nothing leaves).
    pub precision: f64,
    /// `(tp + fp) / |k|` whether or not the criteria hold.
    pub rate: f64,
    /// Eq. 4: γ, the rate when eq. 5, 6 and 7 all hold, else 0.
    pub gamma: f64,
    /// Whether eq. 5 (`≥ β`), eq. 6 (`≥ η`) and eq. 7 (`≥ η`) hold.
    pub holds: [bool; 3],
    /// Accuracy of the whole design over every class, a sample accepted early counting as
    /// right only if it is of `k` (not a criterion of the seed; shown so that the cost of false
    /// positives is visible).
    pub accuracy_all: f64,
}

impl Assessment {
    /// Evaluates eq. 4–7 for `c` against the baseline's `b`.
    pub fn of(c: &Counts, b: &Baseline) -> Self {
        // Eq. 5: (tp_B − tp_k,B) / (|V| − (tp_EE + fp_EE) − (tp_k,B + fn_k,B)).
        let acc_b_other = ratio(c.tp_b - c.tp_k_b, c.n - c.exited() - (c.tp_k_b + c.fn_k_b));
        // Eq. 6: tx / (tx + fx) at the early exit over V.
        let acc_ee = ratio(c.tp_ee + c.tn_ee, c.n);
        // Eq. 7: (tp_EE + tp_k,B) / (tp_EE + tp_k,B + fn_k,B).
        let acc_global = ratio(c.tp_ee + c.tp_k_b, c.tp_ee + c.tp_k_b + c.fn_k_b);
        // Rounding guard: a criterion equal to the baseline in exact arithmetic holds.
        const EPS: f64 = 1e-12;
        let holds = [
            acc_b_other + EPS >= b.beta,
            acc_ee + EPS >= b.eta,
            acc_global + EPS >= b.eta,
        ];
        let rate = ratio(c.exited(), c.k);
        Self {
            acc_b_other,
            acc_ee,
            acc_global,
            precision: ratio(c.tp_ee, c.exited()),
            rate,
            gamma: if holds.iter().all(|&h| h) { rate } else { 0.0 },
            holds,
            accuracy_all: ratio(c.tp_ee + c.tp_b, c.n),
        }
    }

    /// Whether eq. 5–7 all hold.
    pub fn keeps_accuracy(&self) -> bool {
        self.holds.iter().all(|&h| h)
    }
}

/// Eq. 12: γ_j of a second exit, its accepted samples over the samples of `k` minus the samples
/// the first exit accepted (`|k| − tp_i − fp_i`); 0 when that is not positive.
pub fn gamma_second(k: usize, first_exited: usize, second_exited: usize) -> f64 {
    let rest = k as i64 - first_exited as i64;
    if rest <= 0 {
        0.0
    } else {
        second_exited as f64 / rest as f64
    }
}

//! The exit table: one pass of every exit over a labelled split, kept on the host.
//!
//! Per exit and per sample it holds the predicted class, whether it is right, and the score of
//! each policy kind (largest probability, certainty `1 − H/ln K`, the learned confidence). Every
//! threshold search, sweep and exit-rate estimate then runs on the host through the same rule
//! as [`Policy::simulate`], without touching the network again.
//!
//! A table remembers which split it was read from ([`SplitKind`]); calibration accepts only
//! tables of the validation split. Reading a table from a model is
//! `crate::infer::ExitTable::collect`; everything here is host arithmetic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Policy;
use crate::error::{Error, Result};

/// Which part of a data set a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    /// Training data.
    Train,
    /// Held-out validation data: the only split calibration reads.
    Val,
    /// Test data: only for the final, honest evaluation.
    Test,
}

impl FromStr for SplitKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Self::Train),
            "val" | "valid" | "validation" => Ok(Self::Val),
            "test" => Ok(Self::Test),
            _ => Err(Error::UnknownName {
                what: "split",
                name: s.into(),
                expected: "train, val, test".into(),
            }),
        }
    }
}

impl fmt::Display for SplitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        })
    }
}

/// The score a threshold policy compares, per early exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// Largest softmax probability ([`Policy::MaxProb`]).
    MaxProb,
    /// Certainty `1 − H(p)/ln K` ([`Policy::Entropy`], survey eq. 11).
    Entropy,
    /// The learned confidence head's sigmoid ([`Policy::Confidence`]).
    Confidence,
}

/// Names accepted by [`ScoreKind::from_str`].
pub const SCORE_KINDS: &str = "maxprob, entropy, confidence";

impl FromStr for ScoreKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "maxprob" => Ok(Self::MaxProb),
            "entropy" => Ok(Self::Entropy),
            "confidence" => Ok(Self::Confidence),
            _ => Err(Error::UnknownName {
                what: "policy kind",
                name: s.into(),
                expected: SCORE_KINDS.into(),
            }),
        }
    }
}

impl fmt::Display for ScoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MaxProb => "maxprob",
            Self::Entropy => "entropy",
            Self::Confidence => "confidence",
        })
    }
}

impl ScoreKind {
    /// The score kind a threshold policy compares, `None` for the others.
    pub fn of(policy: &Policy) -> Option<Self> {
        match policy {
            Policy::MaxProb(_) => Some(Self::MaxProb),
            Policy::Entropy(_) => Some(Self::Entropy),
            Policy::Confidence(_) => Some(Self::Confidence),
            _ => None,
        }
    }
}

/// One exit's column of an [`ExitTable`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitColumn {
    /// Predicted class per sample.
    pub pred: Vec<usize>,
    /// Largest softmax probability per sample.
    pub maxprob: Vec<f32>,
    /// `1 − H(p)/ln K` per sample.
    pub certainty: Vec<f32>,
    /// Sigmoid of the confidence head per sample (early exits with a confidence branch).
    pub confidence: Option<Vec<f32>>,
    /// `σ` of the predicted class's logit per sample ([`Policy::Class`]'s score).
    #[serde(default)]
    pub top_sigmoid: Vec<f32>,
}

/// Every exit's answer for every sample of one split, on the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitTable {
    /// The split the samples come from.
    pub split: SplitKind,
    /// Labels per sample.
    pub labels: Vec<usize>,
    /// One column per exit, the final classifier last.
    pub exits: Vec<ExitColumn>,
    /// MACs spent by a sample leaving at each exit (final last), earlier heads included.
    pub exit_macs: Vec<u64>,
    /// MACs of the plain backbone (the network without exits).
    pub backbone_macs: u64,
}

/// What a policy does on a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Share of samples answered correctly.
    pub accuracy: f64,
    /// Mean MACs spent per sample over the plain backbone's MACs.
    pub relative_cost: f64,
    /// Share of samples leaving at each exit (final last).
    pub coverage: Vec<f64>,
    /// Accuracy of the samples leaving at each exit (`None` where none leaves).
    pub exit_accuracy: Vec<Option<f64>>,
}

impl ExitTable {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the table has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of early exits (the final classifier not counted).
    pub fn num_exits(&self) -> usize {
        self.exits.len() - 1
    }

    /// Whether sample `i` is right at exit `k`.
    pub fn correct(&self, k: usize, i: usize) -> bool {
        self.exits[k].pred[i] == self.labels[i]
    }

    /// Accuracy of exit `k` on every sample (as if every sample left there).
    pub fn exit_accuracy_all(&self, k: usize) -> f64 {
        let n = self.len().max(1) as f64;
        (0..self.len()).filter(|&i| self.correct(k, i)).count() as f64 / n
    }

    /// Accuracy of the final classifier (the full network).
    pub fn full_accuracy(&self) -> f64 {
        self.exit_accuracy_all(self.num_exits())
    }

    /// Relative cost of running every sample to the final classifier with every head on the way.
    pub fn full_relative_cost(&self) -> f64 {
        *self.exit_macs.last().expect("final exit") as f64 / self.backbone_macs as f64
    }

    /// The scores of `kind` at every early exit (`scores[k][i]`).
    pub fn scores(&self, kind: ScoreKind) -> Result<Vec<&[f32]>> {
        self.exits[..self.num_exits()]
            .iter()
            .enumerate()
            .map(|(k, c)| match kind {
                ScoreKind::MaxProb => Ok(c.maxprob.as_slice()),
                ScoreKind::Entropy => Ok(c.certainty.as_slice()),
                ScoreKind::Confidence => c.confidence.as_deref().ok_or_else(|| {
                    Error::invalid(
                        "policy",
                        format!("exit {k} has no confidence branch; use maxprob or entropy"),
                    )
                }),
            })
            .collect()
    }

    /// The exit each sample takes under `policy` (final classifier = `num_exits()`), by the
    /// same rule as [`Policy::simulate`].
    pub fn simulate(&self, policy: &Policy) -> Result<Vec<usize>> {
        let ne = self.num_exits();
        policy.check(ne, self.exits[..ne].iter().all(|c| c.confidence.is_some()))?;
        if matches!(policy, Policy::Ensemble) {
            return Err(Error::invalid(
                "policy",
                "`ensemble` mixes every exit; it has no per-sample exit to simulate",
            ));
        }
        let scores: Vec<Vec<f32>> = match policy {
            Policy::Class(_) => {
                if let Some(k) = (0..ne).find(|&k| self.exits[k].top_sigmoid.len() != self.len()) {
                    return Err(Error::invalid(
                        "policy",
                        format!(
                            "`{policy}` compares σ of the predicted class's logit, which this table does not hold for exit {k}"
                        ),
                    ));
                }
                self.exits[..ne].iter().map(|c| c.top_sigmoid.clone()).collect()
            }
            _ => {
                let kind = ScoreKind::of(policy).unwrap_or(ScoreKind::MaxProb);
                self.scores(kind)?.into_iter().map(|s| s.to_vec()).collect()
            }
        };
        let preds: Vec<Vec<usize>> = self.exits[..ne].iter().map(|c| c.pred.clone()).collect();
        let mut exits = policy.simulate(&scores, &preds);
        if ne == 0 {
            exits = vec![0; self.len()];
        }
        Ok(exits)
    }

    /// Accuracy, relative cost and per-exit coverage of `policy` on this table.
    pub fn outcome(&self, policy: &Policy) -> Result<Outcome> {
        let exits = self.simulate(policy)?;
        Ok(self.outcome_of_exits(&exits))
    }

    /// Accuracy, relative cost and per-exit coverage given each sample's exit.
    pub fn outcome_of_exits(&self, exits: &[usize]) -> Outcome {
        let n_out = self.exits.len();
        let mut count = vec![0usize; n_out];
        let mut right = vec![0usize; n_out];
        let mut macs = 0f64;
        for (i, &e) in exits.iter().enumerate() {
            count[e] += 1;
            if self.correct(e, i) {
                right[e] += 1;
            }
            macs += self.exit_macs[e] as f64;
        }
        let n = exits.len().max(1) as f64;
        Outcome {
            accuracy: right.iter().sum::<usize>() as f64 / n,
            relative_cost: macs / n / self.backbone_macs as f64,
            coverage: count.iter().map(|&c| c as f64 / n).collect(),
            exit_accuracy: count
                .iter()
                .zip(&right)
                .map(|(&c, &r)| (c > 0).then(|| r as f64 / c as f64))
                .collect(),
        }
    }

    /// Samples that some earlier exit classifies correctly and the final classifier gets
    /// wrong ("over-thinking", Kaya et al. via the survey §6).
    pub fn overthinking(&self) -> usize {
        let last = self.num_exits();
        (0..self.len())
            .filter(|&i| !self.correct(last, i) && (0..last).any(|k| self.correct(k, i)))
            .count()
    }

    /// The table with only the samples at `rows` (in that order).
    pub fn subset(&self, rows: &[usize]) -> Self {
        let pick_u = |v: &Vec<usize>| rows.iter().map(|&i| v[i]).collect();
        let pick_f = |v: &Vec<f32>| rows.iter().map(|&i| v[i]).collect();
        Self {
            split: self.split,
            labels: pick_u(&self.labels),
            exits: self
                .exits
                .iter()
                .map(|c| ExitColumn {
                    pred: pick_u(&c.pred),
                    maxprob: pick_f(&c.maxprob),
                    certainty: pick_f(&c.certainty),
                    confidence: c.confidence.as_ref().map(pick_f),
                    top_sigmoid: if c.top_sigmoid.is_empty() {
                        Vec::new()
                    } else {
                        pick_f(&c.top_sigmoid)
                    },
                })
                .collect(),
            exit_macs: self.exit_macs.clone(),
            backbone_macs: self.backbone_macs,
        }
    }

    /// The table as if only the early exits in `keep` (increasing) were there; exit MACs are
    /// taken from `exit_macs` (one per kept exit, then the final classifier).
    pub fn with_exits(&self, keep: &[usize], exit_macs: Vec<u64>) -> Self {
        let mut exits: Vec<ExitColumn> = keep.iter().map(|&k| self.exits[k].clone()).collect();
        exits.push(self.exits[self.num_exits()].clone());
        Self {
            split: self.split,
            labels: self.labels.clone(),
            exits,
            exit_macs,
            backbone_macs: self.backbone_macs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_counts_exits_and_costs() {
        let col = |pred: Vec<usize>, s: Vec<f32>| ExitColumn {
            pred,
            maxprob: s.clone(),
            certainty: s,
            confidence: None,
            top_sigmoid: Vec::new(),
        };
        let t = ExitTable {
            split: SplitKind::Val,
            labels: vec![0, 1, 2, 3],
            exits: vec![
                col(vec![0, 0, 2, 0], vec![0.9, 0.8, 0.3, 0.1]),
                col(vec![0, 1, 2, 3], vec![0.0; 4]),
            ],
            exit_macs: vec![30, 110],
            backbone_macs: 100,
        };
        let o = t.outcome(&"maxprob:0.5".parse().unwrap()).unwrap();
        // Samples 0 and 1 leave at exit 0 (0 right, 1 wrong); 2 and 3 reach the end, both right.
        assert_eq!(o.coverage, vec![0.5, 0.5]);
        assert_eq!(o.exit_accuracy, vec![Some(0.5), Some(1.0)]);
        assert!((o.accuracy - 0.75).abs() < 1e-12);
        assert!((o.relative_cost - (30.0 + 30.0 + 110.0 + 110.0) / 4.0 / 100.0).abs() < 1e-12);
        // Over-thinking: none here (the final exit is always right).
        assert_eq!(t.overthinking(), 0);
        assert!(t.outcome(&"confidence".parse().unwrap()).is_err());
    }
}

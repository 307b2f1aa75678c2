//! Exit policies and score tables: when is an exit's answer good enough?
//!
//! A policy turns one exit's output into a per-sample score and an exit decision. It never
//! touches the model. The same rules are available on device tensors (for the engine) and on
//! host vectors ([`Policy::simulate`], for calibration sweeps and as the engine's reference).
//! Training (validation under the eval policy) and inference both use this module; it imports
//! neither.

use std::fmt;
use std::str::FromStr;

use burn::tensor::activation::{log_softmax, sigmoid, softmax};
use burn::tensor::{Bool, Int, Tensor};

use crate::error::{Error, Result};
use crate::model::ExitOutput;

mod table;
pub use table::*;

/// One threshold for every exit, or one per exit.
#[derive(Clone, Debug, PartialEq)]
pub enum Thresholds {
    /// The same value at every exit.
    Shared(f32),
    /// One value per early exit.
    PerExit(Vec<f32>),
}

impl Thresholds {
    /// The threshold at exit `k`.
    pub fn at(&self, k: usize) -> f32 {
        match self {
            Thresholds::Shared(t) => *t,
            Thresholds::PerExit(v) => v[k],
        }
    }

    fn parse(s: &str, what: &str) -> Result<Self> {
        let vals: Result<Vec<f32>> = s
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| Error::invalid("policy", format!("`{what}:{s}`: `{v}` is not a number")))
            })
            .collect();
        let vals = vals?;
        Ok(if vals.len() == 1 {
            Thresholds::Shared(vals[0])
        } else {
            Thresholds::PerExit(vals)
        })
    }
}

impl fmt::Display for Thresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Thresholds::Shared(t) => write!(f, "{t}"),
            Thresholds::PerExit(v) => {
                let s: Vec<String> = v.iter().map(|t| t.to_string()).collect();
                f.write_str(&s.join(","))
            }
        }
    }
}

/// When a sample leaves.
#[derive(Clone, Debug, PartialEq, serde_with::SerializeDisplay, serde_with::DeserializeFromStr)]
pub enum Policy {
    /// The learned confidence head: exit when `h ≥ T` (EENets Algorithm 1, `T = 0.5`).
    Confidence(Thresholds),
    /// Exit when the largest softmax probability is `≥ q`.
    MaxProb(Thresholds),
    /// Exit when the normalised entropy `H(p)/ln K` is `≤ h` (survey eq. 11).
    Entropy(Thresholds),
    /// Exit when the last `n` exits (this one included) predict the same class.
    Patience(usize),
    /// Never exit early: run the plain backbone (no head is evaluated).
    Never,
    /// The differentiable-branching soft recursive output over all exits (no early stop):
    /// `f̂_b = g_b f_b + (1 − g_b) f̂_{b+1}`.
    Ensemble,
}

/// The policy forms [`Policy::from_str`] accepts.
pub const POLICY_FORMS: &str = "confidence[:T], maxprob:Q, entropy:H, patience:N, never, ensemble (T, Q, H: one value or one per exit, comma-separated)";

impl Default for Policy {
    fn default() -> Self {
        Policy::Confidence(Thresholds::Shared(0.5))
    }
}

impl FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (name, arg) = match s.split_once(':') {
            Some((a, b)) => (a.trim(), Some(b.trim())),
            None => (s.trim(), None),
        };
        fn need<'a>(arg: Option<&'a str>, s: &str) -> Result<&'a str> {
            arg.ok_or_else(|| Error::invalid("policy", format!("`{s}` needs a threshold; expected {POLICY_FORMS}")))
        }
        let p = match name {
            "confidence" => Policy::Confidence(match arg {
                Some(a) => Thresholds::parse(a, name)?,
                None => Thresholds::Shared(0.5),
            }),
            "maxprob" => Policy::MaxProb(Thresholds::parse(need(arg, s)?, name)?),
            "entropy" => Policy::Entropy(Thresholds::parse(need(arg, s)?, name)?),
            "patience" => {
                let n: usize = need(arg, s)?
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| Error::invalid("policy", format!("`{s}`: patience needs a whole number ≥ 1")))?;
                Policy::Patience(n)
            }
            "never" if arg.is_none() => Policy::Never,
            "ensemble" if arg.is_none() => Policy::Ensemble,
            _ => {
                return Err(Error::UnknownName {
                    what: "policy",
                    name: s.into(),
                    expected: POLICY_FORMS.into(),
                });
            }
        };
        Ok(p)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Confidence(t) => write!(f, "confidence:{t}"),
            Policy::MaxProb(t) => write!(f, "maxprob:{t}"),
            Policy::Entropy(t) => write!(f, "entropy:{t}"),
            Policy::Patience(n) => write!(f, "patience:{n}"),
            Policy::Never => f.write_str("never"),
            Policy::Ensemble => f.write_str("ensemble"),
        }
    }
}

/// Per-sample exit decision state carried between exits (patience's streaks).
#[derive(Clone, Debug)]
pub struct PolicyState {
    prev: Option<Tensor<1, Int>>,
    streak: Option<Tensor<1, Int>>,
}

impl PolicyState {
    /// No exit seen yet.
    pub fn new() -> Self {
        Self {
            prev: None,
            streak: None,
        }
    }

    /// Rebuilds a state from [`Self::parts`]: the previous exit's predicted class and the
    /// agreement streak per sample (how tiers carry patience across processes).
    pub fn from_parts(prev: Tensor<1, Int>, streak: Tensor<1, Int>) -> Self {
        Self {
            prev: Some(prev),
            streak: Some(streak),
        }
    }

    /// The previous exit's predicted class and the agreement streak per sample, when a
    /// policy keeps them (patience); `None` otherwise.
    pub fn parts(&self) -> Option<(Tensor<1, Int>, Tensor<1, Int>)> {
        match (&self.prev, &self.streak) {
            (Some(p), Some(s)) => Some((p.clone(), s.clone())),
            _ => None,
        }
    }

    /// Keeps only the samples at `rows`.
    pub fn select(self, rows: Tensor<1, Int>) -> Self {
        Self {
            prev: self.prev.map(|p| p.select(0, rows.clone())),
            streak: self.streak.map(|s| s.select(0, rows)),
        }
    }

    /// The samples of several states (all after the same exit) one after the other.
    pub fn cat(parts: Vec<PolicyState>) -> Self {
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one part");
        }
        let (mut prev, mut streak) = (Vec::new(), Vec::new());
        let mut all = true;
        for p in parts {
            match (p.prev, p.streak) {
                (Some(a), Some(b)) => {
                    prev.push(a);
                    streak.push(b);
                }
                _ => all = false,
            }
        }
        if !all || prev.is_empty() {
            return Self::new();
        }
        Self::from_parts(Tensor::cat(prev, 0), Tensor::cat(streak, 0))
    }
}

impl Default for PolicyState {
    fn default() -> Self {
        Self::new()
    }
}

/// Largest softmax probability per sample, `[N]`.
pub fn max_prob(logits: &Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    softmax(logits.clone(), 1).max_dim(1).reshape([n])
}

/// `1 − H(p)/ln K` per sample, `[N]` (1 = certain, 0 = uniform); computed in log space.
pub fn certainty(logits: &Tensor<2>) -> Tensor<1> {
    let [n, k] = logits.dims();
    let logp = log_softmax(logits.clone(), 1);
    let h = (logp.clone().exp() * logp).sum_dim(1).neg().reshape([n]);
    h.div_scalar((k as f64).ln()).neg().add_scalar(1.0)
}

impl Policy {
    /// Checks the policy against a network with `num_exits` early exits.
    pub fn check(&self, num_exits: usize, has_confidence: bool) -> Result<()> {
        let thresholds = match self {
            Policy::Confidence(t) | Policy::MaxProb(t) | Policy::Entropy(t) => Some(t),
            _ => None,
        };
        if let Some(Thresholds::PerExit(v)) = thresholds
            && v.len() != num_exits
        {
            return Err(Error::invalid(
                "policy",
                format!(
                    "`{self}` gives {} thresholds, the network has {num_exits} early exits",
                    v.len()
                ),
            ));
        }
        if matches!(self, Policy::Confidence(_) | Policy::Ensemble) && !has_confidence && num_exits > 0 {
            return Err(Error::invalid(
                "policy",
                format!("`{self}` needs heads with a confidence branch"),
            ));
        }
        Ok(())
    }

    /// The score this policy reports as "confidence" at an early exit, `[N]`.
    pub fn score(&self, out: &ExitOutput) -> Tensor<1> {
        match (self, &out.confidence) {
            (Policy::Confidence(_), Some(c)) => {
                let [n, _] = c.dims();
                sigmoid(c.clone()).reshape([n])
            }
            (Policy::Entropy(_), _) => certainty(&out.logits),
            _ => max_prob(&out.logits),
        }
    }

    /// Which samples leave at early exit `k`, on the device.
    pub fn decide(&self, k: usize, out: &ExitOutput, score: &Tensor<1>, state: &mut PolicyState) -> Tensor<1, Bool> {
        match self {
            Policy::Confidence(t) | Policy::MaxProb(t) => score.clone().greater_equal_elem(t.at(k)),
            Policy::Entropy(t) => score.clone().greater_equal_elem(1.0 - t.at(k)),
            Policy::Patience(n) => {
                let pred = out.logits.clone().argmax(1).reshape([-1]);
                let streak = match (state.prev.take(), state.streak.take()) {
                    (Some(prev), Some(streak)) => {
                        // Same class as the previous exit: one longer; otherwise a new streak of 1.
                        pred.clone().equal(prev).int() * streak + 1
                    }
                    _ => pred.ones_like(),
                };
                let decision = streak.clone().greater_equal_elem(*n as i64);
                state.prev = Some(pred);
                state.streak = Some(streak);
                decision
            }
            Policy::Never | Policy::Ensemble => {
                let [n] = score.dims();
                Tensor::<1, Bool>::from_data(burn::tensor::TensorData::new(vec![false; n], [n]), &score.device())
            }
        }
    }

    /// Host-side reference: the exit each sample takes, given every exit's scores and
    /// predicted classes (`scores[k][i]`, `preds[k][i]`, early exits only). Samples that no
    /// exit takes get `scores.len()` (the final classifier).
    ///
    /// Used to sweep thresholds without re-running the network, and to check the engine.
    pub fn simulate(&self, scores: &[Vec<f32>], preds: &[Vec<usize>]) -> Vec<usize> {
        let n_exits = scores.len();
        let n = scores.first().map_or(preds.first().map_or(0, |p| p.len()), |s| s.len());
        (0..n)
            .map(|i| {
                let mut streak = 0usize;
                for k in 0..n_exits {
                    let s = scores[k][i];
                    let go = match self {
                        Policy::Confidence(t) | Policy::MaxProb(t) => s >= t.at(k),
                        Policy::Entropy(t) => s >= 1.0 - t.at(k),
                        Policy::Patience(p) => {
                            streak = if k > 0 && preds[k][i] == preds[k - 1][i] {
                                streak + 1
                            } else {
                                1
                            };
                            streak >= *p
                        }
                        Policy::Never | Policy::Ensemble => false,
                    };
                    if go {
                        return k;
                    }
                }
                n_exits
            })
            .collect()
    }
}

/// Index of the largest value (first on ties), as `argmax` on the device does.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "confidence:0.5",
            "maxprob:0.9",
            "entropy:0.2",
            "patience:2",
            "never",
            "ensemble",
            "maxprob:0.8,0.9",
        ] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
        assert_eq!("confidence".parse::<Policy>().unwrap(), Policy::default());
        assert!("maxprob".parse::<Policy>().is_err());
        assert!("patience:0".parse::<Policy>().is_err());
        assert!("foo:1".parse::<Policy>().is_err());
        assert!("maxprob:abc".parse::<Policy>().is_err());
    }

    #[test]
    fn check_counts_thresholds() {
        let p: Policy = "maxprob:0.8,0.9".parse().unwrap();
        assert!(p.check(2, true).is_ok());
        assert!(p.check(3, true).unwrap_err().to_string().contains("2 thresholds"));
        assert!(Policy::default().check(2, false).is_err());
    }

    #[test]
    fn simulate_patience_counts_agreeing_exits() {
        let preds = vec![vec![1, 1, 2], vec![1, 2, 2], vec![1, 2, 0]];
        let scores = vec![vec![0.0; 3]; 3];
        assert_eq!(Policy::Patience(2).simulate(&scores, &preds), vec![1, 2, 1]);
        assert_eq!(Policy::Patience(1).simulate(&scores, &preds), vec![0, 0, 0]);
    }
}

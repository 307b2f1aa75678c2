//! Exit policies and score tables: when is an exit's answer good enough?
//!
//! A policy turns one exit's output into a per-sample score and an exit decision. It never
//! touches the model. Scores and decisions are computed on the host, on an exit's logits brought
//! over once ([`ExitLogits`]): a batch's logits are a few kilobytes, and a few host loops cost
//! less than the dozen small tensor operations (each a dispatch, on a GPU a launch) the same rules
//! take on a device, which at batch 1 cost as much as a small network's stage. The engine, the
//! tiers, calibration sweeps ([`Policy::simulate`]) and training's validation all score with this
//! code; it imports neither training nor inference.

use std::fmt;
use std::str::FromStr;

use crate::cpu::host;
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
    /// The value of an exit that never fires, written `off` (what calibration gives an exit
    /// no sample should take). Every finite threshold lies in `[0, 1]`: the scores are
    /// probabilities, sigmoids and normalised certainties.
    pub const OFF: f32 = f32::INFINITY;

    /// The threshold at exit `k`.
    pub fn at(&self, k: usize) -> f32 {
        match self {
            Thresholds::Shared(t) => *t,
            Thresholds::PerExit(v) => v[k],
        }
    }

    fn parse(s: &str, what: &str) -> Result<Self> {
        let vals: Result<Vec<f32>> = s.split(',').map(|v| parse_threshold(v.trim(), what, s)).collect();
        let vals = vals?;
        Ok(if vals.len() == 1 {
            Thresholds::Shared(vals[0])
        } else {
            Thresholds::PerExit(vals)
        })
    }
}

/// One threshold of `what:all`: `off`, or a number in `[0, 1]`.
fn parse_threshold(v: &str, what: &str, all: &str) -> Result<f32> {
    if v == "off" {
        return Ok(Thresholds::OFF);
    }
    let meaning = match what {
        "maxprob" => "a softmax probability",
        "entropy" => "a normalised entropy H(p)/ln K",
        _ => "the confidence head's sigmoid",
    };
    match v.parse::<f32>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Ok(x) if x.is_finite() => Err(Error::invalid(
            "policy",
            format!("`{what}:{all}`: `{v}` is outside [0, 1] ({meaning}); write `off` for an exit that never fires"),
        )),
        _ => Err(Error::invalid(
            "policy",
            format!("`{what}:{all}`: `{v}` is not a number in [0, 1] or `off`"),
        )),
    }
}

/// One threshold as text: `off` for an exit that never fires.
fn threshold_text(t: f32, digits: Option<usize>) -> String {
    match (t.is_finite(), digits) {
        (false, _) => "off".into(),
        (true, Some(d)) => format!("{t:.d$}"),
        (true, None) => t.to_string(),
    }
}

impl Thresholds {
    /// The thresholds as text with `digits` decimals (`None`: as many as round-trip).
    pub fn to_text(&self, digits: Option<usize>) -> String {
        match self {
            Thresholds::Shared(t) => threshold_text(*t, digits),
            Thresholds::PerExit(v) => v
                .iter()
                .map(|&t| threshold_text(t, digits))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl fmt::Display for Thresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(None))
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
    /// Class-specific exits (the class-specific seed, §3.3): per early exit, the classes it may
    /// answer, each with its own threshold α. A sample leaves at exit `k` when the exit's
    /// predicted class `c` (its largest logit) is one of exit `k`'s classes and `σ(z_c) ≥ α`;
    /// it answers `c`. An exit with no class never fires. The branches of a class-specific
    /// design give one logit per class they recognise (`σ(z_c)` is the branch's belief that the
    /// sample is of `c`) and a far lower constant for every other class.
    Class(Vec<Vec<ClassRule>>),
}

/// One class an early exit of [`Policy::Class`] may answer, and the sigmoid threshold α its
/// logit must reach.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassRule {
    /// The class.
    pub class: usize,
    /// The threshold on `σ(z_class)`, in `[0, 1]`.
    pub alpha: f32,
}

impl Policy {
    /// The class rules of early exit `k` of a [`Policy::Class`] (empty for an exit that never
    /// fires); `None` for every other policy.
    pub fn class_rules(&self, k: usize) -> Option<&[ClassRule]> {
        match self {
            Policy::Class(v) => Some(v.get(k).map_or(&[][..], |r| &r[..])),
            _ => None,
        }
    }

    /// Whether a sample whose predicted class at early exit `k` is `pred`, with `σ(z_pred)` of
    /// `score`, leaves there under [`Policy::Class`].
    fn class_fires(rules: &[ClassRule], pred: usize, score: f32) -> bool {
        rules.iter().any(|r| r.class == pred && score >= r.alpha)
    }

    fn parse_class(arg: &str, all: &str) -> Result<Self> {
        let mut exits = Vec::new();
        for exit in arg.split(',') {
            let exit = exit.trim();
            let mut rules: Vec<ClassRule> = Vec::new();
            if exit != "off" {
                for rule in exit.split('+') {
                    let Some((c, a)) = rule.split_once('@') else {
                        return Err(Error::invalid(
                            "policy",
                            format!("`{all}`: `{rule}` is not CLASS@ALPHA (e.g. `3@0.97`)"),
                        ));
                    };
                    let class = c.trim().parse::<usize>().map_err(|_| {
                        Error::invalid("policy", format!("`{all}`: `{}` is not a class label", c.trim()))
                    })?;
                    let alpha = match a.trim().parse::<f32>() {
                        Ok(x) if (0.0..=1.0).contains(&x) => x,
                        _ => {
                            return Err(Error::invalid(
                                "policy",
                                format!(
                                    "`{all}`: `{}` is not a threshold in [0, 1] (σ of the class's logit)",
                                    a.trim()
                                ),
                            ));
                        }
                    };
                    if rules.iter().any(|r| r.class == class) {
                        return Err(Error::invalid(
                            "policy",
                            format!("`{all}`: class {class} is given twice at one exit"),
                        ));
                    }
                    rules.push(ClassRule { class, alpha });
                }
            }
            exits.push(rules);
        }
        Ok(Policy::Class(exits))
    }

    /// Checks that every class a [`Policy::Class`] names is one of the model's `classes`
    /// (other policies name none).
    pub fn check_classes(&self, classes: usize) -> Result<()> {
        if let Policy::Class(exits) = self
            && let Some(r) = exits.iter().flatten().find(|r| r.class >= classes)
        {
            return Err(Error::invalid(
                "policy",
                format!(
                    "`{self}` names class {}, the model has classes 0 to {}",
                    r.class,
                    classes.saturating_sub(1)
                ),
            ));
        }
        Ok(())
    }
}

/// The policy forms [`Policy::from_str`] accepts.
pub const POLICY_FORMS: &str = "confidence[:T], maxprob:Q, entropy:H, patience:N, never, ensemble, class:K@A[+K@A],… (T, Q, H: one value in [0, 1] or one per exit, comma-separated; `off` for an exit that never fires; class: per exit the classes it answers with their thresholds)";

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
                let n = match need(arg, s)?.parse::<usize>() {
                    Ok(n) if n >= 1 => n,
                    Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                        return Err(Error::invalid(
                            "policy",
                            format!(
                                "`{s}`: the patience is too large (a streak longer than the model's exits never ends)"
                            ),
                        ));
                    }
                    _ => {
                        return Err(Error::invalid(
                            "policy",
                            format!("`{s}`: patience needs a whole number ≥ 1"),
                        ));
                    }
                };
                Policy::Patience(n)
            }
            "class" => Policy::parse_class(need(arg, s)?, s)?,
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
            Policy::Class(exits) => {
                f.write_str("class:")?;
                for (k, rules) in exits.iter().enumerate() {
                    if k > 0 {
                        f.write_str(",")?;
                    }
                    if rules.is_empty() {
                        f.write_str("off")?;
                    }
                    for (j, r) in rules.iter().enumerate() {
                        let sep = if j > 0 { "+" } else { "" };
                        write!(f, "{sep}{}@{}", r.class, r.alpha)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The score cut-off of policy threshold `t` of `kind` (entropy thresholds bound the
/// normalised entropy from above, which is the certainty `1 − H/ln K` from below); `+∞` for
/// [`Thresholds::OFF`].
pub fn score_cutoff(kind: ScoreKind, t: f32) -> f32 {
    match kind {
        _ if !t.is_finite() => f32::INFINITY,
        ScoreKind::Entropy => 1.0 - t,
        _ => t,
    }
}

/// The policy threshold of `kind` whose cut-off is score `s`, inside `[0, 1]`: a cut-off
/// above every score is [`Thresholds::OFF`], one below every score is the threshold that lets
/// every sample leave (scores lie in `[0, 1]`).
pub fn threshold_for_cutoff(kind: ScoreKind, s: f32) -> f32 {
    if s.is_nan() || s > 1.0 {
        return Thresholds::OFF;
    }
    let s = s.max(0.0);
    match kind {
        ScoreKind::Entropy => 1.0 - s,
        _ => s,
    }
}

/// Per-sample exit decision state carried between exits (patience's streaks), on the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyState {
    /// The previous exit's predicted class and the agreement streak per sample; `None` before
    /// the first exit (and for policies that keep no state).
    parts: Option<(Vec<i64>, Vec<i64>)>,
}

impl PolicyState {
    /// No exit seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a state from [`Self::parts`]: the previous exit's predicted class and the
    /// agreement streak per sample (how tiers carry patience across processes).
    ///
    /// # Errors
    /// The two vectors differ in length.
    pub fn from_parts(prev: Vec<i64>, streak: Vec<i64>) -> Result<Self> {
        if prev.len() != streak.len() {
            return Err(Error::invalid(
                "policy state",
                format!("{} previous classes for {} streaks", prev.len(), streak.len()),
            ));
        }
        Ok(Self {
            parts: Some((prev, streak)),
        })
    }

    /// The previous exit's predicted class and the agreement streak per sample, when a
    /// policy keeps them (patience); `None` otherwise.
    pub fn parts(&self) -> Option<(&[i64], &[i64])> {
        self.parts.as_ref().map(|(p, s)| (&p[..], &s[..]))
    }

    /// Keeps only the samples at `rows`.
    pub fn select(self, rows: &[usize]) -> Self {
        Self {
            parts: self.parts.map(|(p, s)| {
                (
                    rows.iter().map(|&r| p[r]).collect(),
                    rows.iter().map(|&r| s[r]).collect(),
                )
            }),
        }
    }

    /// The samples of several states (all after the same exit) one after the other.
    pub fn cat(parts: Vec<PolicyState>) -> Self {
        let mut joined: Option<(Vec<i64>, Vec<i64>)> = Some((Vec::new(), Vec::new()));
        for p in parts {
            joined = match (joined, p.parts) {
                (Some((mut a, mut b)), Some((p, s))) => {
                    a.extend(p);
                    b.extend(s);
                    Some((a, b))
                }
                _ => None,
            };
        }
        Self { parts: joined }
    }
}

/// One exit's outputs for a batch, on the host: what policies score and answers are made of.
#[derive(Clone, Debug, PartialEq)]
pub struct ExitLogits {
    /// Number of classes.
    pub classes: usize,
    /// Class logits, row-major `[n, classes]`.
    pub logits: Vec<f32>,
    /// Confidence logits (before the sigmoid), `[n]`, when the head has a confidence branch.
    pub confidence: Option<Vec<f32>>,
}

impl ExitLogits {
    /// Brings a device output to the host.
    pub fn from_output(out: &ExitOutput) -> Self {
        let [_, classes] = out.logits.dims();
        Self {
            classes,
            logits: host(out.logits.clone()),
            confidence: out.confidence.clone().map(host),
        }
    }

    /// Samples.
    pub fn len(&self) -> usize {
        self.logits.len() / self.classes.max(1)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.logits.is_empty()
    }

    /// Logits of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.classes..(i + 1) * self.classes]
    }

    /// Softmax probabilities of the samples at `rows`, row-major `[rows.len(), classes]`.
    pub fn probs(&self, rows: impl IntoIterator<Item = usize>) -> Vec<f32> {
        let mut out = Vec::new();
        for i in rows {
            let row = self.row(i);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let at = out.len();
            out.extend(row.iter().map(|&l| (l - max).exp()));
            let sum: f32 = out[at..].iter().sum();
            out[at..].iter_mut().for_each(|p| *p /= sum);
        }
        out
    }

    /// Predicted class per sample (first on ties).
    pub fn preds(&self) -> Vec<usize> {
        (0..self.len()).map(|i| argmax(self.row(i))).collect()
    }

    /// Largest softmax probability per sample: `1 / Σ_j exp(l_j − max l)`.
    pub fn max_prob(&self) -> Vec<f32> {
        (0..self.len())
            .map(|i| {
                let row = self.row(i);
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                1.0 / row.iter().map(|&l| (l - max).exp()).sum::<f32>()
            })
            .collect()
    }

    /// `1 − H(p)/ln K` per sample (1 = certain, 0 = uniform), computed in log space.
    pub fn certainty(&self) -> Vec<f32> {
        let ln_k = (self.classes as f32).ln();
        (0..self.len())
            .map(|i| {
                let row = self.row(i);
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let log_sum = row.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
                let h: f32 = row
                    .iter()
                    .map(|&l| {
                        let logp = l - max - log_sum;
                        -logp.exp() * logp
                    })
                    .sum();
                // Rounding can put H a hair above ln K; the certainty is a share.
                (1.0 - h / ln_k).clamp(0.0, 1.0)
            })
            .collect()
    }

    /// `σ(max_c z_c)` per sample: the sigmoid of the predicted class's logit (what
    /// [`Policy::Class`] compares with α).
    pub fn top_sigmoid(&self) -> Vec<f32> {
        (0..self.len())
            .map(|i| {
                let z = self.row(i).iter().copied().fold(f32::NEG_INFINITY, f32::max);
                1.0 / (1.0 + (-z).exp())
            })
            .collect()
    }

    /// `sigmoid` of the confidence branch per sample, when the head has one.
    pub fn confidence(&self) -> Option<Vec<f32>> {
        self.confidence
            .as_ref()
            .map(|c| c.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect())
    }
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
        if let Policy::Class(exits) = self
            && exits.len() != num_exits
        {
            return Err(Error::invalid(
                "policy",
                format!(
                    "`{self}` gives the classes of {} exits, the network has {num_exits} early exits",
                    exits.len()
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

    /// The score at or above which a sample leaves at early exit `k` ([`Self::score`]'s
    /// scale), for threshold policies; `+∞` for an exit that is `off`.
    pub fn cutoff(&self, k: usize) -> Option<f32> {
        match self {
            Policy::Confidence(t) | Policy::MaxProb(t) => Some(score_cutoff(ScoreKind::MaxProb, t.at(k))),
            Policy::Entropy(t) => Some(score_cutoff(ScoreKind::Entropy, t.at(k))),
            _ => None,
        }
    }

    /// The score this policy reports as "confidence" at an early exit, one per sample:
    /// `sigmoid(h)` for `confidence` (on heads with the branch), the normalised certainty for
    /// `entropy`, the predicted class's `σ(z)` for `class`, the largest softmax probability
    /// otherwise.
    pub fn score(&self, out: &ExitLogits) -> Vec<f32> {
        match (self, out.confidence()) {
            (Policy::Confidence(_), Some(c)) => c,
            (Policy::Entropy(_), _) => out.certainty(),
            (Policy::Class(_), _) => out.top_sigmoid(),
            _ => out.max_prob(),
        }
    }

    /// Which samples leave at early exit `k`, given their [`Self::score`]s; updates `state`
    /// (patience's streaks) for the next exit.
    pub fn decide(&self, k: usize, out: &ExitLogits, score: &[f32], state: &mut PolicyState) -> Vec<bool> {
        match self {
            Policy::Confidence(_) | Policy::MaxProb(_) | Policy::Entropy(_) => {
                let cut = self.cutoff(k).unwrap_or(f32::INFINITY);
                score.iter().map(|&s| s >= cut).collect()
            }
            Policy::Patience(n) => {
                let pred: Vec<i64> = out.preds().into_iter().map(|c| c as i64).collect();
                let streak: Vec<i64> = match state.parts.take() {
                    // Same class as the previous exit: one longer; otherwise a new streak of 1.
                    Some((prev, streak)) => pred
                        .iter()
                        .zip(prev.iter().zip(&streak))
                        .map(|(p, (q, s))| if p == q { s.saturating_add(1) } else { 1 })
                        .collect(),
                    None => vec![1; pred.len()],
                };
                let decision = streak.iter().map(|&s| s >= *n as i64).collect();
                state.parts = Some((pred, streak));
                decision
            }
            Policy::Class(_) => {
                let rules = self.class_rules(k).unwrap_or_default();
                out.preds()
                    .into_iter()
                    .zip(score)
                    .map(|(c, &s)| Self::class_fires(rules, c, s))
                    .collect()
            }
            Policy::Never | Policy::Ensemble => vec![false; score.len()],
        }
    }

    /// Host-side reference: the exit each sample takes, given every exit's scores and
    /// predicted classes (`scores[k][i]`, `preds[k][i]`, early exits only; the scores of
    /// [`Self::score`]'s kind). Samples that no exit takes get `scores.len()` (the final
    /// classifier).
    ///
    /// Used to sweep thresholds without re-running the network, and to check the engine.
    pub fn simulate(&self, scores: &[Vec<f32>], preds: &[Vec<usize>]) -> Vec<usize> {
        let n_exits = scores.len();
        let n = scores.first().map_or(preds.first().map_or(0, |p| p.len()), |s| s.len());
        let cut: Vec<f32> = (0..n_exits).map(|k| self.cutoff(k).unwrap_or(f32::INFINITY)).collect();
        (0..n)
            .map(|i| {
                let mut streak = 0usize;
                for k in 0..n_exits {
                    let s = scores[k][i];
                    let go = match self {
                        Policy::Confidence(_) | Policy::MaxProb(_) | Policy::Entropy(_) => s >= cut[k],
                        Policy::Patience(p) => {
                            streak = if k > 0 && preds[k][i] == preds[k - 1][i] {
                                streak + 1
                            } else {
                                1
                            };
                            streak >= *p
                        }
                        Policy::Class(_) => Self::class_fires(self.class_rules(k).unwrap_or_default(), preds[k][i], s),
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
        // Too large is said as such, not as "not a whole number".
        let e = "patience:99999999999999999999999"
            .parse::<Policy>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("too large"), "{e}");
        let e = "patience:two".parse::<Policy>().unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
        assert!("foo:1".parse::<Policy>().is_err());
        assert!("maxprob:abc".parse::<Policy>().is_err());
    }

    /// Probability, sigmoid and normalised-entropy thresholds lie in [0, 1]; an exit that never
    /// fires is written `off`, never as an out-of-range number.
    #[test]
    fn thresholds_outside_zero_one_are_refused_and_off_round_trips() {
        for bad in [
            "maxprob:-0.5",
            "maxprob:1.5",
            "entropy:-1",
            "confidence:2",
            "maxprob:0.5,1.01",
            "entropy:inf",
        ] {
            let e = bad.parse::<Policy>().unwrap_err().to_string();
            let value = bad.rsplit([':', ',']).next().unwrap();
            assert!(e.contains(&format!("`{value}`")), "{bad}: {e}");
            assert!(e.contains("[0, 1]") && e.contains("off"), "{bad}: {e}");
        }
        for good in [
            "maxprob:0",
            "maxprob:1",
            "entropy:off",
            "maxprob:0.9,off,0.7",
            "confidence:off",
        ] {
            assert_eq!(good.parse::<Policy>().unwrap().to_string(), good);
        }
        let p: Policy = "maxprob:0.9,off".parse().unwrap();
        assert_eq!(p.cutoff(1), Some(f32::INFINITY));
        let e: Policy = "entropy:off,0.25".parse().unwrap();
        assert_eq!(e.cutoff(0), Some(f32::INFINITY));
        assert_eq!(e.cutoff(1), Some(0.75));
        // `off` never fires, not even for a sample whose score is exactly 1.
        let out = ExitLogits {
            classes: 2,
            logits: vec![100.0, -100.0],
            confidence: None,
        };
        let mut state = PolicyState::new();
        assert_eq!(e.decide(0, &out, &e.score(&out), &mut state), vec![false]);
        assert_eq!(e.decide(1, &out, &e.score(&out), &mut state), vec![true]);
        // Cut-offs map back to thresholds inside [0, 1] or `off`.
        assert_eq!(threshold_for_cutoff(ScoreKind::MaxProb, 1.2), Thresholds::OFF);
        assert_eq!(threshold_for_cutoff(ScoreKind::Entropy, -0.1), 1.0);
        assert_eq!(threshold_for_cutoff(ScoreKind::MaxProb, f32::NAN), Thresholds::OFF);
    }

    #[test]
    fn check_counts_thresholds() {
        let p: Policy = "maxprob:0.8,0.9".parse().unwrap();
        assert!(p.check(2, true).is_ok());
        assert!(p.check(3, true).unwrap_err().to_string().contains("2 thresholds"));
        assert!(Policy::default().check(2, false).is_err());
    }

    /// The host scores equal the same formulas in tensor operations, and patience's streaks
    /// survive selection and concatenation.
    #[test]
    fn host_scores_match_tensor_ops_and_streaks_follow_samples() {
        use burn::tensor::activation::{log_softmax, softmax};
        use burn::tensor::{Device, Distribution, Tensor};
        let device = Device::flex();
        device.seed(3);
        let (n, k) = (6, 7);
        let logits = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 3.0), &device);
        let conf = Tensor::<2>::random([n, 1], Distribution::Normal(0.0, 2.0), &device);
        let out = ExitLogits::from_output(&ExitOutput {
            logits: logits.clone(),
            confidence: Some(conf.clone()),
        });
        let host = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        let max_prob = host(softmax(logits.clone(), 1).max_dim(1).reshape([n]));
        let logp = log_softmax(logits.clone(), 1);
        let h = (logp.clone().exp() * logp).sum_dim(1).neg().reshape([n]);
        let certainty = host(h.div_scalar((k as f64).ln()).neg().add_scalar(1.0));
        let sig = host(burn::tensor::activation::sigmoid(conf).reshape([n]));
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(&out.max_prob(), &max_prob), "{:?} {max_prob:?}", out.max_prob());
        assert!(close(&out.certainty(), &certainty));
        assert!(close(&Policy::default().score(&out), &sig));
        let probs = host(softmax(logits, 1).reshape([n * k]));
        assert!(close(&out.probs(0..n), &probs));
        assert!(close(
            &out.probs([4, 1]),
            &[&probs[4 * k..5 * k], &probs[k..2 * k]].concat()
        ));

        // Patience: the first exit starts every streak at 1; the next one extends the streaks
        // of samples that agree, after the state followed a selection.
        let p = Policy::Patience(2);
        let mut state = PolicyState::new();
        let first = ExitLogits {
            classes: 2,
            logits: vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            confidence: None,
        };
        assert_eq!(p.decide(0, &first, &[0.0; 3], &mut state), vec![false; 3]);
        let state = PolicyState::cat(vec![state.select(&[2, 1])]);
        assert_eq!(state.parts(), Some((&[0, 1][..], &[1, 1][..])));
        let mut state = state;
        let second = ExitLogits {
            classes: 2,
            logits: vec![1.0, 0.0, 1.0, 0.0],
            confidence: None,
        };
        assert_eq!(p.decide(1, &second, &[0.0; 2], &mut state), vec![true, false]);
        assert!(PolicyState::from_parts(vec![0], vec![]).is_err());
        // A streak at the top of its range stays there instead of overflowing.
        let mut state = PolicyState::from_parts(vec![0], vec![i64::MAX]).unwrap();
        let one = ExitLogits {
            classes: 2,
            logits: vec![1.0, 0.0],
            confidence: None,
        };
        assert_eq!(p.decide(1, &one, &[0.0], &mut state), vec![true]);
        assert_eq!(state.parts(), Some((&[0][..], &[i64::MAX][..])));
    }

    /// `class:`: per exit the classes it answers; a sample leaves when its predicted class is
    /// one of them and σ of that logit reaches its α; the engine's rule and the table's agree.
    #[test]
    fn class_policy_parses_decides_and_simulates_alike() {
        for s in ["class:3@0.97", "class:3@0.97+5@0.5,off", "class:off,1@1"] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
        for (bad, says) in [
            ("class:3", "CLASS@ALPHA"),
            ("class:x@0.5", "`x` is not a class label"),
            ("class:3@1.5", "`1.5` is not a threshold"),
            ("class:3@0.9+3@0.8", "class 3 is given twice"),
            ("class", "needs a threshold"),
        ] {
            let e = bad.parse::<Policy>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let p: Policy = "class:2@0.9+0@0.6,off".parse().unwrap();
        assert!(p.check(2, false).is_ok());
        assert!(p.check(3, false).unwrap_err().to_string().contains("2 exits"));
        assert!(p.check_classes(3).is_ok());
        assert!(p.check_classes(2).unwrap_err().to_string().contains("class 2"));
        // σ(3) = 0.953, σ(1) = 0.731, σ(0.2) = 0.55.
        let out = ExitLogits {
            classes: 3,
            logits: vec![
                -9.0, -9.0, 3.0, // predicts 2 at 0.953 ≥ 0.9: leaves
                1.0, -9.0, -9.0, // predicts 0 at 0.731 ≥ 0.6: leaves
                0.2, -9.0, -9.0, // predicts 0 at 0.55 < 0.6: stays
                -9.0, 3.0, -9.0, // predicts 1, which exit 0 does not answer: stays
            ],
            confidence: None,
        };
        let score = p.score(&out);
        assert!((score[0] - 0.952_574).abs() < 1e-5);
        let mut state = PolicyState::new();
        assert_eq!(p.decide(0, &out, &score, &mut state), vec![true, true, false, false]);
        assert_eq!(p.decide(1, &out, &score, &mut state), vec![false; 4]);
        let sim = p.simulate(&[score.clone(), score], &[out.preds(), out.preds()]);
        assert_eq!(sim, vec![0, 0, 2, 2]);
    }

    #[test]
    fn simulate_patience_counts_agreeing_exits() {
        let preds = vec![vec![1, 1, 2], vec![1, 2, 2], vec![1, 2, 0]];
        let scores = vec![vec![0.0; 3]; 3];
        assert_eq!(Policy::Patience(2).simulate(&scores, &preds), vec![1, 2, 1]);
        assert_eq!(Policy::Patience(1).simulate(&scores, &preds), vec![0, 0, 0]);
    }
}

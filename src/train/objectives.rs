//! Multi-exit training objectives, each written as in its seed.
//!
//! Notation: `N` early exits `0..N`, the backbone's final classifier is exit `N`; `ℓ_i` are class
//! logits, `z_i` confidence logits (`h_i = σ(z_i)`), `c_i` the relative cost of leaving at exit `i`
//! (earlier heads included, [`crate::model::NetworkCost::relative`]).
//!
//! | kind | loss | seed |
//! |---|---|---|
//! | `joint` | `Σ_i α_i CE(y, softmax ℓ_i)` (final weight 1 unless given), `α` fixed or ramped over epochs | survey eq. 6–7 |
//! | `eenet-v1` | `CE(y, Ŷ_0) + λ C_0` | EENets eq. 8 |
//! | `eenet-v2` | `Σ_{i=0}^{N} CE(y, Ŷ_i) + λ C_i` | EENets eq. 9 |
//! | `mc` | `CE(y, Ŷ_0)`: the classification part `L_MC` alone | EENets eq. 3, Table 2 |
//! | `cost` | `λ C_0`: the cost part `L_Cost` alone | EENets eq. 3, Table 2 |
//! | `soft-conditional` | `CE(y, f̂_1) + λ · mean γ_1` | differentiable branching eq. 1–2 |
//! | `layerwise` | phase `p`: `CE(y, softmax ℓ_p)`, earlier stages frozen | survey §5.3 |
//! | `heads-only` | a base objective, backbone frozen | survey §5.4 |
//!
//! with the recursive soft output and cost (EENets eq. 6–7)
//! `Ŷ_i = h_i softmax(ℓ_i) + (1 − h_i) Ŷ_{i+1}`, `Ŷ_N = softmax(ℓ_N)`,
//! `C_i = h_i c_i + (1 − h_i) C_{i+1}`, `C_N = c_N`.
//!
//! The soft-conditional output of the differentiable-branching seed is the same recursion
//! (`g_b = h_b`, `f̂_{B+1} = f`), so `soft-conditional` and `eenet-v1` are the same function; both
//! names are kept so that a configuration reads like the paper it reproduces.
//!
//! **Log space.** The reference code takes `log` of the mixed probabilities, which underflows to
//! `−inf` (and a NaN gradient) as soon as every mixed term is below `1e-45`. Here the mixture is
//! built in log space, `log Ŷ_i = logaddexp(log σ(z_i) + log_softmax(ℓ_i), log σ(−z_i) + log Ŷ_{i+1})`,
//! with a softplus whose gradient is exact everywhere, so extreme logits give finite losses and
//! finite gradients.

use std::fmt;
use std::str::FromStr;

use burn::tensor::activation::{log_softmax, sigmoid};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::ExitOutput;

/// The training schemes of the seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    /// Deeply supervised: weighted sum of every exit's cross-entropy (survey eq. 6–7).
    Joint,
    /// EENets `L_v1` (eq. 8).
    EenetV1,
    /// EENets `L_v2` (eq. 9).
    EenetV2,
    /// EENets ablation: the classification loss `L_MC = CE(y, Ŷ_0)` alone (Table 2).
    Mc,
    /// EENets ablation: the cost loss `L_Cost = C_0` alone (Table 2).
    Cost,
    /// Differentiable branching: cross-entropy of the last soft-conditional output plus `λ` times
    /// the differentiable cost (eq. 1–2).
    SoftConditional,
    /// Layer-wise: train exit `p` with its stage, freeze, go on (survey §5.3).
    Layerwise,
    /// Frozen backbone, train the exit heads only (survey §5.4).
    HeadsOnly,
}

/// Names accepted by [`ObjectiveKind::from_str`].
pub const OBJECTIVE_KINDS: &str = "joint, eenet-v1, eenet-v2, mc, cost, soft-conditional, layerwise, heads-only";

impl ObjectiveKind {
    /// Every kind, in the order of [`OBJECTIVE_KINDS`].
    pub const ALL: [ObjectiveKind; 8] = [
        Self::Joint,
        Self::EenetV1,
        Self::EenetV2,
        Self::Mc,
        Self::Cost,
        Self::SoftConditional,
        Self::Layerwise,
        Self::HeadsOnly,
    ];

    /// The name used in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Self::Joint => "joint",
            Self::EenetV1 => "eenet-v1",
            Self::EenetV2 => "eenet-v2",
            Self::Mc => "mc",
            Self::Cost => "cost",
            Self::SoftConditional => "soft-conditional",
            Self::Layerwise => "layerwise",
            Self::HeadsOnly => "heads-only",
        }
    }

    /// Whether the loss trains the confidence branches (and therefore needs them).
    pub fn uses_confidence(self) -> bool {
        matches!(
            self,
            Self::EenetV1 | Self::EenetV2 | Self::Mc | Self::Cost | Self::SoftConditional
        )
    }

    /// Whether the loss has a cost term weighted by `λ`.
    pub fn has_lambda(self) -> bool {
        matches!(self, Self::EenetV1 | Self::EenetV2 | Self::Cost | Self::SoftConditional)
    }
}

impl FromStr for ObjectiveKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::UnknownName {
                what: "objective",
                name: s.into(),
                expected: OBJECTIVE_KINDS.into(),
            })
    }
}

impl fmt::Display for ObjectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A linear ramp of the early exits' weights over the first epochs (joint training).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// Weight of every early exit at epoch 0.
    #[serde(default)]
    pub from: f64,
    /// Epochs to reach the configured weights; from then on they stay there.
    pub epochs: usize,
}

/// Self-distillation of the early exits from the final classifier (`[objective.distill]`,
/// `joint` only): each early exit's term becomes `(1 − w)·CE(y, z_i) + w·T²·KL(σ(z_N/T) ‖ σ(z_i/T))`
/// with the final classifier's softened prediction as a fixed target (no gradient flows into
/// it). From "Be Your Own Teacher" (Zhang et al., ICCV 2019) and Shallow-Deep Networks' internal
/// classifiers (Kaya et al., ICML 2019): the exits learn the final classifier's view of the
/// classes, not only the labels, and pull less on the shared early layers. `T²` keeps the
/// gradient's scale independent of `T` (Hinton et al., 2015).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distill {
    /// Softmax temperature `T` of both distributions (default 3).
    #[serde(default = "Distill::default_temperature")]
    pub temperature: f64,
    /// Weight `w` of the distillation term against the label's cross-entropy (default 0.5).
    #[serde(default = "Distill::default_weight")]
    pub weight: f64,
}

impl Distill {
    fn default_temperature() -> f64 {
        3.0
    }

    fn default_weight() -> f64 {
        0.5
    }
}

impl Default for Distill {
    fn default() -> Self {
        Self {
            temperature: Self::default_temperature(),
            weight: Self::default_weight(),
        }
    }
}

/// The `[objective]` table of a training configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// Which scheme.
    pub kind: ObjectiveKind,
    /// Accuracy/cost trade-off `λ` (cost terms only; default 1, as in EENets Table 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// Joint weights `α_i`: one per early exit (the final classifier keeps weight 1), or one per
    /// exit including the final classifier. Default: all 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    /// Ramp the early exits' weights from `from` to `weights` over `epochs` epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,
    /// `heads-only`: the loss on the exits (default `joint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<ObjectiveKind>,
    /// `layerwise`: epochs of each phase (one per exit, the final classifier last). Default: the
    /// epochs split evenly, the remainder going to the last phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<usize>>,
    /// Two-stage training as in the EENets reference code (`--two-stage`): the first `warmup`
    /// epochs use the deeply supervised loss `Σ_i CE(y, softmax ℓ_i)` (its `loss_v0`), then the
    /// configured loss. Default 0 (single stage, as in the paper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<usize>,
    /// The cost rates `c_i` of the loss, one per exit, final last. Default: the honest relative
    /// MAC cost of each exit from the cost model (earlier heads included). Set only to reproduce
    /// a paper's nominal rates (EENet-8 in the EENets seed: `[0.08, 0.26, 1.0]`); metrics and
    /// reports always use the honest costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<Vec<f64>>,
    /// `joint` (also as the base of `heads-only`): the early exits also learn from the final
    /// classifier ([`Distill`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<Distill>,
}

impl ObjectiveConfig {
    /// A configuration of `kind` with every option at its default.
    pub fn new(kind: ObjectiveKind) -> Self {
        Self {
            kind,
            lambda: None,
            weights: None,
            ramp: None,
            base: None,
            phases: None,
            warmup: None,
            costs: None,
            distill: None,
        }
    }

    /// The loss actually computed on the exits (`heads-only` delegates to its base).
    pub fn loss_kind(&self) -> ObjectiveKind {
        match self.kind {
            ObjectiveKind::HeadsOnly => self.base.unwrap_or(ObjectiveKind::Joint),
            k => k,
        }
    }

    /// Whether the trained model's confidence branches carry a learned signal.
    pub fn trains_confidence(&self) -> bool {
        self.loss_kind().uses_confidence()
    }
}

/// An objective bound to a network: weights, `λ`, costs and phases resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    /// The scheme.
    pub kind: ObjectiveKind,
    /// The loss on the exits (differs from `kind` for `heads-only` and `layerwise`).
    pub loss: ObjectiveKind,
    /// `λ`.
    pub lambda: f64,
    /// `α_i` for every exit, final classifier last.
    pub weights: Vec<f64>,
    /// Optional ramp of the early weights.
    pub ramp: Option<Ramp>,
    /// Relative cost `c_i` of every exit, final last.
    pub costs: Vec<f64>,
    /// `layerwise`: epochs per phase.
    pub phases: Vec<usize>,
    /// Epochs of deeply supervised warm-up before the loss (two-stage training).
    pub warmup: usize,
    /// Self-distillation of the early exits (`joint`).
    pub distill: Option<Distill>,
}

/// Where training stands, for losses that change over time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossContext {
    /// Current epoch, 0-based.
    pub epoch: usize,
}

/// The loss computed on the exits for `cfg` (`heads-only` delegates to its base), checked
/// against the model: confidence branches for the losses that train them, exits for the schemes
/// that need them.
fn resolve_loss(cfg: &ObjectiveConfig, has_confidence: bool, n_exits: usize) -> Result<ObjectiveKind> {
    let kind = cfg.kind;
    let loss = match kind {
        ObjectiveKind::HeadsOnly => {
            let base = cfg.loss_kind();
            if matches!(base, ObjectiveKind::Layerwise | ObjectiveKind::HeadsOnly) {
                return Err(Error::invalid(
                    "objective.base",
                    format!(
                        "`{base}` is a scheme, not a loss; use joint, eenet-v1, eenet-v2, mc, cost or soft-conditional"
                    ),
                ));
            }
            base
        }
        ObjectiveKind::Layerwise => ObjectiveKind::Layerwise,
        k => {
            if cfg.base.is_some() {
                return Err(Error::invalid("objective.base", "only `heads-only` takes a base loss"));
            }
            k
        }
    };
    if loss.uses_confidence() && (!has_confidence || n_exits == 0) {
        return Err(Error::invalid(
            "objective.kind",
            format!(
                "`{loss}` trains the exits' confidence branches, but the model has {}; set `model.confidence = true` and give it exits",
                if n_exits == 0 {
                    "no early exits"
                } else {
                    "heads without confidence"
                }
            ),
        ));
    }
    if matches!(kind, ObjectiveKind::Layerwise | ObjectiveKind::HeadsOnly) && n_exits == 0 {
        return Err(Error::invalid(
            "objective.kind",
            format!("`{kind}` needs a model with early exits"),
        ));
    }
    Ok(loss)
}

/// `α_i` for every exit, final classifier last (`joint` only), and the ramp checked.
fn resolve_weights(cfg: &ObjectiveConfig, loss: ObjectiveKind, n_exits: usize) -> Result<Vec<f64>> {
    let weights = match &cfg.weights {
        None => vec![1.0; n_exits + 1],
        Some(w) if w.len() == n_exits => w.iter().copied().chain([1.0]).collect(),
        Some(w) if w.len() == n_exits + 1 => w.clone(),
        Some(w) => {
            return Err(Error::invalid(
                "objective.weights",
                format!(
                    "{} weights for a network with {n_exits} early exits: give {n_exits} (early exits) or {} (with the final classifier)",
                    w.len(),
                    n_exits + 1
                ),
            ));
        }
    };
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::invalid("objective.weights", "weights must be finite and ≥ 0"));
    }
    if (cfg.weights.is_some() || cfg.ramp.is_some()) && loss != ObjectiveKind::Joint {
        return Err(Error::invalid(
            "objective.weights",
            format!("weights and ramp apply to `joint` only, not `{loss}`"),
        ));
    }
    if let Some(r) = &cfg.ramp
        && (r.epochs == 0 || !r.from.is_finite() || r.from < 0.0)
    {
        return Err(Error::invalid(
            "objective.ramp",
            "needs `epochs` ≥ 1 and a finite `from` ≥ 0",
        ));
    }
    Ok(weights)
}

/// `layerwise`: epochs per phase (given, or spread evenly over `epochs`); empty otherwise.
fn resolve_phases(cfg: &ObjectiveConfig, n_exits: usize, epochs: usize) -> Result<Vec<usize>> {
    let phases = if cfg.kind == ObjectiveKind::Layerwise {
        match &cfg.phases {
            Some(p) => {
                if p.len() != n_exits + 1 || p.iter().sum::<usize>() != epochs || p.contains(&0) {
                    return Err(Error::invalid(
                        "objective.phases",
                        format!(
                            "needs {} positive entries (one per exit, final classifier last) summing to epochs = {epochs}, got {p:?}",
                            n_exits + 1
                        ),
                    ));
                }
                p.clone()
            }
            None => even_phases(epochs, n_exits + 1).ok_or_else(|| {
                Error::invalid(
                    "epochs",
                    format!(
                        "layerwise needs at least one epoch per exit ({}), got {epochs}",
                        n_exits + 1
                    ),
                )
            })?,
        }
    } else {
        if cfg.phases.is_some() {
            return Err(Error::invalid("objective.phases", "only `layerwise` has phases"));
        }
        Vec::new()
    };
    Ok(phases)
}

impl Objective {
    /// Resolves `cfg` for a network with `costs.len() - 1` early exits, whose heads have (or
    /// lack) confidence branches, trained for `epochs` epochs. Errors name the field.
    pub fn new(cfg: &ObjectiveConfig, costs: &[f64], has_confidence: bool, epochs: usize) -> Result<Self> {
        let n_exits = costs.len().saturating_sub(1);
        let kind = cfg.kind;
        let loss = resolve_loss(cfg, has_confidence, n_exits)?;
        let lambda = cfg.lambda.unwrap_or(1.0);
        if !lambda.is_finite() || lambda < 0.0 {
            return Err(Error::invalid("objective.lambda", format!("must be ≥ 0, got {lambda}")));
        }
        // `mc` is the λ-free half of EENets eq. 3, so a λ left in an EENets configuration is
        // accepted there; for the schemes without any cost term it is a mistake.
        if cfg.lambda.is_some() && matches!(loss, ObjectiveKind::Joint | ObjectiveKind::Layerwise) {
            return Err(Error::invalid(
                "objective.lambda",
                format!("`{loss}` has no cost term, so λ would be ignored"),
            ));
        }
        let weights = resolve_weights(cfg, loss, n_exits)?;
        let phases = resolve_phases(cfg, n_exits, epochs)?;
        let costs = match &cfg.costs {
            None => costs.to_vec(),
            Some(c) if c.len() != n_exits + 1 => {
                return Err(Error::invalid(
                    "objective.costs",
                    format!(
                        "{} cost rates for {} exits (final classifier included)",
                        c.len(),
                        n_exits + 1
                    ),
                ));
            }
            Some(c) if c.iter().any(|x| !x.is_finite() || *x < 0.0) => {
                return Err(Error::invalid("objective.costs", "cost rates must be finite and ≥ 0"));
            }
            Some(c) => {
                if matches!(loss, ObjectiveKind::Joint | ObjectiveKind::Layerwise) {
                    return Err(Error::invalid(
                        "objective.costs",
                        format!("`{loss}` has no cost term, so cost rates would be ignored"),
                    ));
                }
                c.clone()
            }
        };
        if let Some(d) = &cfg.distill {
            if loss != ObjectiveKind::Joint {
                return Err(Error::invalid(
                    "objective.distill",
                    format!("self-distillation applies to `joint` (or `heads-only` on it), not `{loss}`"),
                ));
            }
            if !(d.temperature.is_finite() && d.temperature > 0.0) {
                return Err(Error::invalid(
                    "objective.distill.temperature",
                    format!("must be > 0, got {}", d.temperature),
                ));
            }
            if !(0.0..=1.0).contains(&d.weight) {
                return Err(Error::invalid(
                    "objective.distill.weight",
                    format!("must be in [0, 1], got {}", d.weight),
                ));
            }
        }
        let warmup = cfg.warmup.unwrap_or(0);
        if warmup > 0 && matches!(kind, ObjectiveKind::Layerwise | ObjectiveKind::Joint) {
            return Err(Error::invalid(
                "objective.warmup",
                format!("`{kind}` has no second stage to warm up for"),
            ));
        }
        if warmup >= epochs && warmup > 0 {
            return Err(Error::invalid(
                "objective.warmup",
                format!("{warmup} warm-up epochs leave none of the {epochs} for the loss itself"),
            ));
        }
        Ok(Self {
            kind,
            loss,
            lambda,
            weights,
            ramp: cfg.ramp.clone(),
            costs,
            phases,
            warmup,
            distill: cfg.distill.clone(),
        })
    }

    /// Number of early exits.
    pub fn num_exits(&self) -> usize {
        self.costs.len() - 1
    }

    /// `layerwise`: the phase (exit being trained) at `epoch`; `None` for other schemes.
    pub fn phase(&self, epoch: usize) -> Option<usize> {
        if self.kind != ObjectiveKind::Layerwise {
            return None;
        }
        let mut end = 0;
        for (p, &e) in self.phases.iter().enumerate() {
            end += e;
            if epoch < end {
                return Some(p);
            }
        }
        Some(self.phases.len() - 1)
    }

    /// The joint weights `α_i` at `epoch` (ramp applied to the early exits).
    pub fn weights_at(&self, epoch: usize) -> Vec<f64> {
        let n = self.num_exits();
        match &self.ramp {
            None => self.weights.clone(),
            Some(r) => {
                let t = (epoch as f64 / r.epochs as f64).min(1.0);
                self.weights
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| if i < n { r.from + (w - r.from) * t } else { w })
                    .collect()
            }
        }
    }

    /// The loss on a batch, shape `[1]`.
    ///
    /// `outs` holds every exit's output, final classifier last; for `layerwise` it may stop at
    /// the exit being trained (later entries are ignored).
    pub fn loss(&self, outs: &[ExitOutput], targets: Tensor<1, Int>, ctx: LossContext) -> Tensor<1> {
        if ctx.epoch < self.warmup {
            return joint(outs, targets, &vec![1.0; outs.len()]);
        }
        match self.loss {
            ObjectiveKind::Joint => match &self.distill {
                None => joint(outs, targets, &self.weights_at(ctx.epoch)),
                Some(d) => joint_distilled(outs, targets, &self.weights_at(ctx.epoch), d),
            },
            ObjectiveKind::EenetV1 | ObjectiveKind::SoftConditional => {
                eenet_v1(outs, targets, &self.costs, self.lambda)
            }
            ObjectiveKind::EenetV2 => eenet_v2(outs, targets, &self.costs, self.lambda),
            ObjectiveKind::Mc => mc(outs, targets),
            ObjectiveKind::Cost => cost_only(outs, &self.costs, self.lambda),
            ObjectiveKind::Layerwise => {
                let p = self.phase(ctx.epoch).expect("layerwise has phases");
                cross_entropy(outs[p].logits.clone(), targets)
            }
            ObjectiveKind::HeadsOnly => unreachable!("resolved to its base"),
        }
    }
}

/// `total` epochs in `parts` phases, as even as possible, the remainder to the last phases.
fn even_phases(total: usize, parts: usize) -> Option<Vec<usize>> {
    if total < parts {
        return None;
    }
    let base = total / parts;
    let extra = total % parts;
    Some((0..parts).map(|p| base + usize::from(p >= parts - extra)).collect())
}

/// `softplus(x) = log(1 + eˣ)`, stable for any `x`, written as `(x + |x|)/2 + log1p(e^{−|x|})` so
/// that its gradient is `σ(x)` everywhere, `x = 0` included (where it is `1/2`).
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let a = x.clone().abs();
    (x + a.clone()).mul_scalar(0.5) + a.neg().exp().log1p()
}

/// `log σ(x) = −softplus(−x)`, finite for any finite `x`.
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    softplus(x.neg()).neg()
}

/// `log(eᵃ + eᵇ)` elementwise, stable: `b + softplus(a − b)`.
pub fn logaddexp<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    let d = a - b.clone();
    b + softplus(d)
}

/// Mean negative log-likelihood of `targets` under log-probabilities `logp` `[N, K]`; `[1]`.
pub fn nll(logp: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logp.dims();
    logp.gather(1, targets.reshape([n, 1])).mean().neg().reshape([1])
}

/// Mean cross-entropy of `logits` `[N, K]` against `targets` `[N]`; `[1]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    nll(log_softmax(logits, 1), targets)
}

fn confidence_logits(out: &ExitOutput, i: usize) -> Tensor<2> {
    out.confidence
        .clone()
        .unwrap_or_else(|| panic!("exit {i} has no confidence branch (checked by Objective::new)"))
}

/// `log Ŷ_i` for every exit `i = 0..=N` (EENets eq. 6), in log space; each `[N, K]`.
pub fn log_mixtures(outs: &[ExitOutput]) -> Vec<Tensor<2>> {
    let n = outs.len() - 1;
    let mut rev = Vec::with_capacity(n + 1);
    let mut next = log_softmax(outs[n].logits.clone(), 1);
    rev.push(next.clone());
    for i in (0..n).rev() {
        let z = confidence_logits(&outs[i], i);
        let here = log_sigmoid(z.clone()) + log_softmax(outs[i].logits.clone(), 1);
        let later = log_sigmoid(z.neg()) + next;
        next = logaddexp(here, later);
        rev.push(next.clone());
    }
    rev.reverse();
    rev
}

/// The soft cost `C_i` of every exit `i = 0..=N` per sample (EENets eq. 7), each `[N, 1]`.
pub fn soft_costs(outs: &[ExitOutput], costs: &[f64]) -> Vec<Tensor<2>> {
    let n = outs.len() - 1;
    let rows = outs[n].logits.dims()[0];
    let device = outs[n].logits.device();
    let mut next = Tensor::<2>::ones([rows, 1], &device).mul_scalar(costs[n]);
    let mut rev = vec![next.clone()];
    for i in (0..n).rev() {
        let h = sigmoid(confidence_logits(&outs[i], i));
        // C_i = h c_i + (1 − h) C_{i+1} = C_{i+1} + h (c_i − C_{i+1})
        next = next.clone() + h * (next.neg().add_scalar(costs[i]));
        rev.push(next.clone());
    }
    rev.reverse();
    rev
}

/// Survey eq. 6–7: `Σ_i α_i CE(y, softmax ℓ_i)`.
pub fn joint(outs: &[ExitOutput], targets: Tensor<1, Int>, weights: &[f64]) -> Tensor<1> {
    outs.iter()
        .zip(weights)
        .map(|(o, &w)| cross_entropy(o.logits.clone(), targets.clone()).mul_scalar(w))
        .reduce(|a, b| a + b)
        .expect("at least one exit")
}

/// [`joint`] with the early exits distilled from the final classifier ([`Distill`]); the final
/// classifier's own term is its cross-entropy.
pub fn joint_distilled(outs: &[ExitOutput], targets: Tensor<1, Int>, weights: &[f64], d: &Distill) -> Tensor<1> {
    let (last, early) = outs.split_last().expect("at least one exit");
    let t = d.temperature;
    // The teacher: a fixed target.
    let teacher = log_softmax(last.logits.clone().detach().div_scalar(t), 1);
    let p_teacher = teacher.clone().exp();
    let n = last.logits.dims()[0];
    let kl = |logits: Tensor<2>| -> Tensor<1> {
        let student = log_softmax(logits.div_scalar(t), 1);
        (p_teacher.clone() * (teacher.clone() - student))
            .sum()
            .div_scalar(n as f64)
            .reshape([1])
    };
    let final_term =
        cross_entropy(last.logits.clone(), targets.clone()).mul_scalar(*weights.last().expect("a weight per exit"));
    early.iter().zip(weights).fold(final_term, |sum, (o, &w)| {
        let ce = cross_entropy(o.logits.clone(), targets.clone()).mul_scalar(1.0 - d.weight);
        sum + (ce + kl(o.logits.clone()).mul_scalar(d.weight * t * t)).mul_scalar(w)
    })
}

/// EENets eq. 8: `CE(y, Ŷ_0) + λ C_0` (batch mean).
pub fn eenet_v1(outs: &[ExitOutput], targets: Tensor<1, Int>, costs: &[f64], lambda: f64) -> Tensor<1> {
    let logy = log_mixtures(outs);
    let c = soft_costs(outs, costs);
    nll(logy[0].clone(), targets) + c[0].clone().mean().mul_scalar(lambda)
}

/// EENets eq. 9: `Σ_{i=0}^{N} CE(y, Ŷ_i) + λ C_i` (batch means).
pub fn eenet_v2(outs: &[ExitOutput], targets: Tensor<1, Int>, costs: &[f64], lambda: f64) -> Tensor<1> {
    let logy = log_mixtures(outs);
    let c = soft_costs(outs, costs);
    logy.into_iter()
        .zip(c)
        .map(|(l, c)| nll(l, targets.clone()) + c.mean().mul_scalar(lambda))
        .reduce(|a, b| a + b)
        .expect("at least one exit")
}

/// EENets Table 2, `L_MC`: `CE(y, Ŷ_0)` without the cost term.
pub fn mc(outs: &[ExitOutput], targets: Tensor<1, Int>) -> Tensor<1> {
    nll(log_mixtures(outs)[0].clone(), targets)
}

/// EENets Table 2, `L_Cost`: `λ C_0` without any classification term.
pub fn cost_only(outs: &[ExitOutput], costs: &[f64], lambda: f64) -> Tensor<1> {
    soft_costs(outs, costs)[0].clone().mean().mul_scalar(lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    // Two exits (one early + the final classifier), three classes, two samples.
    const L0: [[f32; 3]; 2] = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]];
    const L1: [[f32; 3]; 2] = [[0.2, 0.1, 2.0], [1.5, 0.5, -0.5]];
    const Z0: [f32; 2] = [0.3, -1.2];
    const Y: [i64; 2] = [1, 0];
    const COSTS: [f64; 2] = [0.4, 1.0];

    fn t2(v: &[[f32; 3]], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [v.len(), 3]), device)
    }

    fn outs(device: &Device) -> Vec<ExitOutput> {
        vec![
            ExitOutput {
                logits: t2(&L0, device),
                confidence: Some(Tensor::from_data(TensorData::new(Z0.to_vec(), [2, 1]), device)),
            },
            ExitOutput {
                logits: t2(&L1, device),
                confidence: None,
            },
        ]
    }

    fn y(device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(Y.to_vec(), [2]), device)
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_data().try_to_vec::<f32>().unwrap()[0] as f64
    }

    // Hand computation in f64.
    fn softmax(v: &[f32; 3]) -> [f64; 3] {
        let m = v.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let e: Vec<f64> = v.iter().map(|&x| (x as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        [e[0] / s, e[1] / s, e[2] / s]
    }
    fn sig(x: f32) -> f64 {
        1.0 / (1.0 + (-(x as f64)).exp())
    }
    fn hand() -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        // per sample: CE exit0, CE exit1, CE(Ŷ_0), C_0
        let (mut ce0, mut ce1, mut cem, mut c0) = (vec![], vec![], vec![], vec![]);
        for s in 0..2 {
            let p0 = softmax(&L0[s]);
            let p1 = softmax(&L1[s]);
            let h = sig(Z0[s]);
            let yy = Y[s] as usize;
            ce0.push(-p0[yy].ln());
            ce1.push(-p1[yy].ln());
            cem.push(-(h * p0[yy] + (1.0 - h) * p1[yy]).ln());
            c0.push(h * COSTS[0] + (1.0 - h) * COSTS[1]);
        }
        (ce0, ce1, cem, c0)
    }
    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn joint_matches_hand_computation() {
        let d = Device::flex();
        let (ce0, ce1, ..) = hand();
        let got = scalar(joint(&outs(&d), y(&d), &[0.3, 1.0]));
        assert!((got - (0.3 * mean(&ce0) + mean(&ce1))).abs() < 1e-5, "{got}");
    }

    #[test]
    fn self_distillation_matches_hand_computation_and_leaves_the_teacher_alone() {
        let d = Device::flex();
        let (ce0, ce1, ..) = hand();
        let distill = Distill {
            temperature: 2.0,
            weight: 0.4,
        };
        // KL(σ(z_1/T) ‖ σ(z_0/T)) per sample, by hand.
        let soft = |v: &[f32; 3]| softmax(&[v[0] / 2.0, v[1] / 2.0, v[2] / 2.0]);
        let kl: Vec<f64> = (0..2)
            .map(|s| {
                let (p, q) = (soft(&L1[s]), soft(&L0[s]));
                (0..3).map(|k| p[k] * (p[k] / q[k]).ln()).sum()
            })
            .collect();
        let want = 0.3 * (0.6 * mean(&ce0) + 0.4 * 4.0 * mean(&kl)) + mean(&ce1);
        let got = scalar(joint_distilled(&outs(&d), y(&d), &[0.3, 1.0], &distill));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Weight 0 is the joint loss.
        let none = Distill {
            weight: 0.0,
            ..distill.clone()
        };
        let got = scalar(joint_distilled(&outs(&d), y(&d), &[0.3, 1.0], &none));
        assert!((got - scalar(joint(&outs(&d), y(&d), &[0.3, 1.0]))).abs() < 1e-6);
        // The final classifier's gradient is its own cross-entropy's: the teacher is a fixed target.
        let ad = d.autodiff();
        let grad_of_final = |loss: &dyn Fn(&[ExitOutput]) -> Tensor<1>| {
            let o = outs(&ad);
            let last = o[1].logits.clone().require_grad();
            let o = vec![
                o[0].clone(),
                ExitOutput {
                    logits: last.clone(),
                    confidence: None,
                },
            ];
            let mut g = loss(&o).backward();
            last.grad_remove(&mut g)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let with = grad_of_final(&|o| joint_distilled(o, y(&ad), &[0.3, 1.0], &distill));
        let plain = grad_of_final(&|o| cross_entropy(o[1].logits.clone(), y(&ad)));
        assert!(
            with.iter().zip(&plain).all(|(a, b)| (a - b).abs() < 1e-6),
            "{with:?} vs {plain:?}"
        );
    }

    #[test]
    fn self_distillation_is_checked_and_round_trips() {
        let cfg: ObjectiveConfig = toml::from_str("kind = \"joint\"\n[distill]\ntemperature = 4.0\n").unwrap();
        assert_eq!(
            cfg.distill,
            Some(Distill {
                temperature: 4.0,
                weight: 0.5
            })
        );
        assert_eq!(
            toml::from_str::<ObjectiveConfig>(&toml::to_string(&cfg).unwrap()).unwrap(),
            cfg
        );
        let objective = Objective::new(&cfg, &COSTS, false, 3).unwrap();
        assert_eq!(objective.distill, cfg.distill);
        let err = |cfg: ObjectiveConfig| Objective::new(&cfg, &COSTS, true, 3).unwrap_err().to_string();
        let with = |kind, d: Distill| ObjectiveConfig {
            distill: Some(d),
            ..ObjectiveConfig::new(kind)
        };
        assert!(err(with(ObjectiveKind::EenetV2, Distill::default())).contains("objective.distill"));
        let hot = Distill {
            temperature: 0.0,
            ..Distill::default()
        };
        assert!(err(with(ObjectiveKind::Joint, hot)).contains("objective.distill.temperature"));
        let heavy = Distill {
            weight: 1.5,
            ..Distill::default()
        };
        assert!(err(with(ObjectiveKind::Joint, heavy)).contains("objective.distill.weight"));
    }

    #[test]
    fn joint_ramp_and_weights() {
        let mut cfg = ObjectiveConfig::new(ObjectiveKind::Joint);
        cfg.weights = Some(vec![0.5]);
        cfg.ramp = Some(Ramp { from: 0.1, epochs: 4 });
        let o = Objective::new(&cfg, &COSTS, true, 10).unwrap();
        assert_eq!(o.weights_at(0), vec![0.1, 1.0]);
        assert!((o.weights_at(2)[0] - 0.3).abs() < 1e-12);
        assert_eq!(o.weights_at(4), vec![0.5, 1.0]);
        assert_eq!(o.weights_at(9), vec![0.5, 1.0]);
        let d = Device::flex();
        let (ce0, ce1, ..) = hand();
        let got = scalar(o.loss(&outs(&d), y(&d), LossContext { epoch: 2 }));
        assert!((got - (0.3 * mean(&ce0) + mean(&ce1))).abs() < 1e-5);
    }

    #[test]
    fn eenet_v1_v2_mc_cost_match_hand_computation() {
        let d = Device::flex();
        let (_, ce1, cem, c0) = hand();
        let lambda = 0.7;
        let v1 = scalar(eenet_v1(&outs(&d), y(&d), &COSTS, lambda));
        assert!((v1 - (mean(&cem) + lambda * mean(&c0))).abs() < 1e-5, "v1 {v1}");
        // v2 = [CE(Ŷ_0) + λ C_0] + [CE(Ŷ_1) + λ C_1], with Ŷ_1 = softmax ℓ_1 and C_1 = c_1.
        let v2 = scalar(eenet_v2(&outs(&d), y(&d), &COSTS, lambda));
        let want = mean(&cem) + lambda * mean(&c0) + mean(&ce1) + lambda * COSTS[1];
        assert!((v2 - want).abs() < 1e-5, "v2 {v2} want {want}");
        let m = scalar(mc(&outs(&d), y(&d)));
        assert!((m - mean(&cem)).abs() < 1e-5);
        let c = scalar(cost_only(&outs(&d), &COSTS, lambda));
        assert!((c - lambda * mean(&c0)).abs() < 1e-6);
        // soft-conditional is eenet-v1 by construction (same recursion, same cost).
        let cfg = ObjectiveConfig {
            lambda: Some(lambda),
            ..ObjectiveConfig::new(ObjectiveKind::SoftConditional)
        };
        let o = Objective::new(&cfg, &COSTS, true, 1).unwrap();
        let sc = scalar(o.loss(&outs(&d), y(&d), LossContext::default()));
        assert!((sc - v1).abs() < 1e-6);
    }

    #[test]
    fn three_exit_recursion_matches_hand_computation() {
        // Ŷ_0 = h0 p0 + (1−h0)(h1 p1 + (1−h1) p2), C_0 likewise.
        let d = Device::flex();
        let l = [[0.5f32, -0.5, 1.0], [2.0, 0.0, -1.0], [-1.0, 1.0, 0.0]];
        let z = [0.8f32, -0.4];
        let costs = [0.2, 0.6, 1.0];
        let outs: Vec<ExitOutput> = (0..3)
            .map(|i| ExitOutput {
                logits: t2(&[l[i]], &d),
                confidence: (i < 2).then(|| Tensor::from_data(TensorData::new(vec![z[i]], [1, 1]), &d)),
            })
            .collect();
        let yy = 2usize;
        let p: Vec<[f64; 3]> = l.iter().map(softmax).collect();
        let (h0, h1) = (sig(z[0]), sig(z[1]));
        let y1 = h1 * p[1][yy] + (1.0 - h1) * p[2][yy];
        let y0 = h0 * p[0][yy] + (1.0 - h0) * y1;
        let c1 = h1 * costs[1] + (1.0 - h1) * costs[2];
        let c0 = h0 * costs[0] + (1.0 - h0) * c1;
        let target = Tensor::<1, Int>::from_data(TensorData::new(vec![yy as i64], [1]), &d);
        let v2 = scalar(eenet_v2(&outs, target.clone(), &costs, 1.0));
        let want = -y0.ln() + c0 + -y1.ln() + c1 + -p[2][yy].ln() + costs[2];
        assert!((v2 - want).abs() < 1e-5, "{v2} vs {want}");
    }

    #[test]
    fn log_space_mixture_survives_extreme_logits() {
        // Every class probability of the true class underflows in f32 at both exits: the naive
        // log(h p0 + (1−h) p1) is −inf (loss +inf, gradient NaN); the log-space form is finite.
        let d = Device::flex().autodiff();
        let l0 = t2(&[[0.0, -200.0, 0.0], [-150.0, 0.0, 0.0]], &d).require_grad();
        let l1 = t2(&[[300.0, -300.0, 0.0], [-400.0, 0.0, 400.0]], &d).require_grad();
        let z = Tensor::<2>::from_data(TensorData::new(vec![90.0f32, -120.0], [2, 1]), &d).require_grad();
        let outs = vec![
            ExitOutput {
                logits: l0.clone(),
                confidence: Some(z.clone()),
            },
            ExitOutput {
                logits: l1.clone(),
                confidence: None,
            },
        ];
        // The naive form, as the public reference code computes it.
        let h = sigmoid(z.clone());
        let naive = h.clone() * burn::tensor::activation::softmax(l0.clone(), 1)
            + h.neg().add_scalar(1.0) * burn::tensor::activation::softmax(l1.clone(), 1);
        let naive_loss = nll(naive.log(), y(&d));
        let nv = scalar(naive_loss.inner());
        assert!(!nv.is_finite(), "the naive form should overflow here, got {nv}");

        let loss = eenet_v2(&outs, y(&d), &COSTS, 1.0);
        let v = scalar(loss.clone().inner());
        assert!(v.is_finite(), "log-space loss must be finite, got {v}");
        // Sample 0: y=1, log Ŷ_0 ≈ log σ(90) + log_softmax(l0)[1] ⊕ log σ(−90) + log_softmax(l1)[1]
        //          ≈ max(−200 − ln 2, −90 − 600) = −200.693…
        // Sample 1: y=0, log Ŷ_0 ≈ max(−120 − 150 − ln 2, 0 − 800) = −270.693…
        let ce0 = (200.0 + 2f64.ln() + 270.0 + 2f64.ln()) / 2.0;
        // log Ŷ_1: sample 0 −600, sample 1 −800 → CE 700.
        let c0 = (sig(90.0) * 0.4 + (1.0 - sig(90.0)) + sig(-120.0) * 0.4 + (1.0 - sig(-120.0))) / 2.0;
        let want = ce0 + c0 + 700.0 + 1.0;
        assert!((v - want).abs() / want < 1e-4, "{v} vs {want}");
        let grads = loss.backward();
        for g in [l0.grad(&grads).unwrap(), l1.grad(&grads).unwrap()] {
            let g: Vec<f32> = g.into_data().try_to_vec().unwrap();
            assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
        }
        let gz: Vec<f32> = z.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
        assert!(gz.iter().all(|x| x.is_finite()), "{gz:?}");
    }

    #[test]
    fn softplus_and_its_gradient_are_exact() {
        let d = Device::flex().autodiff();
        let xs = vec![-1000.0f32, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0];
        let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &d).require_grad();
        let y = softplus(x.clone());
        let v: Vec<f32> = y.clone().inner().into_data().try_to_vec().unwrap();
        let g: Vec<f32> = x.grad(&y.sum().backward()).unwrap().into_data().try_to_vec().unwrap();
        for ((&x, &v), &g) in xs.iter().zip(&v).zip(&g) {
            let want = (x as f64).max(0.0) + (-(x as f64).abs()).exp().ln_1p();
            assert!(
                (v as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "softplus({x}) = {v}"
            );
            assert!((g as f64 - sig(x)).abs() < 1e-6, "softplus'({x}) = {g}");
        }
        let ls: Vec<f32> = log_sigmoid(Tensor::<1>::from_data(TensorData::new(vec![-1000.0f32, 0.0], [2]), &d))
            .inner()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(ls[0], -1000.0);
        assert!((ls[1] as f64 + 2f64.ln()).abs() < 1e-6);
    }

    /// L_v2 for one sample, two exits, in f64 (for finite differences).
    fn v2_f64(l0: &[f64; 3], l1: &[f64; 3], z: f64, y: usize, lambda: f64) -> f64 {
        let sm = |l: &[f64; 3]| {
            let m = l.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = l.iter().map(|x| (x - m).exp()).collect();
            let s: f64 = e.iter().sum();
            [e[0] / s, e[1] / s, e[2] / s]
        };
        let (p0, p1) = (sm(l0), sm(l1));
        let h = 1.0 / (1.0 + (-z).exp());
        let y0 = h * p0[y] + (1.0 - h) * p1[y];
        let c0 = h * COSTS[0] + (1.0 - h) * COSTS[1];
        -y0.ln() + lambda * c0 + -p1[y].ln() + lambda * COSTS[1]
    }

    #[test]
    fn eenet_v2_gradients_match_finite_differences() {
        // z = 0 exercises the softplus at 0, where |x| has no derivative.
        for (z, y) in [(0.0f32, 1usize), (0.3, 0), (-2.5, 2)] {
            let d = Device::flex().autodiff();
            let (a, b) = ([1.0f32, 2.0, 0.5], [0.2f32, 0.1, 2.0]);
            let l0 = t2(&[a], &d).require_grad();
            let l1 = t2(&[b], &d).require_grad();
            let zt = Tensor::<2>::from_data(TensorData::new(vec![z], [1, 1]), &d).require_grad();
            let outs = vec![
                ExitOutput {
                    logits: l0.clone(),
                    confidence: Some(zt.clone()),
                },
                ExitOutput {
                    logits: l1.clone(),
                    confidence: None,
                },
            ];
            let target = Tensor::<1, Int>::from_data(TensorData::new(vec![y as i64], [1]), &d);
            let grads = eenet_v2(&outs, target, &COSTS, 0.7).backward();
            let g0: Vec<f32> = l0.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
            let g1: Vec<f32> = l1.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
            let gz: Vec<f32> = zt.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
            let f = |da: [f64; 3], db: [f64; 3], dz: f64| {
                let l0 = [a[0] as f64 + da[0], a[1] as f64 + da[1], a[2] as f64 + da[2]];
                let l1 = [b[0] as f64 + db[0], b[1] as f64 + db[1], b[2] as f64 + db[2]];
                v2_f64(&l0, &l1, z as f64 + dz, y, 0.7)
            };
            let h = 1e-5;
            for k in 0..3 {
                let mut e = [0.0; 3];
                e[k] = h;
                let n = [-e[0], -e[1], -e[2]];
                let fd0 = (f(e, [0.0; 3], 0.0) - f(n, [0.0; 3], 0.0)) / (2.0 * h);
                let fd1 = (f([0.0; 3], e, 0.0) - f([0.0; 3], n, 0.0)) / (2.0 * h);
                assert!(
                    (g0[k] as f64 - fd0).abs() < 1e-4,
                    "∂/∂ℓ0[{k}] at z={z}: {} vs {fd0}",
                    g0[k]
                );
                assert!(
                    (g1[k] as f64 - fd1).abs() < 1e-4,
                    "∂/∂ℓ1[{k}] at z={z}: {} vs {fd1}",
                    g1[k]
                );
            }
            let fdz = (f([0.0; 3], [0.0; 3], h) - f([0.0; 3], [0.0; 3], -h)) / (2.0 * h);
            assert!((gz[0] as f64 - fdz).abs() < 1e-4, "∂/∂z at z={z}: {} vs {fdz}", gz[0]);
        }
    }

    #[test]
    fn cost_only_pushes_confidence_up_and_mc_down() {
        // ∂C_0/∂z_0 = h(1−h)(c_0 − c_1) < 0: minimising cost raises the first confidence.
        let d = Device::flex().autodiff();
        let z = Tensor::<2>::from_data(TensorData::new(Z0.to_vec(), [2, 1]), &d).require_grad();
        let mut o = outs(&d);
        o[0].confidence = Some(z.clone());
        let g: Vec<f32> = z
            .grad(&cost_only(&o, &COSTS, 1.0).backward())
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        for (gi, &zi) in g.iter().zip(&Z0) {
            let h = sig(zi);
            let want = h * (1.0 - h) * (COSTS[0] - COSTS[1]) / 2.0;
            assert!((*gi as f64 - want).abs() < 1e-6, "{gi} vs {want}");
        }
    }

    #[test]
    fn layerwise_phases_and_loss() {
        let cfg = ObjectiveConfig::new(ObjectiveKind::Layerwise);
        let o = Objective::new(&cfg, &[0.3, 0.6, 1.0], true, 7).unwrap();
        assert_eq!(o.phases, vec![2, 2, 3]);
        let got: Vec<usize> = (0..7).map(|e| o.phase(e).unwrap()).collect();
        assert_eq!(got, vec![0, 0, 1, 1, 2, 2, 2]);
        let d = Device::flex();
        let o2 = Objective::new(&cfg, &COSTS, true, 2).unwrap();
        let (ce0, ce1, ..) = hand();
        let l0 = scalar(o2.loss(&outs(&d), y(&d), LossContext { epoch: 0 }));
        let l1 = scalar(o2.loss(&outs(&d), y(&d), LossContext { epoch: 1 }));
        assert!((l0 - mean(&ce0)).abs() < 1e-5 && (l1 - mean(&ce1)).abs() < 1e-5);
        assert!(Objective::new(&cfg, &[0.3, 0.6, 1.0], true, 2).is_err());
        let bad = ObjectiveConfig {
            phases: Some(vec![1, 1]),
            ..cfg
        };
        assert!(
            Objective::new(&bad, &[0.3, 0.6, 1.0], true, 2)
                .unwrap_err()
                .to_string()
                .contains("objective.phases")
        );
    }

    #[test]
    fn heads_only_uses_its_base() {
        let cfg = ObjectiveConfig {
            base: Some(ObjectiveKind::EenetV2),
            ..ObjectiveConfig::new(ObjectiveKind::HeadsOnly)
        };
        let o = Objective::new(&cfg, &COSTS, true, 1).unwrap();
        assert_eq!(o.loss, ObjectiveKind::EenetV2);
        let d = Device::flex();
        let a = scalar(o.loss(&outs(&d), y(&d), LossContext::default()));
        let b = scalar(eenet_v2(&outs(&d), y(&d), &COSTS, 1.0));
        assert_eq!(a, b);
        let plain = Objective::new(&ObjectiveConfig::new(ObjectiveKind::HeadsOnly), &COSTS, false, 1).unwrap();
        assert_eq!(plain.loss, ObjectiveKind::Joint);
    }

    #[test]
    fn bad_configurations_name_their_field() {
        let err = |cfg: ObjectiveConfig, conf: bool| Objective::new(&cfg, &COSTS, conf, 3).unwrap_err().to_string();
        assert!(err(ObjectiveConfig::new(ObjectiveKind::EenetV2), false).contains("confidence"));
        assert!(
            err(
                ObjectiveConfig {
                    lambda: Some(-1.0),
                    ..ObjectiveConfig::new(ObjectiveKind::EenetV2)
                },
                true
            )
            .contains("objective.lambda")
        );
        assert!(
            err(
                ObjectiveConfig {
                    lambda: Some(1.0),
                    ..ObjectiveConfig::new(ObjectiveKind::Joint)
                },
                true
            )
            .contains("objective.lambda")
        );
        assert!(
            err(
                ObjectiveConfig {
                    weights: Some(vec![1.0, 2.0, 3.0]),
                    ..ObjectiveConfig::new(ObjectiveKind::Joint)
                },
                true
            )
            .contains("objective.weights")
        );
        assert!("eenet-v3".parse::<ObjectiveKind>().is_err());
        for k in ObjectiveKind::ALL {
            assert_eq!(k.name().parse::<ObjectiveKind>().unwrap(), k);
        }
    }
}

//! Exit heads: the small classifiers attached at cut points.
//!
//! Every head has a classification branch and, optionally, a confidence (gate) branch on the
//! same features: EENets' `h_i` (Fig. 2) and differentiable branching's `g_b` are the same
//! thing, a sigmoid of one linear unit. Heads never name a concrete backbone: they see only the
//! shape of the features at their cut point (and, for `dense`, at the earlier cut points).

use std::fmt;
use std::str::FromStr;

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::backbones::{flatten, global_avg_pool};
use super::cost::{Cost, Counter, Shape};
use super::layers::{ConvBnAct, ConvSpec};
use crate::error::{Error, Result};

/// The kinds of exit head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// EENets Plain: the flattened features feed both branches.
    Plain,
    /// EENets Pool: global average pooling, then both branches.
    #[default]
    Pool,
    /// EENets Bnpool: BatchNorm, ReLU, global average pooling, then both branches.
    Bnpool,
    /// BranchyNet-style: a 3×3 conv + BN + ReLU branch, pooling, then both branches.
    Branchy,
    /// The class-specific method's "keep previous connections" (KP=On) head: ReLU and pooling
    /// of the features at this and every earlier cut point, concatenated, then one dense layer.
    Dense,
    /// The class-specific method's branch on one cut point (KP=Off, seed Fig. 3): ReLU, average
    /// pooling to a `G×G` grid ([`HeadSpec::grid`]; 1: global), then both branches.
    Relupool,
}

/// Names accepted by [`HeadKind::from_str`].
pub const HEAD_KINDS: &str = "plain, pool, bnpool, branchy, dense, relupool";

impl FromStr for HeadKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "plain" => Self::Plain,
            "pool" => Self::Pool,
            "bnpool" => Self::Bnpool,
            "branchy" => Self::Branchy,
            "dense" => Self::Dense,
            "relupool" => Self::Relupool,
            _ => {
                return Err(Error::UnknownName {
                    what: "head",
                    name: s.into(),
                    expected: HEAD_KINDS.into(),
                });
            }
        })
    }
}

impl fmt::Display for HeadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain",
            Self::Pool => "pool",
            Self::Bnpool => "bnpool",
            Self::Branchy => "branchy",
            Self::Dense => "dense",
            Self::Relupool => "relupool",
        })
    }
}

/// Everything needed to build (and cost) one head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSpec {
    /// Kind.
    pub kind: HeadKind,
    /// Whether the head has a confidence / gate branch.
    pub confidence: bool,
    /// Number of classes.
    pub classes: usize,
    /// Shape of the features at this cut point.
    pub input: Shape,
    /// Shapes of the features at every cut point up to and including this one (read by
    /// `dense`; the pooled features of earlier cut points are shared between dense heads).
    pub history: Vec<Shape>,
    /// `relupool`: the side of the grid each feature map is averaged to (1: global pooling).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub grid: usize,
}

fn one() -> usize {
    1
}

fn is_one(g: &usize) -> bool {
    *g == 1
}

/// ReLU, then average pooling of every feature map to `grid × grid` (PyTorch's adaptive
/// windows), flattened channel-major; `grid = 1` is global average pooling. The class-specific
/// branch's pooling (seed Fig. 3: the pooling "adjusted to fit the input feature map").
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C·grid²]`
pub fn relu_pool(x: Tensor<4>, grid: usize) -> Tensor<2> {
    let x = relu(x);
    if grid <= 1 {
        return global_avg_pool(x);
    }
    let [n, c, ..] = x.dims();
    burn::tensor::module::adaptive_avg_pool2d(x, [grid, grid]).reshape([n, c * grid * grid])
}

impl HeadSpec {
    /// Width of the features the linear branches see.
    fn feature_dim(&self) -> usize {
        match self.kind {
            HeadKind::Plain => self.input.numel(),
            HeadKind::Pool | HeadKind::Bnpool | HeadKind::Branchy => self.input.c,
            HeadKind::Relupool => self.input.c * self.grid * self.grid,
            HeadKind::Dense => self.history.iter().map(|s| s.c).sum(),
        }
    }

    /// Cost of this head. For `dense`, `pooled_before` is how many leading cut points an
    /// earlier dense head has already pooled (their ReLU + pooling is not paid twice).
    pub fn cost(&self, pooled_before: usize) -> Result<Cost> {
        let mut c = Counter::new(self.input);
        let mut extra = Cost::default();
        match self.kind {
            HeadKind::Plain => {
                c.flatten();
            }
            HeadKind::Pool => {
                c.global_pool();
            }
            HeadKind::Bnpool => {
                c.bn().relu().global_pool();
            }
            HeadKind::Relupool if self.grid > 1 => {
                c.relu().adaptive_pool(self.grid, self.grid).flatten();
            }
            HeadKind::Relupool => {
                c.relu().global_pool();
            }
            HeadKind::Branchy => {
                c.conv(self.input.c, 3, 1, 1, false).bn().relu().global_pool();
            }
            HeadKind::Dense => {
                for s in self.history.iter().skip(pooled_before) {
                    let mut p = Counter::new(*s);
                    p.relu().global_pool();
                    extra += p.cost();
                }
                c = Counter::new(Shape::new(self.feature_dim(), 1, 1));
            }
        }
        let (_, features) = c.finish().map_err(|reason| Error::Shape { reason })?;
        let d = self.feature_dim() as u64;
        let k = self.classes as u64;
        let mut cost = features + extra;
        // Classification branch d→K, confidence branch d→1, both with bias.
        let linear = d * k + k + if self.confidence { d + 1 } else { 0 };
        cost.conv_linear += linear;
        cost.params += linear;
        Ok(cost)
    }

    /// Builds the head module.
    pub fn init(&self, device: &Device) -> ExitHead {
        let d = self.feature_dim();
        ExitHead {
            kind: self.kind,
            bn: (self.kind == HeadKind::Bnpool).then(|| BatchNormConfig::new(self.input.c).init(device)),
            conv: (self.kind == HeadKind::Branchy)
                .then(|| ConvSpec::cbr(self.input.c, 3, 1, 1).init(self.input.c, device)),
            history_len: self.history.len(),
            grid: self.grid,
            classifier: LinearConfig::new(d, self.classes).init(device),
            confidence: self.confidence.then(|| LinearConfig::new(d, 1).init(device)),
        }
    }
}

/// What one exit produces.
#[derive(Clone, Debug)]
pub struct ExitOutput {
    /// Class logits, `[N, classes]`.
    pub logits: Tensor<2>,
    /// Confidence logits (before the sigmoid), `[N, 1]`, when the head has a confidence branch.
    pub confidence: Option<Tensor<2>>,
}

/// An exit head module.
#[derive(Module, Debug)]
pub struct ExitHead {
    #[module(skip)]
    pub(crate) kind: HeadKind,
    pub(crate) bn: Option<BatchNorm>,
    pub(crate) conv: Option<ConvBnAct>,
    pub(crate) history_len: usize,
    #[module(skip)]
    pub(crate) grid: usize,
    pub(crate) classifier: Linear,
    pub(crate) confidence: Option<Linear>,
}

impl ExitHead {
    /// The head's kind.
    pub fn kind(&self) -> HeadKind {
        self.kind
    }

    /// This head with BatchNorm folded into its convolution (`branchy`); inference only.
    pub fn fold_bn(self) -> Self {
        Self {
            conv: self.conv.map(ConvBnAct::fold_bn),
            ..self
        }
    }

    /// Whether this head has a confidence branch.
    pub fn has_confidence(&self) -> bool {
        self.confidence.is_some()
    }

    /// Runs the head.
    ///
    /// `pooled` holds `pool(relu(features))` of every cut point so far (only `dense` reads it;
    /// it may be empty for other kinds).
    ///
    /// # Shapes
    /// `x`: `[N, C, H, W]`; `pooled[j]`: `[N, C_j]` → logits `[N, classes]`, confidence `[N, 1]`
    pub fn forward(&self, x: Tensor<4>, pooled: &[Tensor<2>]) -> ExitOutput {
        let z = match self.kind {
            HeadKind::Plain => flatten(x),
            HeadKind::Pool => global_avg_pool(x),
            HeadKind::Bnpool => global_avg_pool(relu(self.bn.as_ref().expect("bnpool has bn").forward(x))),
            HeadKind::Relupool => relu_pool(x, self.grid),
            HeadKind::Branchy => global_avg_pool(self.conv.as_ref().expect("branchy has conv").forward(x)),
            HeadKind::Dense => {
                assert!(
                    pooled.len() >= self.history_len,
                    "dense head needs the pooled features of every earlier cut"
                );
                Tensor::cat(pooled[..self.history_len].to_vec(), 1)
            }
        };
        ExitOutput {
            confidence: self.confidence.as_ref().map(|c| c.forward(z.clone())),
            logits: self.classifier.forward(z),
        }
    }
}

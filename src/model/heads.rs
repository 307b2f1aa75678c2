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

/// The kinds of exit head (written as in [`HEAD_KINDS`], e.g. `pool`, `mlp:64,32`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde_with::SerializeDisplay, serde_with::DeserializeFromStr,
)]
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
    /// Global average pooling, then one or two hidden layers of this many units, each followed
    /// by ReLU, then both branches (the survey's heads with hidden layers); the second width is
    /// 0 for one hidden layer.
    Mlp(u32, u32),
}

/// Names accepted by [`HeadKind::from_str`].
pub const HEAD_KINDS: &str = "plain, pool, bnpool, branchy, dense, relupool, mlp:H or mlp:H,H2 (hidden units)";

impl HeadKind {
    /// Most hidden units of an `mlp` layer.
    pub const MAX_HIDDEN: u32 = 1 << 16;

    /// The hidden layers' widths of an `mlp` head (empty for the other kinds).
    pub fn hidden(&self) -> Vec<usize> {
        match *self {
            Self::Mlp(a, 0) => vec![a as usize],
            Self::Mlp(a, b) => vec![a as usize, b as usize],
            _ => Vec::new(),
        }
    }

    fn parse_mlp(s: &str, arg: &str) -> Result<Self> {
        let widths: Vec<u32> = arg
            .split(',')
            .map(|w| match w.trim().parse::<u32>() {
                Ok(n) if (1..=Self::MAX_HIDDEN).contains(&n) => Ok(n),
                _ => Err(Error::invalid(
                    "head",
                    format!(
                        "`{s}`: `{w}` is not a number of hidden units (1 to {})",
                        Self::MAX_HIDDEN
                    ),
                )),
            })
            .collect::<Result<_>>()?;
        match widths[..] {
            [a] => Ok(Self::Mlp(a, 0)),
            [a, b] => Ok(Self::Mlp(a, b)),
            _ => Err(Error::invalid(
                "head",
                format!("`{s}`: an mlp head has one or two hidden layers (mlp:H or mlp:H,H2)"),
            )),
        }
    }
}

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
            _ if s.starts_with("mlp:") => return Self::parse_mlp(s, &s[4..]),
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
            Self::Mlp(a, 0) => return write!(f, "mlp:{a}"),
            Self::Mlp(a, b) => return write!(f, "mlp:{a},{b}"),
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
    /// The confidence / gate branch reads the head's own class probabilities,
    /// `g(softmax(c_i(x)))` (the survey §6: "a separate trainable function g_i(c_i(x))"), not
    /// its features.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gate_on_prediction: bool,
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
            HeadKind::Mlp(..) => *self.kind.hidden().last().expect("an mlp head has a hidden layer"),
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
            HeadKind::Mlp(..) => {
                c.global_pool();
                for h in self.kind.hidden() {
                    c.linear(h, true).relu();
                }
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
        // Classification branch d→K, confidence branch d→1 (K→1 on the prediction), with bias.
        let gate_in = if self.gate_on_prediction { k } else { d };
        let linear = d * k + k + if self.confidence { gate_in + 1 } else { 0 };
        if self.confidence && self.gate_on_prediction {
            // The softmax: an exp, a sum and a division per class.
            cost.other += 3 * k;
        }
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
            hidden: {
                let mut din = self.input.c;
                self.kind
                    .hidden()
                    .into_iter()
                    .map(|h| {
                        let l = LinearConfig::new(din, h).init(device);
                        din = h;
                        l
                    })
                    .collect()
            },
            gate_on_prediction: self.gate_on_prediction,
            classifier: LinearConfig::new(d, self.classes).init(device),
            confidence: self.confidence.then(|| {
                let gate_in = if self.gate_on_prediction { self.classes } else { d };
                LinearConfig::new(gate_in, 1).init(device)
            }),
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
    /// `mlp` heads: the hidden layers, each followed by ReLU.
    pub(crate) hidden: Vec<Linear>,
    /// The confidence branch reads `softmax(logits)` instead of the features.
    #[module(skip)]
    pub(crate) gate_on_prediction: bool,
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
            HeadKind::Mlp(..) => self.hidden.iter().fold(global_avg_pool(x), |z, l| relu(l.forward(z))),
            HeadKind::Branchy => global_avg_pool(self.conv.as_ref().expect("branchy has conv").forward(x)),
            HeadKind::Dense => {
                assert!(
                    pooled.len() >= self.history_len,
                    "dense head needs the pooled features of every earlier cut"
                );
                Tensor::cat(pooled[..self.history_len].to_vec(), 1)
            }
        };
        let logits = self.classifier.forward(z.clone());
        let confidence = self.confidence.as_ref().map(|c| match self.gate_on_prediction {
            true => c.forward(burn::tensor::activation::softmax(logits.clone(), 1)),
            false => c.forward(z),
        });
        ExitOutput { confidence, logits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_kinds_parse_print_and_refuse_by_name() {
        for s in [
            "plain",
            "pool",
            "bnpool",
            "branchy",
            "dense",
            "relupool",
            "mlp:64",
            "mlp:64,32",
        ] {
            let k: HeadKind = s.parse().unwrap();
            assert_eq!(k.to_string(), s);
            // Serialised as the same text (model.json, config.toml).
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<HeadKind>(&format!("\"{s}\"")).unwrap(), k);
        }
        assert_eq!("mlp:64,32".parse::<HeadKind>().unwrap().hidden(), vec![64, 32]);
        for (bad, says) in [
            ("mlp", "expected"),
            ("mlp:0", "`0` is not a number of hidden units"),
            ("mlp:8,8,8", "one or two hidden layers"),
            ("mlp:x", "`x`"),
            ("mlp:99999999", "1 to 65536"),
        ] {
            let e = bad.parse::<HeadKind>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// An `mlp` head's cost: pooling, then d→H1→H2, then the two branches on H2.
    #[test]
    fn mlp_head_cost_counts_its_hidden_layers() {
        let spec = HeadSpec {
            kind: HeadKind::Mlp(8, 4),
            confidence: true,
            classes: 10,
            input: Shape::new(16, 4, 4),
            history: vec![Shape::new(16, 4, 4)],
            grid: 1,
            gate_on_prediction: false,
        };
        let c = spec.cost(0).unwrap();
        // 16·8 + 8, 8·4 + 4, then 4·10 + 10 and 4 + 1.
        assert_eq!(c.params, (16 * 8 + 8) + (8 * 4 + 4) + (4 * 10 + 10) + (4 + 1));
        // A gate on the prediction reads the 10 probabilities instead of the 4 features.
        let gated = HeadSpec {
            gate_on_prediction: true,
            ..spec
        };
        assert_eq!(
            gated.cost(0).unwrap().params,
            (16 * 8 + 8) + (8 * 4 + 4) + (4 * 10 + 10) + (10 + 1)
        );
    }
}

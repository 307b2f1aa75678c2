//! A compiled CPU path for inference: the network's weights laid out once for fast kernels.
//!
//! Why: on the CPU, Burn's generic `flex` convolution converts every activation to channels-last
//! and back, builds its im2col buffer element by element, and runs BatchNorm, ReLU and the
//! residual add as separate passes; the profile of a ResNet-20 forward pass showed about three
//! quarters of the time outside the matrix products. [`CompiledNet`] keeps activations
//! channels-last (NHWC) from input to classifier, folds every BatchNorm into its convolution and
//! applies bias, residual and ReLU before the output is stored. Convolutions with a multiple of 16
//! output channels run a direct AVX-512 kernel where the CPU has it (`earlyexit_kernels::direct`: no im2col
//! buffer, 16 channels per register); the others, and every convolution with
//! [`ConvKernel::Gemm`], copy whole channel runs into an im2col tile for the `gemm` crate (the
//! GEMM flex uses) and apply the epilogue in one pass over its output.
//!
//! The engine on top ([`CompiledNet::infer`]) is the one of [`MultiExitModel::infer`]: real
//! per-sample exits, the same policies (scored by the same code), compaction by copying the
//! survivors' contiguous NHWC rows. Answers equal the Burn path within float rounding (tested to
//! 1e-4).
//!
//! Supported: ResNet basic (projection or option-A shortcuts) and bottleneck blocks, convolution stacks without pooling, `plain`,
//! `pool` and `bnpool` heads, a global-pool classifier (every ResNet of the zoo). Anything else is
//! refused with an error naming the block; use the Burn path for it.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use earlyexit::infer::{CompiledNet, MultiExitModel};
//! use earlyexit::model::{ModelDescription, Shape};
//!
//! let arch = ModelDescription::new("resnet20", Shape::new(3, 32, 32), 10, "pareto:2".parse()?).resolve()?;
//! let model = MultiExitModel::new(arch, &Device::flex());
//! let fast = CompiledNet::compile(&model)?;
//! let x = Tensor::<4>::random([4, 3, 32, 32], Distribution::Default, &Device::flex());
//! let answers = fast.infer(x, &"maxprob:0.9".parse()?)?;
//! assert_eq!(answers.len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};
use earlyexit_kernels::{Act, Conv, ConvKernel, Dense};

use super::engine::{Answers, MultiExitModel, StageSlices, exit_loop};
use crate::cpu::{bn_affine, conv_from_burn, dense_from_burn, host};
use crate::error::{Error, Result};
use crate::model::layers::{Block, ConvBnAct};
use crate::model::{ExitHead, ExitOutput, HeadKind, MacConvention, Shape};
use crate::policy::Policy;

/// A layer of `what` for the kernels, BatchNorm folded in; errors name it.
fn conv_layer(l: &ConvBnAct, what: &str, kernel: ConvKernel) -> Result<Conv> {
    if l.relu6 {
        return Err(Error::invalid(
            "model",
            format!("{what}: ReLU6 has no kernel epilogue; the compiled CPU path cannot run it"),
        ));
    }
    conv_from_burn(&l.conv, l.bn.as_ref(), l.relu, kernel)
        .map_err(|why| Error::invalid("model", format!("{what}: {why}; the compiled CPU path cannot run it")))
}

#[derive(Clone, Debug)]
enum CBlock {
    Convs(Vec<Conv>),
    Residual { convs: Vec<Conv>, shortcut: Shortcut },
}

/// What a residual block adds to its main path.
#[derive(Clone, Debug)]
enum Shortcut {
    Identity,
    Conv(Conv),
    /// Option A: the input subsampled by `stride`, channels zero-padded to `cout` from `front`.
    Padded {
        stride: usize,
        front: usize,
        cout: usize,
    },
}

impl CBlock {
    fn from_burn(b: &Block, index: usize, kernel: ConvKernel) -> Result<Self> {
        let what = format!("block {index}");
        let convs = |ls: &[&ConvBnAct]| {
            ls.iter()
                .map(|l| conv_layer(l, &what, kernel))
                .collect::<Result<Vec<_>>>()
        };
        let short = |s: &Option<ConvBnAct>| {
            Ok::<_, Error>(match s {
                Some(l) => Shortcut::Conv(conv_layer(l, &what, kernel)?),
                None => Shortcut::Identity,
            })
        };
        Ok(match b {
            Block::Conv(s) if s.pool.is_none() => CBlock::Convs(convs(&s.layers.iter().collect::<Vec<_>>())?),
            Block::Basic(b) => CBlock::Residual {
                convs: convs(&[&b.conv1, &b.conv2])?,
                shortcut: short(&b.shortcut)?,
            },
            Block::BasicPadded(b) => {
                let cin = b.conv1.conv.weight.val().dims()[1];
                let cout = b.conv2.conv.weight.val().dims()[0];
                CBlock::Residual {
                    convs: convs(&[&b.conv1, &b.conv2])?,
                    shortcut: Shortcut::Padded {
                        stride: b.conv1.conv.stride[0],
                        front: (cout - cin) / 2,
                        cout,
                    },
                }
            }
            Block::Bottleneck(b) => CBlock::Residual {
                convs: convs(&[&b.conv1, &b.conv2, &b.conv3])?,
                shortcut: short(&b.shortcut)?,
            },
            _ => {
                return Err(Error::invalid(
                    "model",
                    format!(
                        "{what} ({} block) is not supported by the compiled CPU path; run this model on the \
                         Burn path",
                        b.kind()
                    ),
                ));
            }
        })
    }

    fn forward(&self, x: Act) -> Act {
        match self {
            CBlock::Convs(cs) => cs.iter().fold(x, |a, c| c.forward(&a, None, c.relu)),
            CBlock::Residual { convs, shortcut } => {
                let short = match shortcut {
                    Shortcut::Identity => None,
                    Shortcut::Conv(s) => Some(s.forward(&x, None, s.relu)),
                    Shortcut::Padded { stride, front, cout } => Some(x.subsample_pad_channels(*stride, *front, *cout)),
                };
                let (last, first) = convs.split_last().expect("residual blocks have convolutions");
                let y = first.iter().fold(None::<Act>, |a, c| {
                    Some(c.forward(a.as_ref().unwrap_or(&x), None, c.relu))
                });
                // The block's ReLU comes after the addition (its last convolution has none of its
                // own): fused into that convolution's epilogue.
                last.forward(y.as_ref().unwrap_or(&x), Some(short.as_ref().unwrap_or(&x)), true)
            }
        }
    }
}

/// A classifier that Burn feeds with NCHW-flattened `input` features, with its input rows
/// reordered for the NHWC flattening of the compiled path.
fn dense_nhwc(l: &Linear, input: Shape) -> Dense {
    dense_from_burn(l).with_nhwc_input(input.c, input.h * input.w)
}

/// An exit head (or the final classifier): optional BN + ReLU, global pool (or, for `plain`
/// heads, the flattened features), linear.
#[derive(Clone, Debug)]
struct Head {
    flatten: bool,
    bn: Option<(Vec<f32>, Vec<f32>)>,
    classifier: Dense,
    confidence: Option<Dense>,
}

impl Head {
    /// `input`: the shape of the features at the head's cut point.
    fn from_exit(h: &ExitHead, k: usize, input: Shape) -> Result<Self> {
        if h.kind == HeadKind::Plain {
            return Ok(Self {
                flatten: true,
                bn: None,
                classifier: dense_nhwc(&h.classifier, input),
                confidence: h.confidence.as_ref().map(|c| dense_nhwc(c, input)),
            });
        }
        let bn = match h.kind {
            HeadKind::Pool => None,
            HeadKind::Bnpool => Some(bn_affine(h.bn.as_ref().expect("bnpool heads have a BatchNorm"))),
            other => {
                return Err(Error::invalid(
                    "model",
                    format!(
                        "exit {k} has a `{other}` head; the compiled CPU path runs `plain`, `pool` and `bnpool` heads"
                    ),
                ));
            }
        };
        Ok(Self {
            flatten: false,
            bn,
            classifier: dense_from_burn(&h.classifier),
            confidence: h.confidence.as_ref().map(dense_from_burn),
        })
    }

    /// Logits `[n, classes]` and confidence logits `[n]`.
    fn forward(&self, x: &Act) -> (Vec<f32>, Option<Vec<f32>>) {
        if self.flatten {
            return (
                self.classifier.forward(&x.data),
                self.confidence.as_ref().map(|c| c.forward(&x.data)),
            );
        }
        let z = match &self.bn {
            None => x.global_avg_pool(),
            Some((scale, shift)) => {
                let mut y = x.clone();
                for p in y.data.chunks_mut(x.c) {
                    for ((v, s), b) in p.iter_mut().zip(scale).zip(shift) {
                        *v = (*v * s + b).max(0.0);
                    }
                }
                y.global_avg_pool()
            }
        };
        (
            self.classifier.forward(&z),
            self.confidence.as_ref().map(|c| c.forward(&z)),
        )
    }
}

/// An inference-only, channels-last, BatchNorm-folded copy of a [`MultiExitModel`] for the CPU.
#[derive(Clone, Debug)]
pub struct CompiledNet {
    input: Shape,
    classes: usize,
    blocks: Vec<CBlock>,
    cuts: Vec<usize>,
    heads: Vec<Head>,
    classifier: Head,
    exit_macs: Vec<u64>,
    backbone_macs: u64,
}

impl CompiledNet {
    /// Lays out `model`'s weights for the compiled path (the model is not changed). Errors name
    /// the block or head it cannot run.
    pub fn compile(model: &MultiExitModel) -> Result<Self> {
        Self::compile_with(model, ConvKernel::Auto)
    }

    /// [`CompiledNet::compile`] with a choice of convolution kernel.
    pub fn compile_with(model: &MultiExitModel, kernel: ConvKernel) -> Result<Self> {
        let net = &model.net;
        let blocks = net
            .backbone
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| CBlock::from_burn(b, i, kernel))
            .collect::<Result<Vec<_>>>()?;
        let heads = net
            .heads
            .iter()
            .enumerate()
            .zip(&model.arch.heads)
            .map(|((k, h), spec)| Head::from_exit(h, k, spec.input))
            .collect::<Result<Vec<_>>>()?;
        let c = &net.backbone.classifier;
        if !c.global_pool {
            return Err(Error::invalid(
                "model",
                "the final classifier flattens its input; the compiled CPU path runs global-pool classifiers",
            ));
        }
        Ok(Self {
            input: model.arch.description.input,
            classes: model.arch.description.classes,
            blocks,
            cuts: net.cuts().to_vec(),
            heads,
            classifier: Head {
                flatten: false,
                bn: c.bn.as_ref().map(bn_affine),
                classifier: dense_from_burn(&c.linear),
                confidence: None,
            },
            exit_macs: model.exit_macs(),
            backbone_macs: model.arch.cost.backbone.macs(MacConvention::All),
        })
    }

    fn to_act(&self, x: Tensor<4>) -> Result<Act> {
        crate::model::check_input(&x, self.input)?;
        let [n, c, h, w] = x.dims();
        Ok(Act::from_nchw(&host(x), n, c, h, w))
    }

    fn stage_blocks(&self, k: usize) -> std::ops::Range<usize> {
        let start = if k == 0 { 0 } else { self.cuts[k - 1] + 1 };
        let end = self.cuts.get(k).map_or(self.blocks.len(), |c| c + 1);
        start..end
    }

    /// The plain backbone's logits, row-major `[N, classes]` (no head evaluated).
    pub fn forward_backbone(&self, x: Tensor<4>) -> Result<Vec<f32>> {
        let a = self.blocks.iter().fold(self.to_act(x)?, |a, b| b.forward(a));
        Ok(self.classifier.forward(&a).0)
    }

    /// Every exit's logits (final classifier last), each row-major `[N, classes]`.
    pub fn forward_all(&self, x: Tensor<4>) -> Result<Vec<Vec<f32>>> {
        let mut a = self.to_act(x)?;
        let mut outs = Vec::with_capacity(self.heads.len() + 1);
        for k in 0..=self.heads.len() {
            a = self.run_stage(k, a);
            let head = self.heads.get(k).unwrap_or(&self.classifier);
            outs.push(head.forward(&a).0);
        }
        Ok(outs)
    }

    /// Real per-sample early exit on a batch, as [`MultiExitModel::infer`] (same policies, same
    /// answers within float rounding).
    pub fn infer(&self, x: Tensor<4>, policy: &Policy) -> Result<Answers> {
        let device = x.device();
        let num_exits = self.heads.len();
        policy.check(num_exits, self.heads.iter().all(|h| h.confidence.is_some()))?;
        if matches!(policy, Policy::Ensemble) {
            return Err(Error::invalid(
                "policy",
                "`ensemble` runs every head on every sample; use the Burn path (MultiExitModel::infer)",
            ));
        }
        let a = self.to_act(x)?;
        let n = a.n;
        Ok(exit_loop(
            self,
            a,
            n,
            self.classes,
            policy,
            &device,
            (&self.exit_macs, self.backbone_macs),
        ))
    }
}

impl StageSlices for CompiledNet {
    type State = Act;

    fn num_exits(&self) -> usize {
        self.heads.len()
    }

    fn run_stage(&self, k: usize, state: Act) -> Act {
        self.blocks[self.stage_blocks(k)]
            .iter()
            .fold(state, |a, b| b.forward(a))
    }

    fn exit(&self, k: usize, state: &Act) -> ExitOutput {
        let head = self.heads.get(k).unwrap_or(&self.classifier);
        let (logits, confidence) = head.forward(state);
        let (m, device) = (state.n, Device::flex());
        ExitOutput {
            logits: Tensor::<2>::from_data(TensorData::new(logits, [m, self.classes]), &device),
            confidence: confidence.map(|c| Tensor::<2>::from_data(TensorData::new(c, [m, 1]), &device)),
        }
    }

    fn select(&self, state: Act, rows: &[usize], _index: Tensor<1, Int>) -> Act {
        state.select(rows)
    }
}

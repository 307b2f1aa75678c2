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
//! Supported: every block and head of the zoo ([`graph`] lists each block as kernel operations):
//! basic (projection or option-A shortcuts), bottleneck and pre-activation residual blocks,
//! convolution stacks with max pooling, dense layers (MLPs, VGG/AlexNet classifiers), MobileNetV2's
//! inverted residuals (depthwise kernel, ReLU6), DenseNet layers and transitions, Inception
//! modules (rectangular kernels, pooled branches); every head kind; pooling or flattening
//! classifiers. What it cannot run (a dilated or grouped-but-not-depthwise convolution from an
//! imported model, `same` padding) is refused with an error naming the block; the Burn path
//! runs those.
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

mod graph;

use burn::nn::Linear;
use burn::tensor::Tensor;
use earlyexit_kernels::{Act, ConvKernel, Dense, Epilogue};

use super::engine::{Answers, HostState, MultiExitModel, StageSlices, exit_loop};
use crate::cpu::{bn_affine, conv_from_burn, dense_from_burn, host};
use crate::error::{Error, Result};
use crate::model::{ExitHead, HeadKind, MacConvention, Shape};
use crate::policy::{ExitLogits, Policy};
use graph::Op;

/// A linear layer laid out for inference ([`Dense::for_inference`]: small batches of narrow
/// layers run as dot products).
fn dense(l: &Linear) -> Dense {
    dense_from_burn(l).for_inference()
}

/// A classifier that Burn feeds with NCHW-flattened `input` features, with its input rows
/// reordered for the NHWC flattening of the compiled path.
fn dense_nhwc(l: &Linear, input: Shape) -> Dense {
    dense(l).with_nhwc_input(input.c, input.h * input.w)
}

/// An inference-mode BatchNorm followed by ReLU.
fn bn_relu(bn: &burn::nn::BatchNorm) -> Op {
    let (scale, shift) = bn_affine(bn);
    Op::Affine {
        scale,
        shift,
        act: Epilogue::Relu,
    }
}

/// How a head turns the features at its cut point into the vector its linear layers read.
#[derive(Clone, Debug)]
enum Features {
    /// The flattened features (`plain` heads, flattening classifiers).
    Flatten,
    /// Optional operations (BN + ReLU, a branch convolution), then global average pooling.
    Pool(Vec<Op>),
    /// The pooled `relu(features)` of the first `n` blocks, concatenated (`dense` heads).
    History(usize),
    /// Operations, then the result flattened channels-last (`relupool` heads pooled to a grid).
    Ops(Vec<Op>),
}

/// An exit head (or the final classifier): features, then the linear branches.
#[derive(Clone, Debug)]
struct Head {
    features: Features,
    /// `mlp` heads' hidden layers, each followed by ReLU.
    hidden: Vec<Dense>,
    /// The confidence branch reads `softmax(logits)` instead of the features.
    gate_on_prediction: bool,
    classifier: Dense,
    confidence: Option<Dense>,
}

impl Head {
    /// `input`: the shape of the features at the head's cut point.
    fn from_exit(h: &ExitHead, k: usize, input: Shape, kernel: ConvKernel) -> Result<Self> {
        let what = format!("exit {k} (`{}` head)", h.kind);
        let refuse = |why: &str| {
            Error::invalid(
                "model",
                format!("{what}: {why}; the compiled CPU path cannot run it (run this model on the Burn path)"),
            )
        };
        let features = match h.kind {
            HeadKind::Plain => {
                return Ok(Self {
                    features: Features::Flatten,
                    hidden: Vec::new(),
                    gate_on_prediction: h.gate_on_prediction,
                    classifier: dense_nhwc(&h.classifier, input),
                    confidence: h.confidence.as_ref().map(|c| dense_nhwc(c, input)),
                });
            }
            HeadKind::Pool => Features::Pool(Vec::new()),
            HeadKind::Bnpool => Features::Pool(vec![bn_relu(h.bn.as_ref().ok_or_else(|| refuse("no BatchNorm"))?)]),
            HeadKind::Branchy => {
                let l = h.conv.as_ref().ok_or_else(|| refuse("no branch convolution"))?;
                let conv = conv_from_burn(&l.conv, l.bn.as_ref(), l.relu, kernel).map_err(refuse)?;
                Features::Pool(vec![Op::Conv(conv)])
            }
            HeadKind::Dense => Features::History(h.history_len),
            HeadKind::Mlp(..) => {
                return Ok(Self {
                    features: Features::Pool(Vec::new()),
                    hidden: h.hidden.iter().map(dense).collect(),
                    gate_on_prediction: h.gate_on_prediction,
                    classifier: dense(&h.classifier),
                    confidence: h.confidence.as_ref().map(dense),
                });
            }
            HeadKind::Relupool => {
                let relu = Op::Affine {
                    scale: vec![1.0; input.c],
                    shift: vec![0.0; input.c],
                    act: Epilogue::Relu,
                };
                if h.grid <= 1 {
                    Features::Pool(vec![relu])
                } else {
                    // Pooled to a grid and flattened channels-last: the dense layers' rows are
                    // reordered from Burn's channel-major flattening, as for `plain` heads.
                    let g = h.grid;
                    let pooled = Shape::new(input.c, g, g);
                    return Ok(Self {
                        features: Features::Ops(vec![relu, Op::AdaptiveAvgPool([g, g])]),
                        hidden: Vec::new(),
                        gate_on_prediction: h.gate_on_prediction,
                        classifier: dense_nhwc(&h.classifier, pooled),
                        confidence: h.confidence.as_ref().map(|c| dense_nhwc(c, pooled)),
                    });
                }
            }
        };
        Ok(Self {
            features,
            hidden: Vec::new(),
            gate_on_prediction: h.gate_on_prediction,
            classifier: dense(&h.classifier),
            confidence: h.confidence.as_ref().map(dense),
        })
    }

    /// Logits and confidence logits.
    ///
    /// # Shapes
    /// `state.act`: `[n, h, w, c]` channels-last → logits `[n·classes]`, confidence `[n]`
    fn forward(&self, state: &CompiledState) -> (Vec<f32>, Option<Vec<f32>>) {
        let x = &state.act;
        let pooled;
        let z: &[f32] = match &self.features {
            Features::Flatten => &x.data,
            Features::Pool(ops) if ops.is_empty() => {
                pooled = x.global_avg_pool();
                &pooled
            }
            Features::Pool(ops) => {
                pooled = graph::run_ref(ops, x).global_avg_pool();
                &pooled
            }
            Features::Ops(ops) => {
                pooled = graph::run_ref(ops, x).data;
                &pooled
            }
            Features::History(blocks) => {
                let parts = &state.pooled[..*blocks];
                let width: usize = parts.iter().map(|p| p.len() / x.n.max(1)).sum();
                let mut z = Vec::with_capacity(x.n * width);
                for s in 0..x.n {
                    for p in parts {
                        let c = p.len() / x.n;
                        z.extend_from_slice(&p[s * c..(s + 1) * c]);
                    }
                }
                pooled = z;
                &pooled
            }
        };
        let mut deep;
        let mut z = z;
        for l in &self.hidden {
            deep = l.forward(z);
            deep.iter_mut().for_each(|v| *v = v.max(0.0));
            z = &deep;
        }
        let logits = self.classifier.forward(z);
        let confidence = self.confidence.as_ref().map(|c| {
            if !self.gate_on_prediction {
                return c.forward(z);
            }
            // The policies' own softmax, on this batch's logits.
            let out = ExitLogits {
                classes: logits.len() / x.n.max(1),
                logits: logits.clone(),
                confidence: None,
            };
            c.forward(&out.probs(0..x.n))
        });
        (logits, confidence)
    }
}

/// The samples in flight between stages on the compiled path: their channels-last activations
/// and, with `dense` heads, `pool(relu(features))` after every block so far (`[n][c_b]` each).
#[derive(Clone, Debug)]
pub(crate) struct CompiledState {
    act: Act,
    pooled: Vec<Vec<f32>>,
}

impl CompiledState {
    /// Several states after the same cut, one after the other (the first's shape).
    ///
    /// # Panics
    /// If `parts` is empty.
    fn cat(parts: Vec<Self>) -> Self {
        let mut parts = parts.into_iter();
        let mut out = parts.next().expect("CompiledState::cat of no parts");
        for p in parts {
            debug_assert_eq!((p.act.h, p.act.w, p.act.c), (out.act.h, out.act.w, out.act.c));
            out.act.n += p.act.n;
            out.act.data.extend_from_slice(&p.act.data);
            for (o, q) in out.pooled.iter_mut().zip(&p.pooled) {
                o.extend_from_slice(q);
            }
        }
        out
    }

    fn select(self, rows: &[usize]) -> Self {
        let n = self.act.n.max(1);
        let pooled = self
            .pooled
            .into_iter()
            .map(|p| {
                let c = p.len() / n;
                rows.iter()
                    .flat_map(|&r| p[r * c..(r + 1) * c].iter().copied())
                    .collect()
            })
            .collect();
        Self {
            act: self.act.select(rows),
            pooled,
        }
    }
}

/// An inference-only, channels-last, BatchNorm-folded copy of a [`MultiExitModel`] for the CPU.
#[derive(Clone, Debug)]
pub struct CompiledNet {
    input: Shape,
    classes: usize,
    blocks: Vec<Vec<Op>>,
    /// Whether `dense` heads read the pooled features of every block.
    pools_history: bool,
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
            .zip(&model.arch.backbone.blocks)
            .enumerate()
            .map(|(i, (b, info))| graph::block_ops(b, i, info.input, kernel))
            .collect::<Result<Vec<_>>>()?;
        let heads = net
            .heads
            .iter()
            .enumerate()
            .zip(&model.arch.heads)
            .map(|((k, h), spec)| Head::from_exit(h, k, spec.input, kernel))
            .collect::<Result<Vec<_>>>()?;
        let c = &net.backbone.classifier;
        let classifier = match (&c.bn, c.global_pool) {
            (bn, true) => Head {
                features: Features::Pool(bn.iter().map(bn_relu).collect()),
                hidden: Vec::new(),
                gate_on_prediction: false,
                classifier: dense(&c.linear),
                confidence: None,
            },
            (None, false) => Head {
                features: Features::Flatten,
                hidden: Vec::new(),
                gate_on_prediction: false,
                classifier: dense_nhwc(&c.linear, model.arch.backbone.feature_shape()),
                confidence: None,
            },
            (Some(_), false) => {
                return Err(Error::invalid(
                    "model",
                    "the final classifier flattens BatchNorm'd features; the compiled CPU path cannot run it",
                ));
            }
        };
        Ok(Self {
            input: model.arch.description.input,
            classes: model.arch.description.classes,
            blocks,
            pools_history: net.heads.iter().any(|h| h.kind == HeadKind::Dense),
            cuts: net.cuts().to_vec(),
            heads,
            classifier,
            exit_macs: model.exit_macs(),
            backbone_macs: model.arch.cost.backbone.macs(MacConvention::All),
        })
    }

    fn to_state(&self, x: Tensor<4>) -> Result<CompiledState> {
        crate::model::check_input(&x, self.input)?;
        let [n, c, h, w] = x.dims();
        Ok(CompiledState {
            act: Act::from_nchw(&host(x), n, c, h, w),
            pooled: Vec::new(),
        })
    }

    fn stage_blocks(&self, k: usize) -> std::ops::Range<usize> {
        let start = if k == 0 { 0 } else { self.cuts[k - 1] + 1 };
        let end = self.cuts.get(k).map_or(self.blocks.len(), |c| c + 1);
        start..end
    }

    /// The plain backbone's logits, row-major `[N, classes]` (no head evaluated).
    pub fn forward_backbone(&self, x: Tensor<4>) -> Result<Vec<f32>> {
        let mut s = self.to_state(x)?;
        s.act = self.blocks.iter().fold(s.act, |a, b| graph::run(b, a));
        Ok(self.classifier.forward(&s).0)
    }

    /// Every exit's logits (final classifier last), each row-major `[N, classes]`.
    pub fn forward_all(&self, x: Tensor<4>) -> Result<Vec<Vec<f32>>> {
        let mut s = self.to_state(x)?;
        let mut outs = Vec::with_capacity(self.heads.len() + 1);
        for k in 0..=self.heads.len() {
            s = self.run_stage(k, s);
            let head = self.heads.get(k).unwrap_or(&self.classifier);
            outs.push(head.forward(&s).0);
        }
        Ok(outs)
    }

    /// Real per-sample early exit on a batch, as [`MultiExitModel::infer`] (same policies, same
    /// answers within float rounding).
    pub fn infer(&self, x: Tensor<4>, policy: &Policy) -> Result<Answers> {
        let num_exits = self.heads.len();
        policy.check(num_exits, self.heads.iter().all(|h| h.confidence.is_some()))?;
        policy.check_classes(self.classes)?;
        if matches!(policy, Policy::Ensemble) {
            return Err(Error::invalid(
                "policy",
                "`ensemble` runs every head on every sample; use the Burn path (MultiExitModel::infer)",
            ));
        }
        let s = self.to_state(x)?;
        let n = s.act.n;
        Ok(exit_loop(
            self,
            s,
            n,
            self.classes,
            policy,
            (&self.exit_macs, self.backbone_macs),
        ))
    }
}

impl StageSlices for CompiledNet {
    type State = CompiledState;

    fn num_exits(&self) -> usize {
        self.heads.len()
    }

    fn start(&self, x: Tensor<4>) -> Result<CompiledState> {
        self.to_state(x)
    }

    fn run_stage(&self, k: usize, state: CompiledState) -> CompiledState {
        let CompiledState { mut act, mut pooled } = state;
        for b in &self.blocks[self.stage_blocks(k)] {
            act = graph::run(b, act);
            if self.pools_history {
                pooled.push(act.relu_global_avg_pool());
            }
        }
        CompiledState { act, pooled }
    }

    fn exit(&self, k: usize, state: &CompiledState) -> ExitLogits {
        let head = self.heads.get(k).unwrap_or(&self.classifier);
        let (logits, confidence) = head.forward(state);
        ExitLogits {
            classes: self.classes,
            logits,
            confidence,
        }
    }

    fn select(&self, state: CompiledState, rows: &[usize]) -> CompiledState {
        state.select(rows)
    }

    fn cat(&self, states: Vec<CompiledState>) -> CompiledState {
        CompiledState::cat(states)
    }

    fn state_from_host(&self, state: HostState, _device: &burn::tensor::Device) -> CompiledState {
        let [n, c, h, w] = state.dims;
        CompiledState {
            act: Act::from_nchw(&state.x, n, c, h, w),
            pooled: state.pooled.into_iter().map(|(v, _)| v).collect(),
        }
    }

    fn state_to_host(&self, state: CompiledState) -> HostState {
        let CompiledState { act, pooled } = state;
        let n = act.n.max(1);
        HostState {
            x: act.to_nchw(),
            dims: [act.n, act.c, act.h, act.w],
            pooled: pooled
                .into_iter()
                .map(|v| {
                    let d = v.len() / n;
                    (v, d)
                })
                .collect(),
        }
    }
}

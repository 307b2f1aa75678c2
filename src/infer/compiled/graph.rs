//! The compiled path's backbone: every block of the zoo as a short list of channels-last
//! operations ([`Op`]) on [`earlyexit_kernels`], BatchNorm folded into the convolution before it
//! wherever one precedes it.
//!
//! Why a list of operations rather than one type per block kind: blocks differ in how they
//! combine a few operations (convolution, depthwise convolution, an unfoldable BatchNorm,
//! pooling, a dense layer) through two combinators (a residual sum, a channel concatenation).
//! A new block kind is a new arm in [`block_ops`], not a new kernel.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use earlyexit_kernels::{Act, Conv, ConvKernel, Dense, Depthwise, Epilogue, Window};

use crate::cpu::{avg_pool_window, bn_affine, conv_from_burn, dense_from_burn, depthwise_from_burn, max_pool_window};
use crate::error::{Error, Result};
use crate::model::Shape;
use crate::model::layers::{Block, ConvBnAct};

/// One channels-last operation of a compiled block.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// A convolution, BatchNorm folded in, its own ReLU (if any) in the epilogue.
    Conv(Conv),
    /// `min(x, 6)` after a ReLU'd convolution (ReLU6).
    Cap6,
    /// A depthwise convolution with its activation.
    Depthwise(Depthwise),
    /// A BatchNorm no convolution before it absorbs (pre-activation), with its activation.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
        act: Epilogue,
    },
    MaxPool(Window),
    /// Average pooling, the zero padding counted or not.
    AvgPool(Window, bool),
    /// Adaptive average pooling to `[h, w]`.
    AdaptiveAvgPool([usize; 2]),
    /// Flatten, linear (rows reordered for NHWC flattening), optional ReLU: `[n, 1, 1, d]`.
    Dense {
        dense: Dense,
        relu: bool,
    },
    /// Branches on the same input, concatenated along channels (the input first when kept:
    /// DenseNet).
    Concat {
        keep_input: bool,
        branches: Vec<Vec<Op>>,
    },
    /// `last(main(x)) + shortcut(x)`, the sum (and ReLU, if `relu`) fused into `last`'s
    /// epilogue.
    Residual {
        main: Vec<Op>,
        last: Conv,
        shortcut: Shortcut,
        relu: bool,
    },
}

/// What a residual block adds to its main path.
#[derive(Clone, Debug)]
pub(super) enum Shortcut {
    Identity,
    Conv(Conv),
    /// Option A: the input subsampled by `stride`, channels zero-padded to `cout` from `front`.
    Padded {
        stride: usize,
        front: usize,
        cout: usize,
    },
}

/// Runs `ops` in order.
///
/// # Shapes
/// `[n, h, w, c]` → the block's output, channels-last
pub(super) fn run(ops: &[Op], x: Act) -> Act {
    ops.iter().fold(x, |a, op| op.forward(a))
}

/// [`run`] on borrowed input (a residual block's main path, a concatenation's branches): the
/// first operation reads `x` in place where it can, so `x` is copied only by an operation that
/// changes its input in place.
pub(super) fn run_ref(ops: &[Op], x: &Act) -> Act {
    match ops.split_first() {
        None => x.clone(),
        Some((first, rest)) => run(rest, first.forward_ref(x)),
    }
}

impl Op {
    /// The operation on borrowed input.
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, h', w', c']`, channels-last
    fn forward_ref(&self, x: &Act) -> Act {
        match self {
            Op::Conv(c) => c.forward(x, None, c.relu),
            Op::Depthwise(d) => d.forward(x),
            Op::MaxPool(w) => x.max_pool(*w),
            Op::AvgPool(w, include_pad) => x.avg_pool(*w, *include_pad),
            Op::AdaptiveAvgPool([h, w]) => x.adaptive_avg_pool(*h, *w),
            Op::Concat { keep_input, branches } => concat(*keep_input, branches, x),
            Op::Affine { scale, shift, act } => x.affine_to(scale, shift, *act),
            other => other.forward(x.clone()),
        }
    }

    /// The operation, changing `x` in place where it can.
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, h', w', c']`, channels-last
    fn forward(&self, x: Act) -> Act {
        match self {
            Op::Conv(_) | Op::Depthwise(_) | Op::MaxPool(_) | Op::AvgPool(..) | Op::AdaptiveAvgPool(_) => {
                self.forward_ref(&x)
            }
            Op::Cap6 => {
                let mut x = x;
                x.activate(Epilogue::Relu6);
                x
            }
            Op::Affine { scale, shift, act } => {
                let mut x = x;
                x.affine(scale, shift, *act);
                x
            }
            Op::Dense { dense, relu } => {
                let mut data = dense.forward(&x.data);
                if *relu {
                    Epilogue::Relu.apply(&mut data);
                }
                Act {
                    n: x.n,
                    h: 1,
                    w: 1,
                    c: dense.dout,
                    data,
                }
            }
            Op::Concat { keep_input, branches } => concat(*keep_input, branches, &x),
            Op::Residual {
                main,
                last,
                shortcut,
                relu,
            } => {
                let short = match shortcut {
                    Shortcut::Identity => None,
                    Shortcut::Conv(s) => Some(s.forward(&x, None, s.relu)),
                    Shortcut::Padded { stride, front, cout } => Some(x.subsample_pad_channels(*stride, *front, *cout)),
                };
                let y = (!main.is_empty()).then(|| run_ref(main, &x));
                last.forward(y.as_ref().unwrap_or(&x), Some(short.as_ref().unwrap_or(&x)), *relu)
            }
        }
    }
}

/// The branches' outputs on `x`, concatenated along channels (after `x` when `keep_input`).
fn concat(keep_input: bool, branches: &[Vec<Op>], x: &Act) -> Act {
    let outs: Vec<Act> = branches.iter().map(|b| run_ref(b, x)).collect();
    let mut parts: Vec<&Act> = Vec::with_capacity(outs.len() + 1);
    if keep_input {
        parts.push(x);
    }
    parts.extend(outs.iter());
    Act::concat_channels(&parts)
}

/// Why the compiled path cannot run something of `what`.
fn refuse(what: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid(
        "model",
        format!("{what}: {why}; the compiled CPU path cannot run it (run this model on the Burn path)"),
    )
}

/// A dense convolution layer (no ReLU6, no groups) as one kernel: for residual epilogues.
fn conv_only(l: &ConvBnAct, what: &str, kernel: ConvKernel) -> Result<Conv> {
    if l.relu6 {
        return Err(refuse(what, "a ReLU6 where the residual sum is fused"));
    }
    conv_from_burn(&l.conv, l.bn.as_ref(), l.relu, kernel).map_err(|why| refuse(what, why))
}

/// A convolution layer (dense or depthwise, any activation) as operations.
fn layer_ops(l: &ConvBnAct, what: &str, kernel: ConvKernel) -> Result<Vec<Op>> {
    if l.conv.groups != 1 {
        let act = match (l.relu, l.relu6) {
            (_, true) => Epilogue::Relu6,
            (true, false) => Epilogue::Relu,
            (false, false) => Epilogue::None,
        };
        return Ok(vec![Op::Depthwise(
            depthwise_from_burn(&l.conv, l.bn.as_ref(), act).map_err(|why| refuse(what, why))?,
        )]);
    }
    let conv = conv_from_burn(&l.conv, l.bn.as_ref(), l.relu, kernel).map_err(|why| refuse(what, why))?;
    Ok(if l.relu6 {
        vec![Op::Conv(conv), Op::Cap6]
    } else {
        vec![Op::Conv(conv)]
    })
}

fn layers_ops<'a>(ls: impl IntoIterator<Item = &'a ConvBnAct>, what: &str, kernel: ConvKernel) -> Result<Vec<Op>> {
    let mut ops = Vec::new();
    for l in ls {
        ops.extend(layer_ops(l, what, kernel)?);
    }
    Ok(ops)
}

/// A residual block's projection shortcut (1×1 convolution + BatchNorm), or the identity.
fn projection(l: Option<&ConvBnAct>, what: &str, kernel: ConvKernel) -> Result<Shortcut> {
    Ok(match l {
        Some(l) => Shortcut::Conv(conv_only(l, what, kernel)?),
        None => Shortcut::Identity,
    })
}

/// A bare convolution (no BatchNorm, no activation).
fn bare(conv: &Conv2d, what: &str, kernel: ConvKernel) -> Result<Conv> {
    conv_from_burn(conv, None, false, kernel).map_err(|why| refuse(what, why))
}

fn affine(bn: &BatchNorm, act: Epilogue) -> Op {
    let (scale, shift) = bn_affine(bn);
    Op::Affine { scale, shift, act }
}

fn max_pool(p: &MaxPool2d, what: &str) -> Result<Op> {
    Ok(Op::MaxPool(max_pool_window(p).map_err(|why| refuse(what, why))?))
}

fn avg_pool(p: &AvgPool2d, what: &str) -> Result<Op> {
    Ok(Op::AvgPool(
        avg_pool_window(p).map_err(|why| refuse(what, why))?,
        p.count_include_pad,
    ))
}

/// Block `index` (input `input` per sample) as operations. Errors name the block and what the
/// kernels cannot run.
pub(super) fn block_ops(b: &Block, index: usize, input: Shape, kernel: ConvKernel) -> Result<Vec<Op>> {
    let what = format!("block {index} ({} block)", b.kind());
    let what = what.as_str();
    Ok(match b {
        Block::Conv(s) => {
            let mut ops = layers_ops(&s.layers, what, kernel)?;
            if let Some(p) = &s.pool {
                ops.push(max_pool(p, what)?);
            }
            ops
        }
        Block::Basic(b) => vec![Op::Residual {
            main: vec![Op::Conv(conv_only(&b.conv1, what, kernel)?)],
            last: conv_only(&b.conv2, what, kernel)?,
            shortcut: projection(b.shortcut.as_ref(), what, kernel)?,
            relu: true,
        }],
        Block::BasicPadded(b) => {
            let (cin, cout) = (input.c, b.conv2.conv.weight.val().dims()[0]);
            vec![Op::Residual {
                main: vec![Op::Conv(conv_only(&b.conv1, what, kernel)?)],
                last: conv_only(&b.conv2, what, kernel)?,
                shortcut: Shortcut::Padded {
                    stride: b.conv1.conv.stride[0],
                    front: (cout - cin) / 2,
                    cout,
                },
                relu: true,
            }]
        }
        Block::Bottleneck(b) => vec![Op::Residual {
            main: vec![
                Op::Conv(conv_only(&b.conv1, what, kernel)?),
                Op::Conv(conv_only(&b.conv2, what, kernel)?),
            ],
            last: conv_only(&b.conv3, what, kernel)?,
            shortcut: projection(b.shortcut.as_ref(), what, kernel)?,
            relu: true,
        }],
        Block::PreAct(b) => {
            let mut main = Vec::new();
            if let Some(bn) = &b.pre {
                main.push(affine(bn, Epilogue::Relu));
            }
            main.push(Op::Conv(conv_only(&b.conv1, what, kernel)?));
            vec![Op::Residual {
                main,
                last: bare(&b.conv2, what, kernel)?,
                shortcut: match &b.shortcut {
                    Some(c) => Shortcut::Conv(bare(c, what, kernel)?),
                    None => Shortcut::Identity,
                },
                relu: false,
            }]
        }
        Block::Fc(b) => {
            let mut ops = Vec::new();
            let mut shape = input;
            if let Some(p) = &b.pool {
                ops.push(Op::AdaptiveAvgPool(p.output_size));
                shape = Shape::new(input.c, p.output_size[0], p.output_size[1]);
            }
            ops.push(Op::Dense {
                dense: dense_from_burn(&b.linear)
                    .for_inference()
                    .with_nhwc_input(shape.c, shape.h * shape.w),
                relu: true,
            });
            ops
        }
        Block::InvertedResidual(b) => {
            let mut main = match &b.expand {
                Some(e) => layer_ops(e, what, kernel)?,
                None => Vec::new(),
            };
            main.extend(layer_ops(&b.depthwise, what, kernel)?);
            let project = conv_only(&b.project, what, kernel)?;
            if b.residual {
                vec![Op::Residual {
                    main,
                    last: project,
                    shortcut: Shortcut::Identity,
                    relu: false,
                }]
            } else {
                main.push(Op::Conv(project));
                main
            }
        }
        Block::DenseLayer(b) => {
            // BN, ReLU, 1×1 conv, BN, ReLU, 3×3 conv: the second BN folds into the 1×1 conv.
            let inner = conv_from_burn(&b.conv1, Some(&b.norm2), true, kernel).map_err(|why| refuse(what, why))?;
            vec![Op::Concat {
                keep_input: true,
                branches: vec![vec![
                    affine(&b.norm1, Epilogue::Relu),
                    Op::Conv(inner),
                    Op::Conv(bare(&b.conv2, what, kernel)?),
                ]],
            }]
        }
        Block::Transition(b) => vec![
            affine(&b.norm, Epilogue::Relu),
            Op::Conv(bare(&b.conv, what, kernel)?),
            avg_pool(&b.pool, what)?,
        ],
        Block::Inception(b) => {
            let mut branches = Vec::with_capacity(b.branches.len());
            for br in &b.branches {
                let mut ops = Vec::new();
                if let Some(p) = &br.max_pool {
                    ops.push(max_pool(p, what)?);
                }
                if let Some(p) = &br.avg_pool {
                    ops.push(avg_pool(p, what)?);
                }
                ops.extend(layers_ops(&br.convs, what, kernel)?);
                if !br.split.is_empty() {
                    let split = br
                        .split
                        .iter()
                        .map(|l| layer_ops(l, what, kernel))
                        .collect::<Result<Vec<_>>>()?;
                    ops.push(Op::Concat {
                        keep_input: false,
                        branches: split,
                    });
                }
                branches.push(ops);
            }
            vec![Op::Concat {
                keep_input: false,
                branches,
            }]
        }
    })
}

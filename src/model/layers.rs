//! Backbone building blocks: one serialisable spec per block kind, and the Burn module it builds.
//!
//! A [`BlockSpec`] is plain data. It knows its own cost ([`BlockSpec::cost`]) and builds its
//! module ([`BlockSpec::init`]), so the MAC table and the network can never disagree.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::branched::{self, BranchSpec, DenseLayerBlock, InceptionBlock, InvertedResidualBlock, TransitionBlock};
use super::cost::{Cost, Counter, Shape};

/// The activation at the end of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// None (a linear layer: a residual block's last convolution, MobileNetV2's projection).
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNetV2).
    Relu6,
}

/// One convolution, optionally followed by BatchNorm and an activation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvSpec {
    /// Output channels.
    pub cout: usize,
    /// Kernel height and width (Inception-v3 has `1×7` and `7×1` kernels).
    pub k: [usize; 2],
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding above and below, left and right.
    pub pad: [usize; 2],
    /// Channel groups: 1 for a dense convolution, the input channels for a depthwise one.
    pub groups: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
    /// BatchNorm after the convolution, with its epsilon (PyTorch's default `1e-5`;
    /// Inception-v3 uses `1e-3`, and imported weights only match with the same one).
    pub bn: Option<f64>,
    /// The activation at the end.
    pub act: Activation,
}

/// PyTorch's BatchNorm epsilon.
pub const BN_EPS: f64 = 1e-5;

impl ConvSpec {
    /// A `k×k` convolution + BN + ReLU without bias (the ResNet/VGG habit).
    pub const fn cbr(cout: usize, k: usize, stride: usize, pad: usize) -> Self {
        Self {
            cout,
            k: [k, k],
            stride,
            pad: [pad, pad],
            groups: 1,
            bias: false,
            bn: Some(BN_EPS),
            act: Activation::Relu,
        }
    }

    /// A `k×k` convolution with bias and ReLU, no BN (the LeNet/AlexNet habit).
    pub const fn cr(cout: usize, k: usize, stride: usize, pad: usize) -> Self {
        Self {
            bias: true,
            bn: None,
            ..Self::cbr(cout, k, stride, pad)
        }
    }

    /// This convolution with another activation.
    pub const fn act(self, act: Activation) -> Self {
        Self { act, ..self }
    }

    /// This convolution with a bias.
    pub const fn biased(self) -> Self {
        Self { bias: true, ..self }
    }

    /// This convolution in `groups` channel groups.
    pub const fn grouped(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// This convolution with a `kh×kw` kernel and `[pad_h, pad_w]` padding.
    pub const fn rect(self, k: [usize; 2], pad: [usize; 2]) -> Self {
        Self { k, pad, ..self }
    }

    /// This convolution with BatchNorm epsilon `eps`.
    pub const fn bn_eps(self, eps: f64) -> Self {
        Self { bn: Some(eps), ..self }
    }

    pub(crate) fn count(&self, c: &mut Counter) {
        c.conv_grouped(self.cout, self.k, self.stride, self.pad, self.groups, self.bias);
        if self.bn.is_some() {
            c.bn();
        }
        if self.act != Activation::None {
            c.relu();
        }
    }

    pub(crate) fn init(&self, cin: usize, device: &Device) -> ConvBnAct {
        let [ph, pw] = self.pad;
        ConvBnAct {
            conv: Conv2dConfig::new([cin, self.cout], self.k)
                .with_stride([self.stride, self.stride])
                .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
                .with_groups(self.groups)
                .with_bias(self.bias)
                .init(device),
            bn: self
                .bn
                .map(|eps| BatchNormConfig::new(self.cout).with_epsilon(eps).init(device)),
            relu: self.act != Activation::None,
            relu6: self.act == Activation::Relu6,
        }
    }
}

/// Max pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Square window.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
}

/// The specification of one backbone block (the unit between two candidate cut points).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlockSpec {
    /// Plain convolutions then an optional max pool (stems, VGG stages, LeNet, AlexNet).
    Conv {
        /// The convolutions, in order.
        convs: Vec<ConvSpec>,
        /// Optional max pooling at the end.
        pool: Option<PoolSpec>,
    },
    /// ResNet basic block (two 3×3 convolutions); projection shortcut (1×1 conv + BN) when the
    /// shape changes, as the EENets reference code and its MAC tables do.
    Basic {
        /// Output channels.
        cout: usize,
        /// Stride of the first convolution.
        stride: usize,
    },
    /// ResNet basic block with the "option A" shortcut of the original CIFAR ResNets and of the
    /// widely used CIFAR zoo: when the shape changes, the identity subsampled by the stride with
    /// zero channels padded on both sides (no weights, no MACs).
    BasicPadded {
        /// Output channels.
        cout: usize,
        /// Stride of the first convolution.
        stride: usize,
    },
    /// ResNet bottleneck block (1×1, 3×3, 1×1 with expansion 4).
    Bottleneck {
        /// Width of the inner 3×3 convolution; the output has `4·mid` channels.
        mid: usize,
        /// Stride of the 3×3 convolution.
        stride: usize,
    },
    /// EENet-8 residual block: `[BN, ReLU,] conv3×3(stride), BN, ReLU, conv3×3`, plus the identity
    /// or a strided 1×1 convolution (with bias) as shortcut. All convolutions carry a bias, as in
    /// the reference `custom_eenet.py`.
    PreAct {
        /// Output channels.
        cout: usize,
        /// Stride of the first convolution.
        stride: usize,
        /// BN + ReLU before the first convolution.
        pre: bool,
    },
    /// Flatten, linear, ReLU; optionally an adaptive average pool first (torchvision's VGG
    /// pools to `7×7` before its dense layers, so its weights fit any input size).
    Fc {
        /// Output features.
        dout: usize,
        /// Adaptive average pooling to this `[h, w]` before flattening.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool_to: Option<[usize; 2]>,
    },
    /// MobileNetV2 inverted residual: a 1×1 expansion to `expand`× the input channels (none when
    /// `expand` is 1) + BN + ReLU6, a 3×3 depthwise convolution (`stride`) + BN + ReLU6, a
    /// linear 1×1 projection to `cout` + BN; plus the identity when the shape is kept.
    InvertedResidual {
        /// Expansion ratio.
        expand: usize,
        /// Output channels.
        cout: usize,
        /// Stride of the depthwise convolution.
        stride: usize,
    },
    /// DenseNet layer: BN, ReLU, 1×1 conv to `bottleneck` channels, BN, ReLU, 3×3 conv to
    /// `growth` channels, appended to the input's channels.
    DenseLayer {
        /// New channels.
        growth: usize,
        /// Width of the inner 1×1 convolution (`bn_size · growth` in torchvision).
        bottleneck: usize,
    },
    /// DenseNet transition: BN, ReLU, 1×1 conv to `cout`, 2×2 average pool.
    Transition {
        /// Output channels.
        cout: usize,
    },
    /// Inception module: parallel branches concatenated along channels.
    Inception {
        /// The branches in concatenation order.
        branches: Vec<BranchSpec>,
    },
}

impl BlockSpec {
    /// A dense block of `dout` features without pooling.
    pub const fn fc(dout: usize) -> Self {
        BlockSpec::Fc { dout, pool_to: None }
    }

    /// Output shape and cost of this block on a `input`-shaped sample.
    pub fn cost(&self, input: Shape) -> Result<(Shape, Cost), String> {
        let mut c = Counter::new(input);
        match self {
            BlockSpec::Conv { convs, pool } => {
                for s in convs {
                    s.count(&mut c);
                }
                if let Some(p) = pool {
                    c.pool(p.k, p.stride, p.pad);
                }
            }
            BlockSpec::Basic { cout, stride } => {
                let mut short = Counter::new(input);
                c.conv(*cout, 3, *stride, 1, false)
                    .bn()
                    .relu()
                    .conv(*cout, 3, 1, 1, false)
                    .bn();
                if *stride != 1 || input.c != *cout {
                    short.conv(*cout, 1, *stride, 0, false).bn();
                    c.merge_branch(short);
                } else {
                    c.merge_branch(short);
                }
                c.relu();
            }
            BlockSpec::BasicPadded { cout, stride } => {
                if *cout < input.c {
                    return Err(format!(
                        "an option-A shortcut pads channels and cannot shrink {} to {cout}",
                        input.c
                    ));
                }
                c.conv(*cout, 3, *stride, 1, false)
                    .bn()
                    .relu()
                    .conv(*cout, 3, 1, 1, false)
                    .bn()
                    .relu();
            }
            BlockSpec::Bottleneck { mid, stride } => {
                let cout = 4 * mid;
                let mut short = Counter::new(input);
                c.conv(*mid, 1, 1, 0, false).bn().relu();
                c.conv(*mid, 3, *stride, 1, false).bn().relu();
                c.conv(cout, 1, 1, 0, false).bn();
                if *stride != 1 || input.c != cout {
                    short.conv(cout, 1, *stride, 0, false).bn();
                }
                c.merge_branch(short);
                c.relu();
            }
            BlockSpec::PreAct { cout, stride, pre } => {
                let mut short = Counter::new(input);
                if *pre {
                    c.bn().relu();
                }
                c.conv(*cout, 3, *stride, 1, true)
                    .bn()
                    .relu()
                    .conv(*cout, 3, 1, 1, true);
                if *stride != 1 || input.c != *cout {
                    short.conv(*cout, 1, *stride, 0, true);
                }
                c.merge_branch(short);
            }
            BlockSpec::Fc { dout, pool_to } => {
                if let Some([h, w]) = pool_to {
                    c.adaptive_pool(*h, *w);
                }
                c.flatten().linear(*dout, true).relu();
            }
            BlockSpec::InvertedResidual { expand, cout, stride } => {
                branched::count_inverted_residual(&mut c, *expand, *cout, *stride)
            }
            BlockSpec::DenseLayer { growth, bottleneck } => branched::count_dense_layer(&mut c, *growth, *bottleneck),
            BlockSpec::Transition { cout } => branched::count_transition(&mut c, *cout),
            BlockSpec::Inception { branches } => branched::count_inception(&mut c, branches),
        }
        c.finish()
    }

    /// Builds the block for inputs with `cin` channels.
    pub fn init(&self, input: Shape, device: &Device) -> Block {
        let cin = input.c;
        match self {
            BlockSpec::Conv { convs, pool } => {
                let mut c = cin;
                let mut layers = Vec::with_capacity(convs.len());
                for s in convs {
                    layers.push(s.init(c, device));
                    c = s.cout;
                }
                Block::Conv(ConvStack {
                    layers,
                    pool: pool.map(|p| {
                        MaxPool2dConfig::new([p.k, p.k])
                            .with_strides([p.stride, p.stride])
                            .with_padding(PaddingConfig2d::Explicit(p.pad, p.pad, p.pad, p.pad))
                            .init()
                    }),
                })
            }
            BlockSpec::Basic { cout, stride } => Block::Basic(BasicBlock {
                conv1: ConvSpec::cbr(*cout, 3, *stride, 1).init(cin, device),
                conv2: ConvSpec::cbr(*cout, 3, 1, 1).act(Activation::None).init(*cout, device),
                shortcut: (*stride != 1 || cin != *cout).then(|| {
                    ConvSpec::cbr(*cout, 1, *stride, 0)
                        .act(Activation::None)
                        .init(cin, device)
                }),
            }),
            BlockSpec::BasicPadded { cout, stride } => Block::BasicPadded(BasicBlock {
                conv1: ConvSpec::cbr(*cout, 3, *stride, 1).init(cin, device),
                conv2: ConvSpec::cbr(*cout, 3, 1, 1).act(Activation::None).init(*cout, device),
                shortcut: None,
            }),
            BlockSpec::Bottleneck { mid, stride } => {
                let cout = 4 * mid;
                Block::Bottleneck(BottleneckBlock {
                    conv1: ConvSpec::cbr(*mid, 1, 1, 0).init(cin, device),
                    conv2: ConvSpec::cbr(*mid, 3, *stride, 1).init(*mid, device),
                    conv3: ConvSpec::cbr(cout, 1, 1, 0).act(Activation::None).init(*mid, device),
                    shortcut: (*stride != 1 || cin != cout).then(|| {
                        ConvSpec::cbr(cout, 1, *stride, 0)
                            .act(Activation::None)
                            .init(cin, device)
                    }),
                })
            }
            BlockSpec::PreAct { cout, stride, pre } => Block::PreAct(PreActBlock {
                pre: pre.then(|| BatchNormConfig::new(cin).init(device)),
                conv1: ConvSpec::cbr(*cout, 3, *stride, 1).biased().init(cin, device),
                conv2: conv(*cout, *cout, 3, 1, 1, true, device),
                shortcut: (*stride != 1 || cin != *cout).then(|| conv(cin, *cout, 1, *stride, 0, true, device)),
            }),
            BlockSpec::Fc { dout, pool_to } => Block::Fc(FcBlock {
                pool: pool_to.map(|size| AdaptiveAvgPool2dConfig::new(size).init()),
                linear: LinearConfig::new(pool_to.map_or(input.numel(), |[h, w]| cin * h * w), *dout).init(device),
            }),
            BlockSpec::InvertedResidual { expand, cout, stride } => {
                Block::InvertedResidual(branched::init_inverted_residual(cin, *expand, *cout, *stride, device))
            }
            BlockSpec::DenseLayer { growth, bottleneck } => {
                Block::DenseLayer(branched::init_dense_layer(cin, *growth, *bottleneck, device))
            }
            BlockSpec::Transition { cout } => Block::Transition(branched::init_transition(cin, *cout, device)),
            BlockSpec::Inception { branches } => Block::Inception(branched::init_inception(cin, branches, device)),
        }
    }
}

pub(crate) fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    bias: bool,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(bias)
        .init(device)
}

/// Convolution, optional BatchNorm, optional ReLU (or ReLU6).
#[derive(Module, Debug)]
pub struct ConvBnAct {
    pub(crate) conv: Conv2d,
    pub(crate) bn: Option<BatchNorm>,
    pub(crate) relu: bool,
    /// The ReLU is capped at 6 (implies `relu`). The compiled CPU kernels have no such epilogue,
    /// so they refuse these layers.
    pub(crate) relu6: bool,
}

impl ConvBnAct {
    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, Cout, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.conv.forward(x);
        if let Some(bn) = &self.bn {
            x = bn.forward(x);
        }
        match (self.relu, self.relu6) {
            (_, true) => relu(x).clamp_max(6.0),
            (true, false) => relu(x),
            (false, false) => x,
        }
    }
}

/// Convolutions then an optional max pool.
#[derive(Module, Debug)]
pub struct ConvStack {
    pub(crate) layers: Vec<ConvBnAct>,
    pub(crate) pool: Option<MaxPool2d>,
}

/// ResNet basic block.
#[derive(Module, Debug)]
pub struct BasicBlock {
    pub(crate) conv1: ConvBnAct,
    pub(crate) conv2: ConvBnAct,
    pub(crate) shortcut: Option<ConvBnAct>,
}

/// ResNet bottleneck block.
#[derive(Module, Debug)]
pub struct BottleneckBlock {
    pub(crate) conv1: ConvBnAct,
    pub(crate) conv2: ConvBnAct,
    pub(crate) conv3: ConvBnAct,
    pub(crate) shortcut: Option<ConvBnAct>,
}

/// EENet-8 residual block.
#[derive(Module, Debug)]
pub struct PreActBlock {
    pub(crate) pre: Option<BatchNorm>,
    pub(crate) conv1: ConvBnAct,
    pub(crate) conv2: Conv2d,
    pub(crate) shortcut: Option<Conv2d>,
}

/// Flatten, linear, ReLU; keeps the `[N, C, 1, 1]` layout so every block speaks rank 4.
#[derive(Module, Debug)]
pub struct FcBlock {
    pub(crate) pool: Option<AdaptiveAvgPool2d>,
    pub(crate) linear: Linear,
}

/// One backbone block, any kind.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Block {
    /// See [`BlockSpec::Conv`].
    Conv(ConvStack),
    /// See [`BlockSpec::Basic`].
    Basic(BasicBlock),
    /// See [`BlockSpec::BasicPadded`] (`shortcut` is `None`).
    BasicPadded(BasicBlock),
    /// See [`BlockSpec::Bottleneck`].
    Bottleneck(BottleneckBlock),
    /// See [`BlockSpec::PreAct`].
    PreAct(PreActBlock),
    /// See [`BlockSpec::Fc`].
    Fc(FcBlock),
    /// See [`BlockSpec::InvertedResidual`].
    InvertedResidual(InvertedResidualBlock),
    /// See [`BlockSpec::DenseLayer`].
    DenseLayer(DenseLayerBlock),
    /// See [`BlockSpec::Transition`].
    Transition(TransitionBlock),
    /// See [`BlockSpec::Inception`].
    Inception(InceptionBlock),
}

impl Block {
    /// What kind of block this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Block::Conv(s) if s.pool.is_some() => "pooled convolution stack",
            Block::Conv(_) => "convolution stack",
            Block::Basic(_) => "basic residual",
            Block::BasicPadded(_) => "option-A residual",
            Block::Bottleneck(_) => "bottleneck residual",
            Block::PreAct(_) => "pre-activation residual",
            Block::Fc(_) => "dense",
            Block::InvertedResidual(_) => "inverted residual",
            Block::DenseLayer(_) => "DenseNet layer",
            Block::Transition(_) => "DenseNet transition",
            Block::Inception(_) => "Inception",
        }
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, C', H', W']` (dense blocks give `[N, C', 1, 1]`).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Block::Conv(b) => {
                let mut x = x;
                for l in &b.layers {
                    x = l.forward(x);
                }
                match &b.pool {
                    Some(p) => p.forward(x),
                    None => x,
                }
            }
            Block::Basic(b) => {
                let short = match &b.shortcut {
                    Some(s) => s.forward(x.clone()),
                    None => x.clone(),
                };
                relu(b.conv2.forward(b.conv1.forward(x)) + short)
            }
            Block::BasicPadded(b) => {
                let y = b.conv2.forward(b.conv1.forward(x.clone()));
                relu(y.clone() + padded_identity(x, y.dims()))
            }
            Block::Bottleneck(b) => {
                let short = match &b.shortcut {
                    Some(s) => s.forward(x.clone()),
                    None => x.clone(),
                };
                relu(b.conv3.forward(b.conv2.forward(b.conv1.forward(x))) + short)
            }
            Block::PreAct(b) => {
                let short = match &b.shortcut {
                    Some(s) => s.forward(x.clone()),
                    None => x.clone(),
                };
                let y = match &b.pre {
                    Some(bn) => relu(bn.forward(x)),
                    None => x,
                };
                b.conv2.forward(b.conv1.forward(y)) + short
            }
            Block::Fc(b) => {
                let x = match &b.pool {
                    Some(p) => p.forward(x),
                    None => x,
                };
                let [n, ..] = x.dims();
                let flat: Tensor<2> = x.reshape([n as i32, -1]);
                let y = relu(b.linear.forward(flat));
                let d = y.dims()[1];
                y.reshape([n, d, 1, 1])
            }
            Block::InvertedResidual(b) => b.forward(x),
            Block::DenseLayer(b) => b.forward(x),
            Block::Transition(b) => b.forward(x),
            Block::Inception(b) => b.forward(x),
        }
    }
}

/// The option-A shortcut: `x` subsampled to `[h, w]` (every `stride`-th row and column) with
/// zero channels on both sides up to `c` (the extra channels split evenly, any odd one after).
///
/// # Shapes
/// `[N, Cin, H, W]` → `[N, C, H / stride, W / stride]`
fn padded_identity(x: Tensor<4>, [n, c, h, w]: [usize; 4]) -> Tensor<4> {
    let [_, cin, hin, _] = x.dims();
    let x = if hin != h {
        let stride = hin.div_ceil(h);
        MaxPool2dConfig::new([1, 1])
            .with_strides([stride, stride])
            .init()
            .forward(x)
    } else {
        x
    };
    if cin == c {
        return x;
    }
    let front = (c - cin) / 2;
    let device = x.device();
    let zeros = |k: usize| Tensor::<4>::zeros([n, k, h, w], &device);
    Tensor::cat(vec![zeros(front), x, zeros(c - cin - front)], 1)
}

/// Folds a BatchNorm (eval statistics) into the preceding convolution: `w' = w·s`,
/// `b' = (b − μ)·s + β` with `s = γ / √(σ² + ε)`. Inference only.
pub(crate) fn fold_bn_into_conv(mut conv: Conv2d, bn: &BatchNorm) -> Conv2d {
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let [cout] = scale.dims();
    let w = conv.weight.val() * scale.clone().reshape([cout, 1, 1, 1]);
    let b = match &conv.bias {
        Some(b) => b.val(),
        None => scale.zeros_like(),
    };
    let b = (b - bn.running_mean.value()) * scale + bn.beta.val();
    conv.weight = burn::module::Param::from_tensor(w);
    conv.bias = Some(burn::module::Param::from_tensor(b));
    conv
}

impl ConvBnAct {
    /// This layer with its BatchNorm folded into the convolution.
    pub(crate) fn fold_bn(self) -> Self {
        match &self.bn {
            Some(bn) => ConvBnAct {
                conv: fold_bn_into_conv(self.conv, bn),
                bn: None,
                relu: self.relu,
                relu6: self.relu6,
            },
            None => self,
        }
    }
}

impl Block {
    /// This block with every BatchNorm that directly follows a convolution folded into it.
    pub(crate) fn fold_bn(self) -> Self {
        match self {
            Block::Conv(b) => Block::Conv(ConvStack {
                layers: b.layers.into_iter().map(ConvBnAct::fold_bn).collect(),
                pool: b.pool,
            }),
            Block::Basic(b) => Block::Basic(BasicBlock {
                conv1: b.conv1.fold_bn(),
                conv2: b.conv2.fold_bn(),
                shortcut: b.shortcut.map(ConvBnAct::fold_bn),
            }),
            Block::BasicPadded(b) => Block::BasicPadded(BasicBlock {
                conv1: b.conv1.fold_bn(),
                conv2: b.conv2.fold_bn(),
                shortcut: None,
            }),
            Block::Bottleneck(b) => Block::Bottleneck(BottleneckBlock {
                conv1: b.conv1.fold_bn(),
                conv2: b.conv2.fold_bn(),
                conv3: b.conv3.fold_bn(),
                shortcut: b.shortcut.map(ConvBnAct::fold_bn),
            }),
            // The pre-activation BN precedes its convolution (and zero padding), so it stays.
            Block::PreAct(b) => Block::PreAct(PreActBlock {
                pre: b.pre,
                conv1: b.conv1.fold_bn(),
                conv2: b.conv2,
                shortcut: b.shortcut,
            }),
            Block::InvertedResidual(b) => Block::InvertedResidual(b.fold_bn()),
            Block::Inception(b) => Block::Inception(b.fold_bn()),
            // Pre-activation BatchNorms precede their convolutions and stay.
            b @ (Block::Fc(_) | Block::DenseLayer(_) | Block::Transition(_)) => b,
        }
    }
}

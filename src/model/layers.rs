//! Backbone building blocks: one serialisable spec per block kind, and the Burn module it builds.
//!
//! A [`BlockSpec`] is plain data. It knows its own cost ([`BlockSpec::cost`]) and builds its
//! module ([`BlockSpec::init`]), so the MAC table and the network can never disagree.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::cost::{Cost, Counter, Shape};

/// One convolution, optionally followed by BatchNorm and ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvSpec {
    /// Output channels.
    pub cout: usize,
    /// Square kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
    /// BatchNorm after the convolution.
    pub bn: bool,
    /// ReLU at the end.
    pub relu: bool,
}

impl ConvSpec {
    /// A `k×k` convolution + BN + ReLU without bias (the ResNet/VGG habit).
    pub const fn cbr(cout: usize, k: usize, stride: usize, pad: usize) -> Self {
        Self {
            cout,
            k,
            stride,
            pad,
            bias: false,
            bn: true,
            relu: true,
        }
    }

    /// A `k×k` convolution with bias and ReLU, no BN (the LeNet/AlexNet habit).
    pub const fn cr(cout: usize, k: usize, stride: usize, pad: usize) -> Self {
        Self {
            cout,
            k,
            stride,
            pad,
            bias: true,
            bn: false,
            relu: true,
        }
    }

    fn count(&self, c: &mut Counter) {
        c.conv(self.cout, self.k, self.stride, self.pad, self.bias);
        if self.bn {
            c.bn();
        }
        if self.relu {
            c.relu();
        }
    }

    pub(crate) fn init(&self, cin: usize, device: &Device) -> ConvBnAct {
        ConvBnAct {
            conv: conv(cin, self.cout, self.k, self.stride, self.pad, self.bias, device),
            bn: self.bn.then(|| BatchNormConfig::new(self.cout).init(device)),
            relu: self.relu,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Flatten, linear, ReLU.
    Fc {
        /// Output features.
        dout: usize,
    },
}

impl BlockSpec {
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
            BlockSpec::Fc { dout } => {
                c.flatten().linear(*dout, true).relu();
            }
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
                conv2: ConvSpec {
                    relu: false,
                    ..ConvSpec::cbr(*cout, 3, 1, 1)
                }
                .init(*cout, device),
                shortcut: (*stride != 1 || cin != *cout).then(|| {
                    ConvSpec {
                        relu: false,
                        ..ConvSpec::cbr(*cout, 1, *stride, 0)
                    }
                    .init(cin, device)
                }),
            }),
            BlockSpec::Bottleneck { mid, stride } => {
                let cout = 4 * mid;
                Block::Bottleneck(BottleneckBlock {
                    conv1: ConvSpec::cbr(*mid, 1, 1, 0).init(cin, device),
                    conv2: ConvSpec::cbr(*mid, 3, *stride, 1).init(*mid, device),
                    conv3: ConvSpec {
                        relu: false,
                        ..ConvSpec::cbr(cout, 1, 1, 0)
                    }
                    .init(*mid, device),
                    shortcut: (*stride != 1 || cin != cout).then(|| {
                        ConvSpec {
                            relu: false,
                            ..ConvSpec::cbr(cout, 1, *stride, 0)
                        }
                        .init(cin, device)
                    }),
                })
            }
            BlockSpec::PreAct { cout, stride, pre } => Block::PreAct(PreActBlock {
                pre: pre.then(|| BatchNormConfig::new(cin).init(device)),
                conv1: ConvSpec {
                    bias: true,
                    ..ConvSpec::cbr(*cout, 3, *stride, 1)
                }
                .init(cin, device),
                conv2: conv(*cout, *cout, 3, 1, 1, true, device),
                shortcut: (*stride != 1 || cin != *cout).then(|| conv(cin, *cout, 1, *stride, 0, true, device)),
            }),
            BlockSpec::Fc { dout } => Block::Fc(FcBlock {
                linear: LinearConfig::new(input.numel(), *dout).init(device),
            }),
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

/// Convolution, optional BatchNorm, optional ReLU.
#[derive(Module, Debug)]
pub struct ConvBnAct {
    pub(crate) conv: Conv2d,
    pub(crate) bn: Option<BatchNorm>,
    pub(crate) relu: bool,
}

impl ConvBnAct {
    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, Cout, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.conv.forward(x);
        if let Some(bn) = &self.bn {
            x = bn.forward(x);
        }
        if self.relu { relu(x) } else { x }
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
    conv2: Conv2d,
    pub(crate) shortcut: Option<Conv2d>,
}

/// Flatten, linear, ReLU; keeps the `[N, C, 1, 1]` layout so every block speaks rank 4.
#[derive(Module, Debug)]
pub struct FcBlock {
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
    /// See [`BlockSpec::Bottleneck`].
    Bottleneck(BottleneckBlock),
    /// See [`BlockSpec::PreAct`].
    PreAct(PreActBlock),
    /// See [`BlockSpec::Fc`].
    Fc(FcBlock),
}

impl Block {
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
                let [n, ..] = x.dims();
                let flat: Tensor<2> = x.reshape([n as i32, -1]);
                let y = relu(b.linear.forward(flat));
                let d = y.dims()[1];
                y.reshape([n, d, 1, 1])
            }
        }
    }
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
            Block::Fc(b) => Block::Fc(b),
        }
    }
}

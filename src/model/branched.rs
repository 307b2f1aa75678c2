//! The blocks of the ImageNet-era networks that users bring: MobileNetV2's inverted residual,
//! DenseNet's layer and transition, and Inception-v3's parallel branches.
//!
//! Each is laid out as torchvision lays it out (same layers, same order, same BatchNorm
//! epsilon), so that its weights import by name and its answers equal PyTorch's. Like the blocks
//! of [`super::layers`], each spec counts its own cost and builds its own module.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::cost::{Counter, Shape};
use super::layers::{Activation, ConvBnAct, ConvSpec, PoolSpec, conv};

/// A convolution of an Inception branch with its torchvision name (`branch7x7_2`), so that
/// `inspect` and the PyTorch import speak the same names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedConv {
    /// The layer's name inside its module.
    pub name: String,
    /// The convolution.
    pub spec: ConvSpec,
}

impl NamedConv {
    /// `spec` named `name`.
    pub fn new(name: &str, spec: ConvSpec) -> Self {
        Self {
            name: name.into(),
            spec,
        }
    }
}

/// The pooling that starts an Inception branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BranchPool {
    /// Max pooling.
    Max(PoolSpec),
    /// Average pooling, the zero padding counted in the mean (PyTorch's default).
    Avg(PoolSpec),
}

/// One branch of an Inception module: an optional pool, convolutions in order, then optionally
/// a split into parallel convolutions whose outputs are concatenated (Inception-v3's `1×3` and
/// `3×1` pairs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BranchSpec {
    /// Pooling first.
    pub pool: Option<BranchPool>,
    /// Convolutions in order.
    pub convs: Vec<NamedConv>,
    /// Parallel convolutions on the last output, concatenated in order.
    pub split: Vec<NamedConv>,
}

impl BranchSpec {
    /// A branch of convolutions only.
    pub fn convs(convs: Vec<NamedConv>) -> Self {
        Self {
            pool: None,
            convs,
            split: Vec::new(),
        }
    }

    fn count(&self, input: Shape) -> Counter {
        let mut c = Counter::new(input);
        match self.pool {
            Some(BranchPool::Max(p) | BranchPool::Avg(p)) => {
                c.pool(p.k, p.stride, p.pad);
            }
            None => {}
        }
        for l in &self.convs {
            l.spec.count(&mut c);
        }
        if !self.split.is_empty() {
            let from = c.shape();
            let parts = self
                .split
                .iter()
                .map(|l| {
                    let mut p = Counter::new(from);
                    l.spec.count(&mut p);
                    p
                })
                .collect();
            c.concat(parts);
        }
        c
    }

    fn init(&self, cin: usize, device: &Device) -> InceptionBranch {
        let mut c = cin;
        let mut convs = Vec::with_capacity(self.convs.len());
        for l in &self.convs {
            convs.push(l.spec.init(c, device));
            c = l.spec.cout;
        }
        let (max_pool, avg_pool) = match self.pool {
            Some(BranchPool::Max(p)) => (Some(max_pool(p)), None),
            Some(BranchPool::Avg(p)) => (None, Some(avg_pool(p))),
            None => (None, None),
        };
        InceptionBranch {
            max_pool,
            avg_pool,
            convs,
            split: self.split.iter().map(|l| l.spec.init(c, device)).collect(),
        }
    }
}

pub(crate) fn max_pool(p: PoolSpec) -> MaxPool2d {
    MaxPool2dConfig::new([p.k, p.k])
        .with_strides([p.stride, p.stride])
        .with_padding(PaddingConfig2d::Explicit(p.pad, p.pad, p.pad, p.pad))
        .init()
}

fn avg_pool(p: PoolSpec) -> AvgPool2d {
    AvgPool2dConfig::new([p.k, p.k])
        .with_strides([p.stride, p.stride])
        .with_padding(PaddingConfig2d::Explicit(p.pad, p.pad, p.pad, p.pad))
        .with_count_include_pad(true)
        .init()
}

/// Cost of a MobileNetV2 inverted residual (see [`super::BlockSpec::InvertedResidual`]).
pub(crate) fn count_inverted_residual(c: &mut Counter, expand: usize, cout: usize, stride: usize) {
    let input = c.shape();
    let hidden = input.c * expand;
    if expand != 1 {
        ConvSpec::cbr(hidden, 1, 1, 0).act(Activation::Relu6).count(c);
    }
    ConvSpec::cbr(hidden, 3, stride, 1)
        .grouped(hidden)
        .act(Activation::Relu6)
        .count(c);
    ConvSpec::cbr(cout, 1, 1, 0).act(Activation::None).count(c);
    // The identity shortcut costs nothing (residual additions are not counted).
}

pub(crate) fn init_inverted_residual(
    cin: usize,
    expand: usize,
    cout: usize,
    stride: usize,
    device: &Device,
) -> InvertedResidualBlock {
    let hidden = cin * expand;
    InvertedResidualBlock {
        expand: (expand != 1).then(|| ConvSpec::cbr(hidden, 1, 1, 0).act(Activation::Relu6).init(cin, device)),
        depthwise: ConvSpec::cbr(hidden, 3, stride, 1)
            .grouped(hidden)
            .act(Activation::Relu6)
            .init(hidden, device),
        project: ConvSpec::cbr(cout, 1, 1, 0).act(Activation::None).init(hidden, device),
        residual: stride == 1 && cin == cout,
    }
}

/// Cost of a DenseNet layer (see [`super::BlockSpec::DenseLayer`]).
pub(crate) fn count_dense_layer(c: &mut Counter, growth: usize, bottleneck: usize) {
    let mut new = Counter::new(c.shape());
    new.bn().relu().conv(bottleneck, 1, 1, 0, false);
    new.bn().relu().conv(growth, 3, 1, 1, false);
    // The input passes through unchanged and is concatenated with the new channels.
    c.concat(vec![Counter::new(c.shape()), new]);
}

pub(crate) fn init_dense_layer(cin: usize, growth: usize, bottleneck: usize, device: &Device) -> DenseLayerBlock {
    DenseLayerBlock {
        norm1: BatchNormConfig::new(cin).init(device),
        conv1: conv(cin, bottleneck, 1, 1, 0, false, device),
        norm2: BatchNormConfig::new(bottleneck).init(device),
        conv2: conv(bottleneck, growth, 3, 1, 1, false, device),
    }
}

/// Cost of a DenseNet transition (see [`super::BlockSpec::Transition`]).
pub(crate) fn count_transition(c: &mut Counter, cout: usize) {
    c.bn().relu().conv(cout, 1, 1, 0, false).pool(2, 2, 0);
}

pub(crate) fn init_transition(cin: usize, cout: usize, device: &Device) -> TransitionBlock {
    TransitionBlock {
        norm: BatchNormConfig::new(cin).init(device),
        conv: conv(cin, cout, 1, 1, 0, false, device),
        pool: avg_pool(PoolSpec {
            k: 2,
            stride: 2,
            pad: 0,
        }),
    }
}

/// Cost of an Inception module (see [`super::BlockSpec::Inception`]).
pub(crate) fn count_inception(c: &mut Counter, branches: &[BranchSpec]) {
    let input = c.shape();
    c.concat(branches.iter().map(|b| b.count(input)).collect());
}

pub(crate) fn init_inception(cin: usize, branches: &[BranchSpec], device: &Device) -> InceptionBlock {
    InceptionBlock {
        branches: branches.iter().map(|b| b.init(cin, device)).collect(),
    }
}

/// MobileNetV2 inverted residual block.
#[derive(Module, Debug)]
pub struct InvertedResidualBlock {
    pub(crate) expand: Option<ConvBnAct>,
    pub(crate) depthwise: ConvBnAct,
    pub(crate) project: ConvBnAct,
    pub(crate) residual: bool,
}

impl InvertedResidualBlock {
    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, Cout, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.project.forward(self.depthwise.forward(h));
        if self.residual { y + x } else { y }
    }

    pub(crate) fn fold_bn(self) -> Self {
        Self {
            expand: self.expand.map(ConvBnAct::fold_bn),
            depthwise: self.depthwise.fold_bn(),
            project: self.project.fold_bn(),
            residual: self.residual,
        }
    }
}

/// DenseNet layer (pre-activation: its BatchNorms precede their convolutions, so none folds).
#[derive(Module, Debug)]
pub struct DenseLayerBlock {
    pub(crate) norm1: BatchNorm,
    pub(crate) conv1: Conv2d,
    pub(crate) norm2: BatchNorm,
    pub(crate) conv2: Conv2d,
}

impl DenseLayerBlock {
    /// # Shapes
    /// `[N, C, H, W]` → `[N, C + growth, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv1.forward(relu(self.norm1.forward(x.clone())));
        let y = self.conv2.forward(relu(self.norm2.forward(y)));
        Tensor::cat(vec![x, y], 1)
    }
}

/// DenseNet transition between dense blocks.
#[derive(Module, Debug)]
pub struct TransitionBlock {
    pub(crate) norm: BatchNorm,
    pub(crate) conv: Conv2d,
    pub(crate) pool: AvgPool2d,
}

impl TransitionBlock {
    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, Cout, H / 2, W / 2]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool.forward(self.conv.forward(relu(self.norm.forward(x))))
    }
}

/// One branch of an Inception module.
#[derive(Module, Debug)]
pub struct InceptionBranch {
    pub(crate) max_pool: Option<MaxPool2d>,
    pub(crate) avg_pool: Option<AvgPool2d>,
    pub(crate) convs: Vec<ConvBnAct>,
    pub(crate) split: Vec<ConvBnAct>,
}

impl InceptionBranch {
    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, C_branch, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = x;
        if let Some(p) = &self.max_pool {
            x = p.forward(x);
        }
        if let Some(p) = &self.avg_pool {
            x = p.forward(x);
        }
        for l in &self.convs {
            x = l.forward(x);
        }
        if self.split.is_empty() {
            return x;
        }
        Tensor::cat(self.split.iter().map(|l| l.forward(x.clone())).collect(), 1)
    }

    fn fold_bn(self) -> Self {
        Self {
            max_pool: self.max_pool,
            avg_pool: self.avg_pool,
            convs: self.convs.into_iter().map(ConvBnAct::fold_bn).collect(),
            split: self.split.into_iter().map(ConvBnAct::fold_bn).collect(),
        }
    }
}

/// Inception module: branches from the same input, concatenated along channels.
#[derive(Module, Debug)]
pub struct InceptionBlock {
    pub(crate) branches: Vec<InceptionBranch>,
}

impl InceptionBlock {
    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, Σ C_branch, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        Tensor::cat(self.branches.iter().map(|b| b.forward(x.clone())).collect(), 1)
    }

    pub(crate) fn fold_bn(self) -> Self {
        Self {
            branches: self.branches.into_iter().map(InceptionBranch::fold_bn).collect(),
        }
    }
}

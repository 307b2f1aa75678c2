//! The backbone zoo: every network is a list of [`BlockSpec`]s plus a final classifier, built
//! by name for any input shape and class count.
//!
//! Each block boundary is a candidate cut point for an exit. Backbones know nothing of exits.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::cost::{Cost, Counter, Shape};
use super::imagenet;
use super::layers::{Block, BlockSpec, ConvSpec, PoolSpec};
use crate::error::{Error, Result};

/// Every backbone name [`BackboneSpec::new`] accepts.
pub const BACKBONES: &[&str] = &[
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "eenet8",
    "lenet5",
    "mlp",
    "vgg13",
    "alexnet",
    // The torchvision layouts and the option-A CIFAR ResNets (`imagenet.rs`).
    "resnet20_a",
    "resnet32_a",
    "resnet44_a",
    "resnet56_a",
    "resnet110_a",
    "resnet18_imagenet",
    "resnet34_imagenet",
    "resnet50_imagenet",
    "resnet101_imagenet",
    "resnet152_imagenet",
    "vgg11_imagenet",
    "vgg11_bn_imagenet",
    "vgg13_imagenet",
    "vgg13_bn_imagenet",
    "vgg16_imagenet",
    "vgg16_bn_imagenet",
    "mobilenet_v2",
    "densenet121",
    "inception_v3",
];

/// The backbone's own final classifier (its last exit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSpec {
    /// BatchNorm + ReLU before pooling (EENet-8's final block).
    pub bn_relu: bool,
    /// Global average pooling (`true`) or flattening (`false`) before the linear layer.
    pub global_pool: bool,
    /// Number of classes.
    pub classes: usize,
}

impl ClassifierSpec {
    /// Cost of the classifier on `input`-shaped features.
    pub fn cost(&self, input: Shape) -> Result<Cost> {
        let mut c = Counter::new(input);
        if self.bn_relu {
            c.bn().relu();
        }
        if self.global_pool {
            c.global_pool();
        } else {
            c.flatten();
        }
        c.linear(self.classes, true);
        c.finish()
            .map(|(_, cost)| cost)
            .map_err(|reason| Error::Shape { reason })
    }

    fn init(&self, input: Shape, device: &Device) -> Classifier {
        let din = if self.global_pool { input.c } else { input.numel() };
        Classifier {
            bn: self.bn_relu.then(|| BatchNormConfig::new(input.c).init(device)),
            global_pool: self.global_pool,
            linear: LinearConfig::new(din, self.classes).init(device),
        }
    }
}

/// A named block with its input and output shapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// A readable name (`stage2.block3`).
    pub name: String,
    /// The block's specification.
    pub spec: BlockSpec,
    /// Input shape per sample.
    pub input: Shape,
    /// Output shape per sample.
    pub output: Shape,
    /// Cost of this block alone.
    pub cost: Cost,
}

/// A fully resolved backbone: blocks with shapes and costs, and the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackboneSpec {
    /// The zoo name.
    pub name: String,
    /// Input shape.
    pub input: Shape,
    /// Blocks in order; the output of block `i` is cut point `i`.
    pub blocks: Vec<BlockInfo>,
    /// Final classifier.
    pub classifier: ClassifierSpec,
    /// Cost of the classifier.
    pub classifier_cost: Cost,
}

fn basic_stages(blocks: &mut Vec<(String, BlockSpec)>, widths: &[usize], depths: &[usize], first_stride: usize) {
    for (s, (&w, &d)) in widths.iter().zip(depths).enumerate() {
        for b in 0..d {
            let stride = if b == 0 && s > 0 {
                2
            } else if b == 0 {
                first_stride
            } else {
                1
            };
            blocks.push((
                format!("stage{}.block{}", s + 1, b + 1),
                BlockSpec::Basic { cout: w, stride },
            ));
        }
    }
}

/// The zoo's block lists: `name`'s named blocks and classifier, before any shape is checked.
fn zoo_layout(
    name: &str,
    input: Shape,
    classes: usize,
    width: Option<usize>,
) -> Result<(Vec<(String, BlockSpec)>, ClassifierSpec)> {
    let pool_cls = |bn_relu| ClassifierSpec {
        bn_relu,
        global_pool: true,
        classes,
    };
    let flat_cls = ClassifierSpec {
        bn_relu: false,
        global_pool: false,
        classes,
    };
    Ok(match name {
        // The CIFAR ResNets (6n + 2 layers); 8 and 14 are the small members of the family.
        "resnet8" | "resnet14" | "resnet20" | "resnet32" | "resnet44" | "resnet56" | "resnet110" => {
            let depth: usize = name["resnet".len()..].parse().expect("static names");
            let n = (depth - 2) / 6;
            let mut blocks = vec![("stem".into(), stem(16))];
            basic_stages(&mut blocks, &[16, 32, 64], &[n, n, n], 1);
            (blocks, pool_cls(false))
        }
        "resnet18" | "resnet34" => {
            let depths = if name == "resnet18" { [2, 2, 2, 2] } else { [3, 4, 6, 3] };
            let mut blocks = vec![("stem".into(), stem(64))];
            basic_stages(&mut blocks, &[64, 128, 256, 512], &depths, 1);
            (blocks, pool_cls(false))
        }
        "resnet50" | "resnet101" | "resnet152" => {
            let depths = match name {
                "resnet50" => [3, 4, 6, 3],
                "resnet101" => [3, 4, 23, 3],
                _ => [3, 8, 36, 3],
            };
            (bottleneck_resnet(&depths), pool_cls(false))
        }
        "eenet8" => (eenet8(width.unwrap_or(4)), pool_cls(true)),
        "lenet5" => (lenet5(), flat_cls),
        "mlp" => {
            let w = width.unwrap_or(512);
            let blocks = [w, w / 2, w / 4]
                .into_iter()
                .enumerate()
                .map(|(i, d)| (format!("fc{}", i + 1), BlockSpec::fc(d.max(1))))
                .collect();
            (blocks, flat_cls)
        }
        "vgg13" => (vgg13(input), pool_cls(false)),
        "alexnet" => (alexnet(), flat_cls),
        other => imagenet::build(other, classes, width).ok_or_else(|| Error::UnknownName {
            what: "backbone",
            name: other.into(),
            expected: BACKBONES.join(", "),
        })?,
    })
}

/// A 3×3 convolution + BatchNorm + ReLU to `c` channels.
fn stem(c: usize) -> BlockSpec {
    BlockSpec::Conv {
        convs: vec![ConvSpec::cbr(c, 3, 1, 1)],
        pool: None,
    }
}

/// A conv block of one convolution and an optional pool.
fn conv_block(conv: ConvSpec, pool: Option<PoolSpec>) -> BlockSpec {
    BlockSpec::Conv {
        convs: vec![conv],
        pool,
    }
}

/// ResNet-50/101/152 (small-image stem): bottleneck stages of `depths` blocks.
fn bottleneck_resnet(depths: &[usize; 4]) -> Vec<(String, BlockSpec)> {
    let mut blocks = vec![("stem".into(), stem(64))];
    for (s, (&mid, &d)) in [64usize, 128, 256, 512].iter().zip(depths).enumerate() {
        for b in 0..d {
            let stride = if b == 0 && s > 0 { 2 } else { 1 };
            blocks.push((
                format!("stage{}.block{}", s + 1, b + 1),
                BlockSpec::Bottleneck { mid, stride },
            ));
        }
    }
    blocks
}

/// EENet-8: a biased stem and three pre-activation blocks of `f`, `2f`, `4f` filters.
fn eenet8(f: usize) -> Vec<(String, BlockSpec)> {
    let pre_act = |cout, stride, pre| BlockSpec::PreAct { cout, stride, pre };
    vec![
        ("init".into(), conv_block(ConvSpec::cbr(f, 3, 1, 1).biased(), None)),
        ("block1".into(), pre_act(f, 1, false)),
        ("block2".into(), pre_act(2 * f, 2, true)),
        ("block3".into(), pre_act(4 * f, 2, true)),
    ]
}

/// LeNet-5: two 5×5 convolutions with 2×2 max pools, then 120 and 84 units.
fn lenet5() -> Vec<(String, BlockSpec)> {
    let pool = Some(PoolSpec {
        k: 2,
        stride: 2,
        pad: 0,
    });
    vec![
        ("conv1".into(), conv_block(ConvSpec::cr(6, 5, 1, 2), pool)),
        ("conv2".into(), conv_block(ConvSpec::cr(16, 5, 1, 0), pool)),
        ("fc1".into(), BlockSpec::fc(120)),
        ("fc2".into(), BlockSpec::fc(84)),
    ]
}

/// The CIFAR VGG-13 with BatchNorm; a stage's pool is dropped once the map is 1×1 so that
/// 28×28 inputs work too.
fn vgg13(input: Shape) -> Vec<(String, BlockSpec)> {
    let mut h = input.h.min(input.w);
    let mut blocks = Vec::new();
    for (s, w) in [64usize, 128, 256, 512, 512].into_iter().enumerate() {
        let pool = (h >= 2).then_some(PoolSpec {
            k: 2,
            stride: 2,
            pad: 0,
        });
        if pool.is_some() {
            h /= 2;
        }
        blocks.push((
            format!("stage{}", s + 1),
            BlockSpec::Conv {
                convs: vec![ConvSpec::cbr(w, 3, 1, 1), ConvSpec::cbr(w, 3, 1, 1)],
                pool,
            },
        ));
    }
    blocks
}

/// The small-image AlexNet: five convolutions (three 3×3 max pools), then 512 and 256 units.
fn alexnet() -> Vec<(String, BlockSpec)> {
    let pool = Some(PoolSpec {
        k: 3,
        stride: 2,
        pad: 1,
    });
    vec![
        ("conv1".into(), conv_block(ConvSpec::cr(64, 5, 1, 2), pool)),
        ("conv2".into(), conv_block(ConvSpec::cr(192, 5, 1, 2), pool)),
        ("conv3".into(), conv_block(ConvSpec::cr(384, 3, 1, 1), None)),
        ("conv4".into(), conv_block(ConvSpec::cr(256, 3, 1, 1), None)),
        ("conv5".into(), conv_block(ConvSpec::cr(256, 3, 1, 1), pool)),
        ("fc1".into(), BlockSpec::fc(512)),
        ("fc2".into(), BlockSpec::fc(256)),
    ]
}

impl BackboneSpec {
    /// Builds the backbone `name` for `input`-shaped samples and `classes` classes.
    ///
    /// `width` overrides the starting width where a backbone has one (`mobilenet_v2`: the width
    /// multiplier in percent, default 100; `eenet8`: starting
    /// filters, default 4; `mlp`: first hidden layer, default 512).
    pub fn new(name: &str, input: Shape, classes: usize, width: Option<usize>) -> Result<Self> {
        if classes < 2 {
            return Err(Error::Invalid {
                field: "classes".into(),
                reason: format!("need at least 2 classes, got {classes}"),
            });
        }
        if input.numel() == 0 {
            return Err(Error::Invalid {
                field: "input".into(),
                reason: "input shape has a zero dimension".into(),
            });
        }
        // A zero width would build empty layers (and panic in Burn): report it instead.
        if width == Some(0) {
            return Err(Error::Invalid {
                field: "width".into(),
                reason: format!("the width of `{name}` must be at least 1"),
            });
        }
        let (blocks, classifier) = zoo_layout(name, input, classes, width)?;
        let mut shape = input;
        let mut infos = Vec::with_capacity(blocks.len());
        for (bname, spec) in blocks {
            let (out, cost) = spec.cost(shape).map_err(|reason| Error::Shape {
                reason: format!("{name} on a {input} input: block `{bname}`: {reason}"),
            })?;
            infos.push(BlockInfo {
                name: bname,
                spec,
                input: shape,
                output: out,
                cost,
            });
            shape = out;
        }
        let classifier_cost = classifier.cost(shape)?;
        Ok(Self {
            name: name.into(),
            input,
            blocks: infos,
            classifier,
            classifier_cost,
        })
    }

    /// Total cost of the plain backbone (all blocks and the classifier).
    pub fn total_cost(&self) -> Cost {
        self.blocks.iter().map(|b| b.cost).sum::<Cost>() + self.classifier_cost
    }

    /// Output shape of the last block.
    pub fn feature_shape(&self) -> Shape {
        self.blocks.last().map(|b| b.output).unwrap_or(self.input)
    }

    /// Builds the Burn module.
    pub fn init(&self, device: &Device) -> Backbone {
        Backbone {
            blocks: self.blocks.iter().map(|b| b.spec.init(b.input, device)).collect(),
            classifier: self.classifier.init(self.feature_shape(), device),
        }
    }
}

/// The backbone's final classifier module.
#[derive(Module, Debug)]
pub struct Classifier {
    pub(crate) bn: Option<BatchNorm>,
    pub(crate) global_pool: bool,
    pub(crate) linear: Linear,
}

impl Classifier {
    /// # Shapes
    /// `[N, C, H, W]` → logits `[N, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = match &self.bn {
            Some(bn) => relu(bn.forward(x)),
            None => x,
        };
        let flat = if self.global_pool {
            global_avg_pool(x)
        } else {
            flatten(x)
        };
        self.linear.forward(flat)
    }
}

/// `[N, C, H, W]` → `[N, C]` by averaging over space.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    if h * w == 1 {
        return x.reshape([n, c]);
    }
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

/// `[N, C, H, W]` → `[N, C·H·W]`.
pub fn flatten(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c * h * w])
}

/// A backbone module: blocks and the final classifier.
#[derive(Module, Debug)]
pub struct Backbone {
    /// Blocks in order.
    pub blocks: Vec<Block>,
    /// Final classifier.
    pub classifier: Classifier,
}

impl Backbone {
    /// This backbone with BatchNorm folded into the preceding convolutions (inference only).
    pub fn fold_bn(self) -> Self {
        Self {
            blocks: self.blocks.into_iter().map(Block::fold_bn).collect(),
            classifier: self.classifier,
        }
    }

    /// The plain network, no exits.
    ///
    /// # Shapes
    /// `[N, C, H, W]` → logits `[N, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for b in &self.blocks {
            x = b.forward(x);
        }
        self.classifier.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cost::MacConvention;

    fn macs(name: &str, input: Shape) -> u64 {
        BackboneSpec::new(name, input, 10, None)
            .unwrap()
            .total_cost()
            .macs(MacConvention::All)
    }

    #[test]
    fn a_zero_width_is_refused() {
        let input = Shape::new(1, 28, 28);
        let e = BackboneSpec::new("eenet8", input, 10, Some(0)).unwrap_err().to_string();
        assert!(e.contains("width") && e.contains("at least 1"), "{e}");
        assert!(BackboneSpec::new("eenet8", input, 10, Some(8)).is_ok());
    }

    #[test]
    fn golden_resnet_macs_match_eenets_tables_6_and_8() {
        // EENets seed, Tables 6 and 8 (ptflops, 32x32 inputs).
        for (name, golden) in [
            ("resnet20", 41.41e6),
            ("resnet32", 70.06e6),
            ("resnet44", 98.72e6),
            ("resnet110", 256.32e6),
        ] {
            let m = macs(name, Shape::new(3, 32, 32)) as f64;
            assert!((m - golden).abs() / golden < 0.01, "{name}: {m} vs {golden}");
        }
    }

    #[test]
    fn every_backbone_builds_for_the_standard_shapes() {
        for name in BACKBONES {
            // Inception-v3's stem and reductions need at least 75×75 pixels; torchvision's VGGs
            // and DenseNet halve the map five times, so need 32×32 (as in PyTorch).
            let shapes = match *name {
                "inception_v3" => [Shape::new(1, 75, 75), Shape::new(3, 80, 80), Shape::new(3, 96, 96)],
                n if n == "densenet121" || n.ends_with("_imagenet") && n.starts_with("vgg") => {
                    [Shape::new(1, 32, 32), Shape::new(3, 32, 32), Shape::new(3, 64, 64)]
                }
                _ => [Shape::new(1, 28, 28), Shape::new(3, 32, 32), Shape::new(3, 64, 64)],
            };
            for input in shapes {
                let spec =
                    BackboneSpec::new(name, input, 10, None).unwrap_or_else(|e| panic!("{name} on {input}: {e}"));
                assert!(spec.blocks.len() >= 3, "{name}");
                assert!(spec.total_cost().macs(MacConvention::ConvLinear) > 0);
            }
        }
    }

    #[test]
    fn resnet20_param_count_is_0_27m() {
        let p = BackboneSpec::new("resnet20", Shape::new(3, 32, 32), 10, None)
            .unwrap()
            .total_cost()
            .params;
        assert!((260_000..290_000).contains(&p), "{p}");
    }

    #[test]
    fn unknown_and_impossible_are_errors() {
        let e = BackboneSpec::new("resnet21", Shape::new(3, 32, 32), 10, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("resnet21") && e.contains("resnet20"), "{e}");
        let e = BackboneSpec::new("lenet5", Shape::new(1, 4, 4), 10, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
    }
}

//! The ImageNet-layout networks of the zoo, block for block as torchvision builds them, so that
//! a torchvision checkpoint imports by name and reproduces PyTorch's answers: ResNet-18…152 with
//! the 7×7 stem, VGG-11/13/16 with and without BatchNorm, MobileNetV2, DenseNet-121 and
//! Inception-v3 (without its auxiliary classifier, which only training uses) — and the CIFAR
//! ResNets with "option A" shortcuts of the widely used CIFAR zoo.
//!
//! Each builder returns the named blocks (every block boundary is a cut point) and the final
//! classifier; [`super::BackboneSpec::new`] resolves shapes and costs.

use super::backbones::ClassifierSpec;
use super::branched::{BranchPool, BranchSpec, NamedConv};
use super::layers::{Activation, BlockSpec, ConvSpec, PoolSpec};

/// Named blocks and the classifier of one backbone.
pub(crate) type Layout = (Vec<(String, BlockSpec)>, ClassifierSpec);

const MAX_POOL_3S2: PoolSpec = PoolSpec {
    k: 3,
    stride: 2,
    pad: 1,
};

/// The layout of `name`, or `None` for the names this module does not build.
///
/// `width` is MobileNetV2's width multiplier in percent (default 100); other backbones here
/// have no width option.
pub(crate) fn build(name: &str, classes: usize, width: Option<usize>) -> Option<Layout> {
    let global_pool = |bn_relu| ClassifierSpec {
        bn_relu,
        global_pool: true,
        classes,
    };
    let mut blocks = Vec::new();
    let classifier = if let Some(depth) = name.strip_prefix("resnet").and_then(|r| r.strip_suffix("_a")) {
        let n = (depth.parse::<usize>().ok()? - 2) / 6;
        blocks.push(("stem".to_string(), stem_3x3(16)));
        for (s, w) in [16usize, 32, 64].into_iter().enumerate() {
            for b in 0..n {
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                blocks.push((
                    format!("stage{}.block{}", s + 1, b + 1),
                    BlockSpec::BasicPadded { cout: w, stride },
                ));
            }
        }
        global_pool(false)
    } else if let Some(depth) = name.strip_prefix("resnet").and_then(|r| r.strip_suffix("_imagenet")) {
        let (bottleneck, depths) = match depth {
            "18" => (false, [2, 2, 2, 2]),
            "34" => (false, [3, 4, 6, 3]),
            "50" => (true, [3, 4, 6, 3]),
            "101" => (true, [3, 4, 23, 3]),
            "152" => (true, [3, 8, 36, 3]),
            _ => return None,
        };
        blocks.push((
            "stem".to_string(),
            BlockSpec::Conv {
                convs: vec![ConvSpec::cbr(64, 7, 2, 3)],
                pool: Some(MAX_POOL_3S2),
            },
        ));
        for (s, (w, d)) in [64usize, 128, 256, 512].into_iter().zip(depths).enumerate() {
            for b in 0..d {
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let spec = if bottleneck {
                    BlockSpec::Bottleneck { mid: w, stride }
                } else {
                    BlockSpec::Basic { cout: w, stride }
                };
                blocks.push((format!("layer{}.{b}", s + 1), spec));
            }
        }
        global_pool(false)
    } else if let Some(rest) = name.strip_prefix("vgg").and_then(|r| r.strip_suffix("_imagenet")) {
        let (depth, bn) = match rest.strip_suffix("_bn") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        // Convolutions per stage (torchvision's configurations A, B and D).
        let per_stage: [usize; 5] = match depth {
            "11" => [1, 1, 2, 2, 2],
            "13" => [2, 2, 2, 2, 2],
            "16" => [2, 2, 3, 3, 3],
            _ => return None,
        };
        for (s, (w, n)) in [64usize, 128, 256, 512, 512].into_iter().zip(per_stage).enumerate() {
            let conv = if bn {
                ConvSpec::cbr(w, 3, 1, 1).biased()
            } else {
                ConvSpec::cr(w, 3, 1, 1)
            };
            blocks.push((
                format!("stage{}", s + 1),
                BlockSpec::Conv {
                    convs: vec![conv; n],
                    pool: Some(PoolSpec {
                        k: 2,
                        stride: 2,
                        pad: 0,
                    }),
                },
            ));
        }
        blocks.push((
            "fc1".to_string(),
            BlockSpec::Fc {
                dout: 4096,
                pool_to: Some([7, 7]),
            },
        ));
        blocks.push(("fc2".to_string(), BlockSpec::fc(4096)));
        ClassifierSpec {
            bn_relu: false,
            global_pool: false,
            classes,
        }
    } else {
        match name {
            "mobilenet_v2" => mobilenet_v2(&mut blocks, width.unwrap_or(100) as f64 / 100.0),
            "densenet121" => densenet121(&mut blocks),
            "inception_v3" => inception_v3(&mut blocks),
            _ => return None,
        }
        global_pool(name == "densenet121")
    };
    Some((blocks, classifier))
}

/// The CIFAR ResNets' stem: a 3×3 convolution + BN + ReLU.
fn stem_3x3(c: usize) -> BlockSpec {
    BlockSpec::Conv {
        convs: vec![ConvSpec::cbr(c, 3, 1, 1)],
        pool: None,
    }
}

/// torchvision's `_make_divisible`: `v` rounded to a multiple of `divisor`, never more than
/// 10 % below `v`.
pub(crate) fn make_divisible(v: f64, divisor: usize) -> usize {
    let rounded = ((v + divisor as f64 / 2.0) as usize / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * v {
        rounded + divisor
    } else {
        rounded
    }
}

fn mobilenet_v2(blocks: &mut Vec<(String, BlockSpec)>, width: f64) {
    let relu6 = |c, k, s, p| ConvSpec::cbr(c, k, s, p).act(Activation::Relu6);
    blocks.push((
        "features.0".to_string(),
        BlockSpec::Conv {
            convs: vec![relu6(make_divisible(32.0 * width, 8), 3, 2, 1)],
            pool: None,
        },
    ));
    // (expansion, channels, repeats, first stride), torchvision's table.
    let settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    for (expand, c, n, s) in settings {
        let cout = make_divisible(c as f64 * width, 8);
        for i in 0..n {
            blocks.push((
                format!("features.{}", blocks.len()),
                BlockSpec::InvertedResidual {
                    expand,
                    cout,
                    stride: if i == 0 { s } else { 1 },
                },
            ));
        }
    }
    blocks.push((
        format!("features.{}", blocks.len()),
        BlockSpec::Conv {
            convs: vec![relu6(make_divisible(1280.0 * width.max(1.0), 8), 1, 1, 0)],
            pool: None,
        },
    ));
}

fn densenet121(blocks: &mut Vec<(String, BlockSpec)>) {
    let (growth, bottleneck) = (32, 4 * 32);
    blocks.push((
        "features.conv0".to_string(),
        BlockSpec::Conv {
            convs: vec![ConvSpec::cbr(64, 7, 2, 3)],
            pool: Some(MAX_POOL_3S2),
        },
    ));
    let mut c = 64;
    for (i, layers) in [6usize, 12, 24, 16].into_iter().enumerate() {
        for l in 0..layers {
            blocks.push((
                format!("features.denseblock{}.denselayer{}", i + 1, l + 1),
                BlockSpec::DenseLayer { growth, bottleneck },
            ));
            c += growth;
        }
        if i < 3 {
            c /= 2;
            blocks.push((
                format!("features.transition{}", i + 1),
                BlockSpec::Transition { cout: c },
            ));
        }
    }
}

/// Inception-v3's BasicConv2d: convolution without bias, BatchNorm with epsilon 1e-3, ReLU.
fn basic(name: &str, cout: usize, k: [usize; 2], stride: usize, pad: [usize; 2]) -> NamedConv {
    NamedConv::new(name, ConvSpec::cbr(cout, 1, stride, 0).rect(k, pad).bn_eps(1e-3))
}

fn basic1(name: &str, cout: usize) -> NamedConv {
    basic(name, cout, [1, 1], 1, [0, 0])
}

fn basic3(name: &str, cout: usize, stride: usize, pad: usize) -> NamedConv {
    basic(name, cout, [3, 3], stride, [pad, pad])
}

fn pool_then(pool: BranchPool, convs: Vec<NamedConv>) -> BranchSpec {
    BranchSpec {
        pool: Some(pool),
        convs,
        split: Vec::new(),
    }
}

const AVG_3S1: BranchPool = BranchPool::Avg(PoolSpec {
    k: 3,
    stride: 1,
    pad: 1,
});
const MAX_3S2: BranchPool = BranchPool::Max(PoolSpec {
    k: 3,
    stride: 2,
    pad: 0,
});

fn inception_v3(blocks: &mut Vec<(String, BlockSpec)>) {
    let stem = |name: &str, conv: NamedConv, pool: Option<PoolSpec>| {
        (
            name.to_string(),
            BlockSpec::Conv {
                convs: vec![conv.spec],
                pool,
            },
        )
    };
    let max3s2 = Some(PoolSpec {
        k: 3,
        stride: 2,
        pad: 0,
    });
    blocks.push(stem("Conv2d_1a_3x3", basic3("conv", 32, 2, 0), None));
    blocks.push(stem("Conv2d_2a_3x3", basic3("conv", 32, 1, 0), None));
    blocks.push(stem("Conv2d_2b_3x3", basic3("conv", 64, 1, 1), max3s2));
    blocks.push(stem("Conv2d_3b_1x1", basic1("conv", 80), None));
    blocks.push(stem("Conv2d_4a_3x3", basic3("conv", 192, 1, 0), max3s2));
    let seven = |name: &str, cout, vertical: bool| {
        if vertical {
            basic(name, cout, [7, 1], 1, [3, 0])
        } else {
            basic(name, cout, [1, 7], 1, [0, 3])
        }
    };
    let three = |name: &str, cout, vertical: bool| {
        if vertical {
            basic(name, cout, [3, 1], 1, [1, 0])
        } else {
            basic(name, cout, [1, 3], 1, [0, 1])
        }
    };
    let inception = |name: &str, branches| (name.to_string(), BlockSpec::Inception { branches });
    for (name, pool_features) in [("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)] {
        blocks.push(inception(
            name,
            vec![
                BranchSpec::convs(vec![basic1("branch1x1", 64)]),
                BranchSpec::convs(vec![
                    basic1("branch5x5_1", 48),
                    basic("branch5x5_2", 64, [5, 5], 1, [2, 2]),
                ]),
                BranchSpec::convs(vec![
                    basic1("branch3x3dbl_1", 64),
                    basic3("branch3x3dbl_2", 96, 1, 1),
                    basic3("branch3x3dbl_3", 96, 1, 1),
                ]),
                pool_then(AVG_3S1, vec![basic1("branch_pool", pool_features)]),
            ],
        ));
    }
    blocks.push(inception(
        "Mixed_6a",
        vec![
            BranchSpec::convs(vec![basic3("branch3x3", 384, 2, 0)]),
            BranchSpec::convs(vec![
                basic1("branch3x3dbl_1", 64),
                basic3("branch3x3dbl_2", 96, 1, 1),
                basic3("branch3x3dbl_3", 96, 2, 0),
            ]),
            pool_then(MAX_3S2, Vec::new()),
        ],
    ));
    for (name, c7) in [
        ("Mixed_6b", 128),
        ("Mixed_6c", 160),
        ("Mixed_6d", 160),
        ("Mixed_6e", 192),
    ] {
        blocks.push(inception(
            name,
            vec![
                BranchSpec::convs(vec![basic1("branch1x1", 192)]),
                BranchSpec::convs(vec![
                    basic1("branch7x7_1", c7),
                    seven("branch7x7_2", c7, false),
                    seven("branch7x7_3", 192, true),
                ]),
                BranchSpec::convs(vec![
                    basic1("branch7x7dbl_1", c7),
                    seven("branch7x7dbl_2", c7, true),
                    seven("branch7x7dbl_3", c7, false),
                    seven("branch7x7dbl_4", c7, true),
                    seven("branch7x7dbl_5", 192, false),
                ]),
                pool_then(AVG_3S1, vec![basic1("branch_pool", 192)]),
            ],
        ));
    }
    blocks.push(inception(
        "Mixed_7a",
        vec![
            BranchSpec::convs(vec![basic1("branch3x3_1", 192), basic3("branch3x3_2", 320, 2, 0)]),
            BranchSpec::convs(vec![
                basic1("branch7x7x3_1", 192),
                seven("branch7x7x3_2", 192, false),
                seven("branch7x7x3_3", 192, true),
                basic3("branch7x7x3_4", 192, 2, 0),
            ]),
            pool_then(MAX_3S2, Vec::new()),
        ],
    ));
    for name in ["Mixed_7b", "Mixed_7c"] {
        blocks.push(inception(
            name,
            vec![
                BranchSpec::convs(vec![basic1("branch1x1", 320)]),
                BranchSpec {
                    pool: None,
                    convs: vec![basic1("branch3x3_1", 384)],
                    split: vec![three("branch3x3_2a", 384, false), three("branch3x3_2b", 384, true)],
                },
                BranchSpec {
                    pool: None,
                    convs: vec![basic1("branch3x3dbl_1", 448), basic3("branch3x3dbl_2", 384, 1, 1)],
                    split: vec![
                        three("branch3x3dbl_3a", 384, false),
                        three("branch3x3dbl_3b", 384, true),
                    ],
                },
                pool_then(AVG_3S1, vec![basic1("branch_pool", 192)]),
            ],
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{BackboneSpec, Shape};

    fn params(name: &str, input: Shape, classes: usize, width: Option<usize>) -> u64 {
        BackboneSpec::new(name, input, classes, width)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .total_cost()
            .params
    }

    #[test]
    fn published_parameter_counts() {
        // torchvision's model documentation ("num_params", ImageNet weights, 1000 classes).
        // Inception-v3's 27,161,264 include the auxiliary classifier (3,326,696 parameters:
        // conv 768→128 1×1 + BN, conv 128→768 5×5 + BN, fc 768→1000), which only training uses.
        let imagenet = Shape::new(3, 224, 224);
        for (name, published) in [
            ("resnet18_imagenet", 11_689_512),
            ("resnet34_imagenet", 21_797_672),
            ("resnet50_imagenet", 25_557_032),
            ("resnet101_imagenet", 44_549_160),
            ("resnet152_imagenet", 60_192_808),
            ("vgg11_imagenet", 132_863_336),
            ("vgg11_bn_imagenet", 132_868_840),
            ("vgg13_imagenet", 133_047_848),
            ("vgg13_bn_imagenet", 133_053_736),
            ("vgg16_imagenet", 138_357_544),
            ("vgg16_bn_imagenet", 138_365_992),
            ("mobilenet_v2", 3_504_872),
            ("densenet121", 7_978_856),
        ] {
            assert_eq!(params(name, imagenet, 1000, None), published, "{name}");
        }
        assert_eq!(
            params("inception_v3", Shape::new(3, 299, 299), 1000, None),
            27_161_264 - 3_326_696
        );
        // The CIFAR zoo with option-A shortcuts (akamaster/pytorch_resnet_cifar10's table:
        // 0.27M, 0.46M, 0.66M, 0.85M, 1.7M for 10 classes).
        let cifar = Shape::new(3, 32, 32);
        for (name, published) in [
            ("resnet20_a", "0.27"),
            ("resnet32_a", "0.46"),
            ("resnet44_a", "0.66"),
            ("resnet56_a", "0.85"),
            ("resnet110_a", "1.7"),
        ] {
            // Millions, to the digits the table prints.
            let digits = published.len() - published.find('.').unwrap() - 1;
            let p = params(name, cifar, 10, None) as f64 / 1e6;
            assert_eq!(format!("{p:.digits$}"), published, "{name}");
        }
    }

    #[test]
    fn the_mobilenet_width_multiplier_rounds_channels_as_torchvision_does() {
        use super::make_divisible;
        // `_make_divisible(v, 8)`: to the nearest multiple of 8, at least 8, never 10 % below.
        assert_eq!(make_divisible(32.0 * 0.25, 8), 8);
        assert_eq!(make_divisible(16.0 * 0.25, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24);
        assert_eq!(make_divisible(1280.0, 8), 1280);
        assert_eq!(make_divisible(91.0, 8), 88);
        assert_eq!(make_divisible(10.0, 8), 16);
        let spec = BackboneSpec::new("mobilenet_v2", Shape::new(3, 32, 32), 10, Some(25)).unwrap();
        // The last 1×1 convolution keeps 1280 channels below width 1.
        assert_eq!(spec.feature_shape().c, 1280);
        assert_eq!(spec.blocks[1].output.c, 8);
        assert!(spec.total_cost().params < params("mobilenet_v2", Shape::new(3, 32, 32), 10, None) / 4);
    }

    #[test]
    fn inception_v3_needs_75_pixels_and_says_so() {
        assert!(BackboneSpec::new("inception_v3", Shape::new(3, 75, 75), 10, None).is_ok());
        let e = BackboneSpec::new("inception_v3", Shape::new(3, 64, 64), 10, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inception_v3") && e.contains("does not fit"), "{e}");
    }
}

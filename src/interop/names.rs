//! Where each PyTorch layer of a zoo network lives in our module, layer by layer.
//!
//! PyTorch names a layer by its attribute path (`layer2.0.downsample.1`), Burn by its field path
//! with enum variants (`backbone.blocks.4.Basic.shortcut.bn`). The table is derived from the
//! resolved [`BackboneSpec`] (the same blocks that build the module), so the two cannot drift; a
//! tensor's own name (`weight`, `running_var`, …) is kept, and burn-store's PyTorch adapter turns
//! BatchNorm's `weight`/`bias` into `gamma`/`beta` and transposes linear weights.

use crate::error::{Error, Result};
use crate::model::{BackboneSpec, BlockSpec};

/// The naming conventions of the CIFAR ResNet zoos, which differ in two names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CifarNames {
    /// The final linear layer: `fc` (chenyaofo/pytorch-cifar-models) or `linear`
    /// (akamaster/pytorch_resnet_cifar10, kuangliu/pytorch-cifar).
    pub fc: &'static str,
    /// A projection shortcut: `downsample` (torchvision's habit) or `shortcut`.
    pub shortcut: &'static str,
}

impl CifarNames {
    /// The names a checkpoint uses, read off its keys (`fc`/`downsample` unless it has `linear`/`shortcut` keys).
    pub fn detect<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names = CifarNames {
            fc: "fc",
            shortcut: "downsample",
        };
        for k in keys {
            if k.starts_with("linear.") {
                names.fc = "linear";
            }
            if k.contains(".shortcut.") {
                names.shortcut = "shortcut";
            }
        }
        names
    }
}

/// One layer: its PyTorch prefix and our module path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerName {
    /// PyTorch's attribute path (`features.3.conv.1.0`).
    pub torch: String,
    /// Our module path (`backbone.blocks.3.InvertedResidual.depthwise.conv`).
    pub ours: String,
}

/// Which naming family a zoo backbone follows in PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// torchvision's ResNets and the CIFAR zoos: `conv1`, `bn1`, `layerS.B.…`, `fc`.
    ResNet(CifarNames),
    /// torchvision's VGG: `features.I` (one index per module), `classifier.0/3/6`.
    Vgg,
    /// torchvision's MobileNetV2: `features.I.conv.J`, `classifier.1`.
    MobileNetV2,
    /// torchvision's DenseNet: `features.denseblockB.denselayerL.…`, `classifier`.
    DenseNet,
    /// torchvision's Inception-v3: `Mixed_5b.branch1x1.conv`, `fc`.
    Inception,
}

impl Family {
    /// The family of zoo backbone `name` (ResNets take the CIFAR naming `names`), or an error
    /// for a backbone that has no PyTorch counterpart.
    pub fn of(name: &str, names: CifarNames) -> Result<Self> {
        Ok(match name {
            n if n.starts_with("resnet") => Family::ResNet(names),
            n if n.starts_with("vgg") && n.ends_with("_imagenet") => Family::Vgg,
            "mobilenet_v2" => Family::MobileNetV2,
            "densenet121" => Family::DenseNet,
            "inception_v3" => Family::Inception,
            other => {
                return Err(Error::invalid(
                    "arch",
                    format!(
                        "`{other}` has no PyTorch layout to import from or export to; the ResNets, the \
                         `_imagenet` VGGs, mobilenet_v2, densenet121 and inception_v3 have one"
                    ),
                ));
            }
        })
    }
}

/// Every weighted layer of `spec` with its PyTorch name, in order.
pub fn layer_names(spec: &BackboneSpec, family: Family) -> Result<Vec<LayerName>> {
    let mut out = Vec::new();
    let mut push = |torch: String, ours: String| out.push(LayerName { torch, ours });
    // VGG's `features` Sequential numbers every module (conv, BN, ReLU, pool).
    let mut vgg_index = 0usize;
    let mut vgg_dense = 0usize;
    for (i, b) in spec.blocks.iter().enumerate() {
        let ours = |variant: &str, rest: &str| format!("backbone.blocks.{i}.{variant}.{rest}");
        let unexpected = || {
            Error::invalid(
                "arch",
                format!("{}: block `{}` does not fit its PyTorch layout", spec.name, b.name),
            )
        };
        match (family, &b.spec) {
            (Family::ResNet(_), BlockSpec::Conv { convs, .. }) if i == 0 && convs.len() == 1 => {
                push("conv1".into(), ours("Conv", "layers.0.conv"));
                push("bn1".into(), ours("Conv", "layers.0.bn"));
            }
            (
                Family::ResNet(names),
                spec @ (BlockSpec::Basic { .. } | BlockSpec::BasicPadded { .. } | BlockSpec::Bottleneck { .. }),
            ) => {
                let torch = resnet_block_name(&b.name).ok_or_else(unexpected)?;
                let (variant, n) = match spec {
                    BlockSpec::Basic { .. } => ("Basic", 2),
                    BlockSpec::BasicPadded { .. } => ("BasicPadded", 2),
                    _ => ("Bottleneck", 3),
                };
                for j in 1..=n {
                    push(format!("{torch}.conv{j}"), ours(variant, &format!("conv{j}.conv")));
                    push(format!("{torch}.bn{j}"), ours(variant, &format!("conv{j}.bn")));
                }
                let projects = match spec {
                    BlockSpec::Basic { cout, stride } => *stride != 1 || b.input.c != *cout,
                    BlockSpec::Bottleneck { mid, stride } => *stride != 1 || b.input.c != 4 * mid,
                    _ => false,
                };
                if projects {
                    push(format!("{torch}.{}.0", names.shortcut), ours(variant, "shortcut.conv"));
                    push(format!("{torch}.{}.1", names.shortcut), ours(variant, "shortcut.bn"));
                }
            }
            (Family::Vgg, BlockSpec::Conv { convs, pool }) => {
                for (j, c) in convs.iter().enumerate() {
                    push(
                        format!("features.{vgg_index}"),
                        ours("Conv", &format!("layers.{j}.conv")),
                    );
                    vgg_index += 1;
                    if c.bn.is_some() {
                        push(format!("features.{vgg_index}"), ours("Conv", &format!("layers.{j}.bn")));
                        vgg_index += 1;
                    }
                    vgg_index += 1; // ReLU
                }
                vgg_index += usize::from(pool.is_some());
            }
            (Family::Vgg, BlockSpec::Fc { .. }) => {
                // classifier = [Linear, ReLU, Dropout] × 2 + [Linear].
                push(format!("classifier.{}", 3 * vgg_dense), ours("Fc", "linear"));
                vgg_dense += 1;
            }
            (Family::MobileNetV2, BlockSpec::Conv { convs, .. }) if convs.len() == 1 => {
                push(format!("features.{i}.0"), ours("Conv", "layers.0.conv"));
                push(format!("features.{i}.1"), ours("Conv", "layers.0.bn"));
            }
            (Family::MobileNetV2, BlockSpec::InvertedResidual { expand, .. }) => {
                let mut j = 0;
                if *expand != 1 {
                    push(
                        format!("features.{i}.conv.0.0"),
                        ours("InvertedResidual", "expand.conv"),
                    );
                    push(format!("features.{i}.conv.0.1"), ours("InvertedResidual", "expand.bn"));
                    j = 1;
                }
                push(
                    format!("features.{i}.conv.{j}.0"),
                    ours("InvertedResidual", "depthwise.conv"),
                );
                push(
                    format!("features.{i}.conv.{j}.1"),
                    ours("InvertedResidual", "depthwise.bn"),
                );
                push(
                    format!("features.{i}.conv.{}", j + 1),
                    ours("InvertedResidual", "project.conv"),
                );
                push(
                    format!("features.{i}.conv.{}", j + 2),
                    ours("InvertedResidual", "project.bn"),
                );
            }
            (Family::DenseNet, BlockSpec::Conv { .. }) if i == 0 => {
                push("features.conv0".into(), ours("Conv", "layers.0.conv"));
                push("features.norm0".into(), ours("Conv", "layers.0.bn"));
            }
            (Family::DenseNet, BlockSpec::DenseLayer { .. }) => {
                for l in ["norm1", "conv1", "norm2", "conv2"] {
                    push(format!("{}.{l}", b.name), ours("DenseLayer", l));
                }
            }
            (Family::DenseNet, BlockSpec::Transition { .. }) => {
                for l in ["norm", "conv"] {
                    push(format!("{}.{l}", b.name), ours("Transition", l));
                }
            }
            (Family::Inception, BlockSpec::Conv { convs, .. }) if convs.len() == 1 => {
                push(format!("{}.conv", b.name), ours("Conv", "layers.0.conv"));
                push(format!("{}.bn", b.name), ours("Conv", "layers.0.bn"));
            }
            (Family::Inception, BlockSpec::Inception { branches }) => {
                for (k, br) in branches.iter().enumerate() {
                    for (part, convs) in [("convs", &br.convs), ("split", &br.split)] {
                        for (j, c) in convs.iter().enumerate() {
                            let at = format!("branches.{k}.{part}.{j}");
                            push(
                                format!("{}.{}.conv", b.name, c.name),
                                ours("Inception", &format!("{at}.conv")),
                            );
                            push(
                                format!("{}.{}.bn", b.name, c.name),
                                ours("Inception", &format!("{at}.bn")),
                            );
                        }
                    }
                }
            }
            _ => return Err(unexpected()),
        }
    }
    let classifier = match family {
        Family::ResNet(names) => names.fc.to_string(),
        Family::Vgg => "classifier.6".into(),
        Family::MobileNetV2 => "classifier.1".into(),
        Family::DenseNet => {
            push("features.norm5".into(), "backbone.classifier.bn".into());
            "classifier".into()
        }
        Family::Inception => "fc".into(),
    };
    push(classifier, "backbone.classifier.linear".into());
    Ok(out)
}

/// `layer2.0` for our `layer2.0` (torchvision layouts) or `stage2.block1` (CIFAR layouts).
fn resnet_block_name(ours: &str) -> Option<String> {
    if ours.starts_with("layer") {
        return Some(ours.to_string());
    }
    let (stage, block) = ours.strip_prefix("stage")?.split_once(".block")?;
    let b: usize = block.parse().ok()?;
    Some(format!("layer{stage}.{}", b.checked_sub(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Shape;

    fn names(zoo: &str, input: Shape, family: Family) -> Vec<(String, String)> {
        let spec = BackboneSpec::new(zoo, input, 10, None).unwrap();
        layer_names(&spec, family)
            .unwrap()
            .into_iter()
            .map(|l| (l.torch, l.ours))
            .collect()
    }

    #[test]
    fn torchvision_resnet18_names() {
        let n = names(
            "resnet18_imagenet",
            Shape::new(3, 64, 64),
            Family::ResNet(CifarNames::detect([])),
        );
        let has = |t: &str, o: &str| n.iter().any(|(a, b)| a == t && b == o);
        assert!(has("conv1", "backbone.blocks.0.Conv.layers.0.conv"));
        assert!(has("layer1.1.bn2", "backbone.blocks.2.Basic.conv2.bn"));
        assert!(has("layer2.0.downsample.0", "backbone.blocks.3.Basic.shortcut.conv"));
        assert!(!n.iter().any(|(t, _)| t.starts_with("layer1.0.downsample")));
        assert_eq!(n.last().unwrap().0, "fc");
        // 20 convolutions and BatchNorms, the fc.
        assert_eq!(n.len(), 20 * 2 + 1);
    }

    #[test]
    fn cifar_zoo_names_follow_the_checkpoint() {
        let akamaster = CifarNames::detect(["conv1.weight", "layer1.0.conv1.weight", "linear.weight"]);
        assert_eq!(akamaster.fc, "linear");
        let n = names("resnet20_a", Shape::new(3, 32, 32), Family::ResNet(akamaster));
        assert!(
            n.iter()
                .any(|(t, o)| t == "layer3.2.conv2" && o == "backbone.blocks.9.BasicPadded.conv2.conv")
        );
        assert!(
            !n.iter()
                .any(|(t, _)| t.contains("shortcut") || t.contains("downsample"))
        );
        let kuangliu = CifarNames::detect(["layer2.0.shortcut.0.weight", "linear.bias"]);
        let n = names("resnet20", Shape::new(3, 32, 32), Family::ResNet(kuangliu));
        assert!(n.iter().any(|(t, _)| t == "layer2.0.shortcut.1"));
    }

    #[test]
    fn vgg_mobilenet_densenet_inception_names() {
        let n = names("vgg11_bn_imagenet", Shape::new(3, 32, 32), Family::Vgg);
        // features: conv 0, bn 1, relu 2, pool 3, conv 4, bn 5, …
        assert_eq!(
            n[0],
            ("features.0".into(), "backbone.blocks.0.Conv.layers.0.conv".into())
        );
        assert_eq!(n[3].0, "features.5");
        assert!(
            n.iter()
                .any(|(t, o)| t == "classifier.3" && o == "backbone.blocks.6.Fc.linear")
        );
        let n = names("vgg16_imagenet", Shape::new(3, 32, 32), Family::Vgg);
        // torchvision's vgg16: the last convolution is features.28.
        assert!(n.iter().any(|(t, _)| t == "features.28"));
        let n = names("mobilenet_v2", Shape::new(3, 32, 32), Family::MobileNetV2);
        assert!(
            n.iter()
                .any(|(t, o)| t == "features.1.conv.1" && o == "backbone.blocks.1.InvertedResidual.project.conv")
        );
        assert!(
            n.iter()
                .any(|(t, o)| t == "features.2.conv.3" && o == "backbone.blocks.2.InvertedResidual.project.bn")
        );
        assert!(n.iter().any(|(t, _)| t == "features.18.1"));
        let n = names("densenet121", Shape::new(3, 32, 32), Family::DenseNet);
        assert!(n.iter().any(|(t, _)| t == "features.denseblock4.denselayer16.conv2"));
        assert!(
            n.iter()
                .any(|(t, o)| t == "features.norm5" && o == "backbone.classifier.bn")
        );
        let n = names("inception_v3", Shape::new(3, 75, 75), Family::Inception);
        assert!(
            n.iter().any(|(t, o)| t == "Mixed_7c.branch3x3dbl_3b.bn"
                && o == "backbone.blocks.15.Inception.branches.2.split.1.bn")
        );
    }
}

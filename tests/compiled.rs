//! The compiled CPU path gives the Burn path's answers (within 1e-4) on networks whose BatchNorm
//! statistics are not the identity, for every supported block and head kind.

mod common;

use burn::module::Module;
use burn::tensor::Device;
use earlyexit::infer::{CompiledNet, ConvKernel, MultiExitModel, Policy};
use earlyexit::model::{HeadKind, ModelDescription, Shape};

/// A model whose BatchNorms have non-trivial running statistics: a few training-mode forward
/// passes on shifted, scaled inputs update them, as training would.
fn model(backbone: &str, input: Shape, exits: &str, head: HeadKind) -> MultiExitModel {
    model_width(backbone, None, input, exits, head)
}

fn model_width(backbone: &str, width: Option<usize>, input: Shape, exits: &str, head: HeadKind) -> MultiExitModel {
    let mut desc = ModelDescription::new(backbone, input, 10, exits.parse().unwrap());
    desc.head = head;
    desc.width = width;
    let arch = desc.resolve().unwrap();
    let ad = Device::flex().autodiff();
    let net = arch.init_seeded(&ad, 7);
    for i in 0..3 {
        let x = common::input_on(8, input, 100 + i, &ad) * 2.0 + 0.5;
        let _ = net.forward_all(x);
    }
    MultiExitModel { arch, net: net.valid() }
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst <= tol, "max abs difference {worst} > {tol}");
}

/// Both kernels (the direct AVX-512 one where this CPU has it, and im2col + GEMM) against the
/// Burn path.
fn check(backbone: &str, shape: Shape, exits: &str, head: HeadKind, n: usize) {
    check_model(&model(backbone, shape, exits, head), shape, n);
}

fn check_model(m: &MultiExitModel, shape: Shape, n: usize) {
    let m = m.clone();
    for kernel in [ConvKernel::Auto, ConvKernel::Gemm] {
        check_kernel(&m, CompiledNet::compile_with(&m, kernel).unwrap(), shape, n);
    }
}

fn check_kernel(m: &MultiExitModel, fast: CompiledNet, shape: Shape, n: usize) {
    let backbone = &m.arch.description.backbone;
    let x = common::input(n, shape, 3);

    let reference: Vec<f32> = m
        .net
        .forward_backbone(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    close(&fast.forward_backbone(x.clone()).unwrap(), &reference, 1e-4);
    let all = fast.forward_all(x.clone()).unwrap();
    for (k, o) in m.net.forward_all(x.clone()).into_iter().enumerate() {
        close(&all[k], &o.logits.into_data().try_to_vec::<f32>().unwrap(), 1e-4);
    }

    for policy in [
        common::median_thresholds(m, x.clone()),
        Policy::Never,
        "entropy:0.05".parse().unwrap(),
        "patience:2".parse().unwrap(),
    ] {
        let a = m.infer(x.clone(), &policy).unwrap();
        let b = fast.infer(x.clone(), &policy).unwrap();
        assert_eq!(a.exit, b.exit, "{backbone} {policy}: exits differ");
        assert_eq!(a.class, b.class, "{backbone} {policy}: classes differ");
        assert_eq!(a.macs, b.macs, "{backbone} {policy}: MACs differ");
        close(&a.probs, &b.probs, 1e-4);
        close(&a.confidence, &b.confidence, 1e-4);
    }
}

#[test]
fn resnet_with_pool_exits_matches_the_burn_path() {
    check("resnet20", Shape::new(3, 32, 32), "pareto:3", HeadKind::Pool, 9);
}

#[test]
fn bnpool_heads_and_odd_input_sizes_match() {
    check("resnet20", Shape::new(1, 28, 28), "cuts:2,5", HeadKind::Bnpool, 5);
}

#[test]
fn plain_heads_read_the_features_in_burn_order() {
    // `plain` heads flatten NCHW in Burn; the compiled path flattens NHWC and reorders the weights.
    check("resnet20", Shape::new(1, 12, 10), "cuts:1,4", HeadKind::Plain, 4);
}

#[test]
fn option_a_shortcuts_match() {
    // Subsampled, zero-padded identity shortcuts; 7×7 maps subsample to 4×4 (odd sizes).
    check("resnet20_a", Shape::new(1, 28, 28), "cuts:3,5", HeadKind::Bnpool, 5);
    check("resnet20_a", Shape::new(3, 32, 32), "linear:2", HeadKind::Pool, 3);
}

#[test]
fn bottleneck_blocks_match() {
    check("resnet50", Shape::new(3, 16, 16), "cuts:3", HeadKind::Pool, 2);
}

#[test]
fn confidence_policy_matches() {
    let shape = Shape::new(3, 32, 32);
    let m = model("resnet20", shape, "pareto:2", HeadKind::Pool);
    let fast = CompiledNet::compile(&m).unwrap();
    let x = common::input(16, shape, 5);
    let policy: Policy = "confidence:0.5".parse().unwrap();
    let (a, b) = (m.infer(x.clone(), &policy).unwrap(), fast.infer(x, &policy).unwrap());
    assert_eq!(a.exit, b.exit);
    close(&a.probs, &b.probs, 1e-4);
}

#[test]
fn pre_activation_blocks_and_every_head_kind_match() {
    // EENet-8: pre-activation blocks with biased convolutions, a BN + ReLU classifier.
    for head in [
        HeadKind::Pool,
        HeadKind::Plain,
        HeadKind::Bnpool,
        HeadKind::Branchy,
        HeadKind::Dense,
        HeadKind::Relupool,
        HeadKind::Mlp(12, 0),
        HeadKind::Mlp(16, 8),
    ] {
        check("eenet8", Shape::new(1, 28, 28), "cuts:0,1", head, 5);
    }
    // One kind per exit (a class-specific design's KP=Off and KP=On branches), through
    // compaction, under a class policy too.
    let mut desc = ModelDescription::new("resnet20", Shape::new(1, 16, 16), 10, "cuts:1,4,6".parse().unwrap());
    desc.exit_heads = Some(vec![HeadKind::Relupool, HeadKind::Dense, HeadKind::Relupool]);
    desc.confidence = false;
    let arch = desc.resolve().unwrap();
    let net = arch.init_seeded(&Device::flex(), 5);
    let m = MultiExitModel { arch, net };
    check_model(&m, Shape::new(1, 16, 16), 6);
    // Gates computed from the head's own prediction, g(softmax(c_i(x))).
    let mut desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "cuts:0,1".parse().unwrap());
    desc.head = HeadKind::Mlp(12, 0);
    desc.gate_on_prediction = true;
    let arch = desc.resolve().unwrap();
    let net = arch.init_seeded(&Device::flex(), 8);
    let gated = MultiExitModel { arch, net };
    check_model(&gated, Shape::new(1, 28, 28), 5);
    let x = common::input(5, Shape::new(1, 28, 28), 2);
    let conf: Policy = "confidence:0.5".parse().unwrap();
    let fast = CompiledNet::compile(&gated).unwrap();
    let (a, b) = (gated.infer(x.clone(), &conf).unwrap(), fast.infer(x, &conf).unwrap());
    assert_eq!(a.exit, b.exit);
    close(&a.confidence, &b.confidence, 1e-5);
    // `relupool` heads pooled to a grid (4×4 of 16×16, 8×8 and 4×4 maps; 3×3 of 7×7: unequal
    // windows), flattened channels-last on the compiled path.
    for (input, grid) in [(Shape::new(1, 16, 16), 4), (Shape::new(1, 28, 28), 3)] {
        let mut desc = ModelDescription::new("resnet20", input, 10, "cuts:1,4,7".parse().unwrap());
        desc.head = HeadKind::Relupool;
        desc.head_grid = Some(grid);
        let arch = desc.resolve().unwrap();
        let net = arch.init_seeded(&Device::flex(), 6);
        check_model(&MultiExitModel { arch, net }, input, 5);
    }
    let x = common::input(6, Shape::new(1, 16, 16), 4);
    let fast = CompiledNet::compile(&m).unwrap();
    let class: Policy = "class:0@0.5+1@0.5+2@0.5+3@0.5,4@0.5+5@0.5+6@0.5,off".parse().unwrap();
    let (a, b) = (m.infer(x.clone(), &class).unwrap(), fast.infer(x, &class).unwrap());
    assert_eq!((&a.exit, &a.class), (&b.exit, &b.class));
    // `dense` heads read every earlier block's pooled features, through compaction.
    check("resnet20", Shape::new(3, 16, 16), "cuts:1,4,6", HeadKind::Dense, 6);
}

#[test]
fn pooled_conv_stacks_dense_layers_and_flattening_classifiers_match() {
    check("lenet5", Shape::new(1, 28, 28), "cuts:0,1", HeadKind::Pool, 5);
    check("mlp", Shape::new(1, 28, 28), "cuts:0", HeadKind::Plain, 4);
    check("vgg13", Shape::new(3, 32, 32), "cuts:1,3", HeadKind::Bnpool, 3);
    check("alexnet", Shape::new(3, 32, 32), "cuts:1", HeadKind::Pool, 2);
}

#[test]
fn imagenet_stems_and_adaptive_pools_match() {
    // A 7×7 stride-2 stem and a padded 3×3 max pool; VGG's adaptive 7×7 pool before its dense
    // layers (a 1×1 map spread over 7×7 cells).
    check("resnet18_imagenet", Shape::new(3, 32, 32), "cuts:1", HeadKind::Pool, 2);
    check("vgg11_bn_imagenet", Shape::new(3, 32, 32), "cuts:2", HeadKind::Pool, 2);
}

#[test]
fn depthwise_and_relu6_blocks_match() {
    let shape = Shape::new(3, 32, 32);
    check_model(
        &model_width("mobilenet_v2", Some(25), shape, "cuts:2,6", HeadKind::Pool),
        shape,
        3,
    );
}

#[test]
fn concatenating_blocks_match() {
    // DenseNet layers (pre-activation, input kept) and transitions (average pool).
    check("densenet121", Shape::new(3, 32, 32), "cuts:3,8", HeadKind::Pool, 2);
    // Inception modules: pooled branches, 1×7 / 7×1 kernels, split 1×3 / 3×1 pairs.
    check("inception_v3", Shape::new(3, 75, 75), "cuts:5,9", HeadKind::Pool, 2);
}

#[test]
fn wrong_input_shapes_are_errors() {
    let m = model("resnet20", Shape::new(3, 32, 32), "none", HeadKind::Pool);
    let fast = CompiledNet::compile(&m).unwrap();
    let e = fast
        .forward_backbone(common::input(2, Shape::new(1, 28, 28), 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("1x28x28") && e.contains("3x32x32"), "{e}");
}

#[test]
fn the_models_here_have_non_trivial_batchnorm_statistics() {
    // Same seed, same weights: only the running statistics differ from a fresh model, so
    // different logits show that folding is really exercised above.
    let shape = Shape::new(3, 32, 32);
    let m = model("resnet20", shape, "none", HeadKind::Pool);
    let fresh = m.arch.init_seeded(&Device::flex(), 7);
    let x = common::input(2, shape, 1);
    let a: Vec<f32> = m
        .net
        .forward_backbone(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let b: Vec<f32> = fresh.forward_backbone(x).into_data().try_to_vec::<f32>().unwrap();
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff > 1e-2, "running statistics did not move (max difference {diff})");
}

#[test]
fn the_executor_picks_the_compiled_path_only_where_it_runs_the_model() {
    use earlyexit::ExecChoice;
    use earlyexit::infer::{Executor, Implementation};
    let device = Device::flex();
    let shape = Shape::new(3, 32, 32);
    let m = model("resnet20", shape, "pareto:2", HeadKind::Pool);
    let x = common::input(6, shape, 9);
    let policy = common::median_thresholds(&m, x.clone());
    let auto = Executor::new(m.clone(), &device, ExecChoice::Auto).unwrap();
    assert_eq!(auto.implementation(), Implementation::Compiled);
    let burn = Executor::new(m, &device, ExecChoice::Burn).unwrap();
    assert_eq!(burn.implementation(), Implementation::Burn);
    let (a, b) = (auto.infer(x.clone(), &policy).unwrap(), burn.infer(x, &policy).unwrap());
    assert_eq!(a.exit, b.exit);
    close(&a.probs, &b.probs, 1e-4);
    // Every zoo model runs compiled now; the fallback is tested in `infer::executor`'s unit
    // tests on a model with a convolution the kernels refuse.
}

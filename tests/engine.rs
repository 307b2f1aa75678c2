//! The engine's real per-sample exits must give exactly what `forward_all` plus the same policy
//! gives, for every policy and batch size.

mod common;

use burn::tensor::activation::{log_softmax, sigmoid, softmax};
use burn::tensor::{Device, Tensor};
use earlyexit::infer::{Answers, MultiExitModel, Policy, Thresholds, argmax};
use earlyexit::model::{ExitOutput, HeadKind, Shape};

fn model(backbone: &str, input: Shape, head: HeadKind, exits: &str, seed: u64) -> MultiExitModel {
    common::model(backbone, input, exits, head, seed)
}

fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [n, k] = t.dims();
    let v: Vec<f32> = t.into_data().try_to_vec::<f32>().unwrap();
    (0..n).map(|i| v[i * k..(i + 1) * k].to_vec()).collect()
}

/// Per-exit thresholds halfway between two neighbouring scores near the median, so that some
/// samples leave at every exit and none sits on a threshold.
fn midpoints(scores: &[Vec<f32>]) -> Vec<f32> {
    scores
        .iter()
        .map(|s| {
            let mut v = s.clone();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            if v.len() < 2 {
                return v[0] - 1e-3;
            }
            let m = v.len() / 2;
            (v[m - 1] + v[m]) / 2.0
        })
        .collect()
}

/// The policy's score computed with tensor operations on the device: a reference independent of
/// the host code the engine scores with.
fn device_score(policy: &Policy, out: &ExitOutput) -> Vec<f32> {
    let [n, k] = out.logits.dims();
    let t = match (policy, &out.confidence) {
        (Policy::Confidence(_), Some(c)) => sigmoid(c.clone()).reshape([n]),
        (Policy::Entropy(_), _) => {
            let logp = log_softmax(out.logits.clone(), 1);
            let h = (logp.clone().exp() * logp).sum_dim(1).neg().reshape([n]);
            h.div_scalar((k as f64).ln()).neg().add_scalar(1.0)
        }
        _ => softmax(out.logits.clone(), 1).max_dim(1).reshape([n]),
    };
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn reference(model: &MultiExitModel, x: Tensor<4>, policy: &Policy) -> (Vec<usize>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let outs = model.net.forward_all(x);
    let n_exits = model.net.num_exits();
    let scores: Vec<Vec<f32>> = outs[..n_exits].iter().map(|o| device_score(policy, o)).collect();
    let probs: Vec<Vec<Vec<f32>>> = outs.iter().map(|o| rows(softmax(o.logits.clone(), 1))).collect();
    let preds: Vec<Vec<usize>> = probs[..n_exits]
        .iter()
        .map(|p| p.iter().map(|r| argmax(r)).collect())
        .collect();
    let exits = policy.simulate(&scores, &preds);
    let chosen = exits.iter().enumerate().map(|(i, &e)| probs[e][i].clone()).collect();
    (exits, chosen, scores)
}

fn assert_matches(model: &MultiExitModel, x: Tensor<4>, policy: &Policy) -> Answers {
    let (exits, probs, _) = reference(model, x.clone(), policy);
    let got = model.infer(x, policy).unwrap();
    let macs = model.exit_macs();
    assert_eq!(got.exit, exits, "{policy}: exits differ");
    for (i, p) in probs.iter().enumerate() {
        for (a, b) in got.probs_of(i).iter().zip(p) {
            assert!((a - b).abs() < 1e-5, "{policy}: sample {i} probs {a} vs {b}");
        }
        assert_eq!(got.class[i], argmax(p), "{policy}: sample {i} class");
        assert_eq!(got.macs[i], macs[exits[i]]);
    }
    got
}

fn check_all_policies(model: &MultiExitModel, input: Shape) {
    for n in [1usize, 7, 257] {
        let x = common::input(n, input, n as u64);
        let probe = |p: Policy| reference(model, x.clone(), &p).2;
        let conf = Policy::Confidence(Thresholds::PerExit(midpoints(&probe(Policy::default()))));
        let maxp = Policy::MaxProb(Thresholds::PerExit(midpoints(&probe(Policy::MaxProb(
            Thresholds::Shared(0.0),
        )))));
        let ent_scores = probe(Policy::Entropy(Thresholds::Shared(0.0)));
        let ent = Policy::Entropy(Thresholds::PerExit(
            midpoints(&ent_scores).iter().map(|c| 1.0 - c).collect(),
        ));
        for policy in [
            conf,
            maxp,
            ent,
            Policy::Patience(1),
            Policy::Patience(2),
            Policy::Patience(3),
            Policy::MaxProb(Thresholds::Shared(Thresholds::OFF)),
        ] {
            let a = assert_matches(model, x.clone(), &policy);
            if n == 257 && matches!(policy, Policy::MaxProb(Thresholds::PerExit(_))) {
                // The thresholds are medians: some samples must really leave at the first exit
                // and some must reach the end.
                assert!(
                    a.exit.contains(&0) && a.exit.contains(&model.net.num_exits()),
                    "{:?}",
                    a.exit
                );
            }
        }
        // `never` is the plain backbone.
        let plain = rows(softmax(model.net.forward_backbone(x.clone()), 1));
        let never = model.infer(x.clone(), &Policy::Never).unwrap();
        for (i, p) in plain.iter().enumerate() {
            for (a, b) in never.probs_of(i).iter().zip(p) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        assert!(never.exit.iter().all(|&e| e == model.net.num_exits()));
        // `ensemble` mixes every exit by its gate: f̂_b = g_b f_b + (1 − g_b) f̂_{b+1}.
        let ens = model.infer(x.clone(), &Policy::Ensemble).unwrap();
        let outs = model.net.forward_all(x.clone());
        let k_exits = model.net.num_exits();
        let probs: Vec<Vec<Vec<f32>>> = outs.iter().map(|o| rows(softmax(o.logits.clone(), 1))).collect();
        let gates: Vec<Vec<f32>> = outs[..k_exits]
            .iter()
            .map(|o| {
                let z: Vec<f32> = o.confidence.clone().unwrap().into_data().try_to_vec::<f32>().unwrap();
                z.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect()
            })
            .collect();
        for i in 0..n {
            let mut mix = probs[k_exits][i].clone();
            for b in (0..k_exits).rev() {
                let g = gates[b][i];
                mix = mix
                    .iter()
                    .zip(&probs[b][i])
                    .map(|(m, p)| g * p + (1.0 - g) * m)
                    .collect();
            }
            for (a, b) in ens.probs_of(i).iter().zip(&mix) {
                assert!((a - b).abs() < 1e-5, "ensemble {a} vs {b}");
            }
            assert_eq!(ens.exit[i], k_exits);
        }
    }
}

#[test]
fn engine_matches_forward_all_eenet8_pool() {
    let input = Shape::new(1, 28, 28);
    check_all_policies(&model("eenet8", input, HeadKind::Pool, "cuts:1,2", 1), input);
}

#[test]
fn engine_matches_forward_all_lenet_dense_and_bnpool() {
    let input = Shape::new(1, 28, 28);
    check_all_policies(&model("lenet5", input, HeadKind::Dense, "every", 2), input);
    check_all_policies(&model("eenet8", input, HeadKind::Bnpool, "cuts:0,1,2", 3), input);
}

#[test]
fn engine_matches_forward_all_resnet20_branchy_and_plain() {
    let input = Shape::new(3, 32, 32);
    check_all_policies(&model("resnet20", input, HeadKind::Branchy, "pareto:4", 4), input);
    check_all_policies(&model("resnet20", input, HeadKind::Plain, "linear:2", 5), input);
}

#[test]
fn wrong_input_shape_is_an_error() {
    let m = model("eenet8", Shape::new(1, 28, 28), HeadKind::Pool, "cuts:1,2", 1);
    let x = Tensor::<4>::zeros([2, 3, 28, 28], &Device::flex());
    let e = m.infer(x, &Policy::default()).unwrap_err().to_string();
    assert!(e.contains("3x28x28") && e.contains("1x28x28"), "{e}");
}

#[test]
fn folded_batchnorm_gives_the_same_answers() {
    use burn::module::Module;
    let small = Shape::new(3, 32, 32);
    for (backbone, input, head, exits) in [
        ("resnet20", small, HeadKind::Branchy, "pareto:3"),
        ("eenet8", small, HeadKind::Bnpool, "cuts:1,2"),
        ("resnet50", small, HeadKind::Pool, "linear:2"),
        // Depthwise convolutions with ReLU6, option-A shortcuts, pre-activation dense layers
        // (nothing folds) and Inception branches with rectangular kernels and BN epsilon 1e-3.
        ("mobilenet_v2", small, HeadKind::Pool, "linear:3"),
        ("resnet20_a", small, HeadKind::Bnpool, "linear:3"),
        ("densenet121", small, HeadKind::Pool, "linear:2"),
        ("inception_v3", Shape::new(3, 75, 75), HeadKind::Pool, "linear:2"),
    ] {
        let m = model(backbone, input, head, exits, 11);
        // Train-mode passes give the BatchNorms non-trivial running statistics.
        let train_dev = Device::flex().autodiff();
        let mut net = m.net.fork(&train_dev);
        for s in 0..3 {
            let x = common::input_on(16, input, s, &train_dev) * 2.0 + 0.5;
            let _ = net.forward_all(x);
            net = net.clone();
        }
        let reference = MultiExitModel {
            arch: m.arch.clone(),
            net: net.valid(),
        };
        let x = common::input(9, input, 5) * 2.0 + 0.5;
        let p = Policy::MaxProb(Thresholds::Shared(Thresholds::OFF));
        let a = reference.infer(x.clone(), &p).unwrap();
        let folded = MultiExitModel {
            arch: reference.arch.clone(),
            net: reference.net.clone().fold_bn(),
        };
        let b = folded.infer(x, &p).unwrap();
        for (u, v) in a.probs.iter().zip(&b.probs) {
            assert!((u - v).abs() < 1e-4, "{backbone}: {u} vs {v}");
        }
        assert_eq!(a.class, b.class);
    }
}

#[test]
fn engine_runs_the_imagenet_era_blocks() {
    // Exits after every block check that each block's module gives the shape its spec promises
    // (every head is sized from the spec); the engine must match forward_all on them all.
    let small = Shape::new(3, 32, 32);
    for (backbone, input, exits) in [
        ("mobilenet_v2", small, "every"),
        ("resnet20_a", small, "every"),
        ("resnet18_imagenet", Shape::new(3, 64, 64), "every"),
        ("resnet50_imagenet", Shape::new(3, 64, 64), "linear:3"),
        ("vgg11_bn_imagenet", small, "every"),
        ("densenet121", small, "linear:6"),
        ("inception_v3", Shape::new(3, 75, 75), "every"),
    ] {
        let m = model(backbone, input, HeadKind::Pool, exits, 21);
        let x = common::input(7, input, 3);
        let policy = common::median_thresholds(&m, x.clone());
        let a = assert_matches(&m, x, &policy);
        assert_eq!(a.len(), 7, "{backbone}");
    }
}

//! Helpers shared by the integration tests: seeded models and inputs that do not depend on Burn's
//! global generator (tests run in parallel threads), and thresholds that split a batch.
#![allow(dead_code)] // each test file uses some of them

use burn::tensor::{Device, Tensor, TensorData};
use earlyexit::infer::{ExitLogits, MultiExitModel, Policy, Thresholds};
use earlyexit::model::{HeadKind, ModelDescription, Shape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `backbone` with `exits` and `head` heads on 10 classes, weights from `seed`, on the CPU.
pub fn model(backbone: &str, input: Shape, exits: &str, head: HeadKind, seed: u64) -> MultiExitModel {
    let mut d = ModelDescription::new(backbone, input, 10, exits.parse().unwrap());
    d.head = head;
    let arch = d.resolve().unwrap();
    let net = arch.init_seeded(&Device::flex(), seed);
    MultiExitModel { arch, net }
}

/// [`model`] with options: `grid:G` (`relupool` heads pooling to G×G), `gate` (the confidence
/// branch reads the head's own probabilities), or none (`""`).
pub fn model_opts(backbone: &str, input: Shape, exits: &str, head: HeadKind, opts: &str, seed: u64) -> MultiExitModel {
    let mut d = ModelDescription::new(backbone, input, 10, exits.parse().unwrap());
    d.head = head;
    match opts.split_once(':') {
        Some(("grid", g)) => d.head_grid = Some(g.parse().unwrap()),
        None if opts == "gate" => d.gate_on_prediction = true,
        None if opts.is_empty() => {}
        _ => panic!("unknown model option `{opts}`"),
    }
    let arch = d.resolve().unwrap();
    let net = arch.init_seeded(&Device::flex(), seed);
    MultiExitModel { arch, net }
}

/// `n` values drawn from `N(mean, std²)` by a generator seeded with `seed` (Box–Muller).
pub fn normal(n: usize, mean: f32, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
            mean + std * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// A `[n, C, H, W]` batch of standard-normal inputs from `seed`, on `device`.
pub fn input_on(n: usize, s: Shape, seed: u64, device: &Device) -> Tensor<4> {
    let v = normal(n * s.c * s.h * s.w, 0.0, 1.0, seed);
    Tensor::<4>::from_data(TensorData::new(v, [n, s.c, s.h, s.w]), device)
}

/// [`input_on`] the CPU.
pub fn input(n: usize, s: Shape, seed: u64) -> Tensor<4> {
    input_on(n, s, seed, &Device::flex())
}

/// Per-exit `maxprob` thresholds halfway between the two middle scores of `x` at each exit, so
/// that some samples leave at every exit, some go on, and none sits on a threshold.
pub fn median_thresholds(m: &MultiExitModel, x: Tensor<4>) -> Policy {
    let outs = m.net.forward_all(x);
    let t = outs[..m.net.num_exits()]
        .iter()
        .map(|o| {
            let mut s = ExitLogits::from_output(o).max_prob();
            s.sort_by(f32::total_cmp);
            let k = s.len() / 2;
            (s[k - 1] + s[k]) / 2.0
        })
        .collect();
    Policy::MaxProb(Thresholds::PerExit(t))
}

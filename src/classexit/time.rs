//! The time model of the class-specific method (seed eq. 1–3 and 8–12) and the measurement of
//! its inputs on this machine.
//!
//! `t` is B's time for one sample, `δ_i` the time of B up to cut point `i`, `e_i` the branch's
//! time. The seed measures wall-clock time at batch 1, so do we: every figure is the best of
//! `reps` timed runs, interleaved so that a burst of load from other processes hits every
//! quantity alike.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use super::branch::{Kp, branch_pool};
use crate::choice::ExecChoice;
use crate::error::{Error, Result};
use crate::infer::engine::StageSlices;
use crate::infer::executor::OnStages;
use crate::infer::{Executor, MultiExitModel};
use crate::model::HeadKind;

/// Eq. 1: the longest time of a design, `t'_i = t + e_i` (a sample that does not leave early).
pub fn t_max(t: f64, e: f64) -> f64 {
    t + e
}

/// Eq. 3: the mean time when a share `rate` of the samples leaves at the exit after cut `i`,
/// `t''_i = (1 − γ)(t − δ_i) + δ_i + e_i`.
pub fn t_mean(t: f64, delta: f64, e: f64, rate: f64) -> f64 {
    (1.0 - rate) * (t - delta) + delta + e
}

/// Eq. 11: the mean time with a second exit after cut `j > i`,
/// `t̂'' = (1 − γ_i)((1 − γ_j)((t − δ_i) − δ_j) + δ_j + e_j) + δ_i + e_i`, where `delta_j` is the
/// time of B **from** `i` to `j` (eq. 9 splits `t − δ_i` into `(t − δ_i) − δ_j` and `δ_j`) and
/// `rate_j` the share of the samples that reach `j` which leave there.
pub fn t_mean_two(t: f64, delta_i: f64, e_i: f64, rate_i: f64, delta_j: f64, e_j: f64, rate_j: f64) -> f64 {
    (1.0 - rate_i) * ((1.0 - rate_j) * ((t - delta_i) - delta_j) + delta_j + e_j) + delta_i + e_i
}

/// Gain (Table 2): how many times faster than B a sample is on average, `t / t''`.
pub fn gain(t: f64, t_mean: f64) -> f64 {
    t / t_mean
}

/// Loss (Table 2): how many times slower than B a sample that does not leave early is, `t' / t`.
pub fn loss(t: f64, t_max: f64) -> f64 {
    t_max / t
}

/// Measured times in seconds, batch 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Times {
    /// `t`: B end to end (every block, its classifier, the answer read back).
    pub t: f64,
    /// `δ_i` for every cut point `i` (blocks `0..=i`).
    pub delta: Vec<f64>,
    /// `e_i` for every measured branch, keyed `"{cut}-{kp}"` ([`Times::key`]).
    pub branch: BTreeMap<String, f64>,
    /// Timed runs per figure (the best is kept).
    pub reps: usize,
    /// The code that ran B and its prefixes ([`Executor::describe`]); empty in reports
    /// written before it was recorded (they timed the Burn module).
    #[serde(default)]
    pub implementation: String,
}

impl Times {
    /// The key of branch `(cut, kp)` in [`Times::branch`].
    pub fn key(cut: usize, kp: Kp) -> String {
        format!("{cut}-{kp}")
    }

    /// `e_i` of branch `(cut, kp)`, if measured.
    pub fn e(&self, cut: usize, kp: Kp) -> Option<f64> {
        self.branch.get(&Self::key(cut, kp)).copied()
    }
}

fn best(v: &mut f64, started: Instant) {
    *v = v.min(started.elapsed().as_secs_f64());
}

/// Times B, its prefixes up to every cut point, and branch `(cut, kp)` for every entry of
/// `branches` ([`branch_pool`] at `grid`, a dense layer with one output, then σ, the decision
/// read back), on one random input. B and its prefixes run on the code `path` selects (the
/// compiled CPU path where it runs B: what a deployment runs). Branches are timed as the exit
/// heads that deploy them ([`super::apply`]: `relupool` at any grid, `dense` pooled globally) on
/// the same code, their logits brought to the host as the engine does; KP=On branches pooled to
/// a grid (which no head deploys) on the Burn module. Weights of the branch do not change its time, so random ones are
/// used.
///
/// # Errors
/// `path` asks for code that cannot run B.
pub fn measure(
    model: &MultiExitModel,
    branches: &[(usize, Kp)],
    reps: usize,
    grid: usize,
    path: ExecChoice,
    device: &Device,
) -> Result<Times> {
    let backbone = &model.net.backbone;
    let input = model.arch.description.input;
    let x = Tensor::<4>::random([1, input.c, input.h, input.w], Distribution::Default, device);
    let cuts = backbone.blocks.len().saturating_sub(1);
    let whole = Executor::new(model.clone(), device, path)?;
    let prefixes = Executor::new(cut_everywhere(model, device)?, device, path)?;
    // The features at every cut point, for the branch timings.
    let mut feats = Vec::with_capacity(cuts);
    let mut h = x.clone();
    for b in &backbone.blocks[..cuts] {
        h = b.forward(h);
        feats.push(h.clone());
    }
    let widths: Vec<usize> = feats.iter().map(|f| branch_pool(f.clone(), grid).dims()[1]).collect();
    let heads: Vec<(Tensor<2>, Tensor<1>)> = branches
        .iter()
        .map(|&(cut, kp)| {
            let width = match kp {
                Kp::Off => widths[cut],
                Kp::On => widths[..=cut].iter().sum(),
            };
            (
                Tensor::<2>::random([width, 1], Distribution::Default, device),
                Tensor::<1>::random([1], Distribution::Default, device),
            )
        })
        .collect();
    let mut t = f64::INFINITY;
    let mut delta = vec![f64::INFINITY; cuts];
    let mut e = vec![f64::INFINITY; branches.len()];
    // Globally pooled branches are the exit heads `class-exit --apply` deploys (`relupool` for
    // KP=Off, `dense` for KP=On): timed as those heads on the executor that would run them.
    let deployed: Vec<Option<Executor>> = [Kp::Off, Kp::On]
        .into_iter()
        .map(|kp| {
            ((grid == 1 || kp == Kp::Off) && branches.iter().any(|b| b.1 == kp))
                .then(|| Executor::new(cut_everywhere_with(model, head_of(kp), grid, device)?, device, path))
                .transpose()
        })
        .collect::<Result<_>>()?;
    for _ in 0..reps.max(1) + 1 {
        let s = Instant::now();
        std::hint::black_box(whole.forward_plain(x.clone())?);
        best(&mut t, s);
        let once = prefixes.with_stages(PrefixTimes { x: x.clone() })?;
        for (d, v) in delta.iter_mut().zip(once) {
            *d = d.min(v);
        }
        for ((&(cut, kp), (w, b)), ei) in branches.iter().zip(&heads).zip(e.iter_mut()) {
            if let Some(exec) = &deployed[(kp == Kp::On) as usize] {
                *ei = ei.min(exec.with_stages(ExitTime { x: x.clone(), cut })?);
                continue;
            }
            let s = Instant::now();
            let parts: Vec<Tensor<2>> = match kp {
                Kp::Off => vec![branch_pool(feats[cut].clone(), grid)],
                Kp::On => feats[..=cut].iter().map(|f| branch_pool(f.clone(), grid)).collect(),
            };
            let z = Tensor::cat(parts, 1).matmul(w.clone()) + b.clone().unsqueeze::<2>();
            let _ = sigmoid(z).into_scalar::<f32>();
            best(ei, s);
        }
    }
    Ok(Times {
        t,
        delta,
        branch: branches
            .iter()
            .zip(e)
            .map(|(&(cut, kp), v)| (Times::key(cut, kp), v))
            .collect(),
        reps: reps.max(1),
        implementation: whole.describe(),
    })
}

/// The exit head that deploys a globally pooled branch of connection type `kp`.
fn head_of(kp: Kp) -> HeadKind {
    match kp {
        Kp::Off => HeadKind::Relupool,
        Kp::On => HeadKind::Dense,
    }
}

/// B with an exit after every block but the last (weights of B, `pool` heads that are never
/// run): its stage slices are B's prefixes.
fn cut_everywhere(model: &MultiExitModel, device: &Device) -> Result<MultiExitModel> {
    cut_everywhere_with(model, HeadKind::Pool, 1, device)
}

/// [`cut_everywhere`] with `head` heads pooling to `grid` (random weights: they do not change
/// the time).
fn cut_everywhere_with(model: &MultiExitModel, head: HeadKind, grid: usize, device: &Device) -> Result<MultiExitModel> {
    let mut desc = model.arch.description.clone();
    desc.exits = "every".parse()?;
    desc.exit_heads = None;
    desc.head_grid = (grid > 1).then_some(grid);
    desc.head = head;
    desc.confidence = false;
    let arch = desc.resolve()?;
    let blocks = model.net.backbone.blocks.len();
    if arch.cuts != (0..blocks.saturating_sub(1)).collect::<Vec<_>>() {
        return Err(Error::invalid(
            "places",
            format!("cannot cut {} after every block to time its prefixes", desc.backbone),
        ));
    }
    let mut net = arch.init_seeded(device, 0);
    net.backbone = model.net.backbone.clone();
    Ok(MultiExitModel { arch, net })
}

/// One timed run of every prefix of B (stages `0..=i`, no exit evaluated), seconds.
struct PrefixTimes {
    x: Tensor<4>,
}

impl OnStages for PrefixTimes {
    type Output = Result<Vec<f64>>;
    fn on<N: StageSlices>(self, net: &N) -> Result<Vec<f64>> {
        (0..net.num_exits())
            .map(|i| {
                let s = Instant::now();
                let mut state = net.start(self.x.clone())?;
                for k in 0..=i {
                    state = net.run_stage(k, state);
                }
                net.sync(&state);
                Ok(s.elapsed().as_secs_f64())
            })
            .collect()
    }
}

/// One timed run of the exit after cut `cut` (its head and its logits brought to the host, as
/// the engine pays at every exit it evaluates) on the state B reaches there, seconds.
struct ExitTime {
    x: Tensor<4>,
    cut: usize,
}

impl OnStages for ExitTime {
    type Output = Result<f64>;
    fn on<N: StageSlices>(self, net: &N) -> Result<f64> {
        let mut state = net.start(self.x)?;
        for k in 0..=self.cut {
            state = net.run_stage(k, state);
        }
        net.sync(&state);
        let s = Instant::now();
        std::hint::black_box(net.exit(self.cut, &state));
        Ok(s.elapsed().as_secs_f64())
    }
}

//! The engine against the plain network: thresholds forced so that a known share of samples
//! leaves at each exit (per-exit `maxprob` thresholds fitted on the benchmark inputs
//! themselves), then the engine, the plain backbone and the `never` policy timed, interleaved,
//! on the same inputs, next to what the MAC model predicts.

use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use super::timing::{median, time};
use crate::error::{Error, Result};
use crate::infer::engine::StageSlices;
use crate::infer::executor::OnStages;
use crate::infer::{Executor, ExitLogits, MultiExitModel, Policy, Thresholds};
use crate::model::MacConvention;

/// What to time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EngineBench {
    /// Share of all samples that should leave at each early exit (the rest reach the end).
    pub shares: Vec<f64>,
    /// Batch sizes to time.
    pub batches: Vec<usize>,
    /// Samples in the pool the thresholds are fitted on and the batches are cut from.
    pub pool: usize,
    /// Timed repetitions per measurement (the median is reported).
    pub reps: usize,
    /// Seed for the inputs.
    pub seed: u64,
}

/// One batch size's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EngineBenchRow {
    /// Batch size.
    pub batch: usize,
    /// Share of samples that left at each exit (final last), measured.
    pub exit_shares: Vec<f64>,
    /// Plain backbone, milliseconds per sample (median over repetitions).
    pub plain_ms_per_sample: f64,
    /// Engine with the forced thresholds, milliseconds per sample.
    pub engine_ms_per_sample: f64,
    /// Engine with `never`, milliseconds per sample.
    pub never_ms_per_sample: f64,
    /// Backbone MACs / mean MACs spent (what the cost model predicts).
    pub predicted_speedup: f64,
    /// Plain time / engine time.
    pub measured_speedup: f64,
    /// `measured_speedup / predicted_speedup` (goal ≥ 0.9).
    pub efficiency: f64,
    /// The speed-up predicted by a *time* model instead of the MAC model: every stage's and
    /// head's wall-clock time measured on full batches, weighted by the share of samples that
    /// runs it. Where this is close to `measured_speedup`, the engine itself costs little and the
    /// gap to `predicted_speedup` comes from stages that run slower per MAC than others.
    pub time_model_speedup: f64,
    /// Each stage's share of the plain network's wall-clock time (final stage last).
    pub stage_time_shares: Vec<f64>,
    /// Each stage's share of the plain network's MACs.
    pub stage_mac_shares: Vec<f64>,
    /// `never` time / plain time (goal ≤ 1.05).
    pub never_overhead: f64,
    /// The code timed ([`Executor::describe`]), the time model's stages and heads included.
    #[serde(default)]
    pub implementation: String,
}

/// Per-exit `maxprob` thresholds that make `shares[k]` of the pool leave at exit `k`.
pub fn forced_thresholds(model: &MultiExitModel, pool: Tensor<4>, shares: &[f64]) -> Result<Policy> {
    let n_exits = model.net.num_exits();
    if shares.len() != n_exits {
        return Err(Error::invalid(
            "shares",
            format!("{} shares given, the model has {n_exits} early exits", shares.len()),
        ));
    }
    if shares.iter().any(|s| !(0.0..=1.0).contains(s)) || shares.iter().sum::<f64>() > 1.0 + 1e-9 {
        return Err(Error::invalid(
            "shares",
            "each share must be in [0, 1] and they must sum to at most 1",
        ));
    }
    let [n, ..] = pool.dims();
    let outs = model.net.forward_all(pool);
    let mut alive: Vec<usize> = (0..n).collect();
    let mut thresholds = Vec::with_capacity(n_exits);
    for (k, share) in shares.iter().enumerate() {
        let scores = ExitLogits::from_output(&outs[k]).max_prob();
        let mut alive_scores: Vec<f32> = alive.iter().map(|&i| scores[i]).collect();
        alive_scores.sort_by(|a, b| b.total_cmp(a));
        let take = ((share * n as f64).round() as usize).min(alive_scores.len());
        // Halfway between the last sample that leaves and the first that stays.
        let t = match (take, alive_scores.len()) {
            (_, 0) | (0, _) => Thresholds::OFF,
            (t, len) if t == len => 0.0,
            (t, _) => (alive_scores[t - 1] + alive_scores[t]) / 2.0,
        };
        thresholds.push(t);
        alive.retain(|&i| scores[i] < t);
    }
    Ok(Policy::MaxProb(Thresholds::PerExit(thresholds)))
}

/// Median seconds per pass over `chunks` of every stage (final stage with its classifier) and
/// of every early-exit head, on full batches, on the code the executor runs.
struct StageTimes<'a> {
    chunks: &'a [Tensor<4>],
    reps: usize,
}

impl OnStages for StageTimes<'_> {
    type Output = Result<(Vec<f64>, Vec<f64>)>;

    fn on<N: StageSlices>(self, net: &N) -> Self::Output {
        let stages = net.num_exits() + 1;
        let mut st = vec![Vec::new(); stages];
        let mut ht = vec![Vec::new(); stages - 1];
        for _ in 0..self.reps {
            let mut acc_s = vec![0.0; stages];
            let mut acc_h = vec![0.0; stages - 1];
            for c in self.chunks {
                let mut state = net.start(c.clone())?;
                for (k, stage_acc) in acc_s.iter_mut().enumerate() {
                    let (s, d) = time(|| {
                        let s = net.run_stage(k, state);
                        net.sync(&s);
                        s
                    });
                    state = s;
                    *stage_acc += d.as_secs_f64();
                    let (out, d) = time(|| net.exit(k, &state));
                    std::hint::black_box(out);
                    // The final classifier counts with its stage; early heads apart.
                    match acc_h.get_mut(k) {
                        Some(h) => *h += d.as_secs_f64(),
                        None => *stage_acc += d.as_secs_f64(),
                    }
                }
            }
            for (v, a) in st.iter_mut().zip(acc_s) {
                v.push(a);
            }
            for (v, a) in ht.iter_mut().zip(acc_h) {
                v.push(a);
            }
        }
        Ok((
            st.into_iter().map(median).collect(),
            ht.into_iter().map(median).collect(),
        ))
    }
}

/// The plain backbone with softmax over every chunk, probabilities brought to the host (the work
/// a network without exits does per batch).
pub(super) fn plain_pass(exec: &Executor, chunks: &[Tensor<4>]) -> Result<()> {
    for c in chunks {
        std::hint::black_box(exec.forward_plain(c.clone())?);
    }
    Ok(())
}

/// The early-exit engine over every chunk, each batch shrinking as samples leave.
pub(super) fn engine_pass(exec: &Executor, chunks: &[Tensor<4>], policy: &Policy) -> Result<()> {
    for c in chunks {
        std::hint::black_box(exec.infer(c.clone(), policy)?);
    }
    Ok(())
}

/// Runs the benchmark on `exec`'s model (whatever its weights: only the exit shares matter), on
/// the implementation it runs.
pub fn run_engine_bench(exec: &Executor, cfg: &EngineBench) -> Result<Vec<EngineBenchRow>> {
    let (model, device) = (exec.model(), exec.device());
    let shape = model.arch.description.input;
    device.seed(cfg.seed);
    let pool = Tensor::<4>::random(
        [cfg.pool, shape.c, shape.h, shape.w],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let policy = forced_thresholds(model, pool.clone(), &cfg.shares)?;
    let backbone_macs = model.arch.cost.backbone.macs(MacConvention::All) as f64;
    let mut rows = Vec::new();
    for &batch in &cfg.batches {
        if batch == 0 || batch > cfg.pool {
            return Err(Error::invalid(
                "batch",
                format!("batch {batch} must be in 1..={}", cfg.pool),
            ));
        }
        let chunks: Vec<Tensor<4>> = (0..cfg.pool / batch)
            .map(|i| pool.clone().narrow(0, i * batch, batch))
            .collect();
        let samples = (chunks.len() * batch) as f64;
        // Warm up every path once, and record where samples leave.
        let mut exits = vec![0usize; model.net.num_exits() + 1];
        let mut macs = 0u64;
        for c in &chunks {
            let a = exec.infer(c.clone(), &policy)?;
            for (&e, &m) in a.exit.iter().zip(&a.macs) {
                exits[e] += 1;
                macs += m;
            }
        }
        let plain_pass = || plain_pass(exec, &chunks);
        plain_pass()?;
        let (mut plain, mut engine, mut never) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.reps.max(1) {
            let (r, t) = time(plain_pass);
            plain.push(r.map(|()| t.as_secs_f64())?);
            let (r, t) = time(|| engine_pass(exec, &chunks, &policy));
            engine.push(r.map(|()| t.as_secs_f64())?);
            let (r, t) = time(|| engine_pass(exec, &chunks, &Policy::Never));
            never.push(r.map(|()| t.as_secs_f64())?);
        }
        let (plain, engine, never) = (median(plain), median(engine), median(never));
        let (stage_t, head_t) = exec.with_stages(StageTimes {
            chunks: &chunks,
            reps: cfg.reps.max(1),
        })?;
        let reach: Vec<f64> = (0..exits.len())
            .map(|k| exits[k..].iter().sum::<usize>() as f64 / samples)
            .collect();
        let time_model: f64 = stage_t.iter().zip(&reach).map(|(t, r)| t * r).sum::<f64>()
            + head_t.iter().zip(&reach).map(|(t, r)| t * r).sum::<f64>();
        let stage_total: f64 = stage_t.iter().sum();
        let conv = MacConvention::All;
        let stage_macs: Vec<f64> = (0..model.net.num_stages())
            .map(|k| {
                let blocks: u64 = model
                    .net
                    .stage_blocks(k)
                    .map(|b| model.arch.backbone.blocks[b].cost.macs(conv))
                    .sum();
                let cls = if k + 1 == model.net.num_stages() {
                    model.arch.backbone.classifier_cost.macs(conv)
                } else {
                    0
                };
                (blocks + cls) as f64 / backbone_macs
            })
            .collect();
        let predicted = backbone_macs / (macs as f64 / samples);
        let measured = plain / engine;
        rows.push(EngineBenchRow {
            batch,
            exit_shares: exits.iter().map(|&e| e as f64 / samples).collect(),
            plain_ms_per_sample: 1e3 * plain / samples,
            engine_ms_per_sample: 1e3 * engine / samples,
            never_ms_per_sample: 1e3 * never / samples,
            predicted_speedup: predicted,
            measured_speedup: measured,
            efficiency: measured / predicted,
            time_model_speedup: stage_total / time_model,
            stage_time_shares: stage_t.iter().map(|t| t / stage_total).collect(),
            stage_mac_shares: stage_macs,
            never_overhead: never / plain,
            implementation: exec.describe(),
        });
    }
    Ok(rows)
}

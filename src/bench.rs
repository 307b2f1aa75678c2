//! Measured against predicted: the engine's wall-clock speed-up next to what the MAC model says.
//!
//! Thresholds are forced so that a known share of samples leaves at each exit (per-exit
//! `maxprob` thresholds fitted on the benchmark inputs themselves), then the engine, the plain
//! backbone and the `never` policy are timed, interleaved, on the same inputs.

use std::time::{Duration, Instant};

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::infer::{MultiExitModel, Policy, Thresholds, max_prob};
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
        let scores: Vec<f32> = max_prob(&outs[k].logits).into_data().try_to_vec::<f32>().expect("f32");
        let mut alive_scores: Vec<f32> = alive.iter().map(|&i| scores[i]).collect();
        alive_scores.sort_by(|a, b| b.partial_cmp(a).expect("finite scores"));
        let take = ((share * n as f64).round() as usize).min(alive_scores.len());
        // Halfway between the last sample that leaves and the first that stays.
        let t = match (take, alive_scores.len()) {
            (_, 0) => f32::INFINITY,
            (0, _) => alive_scores[0] + 1.0,
            (t, len) if t == len => alive_scores[len - 1] - 1.0,
            (t, _) => (alive_scores[t - 1] + alive_scores[t]) / 2.0,
        };
        thresholds.push(t);
        alive.retain(|&i| scores[i] < t);
    }
    Ok(Policy::MaxProb(Thresholds::PerExit(thresholds)))
}

/// Median seconds per pass over `chunks` of every stage (final stage with its classifier) and
/// of every early-exit head, on full batches.
fn stage_times(model: &MultiExitModel, chunks: &[Tensor<4>], reps: usize) -> (Vec<f64>, Vec<f64>) {
    use crate::model::StageState;
    let stages = model.net.num_stages();
    let mut st = vec![Vec::new(); stages];
    let mut ht = vec![Vec::new(); stages - 1];
    for _ in 0..reps {
        let mut acc_s = vec![0.0; stages];
        let mut acc_h = vec![0.0; stages - 1];
        for c in chunks {
            let mut state = StageState::new(c.clone());
            for k in 0..stages {
                let (s, d) = time(|| {
                    let s = model.net.run_stage(k, state.clone());
                    let _ = s.x.clone().sum().into_scalar::<f32>();
                    s
                });
                state = s;
                acc_s[k] += d.as_secs_f64();
                let (out, d) = time(|| {
                    let out = model.net.exit(k, &state);
                    let _ = out.logits.clone().sum().into_scalar::<f32>();
                    out
                });
                std::hint::black_box(out);
                if k + 1 < stages {
                    acc_h[k] += d.as_secs_f64();
                } else {
                    acc_s[k] += d.as_secs_f64();
                }
            }
        }
        for k in 0..stages {
            st[k].push(acc_s[k]);
        }
        for k in 0..stages - 1 {
            ht[k].push(acc_h[k]);
        }
    }
    (
        st.into_iter().map(median).collect(),
        ht.into_iter().map(median).collect(),
    )
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

/// The plain backbone with softmax over every chunk, probabilities brought to the host (the work
/// a network without exits does per batch).
fn plain_pass(model: &MultiExitModel, chunks: &[Tensor<4>]) {
    for c in chunks {
        let p: Vec<f32> = softmax(model.net.forward_backbone(c.clone()), 1)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        std::hint::black_box(p);
    }
}

/// The early-exit engine over every chunk, each batch shrinking as samples leave.
fn engine_pass(model: &MultiExitModel, chunks: &[Tensor<4>], policy: &Policy) -> Result<()> {
    for c in chunks {
        std::hint::black_box(model.infer(c.clone(), policy)?);
    }
    Ok(())
}

/// Runs the benchmark on `model` (whatever its weights: only the exit shares matter).
pub fn run_engine_bench(model: &MultiExitModel, cfg: &EngineBench, device: &Device) -> Result<Vec<EngineBenchRow>> {
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
            let a = model.infer(c.clone(), &policy)?;
            for (&e, &m) in a.exit.iter().zip(&a.macs) {
                exits[e] += 1;
                macs += m;
            }
        }
        let plain_pass = || plain_pass(model, &chunks);
        plain_pass();
        let (mut plain, mut engine, mut never) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.reps.max(1) {
            plain.push(time(plain_pass).1.as_secs_f64());
            engine.push(time(|| engine_pass(model, &chunks, &policy)).1.as_secs_f64());
            never.push(
                time(|| -> Result<()> {
                    for c in &chunks {
                        std::hint::black_box(model.infer(c.clone(), &Policy::Never)?);
                    }
                    Ok(())
                })
                .1
                .as_secs_f64(),
            );
        }
        let (plain, engine, never) = (median(plain), median(engine), median(never));
        let (stage_t, head_t) = stage_times(model, &chunks, cfg.reps.max(1));
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
        });
    }
    Ok(rows)
}

/// What [`run_rebatch_bench`] times: the engine on a stream of batches, each batch shrinking as
/// its samples leave, against the same stream with the survivors re-batched per stage
/// ([`crate::infer::Rebatcher`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RebatchBench {
    /// Share of all samples that should leave at each early exit (the rest reach the end).
    pub shares: Vec<f64>,
    /// Batch sizes (and re-batching sizes) to time.
    pub batches: Vec<usize>,
    /// Batches in the stream, per batch size.
    pub stream: usize,
    /// Samples the thresholds are fitted on (the first of the stream).
    pub fit: usize,
    /// Timed repetitions per measurement (the median is reported).
    pub reps: usize,
    /// Seed for the inputs.
    pub seed: u64,
}

/// One batch size's figures of [`run_rebatch_bench`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RebatchRow {
    /// Batch size.
    pub batch: usize,
    /// Samples in the stream.
    pub samples: usize,
    /// Share of samples that left at each exit (final last), measured.
    pub exit_shares: Vec<f64>,
    /// Plain backbone, milliseconds per sample.
    pub plain_ms_per_sample: f64,
    /// Engine, each batch shrinking, milliseconds per sample.
    pub shrink_ms_per_sample: f64,
    /// Engine with per-stage re-batching, milliseconds per sample.
    pub rebatch_ms_per_sample: f64,
    /// Backbone MACs / mean MACs spent.
    pub predicted_speedup: f64,
    /// Plain time / shrinking-engine time.
    pub shrink_speedup: f64,
    /// Plain time / re-batching-engine time.
    pub rebatch_speedup: f64,
    /// Mean batch each stage ran on, shrinking batches (final stage last).
    pub shrink_stage_batch: Vec<f64>,
    /// Mean batch each stage ran on, re-batched.
    pub rebatch_stage_batch: Vec<f64>,
    /// Whether both engines gave every sample the same exit and class.
    pub same_answers: bool,
}

/// Times the plain backbone, the shrinking-batch engine and the re-batching engine on the same
/// stream of `cfg.stream` random batches per batch size, interleaved.
pub fn run_rebatch_bench(model: &MultiExitModel, cfg: &RebatchBench, device: &Device) -> Result<Vec<RebatchRow>> {
    use crate::infer::{Rebatcher, StageRuns};

    let shape = model.arch.description.input;
    if cfg.stream == 0 || cfg.fit == 0 {
        return Err(Error::invalid(
            "stream",
            "the stream and the fitting pool need at least one batch / sample",
        ));
    }
    device.seed(cfg.seed);
    let fit = Tensor::<4>::random(
        [cfg.fit, shape.c, shape.h, shape.w],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let policy = forced_thresholds(model, fit, &cfg.shares)?;
    let backbone_macs = model.arch.cost.backbone.macs(MacConvention::All) as f64;
    let stages = model.net.num_stages();
    let mut rows = Vec::new();
    for &batch in &cfg.batches {
        if batch == 0 {
            return Err(Error::invalid("batch", "batch sizes must be at least 1"));
        }
        device.seed(cfg.seed.wrapping_add(batch as u64));
        let chunks: Vec<Tensor<4>> = (0..cfg.stream)
            .map(|_| {
                Tensor::<4>::random(
                    [batch, shape.c, shape.h, shape.w],
                    Distribution::Normal(0.0, 1.0),
                    device,
                )
            })
            .collect();
        let samples = batch * cfg.stream;
        // Warm-up, answers of both engines, and the stage batch sizes of the shrinking one.
        let mut shrink_runs = vec![0usize; stages];
        let mut shrink_samples = vec![0usize; stages];
        let mut shrink = Vec::with_capacity(cfg.stream);
        for c in &chunks {
            let a = model.infer(c.clone(), &policy)?;
            for k in 0..stages {
                let reach = a.exit.iter().filter(|&&e| e >= k).count();
                if reach > 0 {
                    shrink_runs[k] += 1;
                    shrink_samples[k] += reach;
                }
            }
            shrink.push(a);
        }
        let mut r = Rebatcher::new(model, &policy, batch)?;
        for c in &chunks {
            r.push(c.clone())?;
        }
        let (re, runs) = r.finish_with_runs();
        let mut same = true;
        let mut exits = vec![0usize; stages];
        let mut macs = 0u64;
        for (i, a) in shrink.iter().enumerate() {
            for j in 0..a.len() {
                let g = i * batch + j;
                same &= a.exit[j] == re.exit[g] && a.class[j] == re.class[g];
                exits[a.exit[j]] += 1;
                macs += a.macs[j];
            }
        }
        let plain_pass = || plain_pass(model, &chunks);
        plain_pass();
        let (mut plain, mut shr, mut reb) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.reps.max(1) {
            plain.push(time(plain_pass).1.as_secs_f64());
            shr.push(time(|| engine_pass(model, &chunks, &policy)).1.as_secs_f64());
            reb.push(
                time(|| -> Result<()> {
                    std::hint::black_box(model.infer_stream(chunks.iter().cloned(), &policy, batch)?);
                    Ok(())
                })
                .1
                .as_secs_f64(),
            );
        }
        let (plain, shr, reb) = (median(plain), median(shr), median(reb));
        let n = samples as f64;
        let shrink_runs = StageRuns {
            runs: shrink_runs,
            samples: shrink_samples,
        };
        rows.push(RebatchRow {
            batch,
            samples,
            exit_shares: exits.iter().map(|&e| e as f64 / n).collect(),
            plain_ms_per_sample: 1e3 * plain / n,
            shrink_ms_per_sample: 1e3 * shr / n,
            rebatch_ms_per_sample: 1e3 * reb / n,
            predicted_speedup: backbone_macs / (macs as f64 / n),
            shrink_speedup: plain / shr,
            rebatch_speedup: plain / reb,
            shrink_stage_batch: shrink_runs.mean_batch(),
            rebatch_stage_batch: runs.mean_batch(),
            same_answers: same,
        });
    }
    Ok(rows)
}

/// One batch size of [`time_forward`]: the plain backbone's forward pass.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardRow {
    /// Batch size.
    pub batch: usize,
    /// Median milliseconds per batch (probabilities brought back to the host).
    pub ms_per_batch: f64,
    /// Images per second.
    pub images_per_second: f64,
}

/// Median time of the plain backbone's forward pass (softmax, read back) at each batch size,
/// after `warmup` untimed passes: what a PyTorch `model(x); torch.cuda.synchronize()` measures.
pub fn time_forward(
    model: &MultiExitModel,
    batches: &[usize],
    warmup: usize,
    reps: usize,
    device: &Device,
) -> Result<Vec<ForwardRow>> {
    let shape = model.arch.description.input;
    let mut rows = Vec::new();
    for &batch in batches {
        if batch == 0 {
            return Err(Error::invalid("batch", "batch sizes must be at least 1"));
        }
        let x = Tensor::<4>::random(
            [batch, shape.c, shape.h, shape.w],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let pass = || {
            let p: Vec<f32> = softmax(model.net.forward_backbone(x.clone()), 1)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
            std::hint::black_box(p);
        };
        for _ in 0..warmup {
            pass();
        }
        let t = median((0..reps.max(1)).map(|_| time(pass).1.as_secs_f64()).collect());
        rows.push(ForwardRow {
            batch,
            ms_per_batch: 1e3 * t,
            images_per_second: batch as f64 / t,
        });
    }
    Ok(rows)
}

/// Training-step timing of [`time_train_step`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainStepRow {
    /// Batch size.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Mean seconds per step (forward through every exit, summed cross-entropy, backward, SGD
    /// with momentum 0.9).
    pub seconds_per_step: f64,
    /// Images per second.
    pub images_per_second: f64,
}

/// Mean seconds of a training step on random data at `batch` (after `warmup` untimed steps),
/// the loss read back after the last one: forward through the backbone and every exit, the sum
/// of the exits' cross-entropies, backward, and an SGD (momentum 0.9) update.
pub fn time_train_step(
    arch: &crate::model::Architecture,
    batch: usize,
    warmup: usize,
    steps: usize,
    device: &Device,
) -> Result<TrainStepRow> {
    use burn::optim::GradientsParams;
    use burn::tensor::Int;

    use crate::train::objectives::cross_entropy;
    use crate::train::optim::{Optimizer, OptimizerConfig};

    if batch == 0 || steps == 0 {
        return Err(Error::invalid("batch", "batch and steps must be at least 1"));
    }
    let shape = arch.description.input;
    let classes = arch.description.classes;
    let ad = device.clone().autodiff();
    let mut net = arch.init(&ad);
    let mut optimizer = Optimizer::new(OptimizerConfig {
        momentum: 0.9,
        ..OptimizerConfig::sgd(0.01)
    })?;
    let x = Tensor::<4>::random([batch, shape.c, shape.h, shape.w], Distribution::Normal(0.0, 1.0), &ad);
    let labels: Vec<i64> = (0..batch).map(|i| (i % classes) as i64).collect();
    let y = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(labels, [batch]), &ad);
    let mut step = |net: crate::model::EarlyExitNet| {
        let outs = net.forward_all(x.clone());
        let loss = outs
            .into_iter()
            .map(|o| cross_entropy(o.logits, y.clone()))
            .reduce(|a, b| a + b)
            .expect("a final exit");
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        (optimizer.step(net, grads, |_| 0.01), loss)
    };
    for _ in 0..warmup {
        let (n, loss) = step(net);
        net = n;
        let _ = loss.inner().into_scalar::<f32>();
    }
    let start = Instant::now();
    let mut last = None;
    for _ in 0..steps {
        let (n, loss) = step(net);
        net = n;
        last = Some(loss);
    }
    let value = last.expect("steps ≥ 1").inner().into_scalar::<f32>();
    let _ = device.sync();
    let secs = start.elapsed().as_secs_f64() / steps as f64;
    if !value.is_finite() {
        return Err(Error::invalid("train step", format!("non-finite loss {value}")));
    }
    Ok(TrainStepRow {
        batch,
        steps,
        seconds_per_step: secs,
        images_per_second: batch as f64 / secs,
    })
}

//! Shrinking batches against re-batched stages ([`crate::infer::Rebatcher`]) on one stream.

use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use super::engine::{engine_pass, forced_thresholds, plain_pass};
use super::timing::{median, time};
use crate::error::{Error, Result};
use crate::infer::Executor;
use crate::model::MacConvention;

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
    /// The code timed ([`Executor::describe`]).
    #[serde(default)]
    pub implementation: String,
}

/// Times the plain backbone, the shrinking-batch engine and the re-batching engine on the same
/// stream of `cfg.stream` random batches per batch size, interleaved, all on the code `exec`
/// runs.
pub fn run_rebatch_bench(exec: &Executor, cfg: &RebatchBench) -> Result<Vec<RebatchRow>> {
    use crate::infer::StageRuns;
    let (model, device) = (exec.model(), exec.device());

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
            let a = exec.infer(c.clone(), &policy)?;
            for k in 0..stages {
                let reach = a.exit.iter().filter(|&&e| e >= k).count();
                if reach > 0 {
                    shrink_runs[k] += 1;
                    shrink_samples[k] += reach;
                }
            }
            shrink.push(a);
        }
        let mut r = exec.rebatcher(&policy, batch)?;
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
        let plain_pass = || plain_pass(exec, &chunks);
        plain_pass()?;
        let (mut plain, mut shr, mut reb) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.reps.max(1) {
            let (r, t) = time(plain_pass);
            plain.push(r.map(|()| t.as_secs_f64())?);
            let (r, t) = time(|| engine_pass(exec, &chunks, &policy));
            shr.push(r.map(|()| t.as_secs_f64())?);
            reb.push(
                time(|| -> Result<()> {
                    std::hint::black_box(exec.infer_stream(chunks.iter().cloned(), &policy, batch)?);
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
            implementation: exec.describe(),
        });
    }
    Ok(rows)
}

//! Standard performance figures, each matched one-to-one by `scripts/torch_perf.py`, so that
//! `scripts/bench-vs-torch` can time the same work in earlyexit and in PyTorch side by side,
//! and the user-sized timings of `earlyexit bench --forward` / `--train-step`.
//!
//! A figure is a fixed piece of work on random data (weights and inputs do not change the cost of
//! dense convolutions): a plain ResNet forward pass, the early-exit engine with forced exit
//! shares, or one SGD training step. [`measure`] warms it up, then times it and reports the
//! median seconds per iteration. Inference figures run on the [`Executor`] the [`ExecChoice`]
//! selects (`auto`: the compiled CPU path); the training step on the native backbone pass that
//! `earlyexit train` runs on the CPU ([`crate::train::native`]) for `auto` and `compiled`, or on
//! Burn's autodiff otherwise.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::engine::forced_thresholds;
use super::timing::{median, timed};
use crate::choice::ExecChoice;
use crate::error::{Error, Result};
use crate::infer::{Executor, MultiExitModel};
use crate::model::{ModelDescription, Placement, Shape};
use crate::train::objectives::cross_entropy;
use crate::train::optim::{Optimizer, OptimizerConfig};
use crate::train::trainer::native_pass;

/// The early-exit figure's network: ResNet-56 with four `pool` exits placed by the Pareto rule
/// (cuts 6, 10, 14, 16), as `earlyexit bench`.
pub const ENGINE_MODEL: &str = "resnet56";
/// Exit shares forced at the four early exits (the rest reaches the final classifier).
pub const ENGINE_SHARES: [f64; 4] = [0.3, 0.2, 0.15, 0.1];
/// Random inputs the engine figure cycles through (and fits its thresholds on).
pub const ENGINE_POOL: usize = 256;

/// One standard piece of work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Figure {
    /// A plain forward pass (no exits) of `model` on a `[batch, 3, 32, 32]` input.
    Forward {
        /// A ResNet 6n+2 name (`resnet20` … `resnet110`).
        model: String,
        /// Batch size.
        batch: usize,
    },
    /// The early-exit engine on ResNet-56 with forced shares, over [`ENGINE_POOL`] inputs in
    /// batches of `batch`; the time is per batch.
    Engine {
        /// Batch size.
        batch: usize,
    },
    /// One training step of a plain ResNet-20 (forward, cross-entropy, backward, SGD with momentum
    /// 0.9, lr 0.1) on a `[batch, 3, 32, 32]` input.
    TrainStep {
        /// Batch size.
        batch: usize,
    },
}

/// The figures of the side-by-side table, in the order `scripts/bench-vs-torch` prints them.
pub const STANDARD_FIGURES: [&str; 7] = [
    "resnet20-forward-b1",
    "resnet20-forward-b128",
    "resnet56-forward-b1",
    "resnet56-forward-b128",
    "engine-b1",
    "engine-b256",
    "train-step-b128",
];

impl FromStr for Figure {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "figure",
                format!(
                    "`{s}` is not a figure; expected <resnet20|resnet32|resnet44|resnet56|resnet110>-forward-b<N>, \
                     engine-b<N> (N ≤ {ENGINE_POOL}) or train-step-b<N>, e.g. one of {}",
                    STANDARD_FIGURES.join(", ")
                ),
            )
        };
        let (head, batch) = s.rsplit_once("-b").ok_or_else(bad)?;
        let batch: usize = batch.parse().map_err(|_| bad())?;
        if batch == 0 {
            return Err(bad());
        }
        match head {
            "engine" if batch <= ENGINE_POOL => Ok(Self::Engine { batch }),
            "train-step" => Ok(Self::TrainStep { batch }),
            _ => match head.strip_suffix("-forward") {
                Some(m @ ("resnet20" | "resnet32" | "resnet44" | "resnet56" | "resnet110")) => Ok(Self::Forward {
                    model: m.to_string(),
                    batch,
                }),
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forward { model, batch } => write!(f, "{model}-forward-b{batch}"),
            Self::Engine { batch } => write!(f, "engine-b{batch}"),
            Self::TrainStep { batch } => write!(f, "train-step-b{batch}"),
        }
    }
}

/// What [`measure`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The figure's name.
    pub figure: String,
    /// The code measured: an [`Executor::describe`] for inference figures; `native` (the native
    /// backbone pass) or `burn (DEVICE)` (Burn's autodiff) for the training step.
    pub path: String,
    /// Median wall-clock seconds per iteration (one batch).
    pub seconds: f64,
    /// Every timed iteration, in seconds.
    pub samples: Vec<f64>,
}

fn input_shape() -> Shape {
    Shape::new(3, 32, 32)
}

/// Measures `figure` on the CPU with `reps` timed iterations after warm-up. Threads: as many as
/// Rayon is given (`RAYON_NUM_THREADS`, default one per core; LibTorch: `OMP_NUM_THREADS`).
pub fn measure(figure: &Figure, reps: usize, path: ExecChoice) -> Result<Measurement> {
    let device = path.device(&Device::flex());
    device.seed(0);
    let ran: String;
    let s = input_shape();
    let samples = match figure {
        Figure::Forward { model, batch } => {
            let arch = ModelDescription::new(model, s, 10, Placement::Cuts(vec![])).resolve()?;
            let exec = Executor::new(MultiExitModel::new(arch, &device), &device, path)?;
            ran = exec.describe();
            let x = Tensor::<4>::random([*batch, s.c, s.h, s.w], Distribution::Normal(0.0, 1.0), &device);
            timed(2, reps, || {
                std::hint::black_box(exec.forward_plain(x.clone())?);
                Ok(())
            })?
        }
        Figure::Engine { batch } => {
            let arch = ModelDescription::new(ENGINE_MODEL, s, 10, "pareto:4".parse()?).resolve()?;
            let exec = Executor::new(MultiExitModel::new(arch, &device), &device, path)?;
            ran = exec.describe();
            let pool = Tensor::<4>::random([ENGINE_POOL, s.c, s.h, s.w], Distribution::Normal(0.0, 1.0), &device);
            let policy = forced_thresholds(exec.model(), pool.clone(), &ENGINE_SHARES)?;
            let chunks: Vec<Tensor<4>> = (0..ENGINE_POOL / batch)
                .map(|i| pool.clone().narrow(0, i * batch, *batch))
                .collect();
            let mut i = 0;
            timed(chunks.len().min(8), reps, || {
                let x = chunks[i % chunks.len()].clone();
                i += 1;
                std::hint::black_box(exec.infer(x, &policy)?);
                Ok(())
            })?
        }
        Figure::TrainStep { batch } => {
            let arch = ModelDescription::new("resnet20", s, 10, Placement::Cuts(vec![])).resolve()?;
            let ad = device.clone().autodiff();
            let mut net = Some(arch.init(&ad));
            let x = Tensor::<4>::random([*batch, s.c, s.h, s.w], Distribution::Normal(0.0, 1.0), &ad);
            let labels: Vec<i64> = (0..*batch as i64).map(|i| i % 10).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [*batch]), &ad);
            let mut opt = Optimizer::new(OptimizerConfig {
                momentum: 0.9,
                ..OptimizerConfig::sgd(0.1)
            })?;
            // The step trains as `train` does, through the trainer's one decision; the GEMM-only
            // variant is an inference path, so its training step is Burn's.
            let train_path = match path {
                ExecChoice::CompiledGemm => ExecChoice::Burn,
                p => p,
            };
            let native = native_pass(train_path, &device, net.as_ref().expect("built above"))?;
            ran = match native {
                Some(_) => "native".to_string(),
                None => format!("burn ({device:?})"),
            };
            timed(2, reps, || {
                let n = net.take().expect("the network is put back after every step");
                let grads = match &native {
                    Some(native) => {
                        let (outs, pending) = native.forward(&n, x.clone())?;
                        let logits = outs.into_iter().last().expect("the final classifier").logits;
                        let loss = cross_entropy(logits, y.clone()).mean();
                        std::hint::black_box(loss.clone().inner().into_scalar::<f32>());
                        pending.backward(loss.backward())?
                    }
                    None => {
                        let loss = cross_entropy(n.forward_backbone(x.clone()), y.clone()).mean();
                        // As a training loop does (and PyTorch's `loss.item()`): read the loss.
                        std::hint::black_box(loss.clone().inner().into_scalar::<f32>());
                        GradientsParams::from_grads(loss.backward(), &n)
                    }
                };
                // flex and LibTorch's CPU backend are eager: the update is done when `step` returns.
                net = Some(opt.step(n, grads, |_| 0.1));
                Ok(())
            })?
        }
    };
    Ok(Measurement {
        figure: figure.to_string(),
        path: ran,
        seconds: median(samples.clone()),
        samples,
    })
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

/// Median time of the plain network's forward pass (class probabilities on the host) at each
/// batch size on `exec`, after `warmup` untimed passes: what a PyTorch
/// `model(x).softmax(1).cpu()` measures.
pub fn time_forward(exec: &Executor, batches: &[usize], warmup: usize, reps: usize) -> Result<Vec<ForwardRow>> {
    let shape = exec.model().arch.description.input;
    let mut rows = Vec::new();
    for &batch in batches {
        if batch == 0 {
            return Err(Error::invalid("batch", "batch sizes must be at least 1"));
        }
        let x = Tensor::<4>::random(
            [batch, shape.c, shape.h, shape.w],
            Distribution::Normal(0.0, 1.0),
            exec.device(),
        );
        let t = median(timed(warmup, reps, || {
            std::hint::black_box(exec.forward_plain(x.clone())?);
            Ok(())
        })?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_names_round_trip() {
        for name in STANDARD_FIGURES {
            let f: Figure = name.parse().unwrap();
            assert_eq!(f.to_string(), name);
        }
    }

    #[test]
    fn bad_figure_names_say_what_is_expected() {
        for bad in [
            "resnet21-forward-b1",
            "engine-b0",
            "engine-b257",
            "train-step",
            "forward-b1x",
        ] {
            let e = bad.parse::<Figure>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("expected"), "{e}");
        }
    }
}

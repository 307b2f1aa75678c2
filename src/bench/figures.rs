//! Standard performance figures, each matched one-to-one by `scripts/torch_perf.py`, so that
//! `scripts/bench-vs-torch` can time the same work in earlyexit and in PyTorch side by side,
//! and the user-sized timings of `earlyexit bench --forward` / `--train-step`.
//!
//! A figure is a fixed piece of work on random data (weights and inputs do not change the cost of
//! dense convolutions) on one of [`FIGURE_MODELS`]: a plain forward pass, the early-exit engine
//! with forced exit shares, or one SGD training step. The PyTorch side builds the ResNets itself
//! and loads the others from the export [`export_figure_model`] writes, so that both sides time
//! the same layers and parameters. [`measure`] warms it up, then times it and reports the
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
use crate::model::{MacConvention, ModelDescription, Placement, Shape};
use crate::train::objectives::cross_entropy;
use crate::train::optim::{Optimizer, OptimizerConfig};
use crate::train::trainer::native_pass;

/// The early-exit figure's network: ResNet-56 with four `pool` exits placed by the Pareto rule
/// (cuts 6, 10, 14, 16), as `earlyexit bench`.
pub const ENGINE_MODEL: &str = "resnet56";
/// Exit shares forced at the four early exits (the rest reaches the final classifier).
pub const ENGINE_SHARES: [f64; 4] = [0.3, 0.2, 0.15, 0.1];
/// Exit shares forced at EENet-8's two exits in its engine figure (`eenet8-engine-b…`).
pub const EENET8_ENGINE_SHARES: [f64; 2] = [0.10, 0.23];
/// Random inputs the engine figure cycles through (and fits its thresholds on).
pub const ENGINE_POOL: usize = 256;

/// The networks of the figures: the ResNets 6n+2 on 3×32×32, EENet-8 at width 8 on 1×28×28 with
/// the quickstart's two `pool` exits (cuts 1 and 2), VGG-13, MobileNetV2 and DenseNet-121 on
/// 3×32×32, Inception-v3 on 3×75×75 (the least it takes).
pub const FIGURE_MODELS: [&str; 10] = [
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "eenet8",
    "vgg13",
    "mobilenet_v2",
    "densenet121",
    "inception_v3",
];

/// A figure model's network: plain, except EENet-8 with the quickstart's two `pool` exits
/// (cuts 1 and 2) and, with `engine_exits`, ResNet-56 with four `pool` exits placed by the
/// Pareto rule (cuts 6, 10, 14, 16). A forward figure evaluates no exit, whatever the network has.
///
/// # Errors
/// `model` is not one of [`FIGURE_MODELS`].
pub fn figure_model(model: &str, engine_exits: bool) -> Result<ModelDescription> {
    let cifar = Shape::new(3, 32, 32);
    let d = match model {
        "eenet8" => {
            let mut d = ModelDescription::new(model, Shape::new(1, 28, 28), 10, "cuts:1,2".parse()?);
            d.width = Some(8);
            d
        }
        ENGINE_MODEL if engine_exits => ModelDescription::new(model, cifar, 10, "pareto:4".parse()?),
        // Its stem and reductions need 75×75 pixels.
        "inception_v3" => ModelDescription::new(model, Shape::new(3, 75, 75), 10, Placement::Cuts(vec![])),
        m if FIGURE_MODELS.contains(&m) => ModelDescription::new(model, cifar, 10, Placement::Cuts(vec![])),
        _ => {
            return Err(Error::UnknownName {
                what: "figure model",
                name: model.into(),
                expected: FIGURE_MODELS.join(", "),
            });
        }
    };
    Ok(d)
}

/// One standard piece of work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Figure {
    /// A plain forward pass (no exit evaluated) of `model` ([`figure_model`]) on a batch.
    Forward {
        /// One of [`FIGURE_MODELS`].
        model: String,
        /// Batch size.
        batch: usize,
    },
    /// The early-exit engine with forced shares over [`ENGINE_POOL`] inputs in batches of
    /// `batch`; the time is per batch. `resnet56` (`engine-b…`): four `pool` exits, shares
    /// [`ENGINE_SHARES`]; `eenet8` (`eenet8-engine-b…`): the quickstart's two exits, shares
    /// [`EENET8_ENGINE_SHARES`].
    Engine {
        /// `resnet56` or `eenet8`.
        model: String,
        /// Batch size.
        batch: usize,
    },
    /// One training step (forward, cross-entropy, backward, SGD with momentum 0.9, lr 0.1) on
    /// a batch: of the plain network, or for `eenet8` through both exits and the final
    /// classifier with the three cross-entropies summed (the quickstart's network).
    TrainStep {
        /// One of [`FIGURE_MODELS`] (`train-step-b…`: `resnet20`).
        model: String,
        /// Batch size.
        batch: usize,
    },
}

/// The figures of the side-by-side table, in the order `scripts/bench-vs-torch` prints them.
pub const STANDARD_FIGURES: [&str; 18] = [
    "resnet20-forward-b1",
    "resnet20-forward-b128",
    "resnet56-forward-b1",
    "resnet56-forward-b128",
    "engine-b1",
    "engine-b256",
    "train-step-b128",
    "eenet8-forward-b1",
    "eenet8-forward-b256",
    "eenet8-engine-b1",
    "eenet8-engine-b256",
    "eenet8-train-step-b32",
    "vgg13-forward-b1",
    "vgg13-forward-b128",
    "vgg13-train-step-b128",
    "mobilenet_v2-forward-b1",
    "mobilenet_v2-forward-b128",
    "mobilenet_v2-train-step-b128",
];

impl Figure {
    /// The figure's model name.
    pub fn model(&self) -> &str {
        match self {
            Self::Forward { model, .. } | Self::Engine { model, .. } | Self::TrainStep { model, .. } => model,
        }
    }

    /// The figure's network ([`figure_model`]).
    pub fn description(&self) -> Result<ModelDescription> {
        figure_model(self.model(), matches!(self, Self::Engine { .. }))
    }
}

impl FromStr for Figure {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "figure",
                format!(
                    "`{s}` is not a figure; expected <model>-forward-b<N>, engine-b<N> or eenet8-engine-b<N> \
                     (N ≤ {ENGINE_POOL}), train-step-b<N> or <model>-train-step-b<N>, with <model> one of {}; \
                     e.g. one of {}",
                    FIGURE_MODELS.join(", "),
                    STANDARD_FIGURES.join(", ")
                ),
            )
        };
        let (head, batch) = s.rsplit_once("-b").ok_or_else(bad)?;
        let batch: usize = batch.parse().map_err(|_| bad())?;
        if batch == 0 {
            return Err(bad());
        }
        let model = |m: &str| FIGURE_MODELS.contains(&m).then(|| m.to_string()).ok_or_else(bad);
        match head {
            "engine" if batch <= ENGINE_POOL => Ok(Self::Engine {
                model: ENGINE_MODEL.into(),
                batch,
            }),
            "eenet8-engine" if batch <= ENGINE_POOL => Ok(Self::Engine {
                model: "eenet8".into(),
                batch,
            }),
            "train-step" => Ok(Self::TrainStep {
                model: "resnet20".into(),
                batch,
            }),
            _ => {
                if let Some(m) = head.strip_suffix("-forward") {
                    Ok(Self::Forward {
                        model: model(m)?,
                        batch,
                    })
                } else if let Some(m) = head.strip_suffix("-train-step") {
                    Ok(Self::TrainStep {
                        model: model(m)?,
                        batch,
                    })
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forward { model, batch } => write!(f, "{model}-forward-b{batch}"),
            Self::Engine { model, batch } if model == ENGINE_MODEL => write!(f, "engine-b{batch}"),
            Self::Engine { model, batch } => write!(f, "{model}-engine-b{batch}"),
            Self::TrainStep { model, batch } if model == "resnet20" => write!(f, "train-step-b{batch}"),
            Self::TrainStep { model, batch } => write!(f, "{model}-train-step-b{batch}"),
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
    /// Multiply-adds per iteration (convention `all`): the plain network's per sample × batch
    /// for a forward pass; the MACs the engine spent, exits included, for the engine; three
    /// forward passes' worth (forward, and the input and weight gradients) for a training step.
    pub macs: f64,
    /// Every timed iteration, in seconds.
    pub samples: Vec<f64>,
}

impl Measurement {
    /// Billions of floating-point operations per second (2 per multiply-add).
    pub fn gflops(&self) -> f64 {
        2.0 * self.macs / self.seconds / 1e9
    }
}

/// The figure's model and a random input batch, on `device`.
fn figure_input(desc: &ModelDescription, batch: usize, device: &Device) -> Tensor<4> {
    let s = desc.input;
    Tensor::<4>::random([batch, s.c, s.h, s.w], Distribution::Normal(0.0, 1.0), device)
}

/// The exit shares an engine figure forces on `model`.
fn engine_shares(model: &str) -> &'static [f64] {
    if model == "eenet8" {
        &EENET8_ENGINE_SHARES
    } else {
        &ENGINE_SHARES
    }
}

/// Writes `figure`'s network (fresh weights, seed 0) to `out` as a PyTorch export
/// ([`crate::interop::export_torch`]), with the thresholds of its engine figure as the policy
/// (`never` otherwise), so that `scripts/torch_perf.py` times the same network.
pub fn export_figure_model(figure: &Figure, out: &std::path::Path) -> Result<()> {
    let device = Device::flex();
    device.seed(0);
    let desc = figure.description()?;
    let model = MultiExitModel::new(desc.resolve()?, &device);
    let policy = match figure {
        Figure::Engine { model: m, .. } => {
            let pool = figure_input(&desc, ENGINE_POOL, &device);
            forced_thresholds(&model, pool, engine_shares(m))?
        }
        _ => crate::infer::Policy::Never,
    };
    crate::interop::export_torch(&model, &policy, None, out)
}

/// Measures `figure` on the CPU with `reps` timed iterations after warm-up. Threads: as many as
/// Rayon is given (`RAYON_NUM_THREADS`, default one per core; LibTorch: `OMP_NUM_THREADS`).
pub fn measure(figure: &Figure, reps: usize, path: ExecChoice) -> Result<Measurement> {
    let device = path.device(&Device::flex());
    device.seed(0);
    let ran: String;
    let desc = figure.description()?;
    let macs: f64;
    let samples = match figure {
        Figure::Forward { batch, .. } => {
            let arch = desc.resolve()?;
            macs = (arch.cost.backbone.macs(MacConvention::All) * *batch as u64) as f64;
            let exec = Executor::new(MultiExitModel::new(arch, &device), &device, path)?;
            ran = exec.describe();
            let x = figure_input(&desc, *batch, &device);
            timed(2, reps, || {
                std::hint::black_box(exec.forward_plain(x.clone())?);
                Ok(())
            })?
        }
        Figure::Engine { model, batch } => {
            let exec = Executor::new(MultiExitModel::new(desc.resolve()?, &device), &device, path)?;
            ran = exec.describe();
            let pool = figure_input(&desc, ENGINE_POOL, &device);
            let policy = forced_thresholds(exec.model(), pool.clone(), engine_shares(model))?;
            let chunks: Vec<Tensor<4>> = (0..ENGINE_POOL / batch)
                .map(|i| pool.clone().narrow(0, i * batch, *batch))
                .collect();
            let mut spent = 0u64;
            for c in &chunks {
                spent += exec.infer(c.clone(), &policy)?.macs.iter().sum::<u64>();
            }
            macs = spent as f64 / chunks.len() as f64;
            let mut i = 0;
            timed(chunks.len().min(8), reps, || {
                let x = chunks[i % chunks.len()].clone();
                i += 1;
                std::hint::black_box(exec.infer(x, &policy)?);
                Ok(())
            })?
        }
        Figure::TrainStep { batch, .. } => {
            let arch = desc.resolve()?;
            let classes = arch.description.classes;
            macs = 3.0 * (arch.cost.exit_macs(MacConvention::All).last().copied().unwrap_or(0) * *batch as u64) as f64;
            let ad = device.clone().autodiff();
            let mut net = Some(arch.init(&ad));
            let x = figure_input(&desc, *batch, &ad);
            let labels: Vec<i64> = (0..*batch).map(|i| (i % classes) as i64).collect();
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
            // Every exit's cross-entropy, summed (a plain network has only its classifier).
            let loss_of = |outs: Vec<crate::model::ExitOutput>| {
                outs.into_iter()
                    .map(|o| cross_entropy(o.logits, y.clone()).mean())
                    .reduce(|a, b| a + b)
                    .expect("a final classifier")
            };
            timed(2, reps, || {
                let n = net.take().expect("the network is put back after every step");
                let grads = match &native {
                    Some(native) => {
                        let (outs, pending) = native.forward(&n, x.clone())?;
                        let loss = loss_of(outs);
                        std::hint::black_box(loss.clone().inner().into_scalar::<f32>());
                        pending.backward(loss.backward())?
                    }
                    None => {
                        let loss = loss_of(n.forward_all(x.clone()));
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
        macs,
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

    /// The figures measure the network they name, count its multiply-adds, and export it for
    /// PyTorch as the same architecture with the engine's thresholds as its policy.
    #[test]
    fn figures_measure_and_export_their_networks() {
        let fwd: Figure = "eenet8-forward-b2".parse().unwrap();
        let m = measure(&fwd, 1, ExecChoice::Auto).unwrap();
        let arch = fwd.description().unwrap().resolve().unwrap();
        assert_eq!(m.macs, (2 * arch.cost.backbone.macs(MacConvention::All)) as f64);
        assert!(
            m.seconds > 0.0 && m.gflops() > 0.0 && m.path.starts_with("compiled"),
            "{m:?}"
        );
        // The engine spends fewer MACs than the plain network plus every head on every sample.
        let eng: Figure = "eenet8-engine-b64".parse().unwrap();
        let e = measure(&eng, 1, ExecChoice::Auto).unwrap();
        let full = *arch.cost.exit_macs(MacConvention::All).last().unwrap() as f64 * 64.0;
        assert!(e.macs > 0.0 && e.macs < full, "{} vs {full}", e.macs);
        let step = measure(&"eenet8-train-step-b4".parse().unwrap(), 1, ExecChoice::Auto).unwrap();
        assert!(step.seconds > 0.0);

        let dir = std::env::temp_dir().join(format!("ee-figure-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        export_figure_model(&eng, &dir).unwrap();
        let back = crate::interop::load_torch_export(&dir, &Device::flex()).unwrap();
        assert_eq!(back.arch, arch);
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("architecture.json")).unwrap()).unwrap();
        let policy = spec["policy"].as_str().unwrap();
        assert!(policy.starts_with("maxprob:") && policy.contains(','), "{policy}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(figure_model("resnet21", false).is_err());
    }

    #[test]
    fn bad_figure_names_say_what_is_expected() {
        for bad in [
            "resnet21-forward-b1",
            "engine-b0",
            "engine-b257",
            "vgg13-engine-b1",
            "train-step",
            "forward-b1x",
        ] {
            let e = bad.parse::<Figure>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("expected"), "{e}");
        }
    }
}

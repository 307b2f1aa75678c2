//! Standard performance figures, each matched one-to-one by `scripts/torch_perf.py`, so that
//! `scripts/bench-vs-torch` can time the same work in earlyexit and in PyTorch side by side.
//!
//! A figure is a fixed piece of work on random data (weights and inputs do not change the cost of
//! dense convolutions): a plain ResNet forward pass, the early-exit engine with forced exit
//! shares, or one SGD training step. [`measure`] warms it up, then times it and reports the
//! median seconds per iteration. Inference figures run on the compiled CPU path by default
//! ([`CompiledNet`]), or on the Burn module ([`InferPath::Burn`]); the training step on the native
//! backbone pass that `earlyexit train` runs on the CPU ([`crate::train::native`]), or on Burn's
//! autodiff ([`InferPath::Burn`]).
//!
//! ```
//! use earlyexit::perf::{Figure, InferPath, measure};
//!
//! let fig: Figure = "resnet20-forward-b1".parse()?;
//! let m = measure(&fig, 3, InferPath::Compiled)?;
//! assert!(m.seconds > 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;

use crate::bench::forced_thresholds;
use crate::error::{Error, Result};
use crate::infer::{CompiledNet, ConvKernel, MultiExitModel};
use crate::model::{ModelDescription, Placement, Shape};
use crate::train::native::NativeBackbone;
use crate::train::objectives::cross_entropy;
use crate::train::optim::{Optimizer, OptimizerConfig};

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

/// Which path runs the figures: for the training step, `compiled` is the native backbone pass
/// ([`crate::train::native`]) and `compiled-gemm` falls back to Burn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InferPath {
    /// [`CompiledNet`]: channels-last, BatchNorm folded, fused epilogues, the direct AVX-512
    /// convolution where the CPU has it; for the training step, the native backbone pass.
    #[default]
    Compiled,
    /// [`CompiledNet`] with im2col + GEMM for every convolution ([`ConvKernel::Gemm`]).
    CompiledGemm,
    /// The Burn module on the `flex` backend (training: Burn's autodiff).
    Burn,
    /// The Burn module on Burn's LibTorch backend (CPU), feature `tch`.
    #[cfg(feature = "tch")]
    Libtorch,
}

impl crate::Choice for InferPath {
    const WHAT: &'static str = "path";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("compiled", Self::Compiled),
        ("compiled-gemm", Self::CompiledGemm),
        ("burn", Self::Burn),
        #[cfg(feature = "tch")]
        ("libtorch", Self::Libtorch),
    ];
}

/// What [`measure`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The figure's name.
    pub figure: String,
    /// The inference path measured.
    pub path: InferPath,
    /// Median wall-clock seconds per iteration (one batch).
    pub seconds: f64,
    /// Every timed iteration, in seconds.
    pub samples: Vec<f64>,
}

fn input_shape() -> Shape {
    Shape::new(3, 32, 32)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `step` `warmup` times, then `reps` times timed; each call is one iteration.
fn timed(warmup: usize, reps: usize, mut step: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        step()?;
    }
    (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            step()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

/// Reads a tensor back to the host, so that the timing includes all the work.
fn sync<const D: usize>(t: Tensor<D>) {
    std::hint::black_box(t.into_data());
}

/// The compiled network for `path`, or `None` for the Burn-module paths.
fn compiled(model: &MultiExitModel, path: InferPath) -> Result<Option<CompiledNet>> {
    Ok(match path {
        InferPath::Compiled => Some(CompiledNet::compile_with(model, ConvKernel::Auto)?),
        InferPath::CompiledGemm => Some(CompiledNet::compile_with(model, ConvKernel::Gemm)?),
        _ => None,
    })
}

/// The device the Burn-module figures run on for `path`.
fn device_of(path: InferPath) -> Device {
    match path {
        #[cfg(feature = "tch")]
        InferPath::Libtorch => Device::libtorch(),
        _ => Device::flex(),
    }
}

/// Measures `figure` on the CPU with `reps` timed iterations after warm-up. Threads: as many as
/// Rayon is given (`RAYON_NUM_THREADS`, default one per core; LibTorch: `OMP_NUM_THREADS`).
pub fn measure(figure: &Figure, reps: usize, path: InferPath) -> Result<Measurement> {
    let device = device_of(path);
    device.seed(0);
    let s = input_shape();
    let samples = match figure {
        Figure::Forward { model, batch } => {
            let arch = ModelDescription::new(model, s, 10, Placement::Cuts(vec![])).resolve()?;
            let model = MultiExitModel::new(arch, &device);
            let x = Tensor::<4>::random([*batch, s.c, s.h, s.w], Distribution::Normal(0.0, 1.0), &device);
            match compiled(&model, path)? {
                Some(fast) => timed(2, reps, || {
                    std::hint::black_box(fast.forward_backbone(x.clone())?);
                    Ok(())
                })?,
                None => timed(2, reps, || {
                    sync(model.net.forward_backbone(x.clone()));
                    Ok(())
                })?,
            }
        }
        Figure::Engine { batch } => {
            let arch = ModelDescription::new(ENGINE_MODEL, s, 10, "pareto:4".parse()?).resolve()?;
            let model = MultiExitModel::new(arch, &device);
            let pool = Tensor::<4>::random([ENGINE_POOL, s.c, s.h, s.w], Distribution::Normal(0.0, 1.0), &device);
            let policy = forced_thresholds(&model, pool.clone(), &ENGINE_SHARES)?;
            let chunks: Vec<Tensor<4>> = (0..ENGINE_POOL / batch)
                .map(|i| pool.clone().narrow(0, i * batch, *batch))
                .collect();
            let fast = compiled(&model, path)?;
            let mut i = 0;
            timed(chunks.len().min(8), reps, || {
                let x = chunks[i % chunks.len()].clone();
                i += 1;
                std::hint::black_box(match &fast {
                    Some(f) => f.infer(x, &policy)?,
                    None => model.infer(x, &policy)?,
                });
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
            // The earlyexit path trains as `train` does on the CPU: the native backbone pass.
            let native = match path {
                InferPath::Compiled => Some(NativeBackbone::check(net.as_ref().expect("built above"))?),
                _ => None,
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
        path: match figure {
            Figure::TrainStep { .. } if path == InferPath::CompiledGemm => InferPath::Burn,
            _ => path,
        },
        seconds: median(samples.clone()),
        samples,
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

//! The training loop: one function, [`train`], from a configuration to a run folder.
//!
//! Per step: reseed the device from `(seed, iteration)`, take batch `b` of epoch `e` (its order
//! and augmentation fixed by `(seed, e, b)`), run the exits the scheme needs, compute the loss,
//! stop with [`Error::NonFiniteLoss`] if it is NaN or infinite, and apply one optimiser step with
//! each parameter's learning rate (schedule × freezeout factor × 0 when frozen).
//! Per epoch: evaluate on the validation split under the eval policy, keep the best model, write
//! the checkpoint, rewrite `metrics.jsonl`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor};
use tracing::{info, info_span};

use super::checkpoint::{Best, TrainState, last_checkpoint_path, load_checkpoint, save_checkpoint};
use super::config::TrainConfig;
use super::data::{DataSplit, RunData, batch_tensors};
use super::metrics::{EpochMetrics, METRICS_FILE, decide, evaluate, exit_cost, write_metrics};
use super::objectives::{LossContext, Objective};
use super::optim::Optimizer;
use super::plan::{Plan, stage_of};
use super::progress::{RunProgress, write_progress};
use super::schedule::Position;
use crate::choice::ExecChoice;
use crate::data::Loader;
use crate::error::{Error, Result};
use crate::model::io::{DESCRIPTION_FILE, WEIGHTS_FILE, load_model, save_model, write_atomic};
use crate::model::{Architecture, EarlyExitNet, ExitOutput, MacConvention};
use crate::policy::Policy;
use crate::train::native::NativeBackbone;

/// File name of the resolved configuration inside a run folder.
pub const CONFIG_FILE: &str = "config.toml";

/// What the trainer reports while it runs, to its [`Observer`].
#[derive(Clone, Debug)]
pub enum TrainEvent<'a> {
    /// An epoch begins at step `first_step` (not 0 when a run resumes mid-epoch).
    EpochStarted {
        /// 0-based epoch.
        epoch: usize,
        /// Epochs in the run.
        epochs: usize,
        /// Steps (batches) per epoch.
        steps: usize,
        /// The first step this call runs.
        first_step: usize,
    },
    /// A step finished; the figures are running means over the epoch so far.
    Step {
        /// Steps of this epoch done.
        done: usize,
        /// Mean training loss.
        loss: f64,
        /// Training accuracy under the eval policy.
        accuracy: f64,
        /// This batch's mean relative cost under the eval policy.
        cost: f64,
    },
    /// An epoch was validated (the metrics are already in `metrics.jsonl`'s order).
    EpochDone {
        /// The epoch's metrics.
        metrics: &'a EpochMetrics,
        /// Epochs in the run.
        epochs: usize,
    },
    /// Training stops inside an epoch: [`TrainOptions::stop_after`] or an error.
    Stopped,
}

/// Receives [`TrainEvent`]s: the CLI draws a progress bar from them, a sweep may log them.
///
/// Why a callback: the library never prints; what a user sees is the caller's business.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use earlyexit::train::{Observer, TrainEvent};
///
/// let epochs = Arc::new(AtomicUsize::new(0));
/// let seen = epochs.clone();
/// let observer = Observer::new(move |e| {
///     if let TrainEvent::EpochDone { .. } = e {
///         seen.fetch_add(1, Ordering::Relaxed);
///     }
/// });
/// # let _ = observer;
/// ```
#[derive(Clone, Default)]
pub struct Observer(Option<Arc<ObserverFn>>);

/// The callback an [`Observer`] holds.
type ObserverFn = dyn Fn(&TrainEvent<'_>) + Send + Sync;

impl Observer {
    /// An observer that calls `f` with every event.
    pub fn new(f: impl Fn(&TrainEvent<'_>) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    fn notify(&self, event: TrainEvent<'_>) {
        if let Some(f) = &self.0 {
            f(&event);
        }
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(..)"
        } else {
            "Observer(none)"
        })
    }
}

/// Options of [`train`] that are not part of the configuration.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Continue the run in the folder from its last checkpoint.
    pub resume: bool,
    /// Start over in a folder that already holds a run (its checkpoint, metrics and model go).
    pub force: bool,
    /// Receives progress events (default: none).
    pub observer: Observer,
    /// Stop (as if killed) after this many iterations in total, right after writing a checkpoint
    /// there: for tests of `--resume`.
    pub stop_after: Option<u64>,
    /// Where to train (without autodiff: [`train`] adds it). Default: the CPU (`flex`).
    pub device: Device,
    /// Which code runs the backbone's forward and backward passes: `auto` the native CPU pass
    /// ([`crate::train::native`]) when training on the CPU (`flex`) a network it supports (Burn
    /// otherwise, the reason logged), `compiled` the native pass or an error, `burn` Burn's
    /// autodiff everywhere (the reference). `compiled-gemm` is an inference path: an error here.
    pub path: ExecChoice,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            resume: false,
            force: false,
            observer: Observer::default(),
            stop_after: None,
            device: Device::flex(),
            path: ExecChoice::Auto,
        }
    }
}

/// What [`train`] returns.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// The run folder.
    pub dir: PathBuf,
    /// Metrics of every finished epoch.
    pub metrics: Vec<EpochMetrics>,
    /// Best validation result.
    pub best: Option<Best>,
    /// Whether training stopped early because of [`TrainOptions::stop_after`].
    pub interrupted: bool,
    /// Wall-clock seconds of this call.
    pub seconds: f64,
}

/// Loads the backbone of a trained model folder or run into `net` (the description's backbone,
/// width, input and classes must match; exits may differ).
fn init_backbone(net: EarlyExitNet, arch: &Architecture, from: &Path, device: &Device) -> Result<EarlyExitNet> {
    let (src_arch, src) = load_model(from, device)?;
    if src_arch.backbone != arch.backbone {
        return Err(Error::invalid(
            "init",
            format!(
                "{} holds a `{}` backbone that differs from this model's `{}` (backbone, width, input and classes must match)",
                from.display(),
                src_arch.backbone.name,
                arch.backbone.name
            ),
        ));
    }
    let mut net = net;
    net.backbone = src.backbone;
    Ok(net)
}

/// Trains the network of `cfg` and writes the run to `dir`:
/// `config.toml` (resolved), `model.json` + `weights.safetensors` (best by validation accuracy
/// under the eval policy), `checkpoints/last.safetensors`, `metrics.jsonl`.
pub fn train(cfg: &TrainConfig, dir: &Path, opts: &TrainOptions) -> Result<TrainOutcome> {
    let started = Instant::now();
    let cfg = cfg.resolved();
    cfg.validate()?;
    let _span = info_span!("train", dir = %dir.display(), objective = %cfg.objective.kind).entered();
    let arch = cfg.architecture()?;
    let objective = cfg.objective(&arch)?;
    let policy = cfg.eval_policy();
    let costs = arch.cost.relative(MacConvention::All);
    let ckpt_path = last_checkpoint_path(dir);

    prepare_run_folder(&cfg, dir, opts)?;

    let data = RunData::load_without_test(&cfg.data)?;
    let loader = data.train_loader(&cfg.data, cfg.seed)?;
    let val = data.eval_loader(DataSplit::Val, cfg.data.eval_batch_size, cfg.data.workers)?;
    let steps_per_epoch = loader.batches_per_epoch();
    if steps_per_epoch == 0 {
        return Err(Error::invalid("data", "the training split is empty"));
    }
    let total_steps = (steps_per_epoch * cfg.epochs) as u64;

    let base = opts.device.clone().without_autodiff();
    let device = base.clone().autodiff();
    // Weights from this run's own generator: a run in another thread cannot perturb them.
    let mut net = arch.init_seeded(&device, cfg.seed);
    if let Some(from) = &cfg.init {
        net = init_backbone(net, &arch, from, &device)?;
    }
    let mut optimizer = Optimizer::new(cfg.optimizer.clone())?;
    let mut state = TrainState {
        seed: cfg.seed,
        ..TrainState::default()
    };
    if opts.resume {
        let ck = load_checkpoint(&ckpt_path)?;
        net = ck.apply_weights(net, &ckpt_path)?;
        optimizer.load_record(&ck.optimizer, &base);
        state = ck.state;
        info!(epoch = state.epoch + 1, batch = state.batch, "resuming");
        write_metrics(&dir.join(METRICS_FILE), &state.metrics)?;
    } else {
        write_progress(
            dir,
            RunProgress {
                trained_epochs: 0,
                epochs: cfg.epochs,
            },
        )?;
        save_model(dir, &cfg.model, &net.valid())?;
    }

    let native = native_pass(opts.path, &base, &net)?;
    let n_exits = arch.num_exits();
    let cuts = arch.cuts.clone();
    let mut last_ckpt = Instant::now();
    let mut interrupted = false;

    'epochs: while state.epoch < cfg.epochs {
        let epoch = state.epoch;
        let epoch_started = Instant::now() - std::time::Duration::from_secs_f64(state.epoch_seconds);
        let plan = Plan::of(&objective, epoch);
        let ctx = LossContext { epoch };
        let lr_epoch = cfg.schedule.lr(
            cfg.optimizer.lr,
            Position {
                epoch,
                epochs: cfg.epochs,
                iteration: state.iteration,
                iterations: total_steps,
            },
        );
        opts.observer.notify(TrainEvent::EpochStarted {
            epoch,
            epochs: cfg.epochs,
            steps: steps_per_epoch,
            first_step: state.batch,
        });

        for batch in loader.epoch_from(epoch, state.batch) {
            let step = batch.index;
            let (x, y) = batch_tensors(&batch, &device);
            let (value, outs, grads) = loss_and_grads(native.as_ref(), &net, &objective, plan, ctx, x, y)?;
            if !value.is_finite() {
                opts.observer.notify(TrainEvent::Stopped);
                return Err(Error::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: step + 1,
                    value,
                });
            }
            // Batch accuracy and cost under the eval policy, as trained.
            let (correct, cost) = batch_stats(&outs, &batch.labels, &policy, &costs, n_exits);
            let pos = Position {
                epoch,
                epochs: cfg.epochs,
                iteration: state.iteration,
                iterations: total_steps,
            };
            let schedule = &cfg.schedule;
            let lr = if schedule.per_iteration() {
                schedule.lr(cfg.optimizer.lr, pos)
            } else {
                lr_epoch
            };
            net = optimizer.step(net, grads, |path| {
                if !plan.trains(path, &cuts) {
                    return 0.0;
                }
                lr * schedule.stage_factor(stage_of(path, &cuts), n_exits + 1, pos)
            });
            state.iteration += 1;
            state.batch = step + 1;
            state.loss_sum += value;
            state.loss_batches += 1;
            state.correct += correct as u64;
            state.seen += batch.n as u64;
            let (loss, accuracy) = state.running();
            opts.observer.notify(TrainEvent::Step {
                done: state.batch,
                loss,
                accuracy,
                cost,
            });
            let (stop, save) = mid_epoch_stop_and_save(&cfg, opts, &state, last_ckpt);
            if (stop || save) && state.batch < steps_per_epoch {
                state.epoch_seconds = epoch_started.elapsed().as_secs_f64();
                // `valid()` also commits the BatchNorm statistics of the last step, which a
                // plain save would read one update late.
                save_checkpoint(&ckpt_path, &state, &net.valid(), &optimizer)?;
                last_ckpt = Instant::now();
            }
            if stop && state.batch < steps_per_epoch {
                interrupted = true;
                opts.observer.notify(TrainEvent::Stopped);
                break 'epochs;
            }
        }

        let epoch_end = EpochEnd {
            cfg: &cfg,
            dir,
            opts,
            objective: &objective,
            policy: &policy,
            costs: &costs,
            ckpt_path: &ckpt_path,
            device: &base,
        };
        epoch_end.run(&net, &val, &mut state, &optimizer, lr_epoch, epoch_started)?;
        last_ckpt = Instant::now();
        if opts.stop_after.is_some_and(|s| state.iteration >= s) && state.epoch < cfg.epochs {
            interrupted = true;
            break;
        }
    }
    Ok(TrainOutcome {
        dir: dir.to_path_buf(),
        metrics: state.metrics,
        best: state.best,
        interrupted,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A batch's loss value, its exits' outputs (detached) and the gradients: the native pass where
/// it runs the plan, Burn's autodiff otherwise.
fn loss_and_grads(
    native: Option<&NativeBackbone>,
    net: &EarlyExitNet,
    objective: &Objective,
    plan: Plan,
    ctx: LossContext,
    x: Tensor<4>,
    y: Tensor<1, Int>,
) -> Result<(f64, Vec<ExitOutput>, GradientsParams)> {
    let (outs, pending) = match native {
        Some(native) => {
            let (outs, pending) = native.forward_plan(net, x, plan)?;
            (outs, Some(pending))
        }
        None => (plan.forward(net, x), None),
    };
    let loss = objective.loss(&outs, y, ctx);
    let value = loss.clone().inner().into_scalar::<f32>() as f64;
    let detached = detach(&outs);
    if !value.is_finite() {
        // The caller stops the run; no backward pass through a loss that is not a number.
        return Ok((value, detached, GradientsParams::new()));
    }
    let grads = match pending {
        Some(pending) => pending.backward(loss.backward())?,
        None => GradientsParams::from_grads(loss.backward(), net),
    };
    Ok((value, detached, grads))
}

/// After a step: whether `opts.stop_after` stops the run here, and whether a checkpoint is due
/// (every `checkpoint.every_steps` steps or `checkpoint.every_secs` seconds).
fn mid_epoch_stop_and_save(
    cfg: &TrainConfig,
    opts: &TrainOptions,
    state: &TrainState,
    last_ckpt: Instant,
) -> (bool, bool) {
    let stop = opts.stop_after.is_some_and(|s| state.iteration >= s);
    let by_steps = cfg
        .checkpoint
        .every_steps
        .is_some_and(|s| state.iteration.is_multiple_of(s));
    let by_time = cfg.checkpoint.every_secs > 0.0 && last_ckpt.elapsed().as_secs_f64() >= cfg.checkpoint.every_secs;
    (stop, by_steps || by_time)
}

/// The end of an epoch: validate, keep the best model, checkpoint, write the metrics.
struct EpochEnd<'a> {
    cfg: &'a TrainConfig,
    dir: &'a Path,
    opts: &'a TrainOptions,
    objective: &'a Objective,
    policy: &'a Policy,
    costs: &'a [f64],
    ckpt_path: &'a Path,
    device: &'a Device,
}

impl EpochEnd<'_> {
    fn run(
        &self,
        net: &EarlyExitNet,
        val: &Loader,
        state: &mut TrainState,
        optimizer: &Optimizer,
        lr: f64,
        epoch_started: Instant,
    ) -> Result<()> {
        let (cfg, epoch) = (self.cfg, state.epoch);
        let n_exits = net.num_exits();
        let eval_net = net.valid();
        let ctx = LossContext { epoch };
        let ev = evaluate(
            &eval_net,
            val,
            self.policy,
            self.costs,
            Some((self.objective, ctx)),
            self.device,
        )?;
        let (train_loss, train_accuracy) = state.running();
        let m = EpochMetrics {
            epoch: epoch + 1,
            iteration: state.iteration,
            phase: self.objective.phase(epoch),
            train_loss,
            train_accuracy,
            val_loss: ev.loss,
            val_exit_accuracy: ev.exit_accuracy.clone(),
            val_exit_counts: ev.exit_counts.clone(),
            val_accuracy: ev.accuracy,
            val_expected_cost: ev.expected_cost,
            policy: self.policy.to_string(),
            lr,
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        info!(
            epoch = m.epoch,
            val_accuracy = m.val_accuracy,
            cost = m.val_expected_cost,
            "epoch done"
        );
        self.opts.observer.notify(TrainEvent::EpochDone {
            metrics: &m,
            epochs: cfg.epochs,
        });
        // Layer-wise training is judged on the last phase only: earlier phases leave later
        // exits untrained.
        let eligible = self.objective.phase(epoch).is_none_or(|p| p == n_exits);
        if eligible && state.best.as_ref().is_none_or(|b| m.val_accuracy > b.accuracy) {
            save_model(self.dir, &cfg.model, &eval_net)?;
            state.best = Some(Best {
                epoch: m.epoch,
                accuracy: m.val_accuracy,
            });
        }
        state.metrics.push(m);
        state.start_next_epoch();
        save_checkpoint(self.ckpt_path, state, &eval_net, optimizer)?;
        write_metrics(&self.dir.join(METRICS_FILE), &state.metrics)?;
        write_progress(
            self.dir,
            RunProgress {
                trained_epochs: state.epoch,
                epochs: cfg.epochs,
            },
        )
    }
}

/// Checks that `dir` may receive this run (a resume continues the same configuration; a new run
/// needs an empty folder or `force`, which clears the old run's files) and writes the resolved
/// configuration there.
fn prepare_run_folder(cfg: &TrainConfig, dir: &Path, opts: &TrainOptions) -> Result<()> {
    let ckpt_path = last_checkpoint_path(dir);
    let config_path = dir.join(CONFIG_FILE);
    if opts.resume {
        if !ckpt_path.exists() {
            return Err(Error::invalid(
                "--resume",
                format!("{} has no checkpoint ({})", dir.display(), ckpt_path.display()),
            ));
        }
        let saved = TrainConfig::from_file(&config_path, &[])?;
        if saved != *cfg {
            return Err(Error::invalid(
                "--resume",
                format!(
                    "the configuration differs from the run's {}; resume with that configuration (or start a new run)",
                    config_path.display()
                ),
            ));
        }
    } else if ckpt_path.exists() || dir.join(METRICS_FILE).exists() {
        if !opts.force {
            return Err(Error::invalid(
                "--out",
                format!(
                    "{} already holds a run; pass --resume to continue it, --force to start over, or choose another folder",
                    dir.display()
                ),
            ));
        }
        for f in [
            ckpt_path.clone(),
            dir.join(METRICS_FILE),
            dir.join(WEIGHTS_FILE),
            dir.join(DESCRIPTION_FILE),
        ] {
            if f.exists() {
                std::fs::remove_file(&f).map_err(|e| Error::io(&f, e))?;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&config_path, cfg.to_toml().as_bytes())?;
    Ok(())
}

/// The training path decision, made here only: the native backbone pass where `path` allows it
/// and it runs the network (`auto` logs the reason it cannot), Burn's autodiff otherwise.
pub(crate) fn native_pass(path: ExecChoice, base: &Device, net: &EarlyExitNet) -> Result<Option<NativeBackbone>> {
    Ok(match path {
        ExecChoice::Auto if *base == Device::flex() => match NativeBackbone::check(net) {
            Ok(n) => {
                info!("training the backbone on the native CPU pass");
                Some(n)
            }
            Err(e) => {
                info!(reason = %e, "training the backbone on Burn");
                None
            }
        },
        ExecChoice::Compiled if *base == Device::flex() => Some(NativeBackbone::check(net)?),
        ExecChoice::Compiled => {
            return Err(Error::invalid(
                "path",
                "the native training pass runs on the CPU (`flex`)",
            ));
        }
        ExecChoice::CompiledGemm => {
            return Err(Error::invalid(
                "path",
                "`compiled-gemm` is an inference path; train with `auto`, `compiled` or `burn`",
            ));
        }
        _ => None,
    })
}

/// The exits' outputs without their autodiff graphs.
fn detach(outs: &[ExitOutput]) -> Vec<ExitOutput> {
    outs.iter()
        .map(|o| ExitOutput {
            logits: o.logits.clone().inner(),
            confidence: o.confidence.clone().map(|c| c.inner()),
        })
        .collect()
}

/// Correct answers and mean relative cost of a training batch under `policy`.
fn batch_stats(outs: &[ExitOutput], labels: &[u32], policy: &Policy, costs: &[f64], n_exits: usize) -> (usize, f64) {
    if outs.len() < n_exits + 1 {
        // Layer-wise: only the exits up to the trained one; judge the trained one alone.
        let k = outs.len() - 1;
        let logits = outs[k].logits.clone();
        let [_, c] = logits.dims();
        let v: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
        let correct = v
            .chunks(c)
            .zip(labels)
            .filter(|(row, l)| crate::policy::argmax(row) == **l as usize)
            .count();
        return (correct, costs[k]);
    }
    if outs[..n_exits].iter().any(|o| o.confidence.is_none()) && matches!(policy, Policy::Confidence(_)) {
        return (0, 1.0);
    }
    let (exits, chosen, _) = decide(outs, policy);
    let correct = chosen.iter().zip(labels).filter(|(c, l)| **c == **l as usize).count();
    let cost = exits.iter().map(|&e| exit_cost(policy, costs, e)).sum::<f64>() / exits.len().max(1) as f64;
    (correct, cost)
}

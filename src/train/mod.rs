//! Training early-exit networks with every scheme of the seeds.
//!
//! - [`objectives`]: the losses (joint, EENets `L_v1`/`L_v2` and their `mc`/`cost` ablations,
//!   soft-conditional, layer-wise, heads-only), in log space;
//! - [`optim`]: SGD (PyTorch semantics), Adam, AdamW on per-parameter learning rates;
//! - [`schedule`]: step, multi-step, cosine and freezeout;
//! - [`config`]: the TOML [`TrainConfig`];
//! - [`checkpoint`]: atomic single-file checkpoints for `--resume`;
//! - [`metrics`]: per-epoch metrics and evaluation under an exit policy;
//! - [`plan`]: which exits a step runs and which parameters it trains (joint, layer-wise,
//!   heads-only);
//! - [`native`]: the backbone's forward and backward pass on the CPU without Burn's autodiff
//!   (ResNets, 4–5× faster than `flex`), used by the loop where it can run;
//! - [`trainer`]: the loop, [`train`].
//!
//! A run folder (see [`crate::run::Run`]) is what training leaves behind.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod metrics;
pub mod native;
pub mod objectives;
pub mod optim;
pub mod plan;
pub mod progress;
pub mod schedule;
pub mod trainer;

pub use config::{DataConfig, TrainConfig};
pub use data::{DataSplit, RunData};
pub use metrics::{EpochMetrics, Evaluation};
pub use objectives::{Objective, ObjectiveConfig, ObjectiveKind};
pub use optim::{Optimizer, OptimizerConfig, OptimizerKind};
pub use plan::Plan;
pub use progress::{RunProgress, STATE_FILE};
pub use schedule::{ScheduleConfig, ScheduleKind};
pub use trainer::{CONFIG_FILE, Observer, TrainEvent, TrainOptions, TrainOutcome, train};

//! Benchmarks: what the engine's exits buy in wall-clock time against what the MAC model
//! predicts ([`run_engine_bench`]), re-batching ([`run_rebatch_bench`]), and the standard figures
//! timed side by side with PyTorch ([`measure`], `scripts/bench-vs-torch`). One clock and one
//! median for all of them ([`timing`]).
//!
//! ```
//! use earlyexit::ExecChoice;
//! use earlyexit::bench::{Figure, measure};
//!
//! let fig: Figure = "resnet20-forward-b1".parse()?;
//! let m = measure(&fig, 3, ExecChoice::Auto)?;
//! assert!(m.seconds > 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod engine;
mod figures;
mod rebatch;
pub mod timing;

pub use engine::{EngineBench, EngineBenchRow, forced_thresholds, run_engine_bench};
pub use figures::{
    EENET8_ENGINE_SHARES, ENGINE_MODEL, ENGINE_POOL, ENGINE_SHARES, FIGURE_MODELS, Figure, ForwardRow, Measurement,
    STANDARD_FIGURES, TrainStepRow, export_figure_model, figure_model, measure, time_forward, time_train_step,
};
pub use rebatch::{RebatchBench, RebatchRow, run_rebatch_bench};
pub use timing::median;

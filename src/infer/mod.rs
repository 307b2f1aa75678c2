//! Inference: the early-exit engine, calibration, evaluation and exit pruning. The exit policies
//! and score tables live in [`crate::policy`] and are re-exported here.

pub mod calibrate;
pub(crate) mod compiled;
pub(crate) mod engine;
pub mod eval;
pub(crate) mod executor;
pub mod prune;
mod table;

pub use crate::policy::*;
pub use calibrate::{
    Calibration, CurvePoint, Goal, budget_curve, calibrate, calibrate_split, fit_shares, msdnet_shares, sweep,
};
pub use compiled::CompiledNet;
pub use earlyexit_kernels::ConvKernel;
pub use engine::*;
pub use eval::{
    ClassSpecificEval, EvalOptions, EvalReport, ExitEval, RestEval, TargetClassEval, Timing, ece, evaluate,
    evaluate_with_table,
};
pub use executor::{Executor, Implementation};
pub use prune::{ExitCheck, PrunePlan, efficiency_condition, greedy_keep_value, prune_plan, restrict_policy};
pub use table::{InMemorySplit, LabelledData, host_samples};

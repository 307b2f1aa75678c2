//! Inference: exit policies, the early-exit engine, calibration, evaluation and exit pruning.

pub mod calibrate;
pub(crate) mod compiled;
pub(crate) mod direct_conv;
mod engine;
pub mod eval;
pub(crate) mod matmul;
mod policy;
pub mod prune;
mod runner;
pub(crate) mod simd;
mod table;

pub use calibrate::{
    Calibration, CurvePoint, Goal, POLICY_FILE, budget_curve, calibrate, calibrate_split, fit_shares, msdnet_shares,
    sweep,
};
pub use compiled::{CompiledNet, ConvKernel};
pub use engine::*;
pub use eval::{EvalOptions, EvalReport, ExitEval, Timing, ece, evaluate};
pub use policy::*;
pub use prune::{ExitCheck, PrunePlan, efficiency_condition, greedy_keep_value, prune_plan, restrict_policy};
pub use runner::{Runner, RunnerChoice};
pub use table::*;

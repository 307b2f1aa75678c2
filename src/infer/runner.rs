//! Which code answers a batch: the Burn module, or its compiled CPU copy ([`CompiledNet`]).
//!
//! Why: the compiled path is several times faster on the CPU (see `earlyexit perf`), so a
//! deployment on the CPU runs it, and measured speed-ups must be measured on it; but it runs only
//! the blocks and heads it knows, and only on the host. [`Runner::new`] picks it where it can run
//! and falls back to the Burn module otherwise, saying which it chose.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use earlyexit::infer::{MultiExitModel, Runner, RunnerChoice};
//! use earlyexit::model::{ModelDescription, Shape};
//!
//! let device = Device::flex();
//! let desc = ModelDescription::new("resnet20", Shape::new(3, 32, 32), 10, "pareto:2".parse()?);
//! let model = MultiExitModel::new(desc.resolve()?, &device);
//! let runner = Runner::new(&model, &device, RunnerChoice::Auto);
//! assert!(runner.describe().starts_with("compiled"));
//! let x = Tensor::<4>::random([3, 3, 32, 32], Distribution::Default, &device);
//! assert_eq!(runner.infer(x, &"maxprob:0.9".parse()?)?.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::compiled::CompiledNet;
use super::engine::{Answers, MultiExitModel};
use crate::error::Result;
use crate::policy::Policy;

/// What [`Runner::new`] may choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerChoice {
    /// The compiled CPU path where the device is the CPU and the model is supported; the Burn
    /// module otherwise.
    #[default]
    Auto,
    /// Always the Burn module (on whatever device it lives).
    Burn,
}

impl crate::Choice for RunnerChoice {
    const WHAT: &'static str = "timing path";
    const NAMES: &'static [(&'static str, Self)] = &[("auto", Self::Auto), ("burn", Self::Burn)];
}

/// The code that answers batches.
#[derive(Debug)]
pub enum Runner<'a> {
    /// The Burn module.
    Burn(&'a MultiExitModel),
    /// The compiled CPU copy of the module, and why the Burn module was not used.
    Compiled(Box<CompiledNet>),
}

impl<'a> Runner<'a> {
    /// The compiled path for `model` when `choice` allows it, `device` is the CPU (`flex`) and
    /// [`CompiledNet::compile`] accepts the model; the Burn module otherwise.
    pub fn new(model: &'a MultiExitModel, device: &Device, choice: RunnerChoice) -> Self {
        if choice == RunnerChoice::Auto
            && *device == Device::flex()
            && let Ok(c) = CompiledNet::compile(model)
        {
            return Runner::Compiled(Box::new(c));
        }
        Runner::Burn(model)
    }

    /// Answers a batch with real per-sample exits (see [`MultiExitModel::infer`]).
    pub fn infer(&self, x: Tensor<4>, policy: &Policy) -> Result<Answers> {
        match self {
            Runner::Burn(m) => m.infer(x, policy),
            Runner::Compiled(c) => c.infer(x, policy),
        }
    }

    /// `compiled (CPU)` or `burn`, for reports.
    pub fn describe(&self) -> &'static str {
        match self {
            Runner::Burn(_) => "burn",
            Runner::Compiled(_) => "compiled (CPU)",
        }
    }
}

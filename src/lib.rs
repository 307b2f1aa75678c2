//! # earlyexit
//!
//! Early-exit (multi-exit) neural networks on [Burn](https://burn.dev): take a CNN, add exits,
//! train them, decide when to exit, and measure the real speed-up.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use earlyexit::infer::{MultiExitModel, Policy};
//! use earlyexit::model::{ModelDescription, Shape};
//!
//! let desc = ModelDescription::new("resnet20", Shape::new(3, 32, 32), 10, "pareto:4".parse()?);
//! let arch = desc.resolve()?;
//! let device = Device::flex();
//! let model = MultiExitModel::new(arch, &device);
//! let x = Tensor::<4>::random([8, 3, 32, 32], Distribution::Default, &device);
//! let answers = model.infer(x, &"maxprob:0.5".parse()?)?;
//! assert_eq!(answers.len(), 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Computation runs on a [`burn::tensor::Device`]: the CPU (`flex`) by default, or a GPU through
//! Burn's Vulkan backend with the `vulkan` feature ([`device::DeviceSpec`]).
//!
//! Layout follows the pipeline: [`data`] → [`model`] → [`infer`] → [`report`], and `serve` (gRPC
//! serving and multi-tier deployment, feature `serve`, on by default).

pub use earlyexit_data as data;

pub mod bench;
pub mod choice;
pub mod classexit;
mod cpu;
pub mod device;
pub mod error;
pub mod infer;
pub mod interop;
pub mod model;
pub mod policy;
pub mod quickstart;
pub mod report;
pub mod run;
#[cfg(feature = "serve")]
pub mod serve;
pub mod train;

pub use choice::{Choice, ExecChoice};
/// The instruction set of the CPU kernels (`EARLYEXIT_CPU` narrows it).
pub use earlyexit_kernels::Isa;
pub use error::{Error, Result};

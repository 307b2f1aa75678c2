//! Enums a user picks by name: on a command line, in a request, in a configuration.
//!
//! Why a trait of our own: the library carries no command-line parser, yet the CLI must list the
//! names in `--help` and reject others by name. Each enum states its names once, here; the CLI
//! builds its parsers from [`Choice::NAMES`].
//!
//! ```
//! use earlyexit::{Choice, ExecChoice};
//!
//! assert_eq!(ExecChoice::parse("burn")?, ExecChoice::Burn);
//! assert_eq!(ExecChoice::CompiledGemm.name(), "compiled-gemm");
//! assert!(ExecChoice::parse("torch").unwrap_err().to_string().contains("auto, compiled"));
//! # Ok::<(), earlyexit::Error>(())
//! ```

use crate::error::{Error, Result};

/// An enum with a fixed set of names.
pub trait Choice: Copy + PartialEq + 'static {
    /// What the value chooses, for error messages (e.g. `training path`).
    const WHAT: &'static str;
    /// Every value with its name, in the order `--help` lists them.
    const NAMES: &'static [(&'static str, Self)];

    /// The value called `name`, or an error that lists the names.
    fn parse(name: &str) -> Result<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                Error::invalid(
                    Self::WHAT,
                    format!("unknown value `{name}`; expected one of {}", names.join(", ")),
                )
            })
    }

    /// This value's name.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .expect("every value is listed in NAMES")
    }
}

/// Which code runs a network: the one option (`--path` on every command) that selects an
/// implementation. [`crate::infer::Executor::new`] decides for inference and the trainer for
/// training; nothing else chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecChoice {
    /// The fastest implementation that runs the model on its device: the compiled CPU path (for
    /// training, the native backbone pass) where the device is the CPU and the model is one it
    /// supports; the Burn module otherwise, with the reason kept.
    #[default]
    Auto,
    /// The compiled CPU path (training: the native backbone pass), or an error naming what it
    /// cannot run.
    Compiled,
    /// The compiled CPU path with im2col + GEMM for every convolution instead of the direct
    /// kernels (inference only).
    CompiledGemm,
    /// The Burn module on whatever device it lives (training: Burn's autodiff).
    Burn,
    /// The Burn module on Burn's LibTorch CPU backend (feature `tch`).
    #[cfg(feature = "tch")]
    Libtorch,
}

impl Choice for ExecChoice {
    const WHAT: &'static str = "path";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", Self::Auto),
        ("compiled", Self::Compiled),
        ("compiled-gemm", Self::CompiledGemm),
        ("burn", Self::Burn),
        #[cfg(feature = "tch")]
        ("libtorch", Self::Libtorch),
    ];
}

impl ExecChoice {
    /// The device a model must live on for this choice: LibTorch's CPU device for
    /// `ExecChoice::Libtorch` (feature `tch`), `requested` otherwise.
    pub fn device(self, requested: &burn::tensor::Device) -> burn::tensor::Device {
        match self {
            #[cfg(feature = "tch")]
            Self::Libtorch => burn::tensor::Device::libtorch(),
            _ => requested.clone(),
        }
    }
}

//! Enums a user picks by name: on a command line, in a request, in a configuration.
//!
//! Why a trait of our own: the library carries no command-line parser, yet the CLI must list the
//! names in `--help` and reject others by name. Each enum states its names once, here; the CLI
//! builds its parsers from [`Choice::NAMES`].
//!
//! ```
//! use earlyexit::Choice;
//! use earlyexit::train::TrainPath;
//!
//! assert_eq!(TrainPath::parse("burn")?, TrainPath::Burn);
//! assert_eq!(TrainPath::Burn.name(), "burn");
//! assert!(TrainPath::parse("torch").unwrap_err().to_string().contains("auto, burn"));
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

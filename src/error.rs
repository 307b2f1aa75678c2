//! The library's error type: structured fields that name the file, field or value at fault.

use std::path::PathBuf;

/// Errors of the `earlyexit` library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name (backbone, head, placement rule, policy) that is not known.
    #[error("unknown {what} `{name}`; expected one of: {expected}")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: String,
    },
    /// A value that is out of range or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or argument.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A network that cannot be built for the given input shape.
    #[error("impossible shape: {reason}")]
    Shape {
        /// What does not fit.
        reason: String,
    },
    /// An exit placement that cannot be realised.
    #[error("impossible placement: {reason}")]
    Placement {
        /// Why.
        reason: String,
    },
    /// A weight tensor whose shape does not fit the model description.
    #[error("weights in {file}: tensor `{tensor}` has shape {found:?}, but the description expects {expected:?}")]
    WeightShape {
        /// The weights file.
        file: PathBuf,
        /// Tensor path.
        tensor: String,
        /// Shape in the description.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A weights file that cannot be applied for another reason (missing tensors, corrupt file).
    #[error("weights in {file}: {reason}")]
    Weights {
        /// The weights file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file that cannot be parsed.
    #[error("{file}: {reason}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// Why, with the field where known.
        reason: String,
    },
    /// A dataset that cannot be read or batched.
    #[error(transparent)]
    Data(#[from] earlyexit_data::Error),
    /// Training produced a NaN or infinite loss.
    #[error(
        "non-finite loss {value} at epoch {epoch}, step {step}: training stopped (lower the learning rate, check the data, or resume from the last checkpoint)"
    )]
    NonFiniteLoss {
        /// Epoch, 1-based.
        epoch: usize,
        /// Step within the epoch, 1-based.
        step: usize,
        /// The loss value.
        value: f64,
    },
    /// An I/O error on a named file.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the file it concerns.
    pub fn io(file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            file: file.into(),
            source,
        }
    }

    /// An invalid-value error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

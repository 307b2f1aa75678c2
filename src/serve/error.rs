//! Serving errors and their gRPC status codes.

use tonic::{Code, Status};

/// What can go wrong while serving; each variant maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A request that can never succeed as sent: malformed, oversized, wrong shape.
    #[error("{0}")]
    InvalidArgument(String),
    /// A request this process cannot take because of what it serves (e.g. `Classify` sent to a
    /// tier that does not start at stage 0, or a `Forward` built for another model).
    #[error("{0}")]
    FailedPrecondition(String),
    /// What the request names does not exist here (a model name this server does not serve).
    #[error("{0}")]
    NotFound(String),
    /// The bounded queue is full: try again later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request's deadline passed before it could be answered.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Missing or wrong shared token.
    #[error("missing or wrong token")]
    Unauthenticated,
    /// The service is shutting down or a peer cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure inside the server.
    #[error("{0}")]
    Internal(String),
    /// A library error (model loading, shapes, policies).
    #[error(transparent)]
    Model(#[from] crate::Error),
    /// Setting up the transport (addresses, TLS files) failed.
    #[error("{0}")]
    Setup(String),
}

impl ServeError {
    /// The gRPC status code of this error.
    pub fn code(&self) -> Code {
        match self {
            ServeError::InvalidArgument(_) => Code::InvalidArgument,
            ServeError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServeError::NotFound(_) => Code::NotFound,
            ServeError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ServeError::Unauthenticated => Code::Unauthenticated,
            ServeError::Unavailable(_) => Code::Unavailable,
            ServeError::Internal(_) | ServeError::Setup(_) => Code::Internal,
            ServeError::Model(crate::Error::Invalid { .. }) => Code::InvalidArgument,
            ServeError::Model(_) => Code::Internal,
        }
    }

    /// Shorthand for [`ServeError::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        ServeError::InvalidArgument(msg.into())
    }
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// `Result` with [`ServeError`].
pub type ServeResult<T> = std::result::Result<T, ServeError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Status::from(ServeError::invalid("x")).code(), Code::InvalidArgument);
        assert_eq!(
            Status::from(ServeError::ResourceExhausted("full".into())).code(),
            Code::ResourceExhausted
        );
        let e: ServeError = crate::Error::invalid("input", "bad").into();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
}

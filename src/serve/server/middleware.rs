//! Tower layers around the service: the shared-token check and the status mapping for
//! oversized messages.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::serve::error::ServeError;
use crate::serve::metrics::Metrics;

/// Whether an `authorization` header value is `Bearer EXPECTED`, compared in constant time (no
/// early exit on the first differing byte, which would leak the token's prefix by timing).
pub(super) fn bearer_matches(expected: &[u8], header: Option<&[u8]>) -> bool {
    let given = header.and_then(|v| v.strip_prefix(b"Bearer ")).unwrap_or(b"");
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Checks the shared token (`authorization: Bearer TOKEN`) in constant time.
#[derive(Clone)]
pub(super) struct TokenCheck {
    pub(super) expected: Option<Arc<[u8]>>,
    pub(super) metrics: Arc<Metrics>,
}

impl Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(req);
        };
        let given = req.metadata().get("authorization").map(|v| v.as_bytes());
        if bearer_matches(expected, given) {
            Ok(req)
        } else {
            self.metrics.request("any", "UNAUTHENTICATED", Duration::ZERO);
            Err(ServeError::Unauthenticated.into())
        }
    }
}

/// Turns the transport's `OUT_OF_RANGE` for messages over the size limit into
/// `INVALID_ARGUMENT`, the status this API documents for oversized requests (this service
/// sends `OUT_OF_RANGE` for nothing else).
#[derive(Clone)]
pub(super) struct OversizedIsInvalid<S>(pub(super) S);

impl<S: NamedService> NamedService for OversizedIsInvalid<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> Service<http::Request<B>> for OversizedIsInvalid<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let h = resp.headers_mut();
            if h.get("grpc-status").is_some_and(|v| v == "11") {
                h.insert("grpc-status", http::HeaderValue::from_static("3"));
            }
            Ok(resp.map(tonic::body::Body::new))
        })
    }
}

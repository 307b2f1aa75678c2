//! The `EarlyExit` service: deadlines, the hand-off of each request (validated by
//! [`RequestRules`]) to the batching queue, and `Info`/`Metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::request::RequestRules;
use crate::serve::batcher::Batcher;
use crate::serve::error::{ServeError, ServeResult};
use crate::serve::metrics::Metrics;
use crate::serve::proto;
use crate::serve::proto::early_exit_server::EarlyExit;
use crate::serve::tier::{Job, JobInput, TierOptions};

/// What every request of one server reads: the tier's slice, the model's shapes, the queue.
pub(super) struct Shared {
    pub(super) num_stages: usize,
    pub(super) model_json: String,
    pub(super) next: String,
    pub(super) batcher: Batcher<Job>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) opts: TierOptions,
    /// What requests must satisfy, checked where they are decoded; also the tier's name, slice,
    /// shapes, model id and policy that `Info` reports.
    pub(super) rules: RequestRules,
    /// What answers ([`crate::infer::Executor::describe`]), for `Info`.
    pub(super) implementation: String,
    /// Whether requests are taken: set once the server listens, cleared when it starts to stop
    /// (the Open Inference Protocol's readiness).
    pub(super) ready: std::sync::atomic::AtomicBool,
}

/// The gRPC service over the shared state.
#[derive(Clone)]
pub(super) struct Svc(pub(super) Arc<Shared>);

/// Parses a `grpc-timeout` header value (`<digits><H|M|S|m|u|n>`, at most 8 digits).
///
/// ```
/// use std::time::Duration;
/// use earlyexit::serve::server::parse_grpc_timeout;
/// assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
/// assert_eq!(parse_grpc_timeout("123456789m"), None);
/// ```
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (num, unit) = v.split_at(v.len() - 1);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

pub(super) fn deadline_of<T>(req: &Request<T>, default: Duration, now: Instant) -> Instant {
    let t = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(default);
    now + t.min(Duration::from_secs(3600))
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Svc {
    /// Answers a decoded request (or says why it could not be decoded) and records it as `rpc`:
    /// the one way every call of either API reaches the queue.
    pub(super) async fn answer(
        &self,
        rpc: &'static str,
        input: ServeResult<JobInput>,
        deadline: Instant,
        t0: Instant,
    ) -> ServeResult<Vec<proto::Answer>> {
        let r = match input {
            Ok(input) => self.run_job(input, deadline).await,
            Err(e) => Err(e),
        };
        self.record(rpc, t0, &r);
        r
    }

    async fn run_job(&self, input: JobInput, deadline: Instant) -> ServeResult<Vec<proto::Answer>> {
        let now = Instant::now();
        if deadline <= now {
            return Err(ServeError::DeadlineExceeded(
                "the request arrived past its deadline".into(),
            ));
        }
        self.0.metrics.samples_in(input.len());
        let (tx, rx) = oneshot::channel();
        self.0.batcher.submit(Job {
            input,
            deadline,
            queued: now,
            reply: tx,
        })?;
        self.0.metrics.set_queue_depth(self.0.batcher.depth());
        // Answer DEADLINE_EXCEEDED ourselves just before the transport's own timeout would.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_micros(500));
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServeError::Internal("the model worker dropped the request".into())),
            Err(_) => Err(ServeError::DeadlineExceeded("no answer before the deadline".into())),
        }
    }

    fn record<T>(&self, rpc: &'static str, t0: Instant, r: &ServeResult<T>) {
        let code = match r {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        };
        self.0.metrics.request(rpc, code_name(code), t0.elapsed());
    }
}

#[tonic::async_trait]
impl EarlyExit for Svc {
    async fn classify(
        &self,
        request: Request<proto::ClassifyRequest>,
    ) -> Result<Response<proto::ClassifyResponse>, Status> {
        let t0 = Instant::now();
        let deadline = deadline_of(&request, self.0.opts.default_deadline, t0);
        let r = self
            .answer(
                "classify",
                self.0.rules.classify_input(request.into_inner()),
                deadline,
                t0,
            )
            .await;
        Ok(Response::new(proto::ClassifyResponse { answers: r? }))
    }

    async fn forward(
        &self,
        request: Request<proto::ForwardRequest>,
    ) -> Result<Response<proto::ForwardResponse>, Status> {
        let t0 = Instant::now();
        let deadline = deadline_of(&request, self.0.opts.default_deadline, t0);
        let r = self
            .answer(
                "forward",
                self.0.rules.forward_input(request.into_inner()),
                deadline,
                t0,
            )
            .await;
        Ok(Response::new(proto::ForwardResponse { answers: r? }))
    }

    async fn info(&self, _: Request<proto::InfoRequest>) -> Result<Response<proto::InfoResponse>, Status> {
        let s = &self.0;
        Ok(Response::new(proto::InfoResponse {
            tier: s.rules.name.clone(),
            first_stage: s.rules.range.start as u32,
            end_stage: s.rules.range.end as u32,
            num_stages: s.num_stages as u32,
            input_shape: vec![s.rules.input.c as u32, s.rules.input.h as u32, s.rules.input.w as u32],
            classes: s.rules.classes as u32,
            policy: s.rules.policy.to_string(),
            model_id: s.rules.model_id.clone(),
            model: s.model_json.clone(),
            next: s.next.clone(),
            max_batch: s.opts.batch.max_batch as u32,
            max_request_bytes: s.opts.limits.max_request_bytes as u64,
            max_samples: s.opts.limits.max_samples as u32,
            implementation: s.implementation.clone(),
        }))
    }

    async fn metrics(&self, _: Request<proto::MetricsRequest>) -> Result<Response<proto::MetricsResponse>, Status> {
        Ok(Response::new(proto::MetricsResponse {
            text: self.0.metrics.render(),
        }))
    }
}

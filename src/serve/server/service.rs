//! The `EarlyExit` service: request validation (images, activations, best-so-far answers,
//! deadlines) and the hand-off of each request to the batching queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::infer::Policy;
use crate::infer::engine::BestSoFar;
use crate::model::Shape;
use crate::serve::batcher::Batcher;
use crate::serve::codec::decode;
use crate::serve::error::{ServeError, ServeResult};
use crate::serve::metrics::Metrics;
use crate::serve::proto;
use crate::serve::proto::early_exit_server::EarlyExit;
use crate::serve::tier::{Job, JobInput, StageInput, TierOptions};

/// What every request of one server reads: the tier's slice, the model's shapes, the queue.
pub(super) struct Shared {
    pub(super) name: String,
    pub(super) range: std::ops::Range<usize>,
    pub(super) num_stages: usize,
    pub(super) classes: usize,
    pub(super) input: Shape,
    pub(super) stage_in: StageInput,
    pub(super) model_id: String,
    pub(super) model_json: String,
    pub(super) policy: Policy,
    pub(super) next: String,
    pub(super) batcher: Batcher<Job>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) opts: TierOptions,
    /// What answers ([`crate::infer::Executor::describe`]), for `Info`.
    pub(super) implementation: String,
}

/// The gRPC service over the shared state.
#[derive(Clone)]
pub(super) struct Svc(pub(super) Arc<Shared>);

/// The patience state a `Forward` request carries, checked: one previous class and one streak
/// per sample (required by `patience`), each class one of the model's, each streak between 1 and
/// the exits before `stage` (a client's numbers; out of range they would be answered with
/// nonsense, or overflow).
fn patience_state(
    prev: Vec<i64>,
    streak: Vec<i64>,
    n: usize,
    classes: usize,
    stage: u32,
    policy: &Policy,
) -> ServeResult<Option<(Vec<i64>, Vec<i64>)>> {
    match (prev.len(), streak.len()) {
        (0, 0) if matches!(policy, Policy::Patience(_)) => {
            Err(ServeError::invalid("the patience policy needs prev_class and streak"))
        }
        (0, 0) => Ok(None),
        (a, b) if a == n && b == n => {
            if let Some(c) = prev.iter().find(|&&c| c < 0 || c as u64 >= classes as u64) {
                return Err(ServeError::invalid(format!(
                    "prev_class {c} is not a class of this model (0 to {})",
                    classes - 1
                )));
            }
            if let Some(k) = streak.iter().find(|&&k| k < 1 || k > i64::from(stage)) {
                return Err(ServeError::invalid(format!(
                    "streak {k} is outside 1 to {stage} (the exits before stage {stage})"
                )));
            }
            Ok(Some((prev, streak)))
        }
        (a, b) => Err(ServeError::invalid(format!(
            "{a} prev_class and {b} streak values for {n} samples"
        ))),
    }
}

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

fn deadline_of<T>(req: &Request<T>, default: Duration, now: Instant) -> Instant {
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

/// Decodes one image of a `Classify` request into `C×H×W` values.
fn image_values(
    img: &proto::Image,
    shape: Shape,
    norm: Option<&crate::data::Normalize>,
    i: usize,
) -> ServeResult<Vec<f32>> {
    let (c, h, w) = (shape.c, shape.h, shape.w);
    match &img.input {
        None => Err(ServeError::invalid(format!("image {i} is empty"))),
        Some(proto::image::Input::Tensor(t)) => {
            let dims: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            if dims != [c, h, w] && dims != [1, c, h, w] {
                return Err(ServeError::invalid(format!(
                    "image {i} has shape {dims:?}, the model takes [{c}, {h}, {w}]"
                )));
            }
            let (v, _) = decode(t, c * h * w).map_err(|e| ServeError::invalid(format!("image {i}: {e}")))?;
            Ok(v)
        }
        Some(proto::image::Input::Encoded(bytes)) => {
            let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| ServeError::invalid(format!("image {i}: {e}")))?;
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(8192);
            limits.max_image_height = Some(8192);
            limits.max_alloc = Some(256 << 20);
            reader.limits(limits);
            let img = reader
                .decode()
                .map_err(|e| ServeError::invalid(format!("image {i} is not a readable PNG or JPEG: {e}")))?;
            if (img.width() as usize, img.height() as usize) != (w, h) {
                return Err(ServeError::invalid(format!(
                    "image {i} is {}x{}, the model takes {w}x{h}",
                    img.width(),
                    img.height()
                )));
            }
            let hwc: Vec<f32> = match c {
                1 => img.to_luma32f().into_raw(),
                3 => img.to_rgb32f().into_raw(),
                _ => {
                    return Err(ServeError::invalid(format!(
                        "the model takes {c} channels: send tensors, not images"
                    )));
                }
            };
            let mut chw = vec![0.0; c * h * w];
            for ch in 0..c {
                let (m, s) = match norm {
                    Some(n) if n.mean.len() == c => (n.mean[ch], n.std[ch]),
                    _ => (0.0, 1.0),
                };
                for p in 0..h * w {
                    chw[ch * h * w + p] = (hwc[p * c + ch] - m) / s;
                }
            }
            Ok(chw)
        }
    }
}

impl Svc {
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

    fn classify_input(&self, req: proto::ClassifyRequest) -> ServeResult<JobInput> {
        let s = &self.0;
        if s.range.start != 0 {
            return Err(ServeError::FailedPrecondition(format!(
                "tier `{}` runs stages {}..{}; send Classify to the first tier",
                s.name, s.range.start, s.range.end
            )));
        }
        let n = req.images.len();
        if n == 0 || n > s.opts.limits.max_samples {
            return Err(ServeError::invalid(format!(
                "{n} images in the request; 1 to {} allowed",
                s.opts.limits.max_samples
            )));
        }
        let mut x = Vec::with_capacity(n * s.input.c * s.input.h * s.input.w);
        for (i, img) in req.images.iter().enumerate() {
            x.extend(image_values(img, s.input, s.opts.normalize.as_ref(), i)?);
        }
        Ok(JobInput {
            start: 0,
            x,
            x_dims: [n, s.input.c, s.input.h, s.input.w],
            pooled: Vec::new(),
            best: vec![None; n],
            policy_state: None,
            ids: (0..n as u64).collect(),
        })
    }

    fn forward_input(&self, req: proto::ForwardRequest) -> ServeResult<JobInput> {
        let s = &self.0;
        if req.stage as usize != s.range.start {
            return Err(ServeError::FailedPrecondition(format!(
                "tier `{}` runs stages {}..{}, not from stage {}",
                s.name, s.range.start, s.range.end, req.stage
            )));
        }
        if !req.model_id.is_empty() && req.model_id != s.model_id {
            return Err(ServeError::FailedPrecondition(format!(
                "activations from model {}, this tier serves model {}",
                req.model_id, s.model_id
            )));
        }
        let n = req.ids.len();
        if n == 0 || n > s.opts.limits.max_samples {
            return Err(ServeError::invalid(format!(
                "{n} samples in the request; 1 to {} allowed",
                s.opts.limits.max_samples
            )));
        }
        let want = s.stage_in.x;
        let t = req
            .x
            .as_ref()
            .ok_or_else(|| ServeError::invalid("the request has no activations"))?;
        let (x, dims) = decode(t, n * want.c * want.h * want.w)?;
        if dims != [n, want.c, want.h, want.w] {
            return Err(ServeError::invalid(format!(
                "activations of shape {dims:?}; stage {} takes [{n}, {}, {}, {}]",
                req.stage, want.c, want.h, want.w
            )));
        }
        if req.pooled.len() != s.stage_in.pooled.len() {
            return Err(ServeError::invalid(format!(
                "{} pooled tensors; stage {} takes {}",
                req.pooled.len(),
                req.stage,
                s.stage_in.pooled.len()
            )));
        }
        let mut pooled = Vec::with_capacity(req.pooled.len());
        for (p, &d) in req.pooled.iter().zip(&s.stage_in.pooled) {
            let (v, dims) = decode(p, n * d)?;
            if dims != [n, d] {
                return Err(ServeError::invalid(format!(
                    "pooled tensor of shape {dims:?}, expected [{n}, {d}]"
                )));
            }
            pooled.push((v, d));
        }
        if req.best.len() != n {
            return Err(ServeError::invalid(format!(
                "{} best-so-far answers for {n} samples",
                req.best.len()
            )));
        }
        let mut best = Vec::with_capacity(n);
        for b in &req.best {
            if b.probs.len() != s.classes
                || b.exit >= req.stage
                || !b.confidence.is_finite()
                || b.probs.iter().any(|p| !p.is_finite())
            {
                return Err(ServeError::invalid(format!(
                    "malformed best-so-far answer (exit {}, {} probabilities)",
                    b.exit,
                    b.probs.len()
                )));
            }
            best.push(Some(BestSoFar {
                exit: b.exit as usize,
                confidence: b.confidence,
                probs: b.probs.clone(),
            }));
        }
        let policy_state = patience_state(req.prev_class, req.streak, n, s.classes, req.stage, &s.policy)?;
        Ok(JobInput {
            start: req.stage as usize,
            x,
            x_dims: [n, want.c, want.h, want.w],
            pooled,
            best,
            policy_state,
            ids: req.ids,
        })
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
        let r = match self.classify_input(request.into_inner()) {
            Ok(input) => self.run_job(input, deadline).await,
            Err(e) => Err(e),
        };
        self.record("classify", t0, &r);
        Ok(Response::new(proto::ClassifyResponse { answers: r? }))
    }

    async fn forward(
        &self,
        request: Request<proto::ForwardRequest>,
    ) -> Result<Response<proto::ForwardResponse>, Status> {
        let t0 = Instant::now();
        let deadline = deadline_of(&request, self.0.opts.default_deadline, t0);
        let r = match self.forward_input(request.into_inner()) {
            Ok(input) => self.run_job(input, deadline).await,
            Err(e) => Err(e),
        };
        self.record("forward", t0, &r);
        Ok(Response::new(proto::ForwardResponse { answers: r? }))
    }

    async fn info(&self, _: Request<proto::InfoRequest>) -> Result<Response<proto::InfoResponse>, Status> {
        let s = &self.0;
        Ok(Response::new(proto::InfoResponse {
            tier: s.name.clone(),
            first_stage: s.range.start as u32,
            end_stage: s.range.end as u32,
            num_stages: s.num_stages as u32,
            input_shape: vec![s.input.c as u32, s.input.h as u32, s.input.w as u32],
            classes: s.classes as u32,
            policy: s.policy.to_string(),
            model_id: s.model_id.clone(),
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
            text: self.0.metrics.render(&self.0.name),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's patience state is checked where the request is decoded: a class of this model,
    /// a streak within the exits passed (2⁶² used to reach an i64 → i32 cast that panicked).
    #[test]
    fn patience_state_numbers_are_validated() {
        let p = Policy::Patience(2);
        let ok = patience_state(vec![3, 0], vec![1, 2], 2, 10, 2, &p).unwrap();
        assert_eq!(ok, Some((vec![3, 0], vec![1, 2])));
        assert_eq!(patience_state(vec![], vec![], 2, 10, 2, &Policy::Never).unwrap(), None);
        let err = |prev: Vec<i64>, streak: Vec<i64>, stage| {
            patience_state(prev, streak, 1, 10, stage, &p).unwrap_err().to_string()
        };
        assert!(err(vec![1 << 62], vec![1], 2).contains("prev_class 4611686018427387904"));
        assert!(err(vec![-1], vec![1], 2).contains("not a class"));
        assert!(err(vec![10], vec![1], 2).contains("0 to 9"));
        assert!(err(vec![1], vec![1 << 62], 2).contains("outside 1 to 2"));
        assert!(err(vec![1], vec![0], 2).contains("streak 0"));
        assert!(err(vec![1], vec![1], 0).contains("outside 1 to 0"));
        assert!(err(vec![], vec![], 2).contains("needs prev_class"));
        assert!(err(vec![1, 2], vec![1], 2).contains("2 prev_class and 1 streak"));
    }
}

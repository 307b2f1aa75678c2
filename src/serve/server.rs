//! The gRPC server of a tier (or of the whole model): request checks, deadlines, the token
//! check, TLS, and the optional plain-HTTP `/metrics` endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use super::batcher::{Batcher, queue};
use super::client::TierClient;
use super::codec::decode;
use super::error::{ServeError, ServeResult};
use super::metrics::Metrics;
use super::proto;
use super::proto::early_exit_server::{EarlyExit, EarlyExitServer};
use super::tier::{Best, Engine, Forwarding, Job, JobInput, StageInput, TierOptions, stage_inputs, worker_loop};
use crate::infer::{CompiledNet, MultiExitModel, Policy};
use crate::model::{MacConvention, Shape, io};

/// Network settings of a server.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// Address to listen on (port 0: any free port; see [`Served::addr`]).
    pub listen: SocketAddr,
    /// PEM certificate chain and key; set: serve TLS only.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Shared token every request must carry (`authorization: Bearer TOKEN`).
    pub token: Option<String>,
    /// Where to serve `GET /metrics` over plain HTTP, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for NetOptions {
    /// Loopback, port 7070, no TLS, no token, no HTTP metrics.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            tls: None,
            token: None,
            metrics_listen: None,
        }
    }
}

/// An identifier of a model folder: the first 16 hex digits of SHA-256 over its description and
/// weights. Tiers refuse activations computed by another model.
pub fn model_id(dir: &Path) -> ServeResult<String> {
    let mut h = Sha256::new();
    for f in [io::DESCRIPTION_FILE, io::WEIGHTS_FILE] {
        let p = dir.join(f);
        let bytes = std::fs::read(&p).map_err(|e| crate::Error::io(&p, e))?;
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// Loads a model folder for serving (BatchNorm folded) with its id.
pub fn load_for_serving(dir: &Path, device: &Device) -> ServeResult<(MultiExitModel, String)> {
    let (arch, net) = io::load_model(dir, device)?;
    let model = MultiExitModel { arch, net }.fold_bn();
    Ok((model, model_id(dir)?))
}

struct Shared {
    name: String,
    range: std::ops::Range<usize>,
    num_stages: usize,
    classes: usize,
    input: Shape,
    stage_in: StageInput,
    model_id: String,
    model_json: String,
    policy: Policy,
    next: String,
    batcher: Batcher<Job>,
    metrics: Arc<Metrics>,
    opts: TierOptions,
}

#[derive(Clone)]
struct Svc(Arc<Shared>);

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
            best.push(Some(Best {
                exit: b.exit as usize,
                confidence: b.confidence,
                probs: b.probs.clone(),
            }));
        }
        let policy_state = match (req.prev_class.len(), req.streak.len()) {
            (0, 0) if matches!(s.policy, Policy::Patience(_)) => {
                return Err(ServeError::invalid("the patience policy needs prev_class and streak"));
            }
            (0, 0) => None,
            (a, b) if a == n && b == n => Some((req.prev_class, req.streak)),
            (a, b) => {
                return Err(ServeError::invalid(format!(
                    "{a} prev_class and {b} streak values for {n} samples"
                )));
            }
        };
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
        }))
    }

    async fn metrics(&self, _: Request<proto::MetricsRequest>) -> Result<Response<proto::MetricsResponse>, Status> {
        Ok(Response::new(proto::MetricsResponse {
            text: self.0.metrics.render(&self.0.name),
        }))
    }
}

/// Checks the shared token (`authorization: Bearer TOKEN`) in constant time.
#[derive(Clone)]
struct TokenCheck {
    expected: Option<Arc<[u8]>>,
    metrics: Arc<Metrics>,
}

impl Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes())
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        let mut diff = u8::from(given.len() != expected.len());
        for (i, e) in expected.iter().enumerate() {
            diff |= e ^ given.get(i).copied().unwrap_or(0);
        }
        if diff == 0 {
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
struct OversizedIsInvalid<S>(S);

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

/// A running server.
pub struct Served {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address of the HTTP `/metrics` endpoint, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    name: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    worker: std::thread::JoinHandle<()>,
}

impl Served {
    /// Prometheus text of this server's metrics.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(&self.name)
    }

    /// Stops accepting, lets requests in flight finish, stops the worker.
    pub async fn stop(mut self) -> ServeResult<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }

    /// Waits until the server ends (after [`Self::stop`] or a transport failure).
    pub async fn wait(self) -> ServeResult<()> {
        let r = self.server.await;
        let worker = self.worker;
        // The service (and with it the queue's sender) is gone: the worker drains and ends.
        tokio::task::spawn_blocking(move || worker.join())
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))?
            .map_err(|_| ServeError::Internal("the model worker panicked".into()))?;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Unavailable(format!("transport: {e}"))),
            Err(e) => Err(ServeError::Internal(e.to_string())),
        }
    }
}

/// Starts serving `model` in the current tokio runtime: binds, spawns the model worker thread
/// and the gRPC server, and returns at once.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use burn::tensor::Device;
/// use earlyexit::infer::MultiExitModel;
/// use earlyexit::model::{ModelDescription, Shape};
/// use earlyexit::serve::client::{ConnectOptions, TierClient, tensor_image};
/// use earlyexit::serve::server::{NetOptions, start};
/// use earlyexit::serve::tier::TierOptions;
/// use earlyexit::serve::proto::ClassifyRequest;
///
/// let desc = ModelDescription::new("lenet5", Shape::new(1, 28, 28), 10, "cuts:1".parse()?);
/// let device = Device::flex();
/// let model = MultiExitModel::new(desc.resolve()?, &device);
/// let net = NetOptions { listen: "127.0.0.1:0".parse()?, ..Default::default() };
/// let served = start(model, "doc".into(), device, TierOptions::whole("maxprob:0.5".parse()?), net).await?;
///
/// let client = TierClient::connect(&served.addr.to_string(), &ConnectOptions::default())?;
/// let image = tensor_image(&vec![0.5; 28 * 28], [1, 28, 28], Default::default());
/// let resp = client.classify(ClassifyRequest { images: vec![image] }, std::time::Duration::from_secs(5)).await?;
/// assert_eq!(resp.answers.len(), 1);
/// assert_eq!(resp.answers[0].tier, "serve");
/// served.stop().await?;
/// # Ok(()) }
/// ```
pub async fn start(
    model: MultiExitModel,
    model_id: String,
    device: Device,
    opts: TierOptions,
    net: NetOptions,
) -> ServeResult<Served> {
    let num_stages = model.net.num_stages();
    let range = opts.stages.resolve(num_stages)?;
    let has_conf = model.net.heads.iter().all(|h| h.has_confidence());
    opts.policy.check(model.net.num_exits(), has_conf)?;
    let whole = range == (0..num_stages);
    if range.end < num_stages && opts.next.is_none() {
        return Err(ServeError::invalid(format!(
            "stages {}..{} stop before the last stage ({num_stages}): give the next tier",
            range.start, range.end
        )));
    }
    if range.end == num_stages && opts.next.is_some() {
        return Err(ServeError::invalid(
            "this tier holds the last stage: it has no next tier",
        ));
    }
    if !whole && matches!(opts.policy, Policy::Ensemble) {
        return Err(ServeError::invalid(
            "the ensemble policy mixes every exit and cannot be split across tiers",
        ));
    }
    if let Some(n) = &opts.normalize
        && n.mean.len() != model.arch.description.input.c
    {
        return Err(ServeError::invalid(format!(
            "normalisation has {} channels, the model takes {}",
            n.mean.len(),
            model.arch.description.input.c
        )));
    }
    if opts.batch.max_batch == 0 {
        return Err(ServeError::invalid("max batch must be at least 1"));
    }
    let metrics = Arc::new(Metrics::new());
    let exit_macs = model.arch.cost.exit_macs(MacConvention::All);
    let next_client = match &opts.next {
        Some(n) => Some((TierClient::connect(&n.addr, &n.connect)?, n.clone())),
        None => None,
    };
    let fwd = Arc::new(Forwarding {
        next: next_client,
        metrics: metrics.clone(),
        name: opts.name.clone(),
        exit_macs: exit_macs.clone(),
        failing: Default::default(),
    });
    let (batcher, gatherer) = queue::<Job>(opts.batch);
    let shared = Shared {
        name: opts.name.clone(),
        range: range.clone(),
        num_stages,
        classes: model.arch.description.classes,
        input: model.arch.description.input,
        stage_in: stage_inputs(&model)[range.start].clone(),
        model_id: model_id.clone(),
        model_json: serde_json::to_string(&model.arch.description).expect("descriptions serialise"),
        policy: opts.policy.clone(),
        next: opts.next.as_ref().map(|n| n.addr.clone()).unwrap_or_default(),
        batcher,
        metrics: metrics.clone(),
        opts: opts.clone(),
    };
    let compiled = if whole && device == Device::flex() {
        match CompiledNet::compile(&model) {
            Ok(c) => {
                tracing::info!("{}: answering on the compiled CPU path", opts.name);
                Some(c)
            }
            Err(e) => {
                tracing::info!("{}: answering on the Burn module ({e})", opts.name);
                None
            }
        }
    } else {
        None
    };
    let engine = Engine {
        compiled,
        model,
        range,
        policy: opts.policy.clone(),
        name: opts.name.clone(),
        exit_macs,
        device,
        wire: opts.next.as_ref().map(|n| n.wire).unwrap_or_default(),
        model_id,
        whole,
    };
    let listener = tokio::net::TcpListener::bind(net.listen)
        .await
        .map_err(|e| ServeError::Setup(format!("cannot listen on {}: {e}", net.listen)))?;
    let addr = listener.local_addr().map_err(|e| ServeError::Setup(e.to_string()))?;
    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .initial_connection_window_size(Some(8 << 20))
        .initial_stream_window_size(Some(4 << 20));
    if let Some((cert, key)) = &net.tls {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| ServeError::Setup(format!("{}: {e}", p.display())));
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServeError::Setup(format!("TLS: {e}")))?;
    }
    let svc = EarlyExitServer::new(Svc(Arc::new(shared)))
        .max_decoding_message_size(opts.limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    let svc = OversizedIsInvalid(tonic::service::interceptor::InterceptedService::new(
        svc,
        TokenCheck {
            expected: net.token.as_ref().map(|t| Arc::from(t.as_bytes())),
            metrics: metrics.clone(),
        },
    ));
    let rt = tokio::runtime::Handle::current();
    let worker = std::thread::Builder::new()
        .name(format!("earlyexit-{}", opts.name))
        .spawn(move || worker_loop(engine, gatherer, fwd, rt))
        .map_err(|e| ServeError::Setup(format!("cannot start the model worker: {e}")))?;
    let metrics_addr = match net.metrics_listen {
        Some(a) => Some(serve_metrics_http(a, metrics.clone(), opts.name.clone()).await?),
        None => None,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(builder.add_service(svc).serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    Ok(Served {
        addr,
        metrics_addr,
        metrics,
        name: opts.name,
        shutdown: Some(tx),
        server,
        worker,
    })
}

/// Serves `GET /metrics` (Prometheus text) over plain HTTP/1.1 on `addr`.
async fn serve_metrics_http(addr: SocketAddr, metrics: Arc<Metrics>, name: String) -> ServeResult<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Setup(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| ServeError::Setup(e.to_string()))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, name) = (metrics.clone(), name.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut len = 0;
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while len < buf.len() {
                        let n = sock.read(&mut buf[len..]).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        len += n;
                        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                            return Some(());
                        }
                    }
                    None
                })
                .await;
                let head = String::from_utf8_lossy(&buf[..len]);
                let resp = match read {
                    Ok(Some(())) if head.starts_with("GET /metrics ") => {
                        let body = metrics.render(&name);
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(local)
}

/// Loads `model_dir`, serves it until SIGINT or SIGTERM, printing `listening on ADDR` (and the
/// metrics address) on stdout once ready. What `earlyexit serve` and `earlyexit tier` run.
/// `model` must live on `device`.
pub fn run_blocking(
    model: MultiExitModel,
    model_id: String,
    device: Device,
    opts: TierOptions,
    net: NetOptions,
    threads: usize,
) -> ServeResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| ServeError::Setup(format!("tokio runtime: {e}")))?;
    rt.block_on(async move {
        let name = opts.name.clone();
        let stages = opts.stages;
        let served = start(model, model_id, device, opts, net).await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {} (tier {name}, stages {stages})", served.addr);
            if let Some(m) = served.metrics_addr {
                let _ = writeln!(out, "metrics on http://{m}/metrics");
            }
            let _ = out.flush();
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| ServeError::Setup(e.to_string()))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        served.stop().await
    })
}

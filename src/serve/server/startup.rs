//! Start-up and shutdown: loading a model folder for serving, checking a tier's settings,
//! binding, the model worker thread, TLS, and stopping with requests in flight answered.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::Device;
use sha2::{Digest, Sha256};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use super::http::{metrics_route, serve_http};
use super::middleware::{OversizedIsInvalid, TokenCheck};
use super::request::RequestRules;
use super::service::{Shared, Svc};
use super::v2::{V2, rest};
use crate::infer::{Executor, MultiExitModel, Policy};
use crate::model::{MacConvention, io};
use crate::serve::batcher::queue;
use crate::serve::breaker::Breaker;
use crate::serve::client::{TierClient, read_pem};
use crate::serve::error::{ServeError, ServeResult};
use crate::serve::metrics::Metrics;
use crate::serve::proto;
use crate::serve::proto::early_exit_server::EarlyExitServer;
use crate::serve::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::serve::tier::{Engine, Forwarding, Job, TierOptions, worker_loop};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// An empty shared token (`--token=""`, an empty `EARLYEXIT_TOKEN`) is an error, not "no
/// authentication": the check compares it with an absent header and would let every request in.
pub(crate) fn check_token(token: Option<&str>) -> ServeResult<()> {
    if token.is_some_and(str::is_empty) {
        return Err(ServeError::Setup(
            "the shared token is empty (--token or EARLYEXIT_TOKEN); give a non-empty token, or none to serve without one"
                .into(),
        ));
    }
    Ok(())
}

/// A server reachable beyond this machine (an address other than loopback) without TLS and
/// without a token would answer anyone who can reach the port, in clear text: refused unless
/// `insecure` says it is meant (a private network, a proxy in front that authenticates). The
/// HTTP port (REST and `/metrics`) is held to the same rule (its token is the server's).
pub(crate) fn check_exposure(net: &NetOptions) -> ServeResult<()> {
    if net.insecure || net.tls.is_some() || net.token.is_some() {
        return Ok(());
    }
    for (what, addr) in [("--listen", Some(net.listen)), ("--http-listen", net.http_listen)] {
        if let Some(addr) = addr
            && !addr.ip().is_loopback()
        {
            return Err(ServeError::Setup(format!(
                "{what} {addr} is reachable from other machines, and this server has neither TLS nor a token: give --token (or EARLYEXIT_TOKEN) and --tls-cert/--tls-key, or --insecure if that is meant"
            )));
        }
    }
    Ok(())
}

/// Network settings of a server.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// Address to listen on (port 0: any free port; see [`Served::addr`]).
    pub listen: SocketAddr,
    /// PEM certificate chain and key; set: serve TLS only.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Shared token every request must carry (`authorization: Bearer TOKEN`); an empty one is
    /// an error ([`start`]): it would let every request in.
    pub token: Option<String>,
    /// Where to serve plain HTTP, if anywhere: the Open Inference Protocol's REST routes
    /// (`/v2/...`) and `GET /metrics`, asking for the token too (but for the health probes).
    pub http_listen: Option<SocketAddr>,
    /// Allow listening beyond loopback with neither TLS nor a token ([`check_exposure`]).
    pub insecure: bool,
    /// How long [`Served::stop`] waits for the requests in flight (and for open streams such
    /// as `grpc.health.v1` Watch) before it closes what is left: under Kubernetes' default
    /// 30 s grace period, so the process exits before it is killed.
    pub drain_timeout: Duration,
}

impl NetOptions {
    /// The checks [`start`] makes before anything else: no empty token ([`check_token`]), no
    /// exposure without TLS or token unless `insecure` ([`check_exposure`]).
    pub fn check(&self) -> ServeResult<()> {
        check_token(self.token.as_deref())?;
        check_exposure(self)
    }
}

impl Default for NetOptions {
    /// Loopback, port 7070, no TLS, no token, no HTTP port, 25 s to drain.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            tls: None,
            token: None,
            http_listen: None,
            insecure: false,
            drain_timeout: Duration::from_secs(25),
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
    let model = MultiExitModel::load(dir, device)?.fold_bn();
    Ok((model, model_id(dir)?))
}

/// A running server.
pub struct Served {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address of the HTTP port (REST `/v2/...` and `/metrics`), if any.
    pub http_addr: Option<SocketAddr>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    name: String,
    health: HealthReporter,
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<tokio::task::JoinHandle<()>>,
    worker: std::thread::JoinHandle<()>,
    drain_timeout: Duration,
}

impl Served {
    /// Prometheus text of this server's metrics.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// The `grpc.health.v1` statuses this server answers: `""` (the whole server) and
    /// `earlyexit.v1.EarlyExit`, both `SERVING` once it listens and `NOT_SERVING` from
    /// [`Self::stop`] on. An application embedding the server may flip them (say, while it
    /// swaps a model).
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Stops accepting, lets requests in flight finish (gRPC and REST) within the drain
    /// timeout ([`NetOptions::drain_timeout`]), then closes what is left and stops the worker.
    /// Readiness turns false first: `grpc.health.v1` says `NOT_SERVING` (to Watch streams too),
    /// the Open Inference Protocol's ready calls say not ready.
    pub async fn stop(mut self) -> ServeResult<()> {
        self.shared.ready.store(false, std::sync::atomic::Ordering::Release);
        self.health.set_service_status("", ServingStatus::NotServing).await;
        self.health.set_not_serving::<ServedApi>().await;
        self.health.set_not_serving::<ServedV2>().await;
        let _ = self.shutdown.send(true);
        let until = tokio::time::Instant::now() + self.drain_timeout;
        let r = match tokio::time::timeout_at(until, &mut self.server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    "{}: gRPC streams still open {:?} after the stop (a Watch stream, a slow client); closing them",
                    self.name,
                    self.drain_timeout
                );
                self.server.abort();
                (&mut self.server).await
            }
        };
        if let Some(mut http) = self.http.take()
            && tokio::time::timeout_at(until, &mut http).await.is_err()
        {
            tracing::warn!(
                "{}: HTTP requests still open after the drain timeout; closing them",
                self.name
            );
            http.abort();
            let _ = http.await;
        }
        self.finish(r).await
    }

    /// Waits until the server ends (after [`Self::stop`] or a transport failure).
    pub async fn wait(mut self) -> ServeResult<()> {
        let r = (&mut self.server).await;
        let _ = self.shutdown.send(true);
        if let Some(http) = self.http.take() {
            let _ = http.await;
        }
        self.finish(r).await
    }

    /// With both servers ended: lets the worker answer what is queued and end, and says how the
    /// gRPC server ended (closed at the drain deadline counts as stopped).
    async fn finish(self, r: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>) -> ServeResult<()> {
        // The services (and with them the queue's senders) are gone once `shared` is.
        drop(self.shared);
        join_worker(self.worker).await?;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Unavailable(format!("transport: {e}"))),
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(ServeError::Internal(e.to_string())),
        }
    }
}

/// Folds recent observations into the histograms every 5 s while the server's metrics live, so
/// their memory stays bounded when nobody scrapes.
async fn metrics_upkeep(metrics: std::sync::Weak<Metrics>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        match metrics.upgrade() {
            Some(m) => m.upkeep(),
            None => return,
        }
    }
}

/// Waits for the model worker, once every service (and with it the queue's sender) is gone: it
/// answers what is queued and ends.
async fn join_worker(worker: std::thread::JoinHandle<()>) -> ServeResult<()> {
    tokio::task::spawn_blocking(move || worker.join())
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))?
        .map_err(|_| ServeError::Internal("the model worker panicked".into()))
}

/// The API service as the health service names it (`earlyexit.v1.EarlyExit`).
type ServedApi = EarlyExitServer<Svc>;
/// The Open Inference Protocol's service (`inference.GRPCInferenceService`).
type ServedV2 = GrpcInferenceServiceServer<V2>;

/// A future that resolves once `rx` reads true (the server is stopping).
async fn stopping(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|&stop| stop).await;
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
/// // `auto` runs the compiled CPU path where it runs the model (every zoo model), and says so.
/// assert!(client.info().await?.implementation.starts_with("compiled"));
///
/// // The standard health service follows what the embedding application reports.
/// use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
/// let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", served.addr))?.connect().await?;
/// let mut health = HealthClient::new(channel);
/// let ask = |s: &str| HealthCheckRequest { service: s.into() };
/// assert_eq!(health.check(ask("")).await?.into_inner().status(), ServingStatus::Serving);
/// served.health().set_service_status("", tonic_health::ServingStatus::NotServing).await;
/// assert_eq!(health.check(ask("")).await?.into_inner().status(), ServingStatus::NotServing);
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
    net.check()?;
    let num_stages = model.net.num_stages();
    let range = opts.stages.resolve(num_stages)?;
    let has_conf = model.net.heads.iter().all(|h| h.has_confidence());
    opts.policy.check(model.net.num_exits(), has_conf)?;
    opts.policy.check_classes(model.arch.description.classes)?;
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
    opts.check()?;
    let metrics = Arc::new(Metrics::new(&opts.name));
    tokio::spawn(metrics_upkeep(Arc::downgrade(&metrics)));
    let exit_macs = model.arch.cost.exit_macs(MacConvention::All);
    let next_client = match &opts.next {
        Some(n) => Some((TierClient::connect(&n.addr, &n.connect)?, n.clone())),
        None => None,
    };
    if let Some((client, next)) = &next_client {
        tokio::spawn(check_next_tier(
            client.clone(),
            next.addr.clone(),
            opts.name.clone(),
            model_id.clone(),
            range.end,
        ));
    }
    let fwd = Arc::new(Forwarding {
        next: next_client,
        metrics: metrics.clone(),
        name: opts.name.clone(),
        exit_macs: exit_macs.clone(),
        breaker: Arc::new(Breaker::new(opts.next.as_ref().map(|n| n.breaker).unwrap_or_default())),
    });
    let (batcher, gatherer) = queue::<Job>(opts.batch);
    let mut shared = Shared {
        num_stages,
        model_json: serde_json::to_string(&model.arch.description).expect("descriptions serialise"),
        next: opts.next.as_ref().map(|n| n.addr.clone()).unwrap_or_default(),
        batcher,
        metrics: metrics.clone(),
        opts: opts.clone(),
        rules: RequestRules::new(&model, &model_id, &opts)?,
        implementation: String::new(),
        ready: std::sync::atomic::AtomicBool::new(false),
    };
    // A whole model answers Classify with the executor's exit loop; a tier runs its slice of
    // the stages with the same loop ([`Executor::run_slice`]), on the same choice of code.
    let exec = Executor::new(model, &device, opts.path)?;
    shared.implementation = exec.describe();
    tracing::info!("{}: answering on {}", opts.name, shared.implementation);
    let engine = Engine {
        exec,
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
        .initial_stream_window_size(Some(4 << 20))
        // Streams a connection may hold at once: what the queue can take and twice over for
        // those being answered or refused. Unlimited (tonic's default), a burst opens tens of
        // thousands, each holding its request, and the server's memory grows with the burst.
        .max_concurrent_streams(Some(streams_per_connection(&opts)));
    if let Some((cert, key)) = &net.tls {
        let identity = Identity::from_pem(read_pem(cert, "CERTIFICATE")?, read_pem(key, "PRIVATE KEY")?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServeError::Setup(format!("TLS with {} and {}: {e}", cert.display(), key.display())))?;
    }
    let shared = Arc::new(shared);
    let token = net.token.as_ref().map(|t| Arc::<[u8]>::from(t.as_bytes()));
    let token_check = TokenCheck {
        expected: token.clone(),
        metrics: metrics.clone(),
    };
    let svc = EarlyExitServer::new(Svc(shared.clone()))
        .max_decoding_message_size(opts.limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    let svc = OversizedIsInvalid(tonic::service::interceptor::InterceptedService::new(
        svc,
        token_check.clone(),
    ));
    let v2 = GrpcInferenceServiceServer::new(V2(shared.clone()))
        .max_decoding_message_size(opts.limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    let v2 = OversizedIsInvalid(tonic::service::interceptor::InterceptedService::new(v2, token_check));
    let rt = tokio::runtime::Handle::current();
    let worker = std::thread::Builder::new()
        .name(format!("earlyexit-{}", opts.name))
        .spawn(move || worker_loop(engine, gatherer, fwd, rt))
        .map_err(|e| ServeError::Setup(format!("cannot start the model worker: {e}")))?;
    let (shutdown, stop_rx) = tokio::sync::watch::channel(false);
    let (http_addr, http) = match net.http_listen {
        Some(a) => {
            let app = metrics_route(metrics.clone(), token.clone()).merge(rest::routes(V2(shared.clone()), token));
            let (addr, task) = serve_http(a, app, stopping(stop_rx.clone())).await?;
            (Some(addr), Some(task))
        }
        None => (None, None),
    };
    // `grpc.health.v1`, outside the token check: probes (Kubernetes, load balancers) carry no
    // credentials, and the status reveals nothing.
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<ServedApi>().await;
    health.set_serving::<ServedV2>().await;
    shared.ready.store(true, std::sync::atomic::Ordering::Release);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = builder.add_service(health_svc).add_service(svc).add_service(v2);
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopping(stop_rx)));
    Ok(Served {
        addr,
        http_addr,
        metrics,
        name: opts.name,
        health,
        shared,
        shutdown,
        server,
        http,
        worker,
        drain_timeout: net.drain_timeout,
    })
}

/// HTTP/2 streams one connection may hold at once: twice the queue, at least 64. With the
/// request limit this bounds what a connection can make the server hold:
/// streams × `max_request_bytes`.
fn streams_per_connection(opts: &TierOptions) -> u32 {
    (2 * opts.batch.queue).clamp(64, 65_536) as u32
}

/// Whether the next tier, as its `Info` describes it, fits a tier of model `model_id` whose
/// stages end at `end_stage`: the same model, starting where this tier ends.
pub(crate) fn next_tier_fits(info: &proto::InfoResponse, model_id: &str, end_stage: usize) -> Result<(), String> {
    if info.model_id != model_id {
        return Err(format!(
            "it serves model {}, this tier model {model_id}: it will refuse every forwarded sample",
            info.model_id
        ));
    }
    let first = info.first_stage as usize;
    if first > end_stage {
        return Err(format!(
            "it starts at stage {first}, this tier ends at stage {end_stage}: stages {end_stage}..{first} run nowhere"
        ));
    }
    if first < end_stage {
        return Err(format!(
            "it starts at stage {first}, this tier ends at stage {end_stage}: it refuses activations of stage {end_stage}"
        ));
    }
    Ok(())
}

/// Checks the next tier once it answers (it may start after this one): model, stage continuity
/// and token, logged as an error when they do not fit, so a misconfigured chain is found at
/// start-up rather than through degraded answers.
async fn check_next_tier(client: TierClient, addr: String, name: String, model_id: String, end_stage: usize) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client.info().await {
            Ok(info) => {
                match next_tier_fits(&info, &model_id, end_stage) {
                    Ok(()) => tracing::info!(
                        "{name}: next tier {addr} ({}) serves stages {}..{} of the same model",
                        info.tier,
                        info.first_stage,
                        info.end_stage
                    ),
                    Err(why) => tracing::error!("{name}: next tier {addr} does not fit: {why}"),
                }
                return;
            }
            Err(e) if matches!(e.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                tracing::error!(
                    "{name}: next tier {addr} refuses this tier's token ({}): give both the same --token / EARLYEXIT_TOKEN",
                    e.message()
                );
                return;
            }
            Err(e) if std::time::Instant::now() >= until => {
                tracing::warn!(
                    "{name}: next tier {addr} not reachable after 30 s ({:?}: {}): survivors are answered degraded until it is",
                    e.code(),
                    e.message()
                );
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Serves `model` on a runtime of its own until SIGINT or SIGTERM, then stops with the requests
/// in flight answered. `on_ready` runs once the server listens (the CLI prints the addresses
/// there). What `earlyexit serve` and `earlyexit tier` run; `model` must live on `device`.
pub fn run_blocking(
    model: MultiExitModel,
    model_id: String,
    device: Device,
    opts: TierOptions,
    net: NetOptions,
    threads: usize,
    on_ready: impl FnOnce(&Served),
) -> ServeResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| ServeError::Setup(format!("tokio runtime: {e}")))?;
    rt.block_on(async move {
        let served = start(model, model_id, device, opts, net).await?;
        on_ready(&served);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| ServeError::Setup(e.to_string()))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        served.stop().await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every interface without TLS or a token needs `--insecure`; loopback never does.
    #[test]
    fn exposed_without_tls_or_token_is_refused_unless_insecure() {
        let net = |listen: &str, metrics: Option<&str>| NetOptions {
            listen: listen.parse().unwrap(),
            http_listen: metrics.map(|m| m.parse().unwrap()),
            ..NetOptions::default()
        };
        assert!(check_exposure(&net("127.0.0.1:7070", Some("[::1]:9090"))).is_ok());
        let e = check_exposure(&net("0.0.0.0:7070", None)).unwrap_err().to_string();
        assert!(e.contains("--listen 0.0.0.0:7070") && e.contains("--insecure"), "{e}");
        let e = check_exposure(&net("127.0.0.1:7070", Some("0.0.0.0:9090")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http-listen 0.0.0.0:9090"), "{e}");
        for ok in [
            NetOptions {
                token: Some("s3cret".into()),
                ..net("0.0.0.0:7070", Some("0.0.0.0:9090"))
            },
            NetOptions {
                insecure: true,
                ..net("10.0.0.5:7070", None)
            },
        ] {
            assert!(check_exposure(&ok).is_ok(), "{ok:?}");
        }
    }

    /// An empty token is refused on both sides instead of turning authentication off.
    #[test]
    fn empty_tokens_are_errors() {
        assert!(check_token(None).is_ok());
        assert!(check_token(Some("s3cret")).is_ok());
        let e = check_token(Some("")).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("EARLYEXIT_TOKEN"), "{e}");
        let opts = crate::serve::client::ConnectOptions {
            token: Some(String::new()),
            ..Default::default()
        };
        let e = crate::serve::client::TierClient::connect("127.0.0.1:1", &opts)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("token is empty"), "{e}");
    }

    /// A next tier of another model, or one that leaves a gap or overlaps, is named as such.
    #[test]
    fn next_tier_must_serve_the_same_model_from_where_this_tier_ends() {
        let info = |model: &str, first: u32| proto::InfoResponse {
            model_id: model.into(),
            first_stage: first,
            end_stage: 3,
            num_stages: 3,
            ..Default::default()
        };
        assert!(next_tier_fits(&info("abc", 1), "abc", 1).is_ok());
        let e = next_tier_fits(&info("xyz", 1), "abc", 1).unwrap_err();
        assert!(e.contains("model xyz") && e.contains("model abc"), "{e}");
        let e = next_tier_fits(&info("abc", 2), "abc", 1).unwrap_err();
        assert!(e.contains("stages 1..2 run nowhere"), "{e}");
        let e = next_tier_fits(&info("abc", 0), "abc", 1).unwrap_err();
        assert!(e.contains("refuses activations of stage 1"), "{e}");
    }
}

//! The client side: connections (TLS, shared token), `Classify` on files or tensors, and a
//! bounded load generator for benchmarks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;
use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use super::codec::{WireFormat, encode};
use super::error::{ServeError, ServeResult};
use super::proto;
use super::proto::early_exit_client::EarlyExitClient;

/// How to reach a server.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// PEM file of the CA that signed the server's certificate; set: connect with TLS.
    pub tls_ca: Option<PathBuf>,
    /// Name to check the server's certificate against (default: the host of the address).
    pub tls_domain: Option<String>,
    /// Shared token sent as `authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// Connection timeout (default 2 s).
    pub connect_timeout: Option<Duration>,
}

/// Adds the shared token to every request.
#[derive(Clone, Debug)]
pub struct TokenInterceptor(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connection to a tier or server (cheap to clone; connects lazily and reconnects).
#[derive(Clone, Debug)]
pub struct TierClient {
    inner: EarlyExitClient<InterceptedService<Channel, TokenInterceptor>>,
}

impl TierClient {
    /// A lazily connected client for `addr` (`HOST:PORT`, or a full `http://`/`https://` URI).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use earlyexit::serve::client::{ConnectOptions, TierClient};
    /// // Nothing listens there: the client is made, the call fails with UNAVAILABLE.
    /// let client = TierClient::connect("127.0.0.1:9", &ConnectOptions::default()).unwrap();
    /// let err = client.info().await.unwrap_err();
    /// assert_eq!(err.code(), tonic::Code::Unavailable);
    /// # }
    /// ```
    pub fn connect(addr: &str, opts: &ConnectOptions) -> ServeResult<Self> {
        let scheme = if opts.tls_ca.is_some() { "https" } else { "http" };
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("{scheme}://{addr}")
        };
        let mut ep = Endpoint::from_shared(uri.clone())
            .map_err(|e| ServeError::Setup(format!("bad address `{addr}`: {e}")))?
            .connect_timeout(opts.connect_timeout.unwrap_or(Duration::from_secs(2)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .initial_connection_window_size(Some(8 << 20))
            .initial_stream_window_size(Some(4 << 20));
        if let Some(ca) = &opts.tls_ca {
            let pem = read_pem(ca, "CERTIFICATE")?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(d) = &opts.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            ep = ep
                .tls_config(tls)
                .map_err(|e| ServeError::Setup(format!("TLS for `{addr}`: {e}")))?;
        }
        crate::serve::server::check_token(opts.token.as_deref())?;
        let token = match &opts.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ServeError::Setup("the token must be printable ASCII".into()))?,
            ),
            None => None,
        };
        let inner = EarlyExitClient::with_interceptor(ep.connect_lazy(), TokenInterceptor(token))
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(usize::MAX);
        Ok(Self { inner })
    }

    /// `Classify` with a deadline.
    pub async fn classify(
        &self,
        req: proto::ClassifyRequest,
        timeout: Duration,
    ) -> Result<proto::ClassifyResponse, Status> {
        let mut r = Request::new(req);
        r.set_timeout(timeout);
        Ok(self.inner.clone().classify(r).await?.into_inner())
    }

    /// `Forward` with a deadline.
    pub async fn forward(
        &self,
        req: proto::ForwardRequest,
        timeout: Duration,
    ) -> Result<proto::ForwardResponse, Status> {
        let mut r = Request::new(req);
        r.set_timeout(timeout);
        Ok(self.inner.clone().forward(r).await?.into_inner())
    }

    /// What the server serves.
    pub async fn info(&self) -> Result<proto::InfoResponse, Status> {
        let mut r = Request::new(proto::InfoRequest {});
        r.set_timeout(Duration::from_secs(5));
        Ok(self.inner.clone().info(r).await?.into_inner())
    }

    /// The server's metrics, Prometheus text.
    pub async fn metrics(&self) -> Result<String, Status> {
        let mut r = Request::new(proto::MetricsRequest {});
        r.set_timeout(Duration::from_secs(5));
        Ok(self.inner.clone().metrics(r).await?.into_inner().text)
    }

    /// Polls `Info` until the server answers or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<proto::InfoResponse, Status> {
        let until = Instant::now() + timeout;
        loop {
            match self.info().await {
                Ok(i) => return Ok(i),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// An image file (PNG or JPEG) as a request input, sent encoded.
pub fn image_file(path: &Path) -> ServeResult<proto::Image> {
    let bytes = std::fs::read(path).map_err(|e| ServeError::Setup(format!("{}: {e}", path.display())))?;
    Ok(proto::Image {
        input: Some(proto::image::Input::Encoded(bytes)),
    })
}

/// A `[C, H, W]` tensor as a request input.
pub fn tensor_image(values: &[f32], chw: [usize; 3], fmt: WireFormat) -> proto::Image {
    proto::Image {
        input: Some(proto::image::Input::Tensor(encode(values, &chw, fmt))),
    }
}

/// Reads a PEM file that must hold a `-----BEGIN …{kind}-----` block (`CERTIFICATE`,
/// `PRIVATE KEY`): a wrong or empty file is an error naming it and what it lacks, instead of the
/// TLS layer's "transport error" later.
pub(crate) fn read_pem(path: &Path, kind: &str) -> ServeResult<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| ServeError::Setup(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let holds = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if !holds {
        return Err(ServeError::Setup(format!(
            "{}: not a PEM file with a {kind} (expected a `-----BEGIN …{kind}-----` line)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// One output line of `earlyexit classify`: the name, then class, exit, tier and confidence
/// (and `degraded` with the reason when it is).
///
/// ```
/// use earlyexit::serve::{client::answer_line, proto::Answer};
/// let a = Answer { class: 7, exit: 1, tier: "edge".into(), confidence: 0.91234, ..Default::default() };
/// assert_eq!(answer_line("seven.png", &a), "seven.png 7 1 edge 0.9123");
/// ```
pub fn answer_line(name: &str, a: &proto::Answer) -> String {
    let mut line = format!("{name} {} {} {} {:.4}", a.class, a.exit, a.tier, a.confidence);
    if a.degraded {
        line.push_str(&format!(" degraded ({})", a.reason));
    }
    line
}

/// Classifies files (PNG or JPEG), `chunk` per request, and hands each file's outcome to
/// `on_file` in file order as soon as its request is answered: one unreadable file or one
/// image the server refuses costs that file its answer, not the others'. A file that cannot be
/// read is not sent; when the server refuses a request as invalid, its images are sent again
/// one by one so the refusal names the one file it is about. Returns how many files failed.
pub async fn classify_files(
    client: &TierClient,
    files: &[PathBuf],
    chunk: usize,
    timeout: Duration,
    mut on_file: impl FnMut(&Path, ServeResult<proto::Answer>),
) -> usize {
    let mut failed = 0;
    for part in files.chunks(chunk.max(1)) {
        let mut outcomes: Vec<Option<ServeResult<proto::Answer>>> = Vec::with_capacity(part.len());
        let mut images = Vec::with_capacity(part.len());
        let mut sent = Vec::with_capacity(part.len());
        for (i, p) in part.iter().enumerate() {
            match image_file(p) {
                Ok(img) => {
                    images.push(img);
                    sent.push(i);
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        if !images.is_empty() {
            let answers = classify_images(client, images.clone(), timeout).await;
            match answers {
                Ok(a) => {
                    for (&i, ans) in sent.iter().zip(a) {
                        outcomes[i] = Some(Ok(ans));
                    }
                }
                Err(ServeError::InvalidArgument(_)) if images.len() > 1 => {
                    for (&i, img) in sent.iter().zip(images) {
                        let one = classify_images(client, vec![img], timeout).await;
                        outcomes[i] = Some(one.map(|mut a| a.remove(0)));
                    }
                }
                Err(e) => {
                    // The request failed as a whole (server unreachable, deadline, token): the
                    // same reason for each of its files.
                    let why = e.to_string();
                    for &i in &sent {
                        outcomes[i] = Some(Err(match &e {
                            ServeError::DeadlineExceeded(_) => ServeError::DeadlineExceeded(why.clone()),
                            ServeError::Unauthenticated => ServeError::Unauthenticated,
                            _ => ServeError::Unavailable(why.clone()),
                        }));
                    }
                }
            }
        }
        for (p, o) in part.iter().zip(outcomes) {
            let o = o.expect("every file of the chunk has an outcome");
            failed += usize::from(o.is_err());
            on_file(p, o);
        }
    }
    failed
}

/// One `Classify` request: exactly one answer per image, or why not.
async fn classify_images(
    client: &TierClient,
    images: Vec<proto::Image>,
    timeout: Duration,
) -> ServeResult<Vec<proto::Answer>> {
    let n = images.len();
    let resp = client
        .classify(proto::ClassifyRequest { images }, timeout)
        .await
        .map_err(|s| match s.code() {
            tonic::Code::InvalidArgument => ServeError::InvalidArgument(s.message().to_string()),
            c => ServeError::Unavailable(format!("{c:?}: {}", s.message())),
        })?;
    if resp.answers.len() != n {
        return Err(ServeError::Internal(format!(
            "{} answers for {n} images",
            resp.answers.len()
        )));
    }
    Ok(resp.answers)
}

/// A bounded load: at most `requests` requests and at most `max_time`, whichever ends first.
///
/// Closed loop by default (`concurrency` clients, each sending its next request when the last is
/// answered); with `rate`, open loop: request `i` leaves at `i / rate` seconds whatever the
/// answers, so a server slower than the rate sees its queue fill (how overload is measured).
#[derive(Clone, Debug, Serialize)]
pub struct LoadConfig {
    /// Requests to send.
    pub requests: usize,
    /// Requests in flight at once (closed loop; ignored with `rate`).
    pub concurrency: usize,
    /// Images per request.
    pub images_per_request: usize,
    /// Stop sending after this long.
    pub max_time: Duration,
    /// Deadline of each request.
    pub deadline: Duration,
    /// Open loop at this many requests per second.
    pub rate: Option<f64>,
    /// Abandon each request after this long (the client drops the call: a disconnect mid-request
    /// as the server sees it), counted as the error `Abandoned`.
    pub abandon_after: Option<Duration>,
}

impl Default for LoadConfig {
    /// 1000 requests of one image, 16 in flight, at most 20 s, 10 s deadlines.
    fn default() -> Self {
        Self {
            requests: 1000,
            concurrency: 16,
            images_per_request: 1,
            max_time: Duration::from_secs(20),
            deadline: Duration::from_secs(10),
            rate: None,
            abandon_after: None,
        }
    }
}

/// What a load run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Requests sent.
    pub requests: usize,
    /// Requests answered OK.
    pub ok: usize,
    /// Failed requests by status code.
    pub errors: BTreeMap<String, usize>,
    /// Images answered.
    pub samples: usize,
    /// Answers flagged degraded.
    pub degraded: usize,
    /// Answers per exit.
    pub exits: BTreeMap<u32, usize>,
    /// Answers per answering tier.
    pub tiers: BTreeMap<String, usize>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Answered requests per second.
    pub requests_per_s: f64,
    /// Answered images per second.
    pub samples_per_s: f64,
    /// Request latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
    /// Protobuf bytes of the requests sent, per image.
    pub request_bytes_per_sample: f64,
    /// Every answer, by request index then image (for checks).
    #[serde(skip)]
    pub answers: Vec<Option<Vec<proto::Answer>>>,
}

/// Percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One request of a load run: its index, latency, request bytes and outcome (`None`: abandoned).
type Sent = (usize, Duration, usize, Option<Result<proto::ClassifyResponse, Status>>);

/// Sends request `i` of a load run.
async fn send_one(client: &TierClient, inputs: &[proto::Image], cfg: &LoadConfig, i: usize) -> Sent {
    let images: Vec<proto::Image> = (0..cfg.images_per_request)
        .map(|k| inputs[(i * cfg.images_per_request + k) % inputs.len()].clone())
        .collect();
    let req = proto::ClassifyRequest { images };
    let bytes = req.encoded_len();
    let t = Instant::now();
    let call = client.classify(req, cfg.deadline);
    let r = match cfg.abandon_after {
        Some(after) => tokio::time::timeout(after, call).await.ok(),
        None => Some(call.await),
    };
    (i, t.elapsed(), bytes, r)
}

/// Sends a bounded load to `client`, cycling through `inputs`.
pub async fn run_load(client: &TierClient, inputs: &[proto::Image], cfg: &LoadConfig) -> LoadReport {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let inputs: Arc<Vec<proto::Image>> = Arc::new(inputs.to_vec());
    let mut tasks = Vec::new();
    if let Some(rate) = cfg.rate {
        let t0 = tokio::time::Instant::now();
        for i in 0..cfg.requests {
            let at = t0 + Duration::from_secs_f64(i as f64 / rate.max(1e-3));
            if at.duration_since(t0) >= cfg.max_time {
                break;
            }
            tokio::time::sleep_until(at).await;
            let (client, inputs, cfg) = (client.clone(), inputs.clone(), cfg.clone());
            tasks.push(tokio::spawn(
                async move { vec![send_one(&client, &inputs, &cfg, i).await] },
            ));
        }
    } else {
        for _ in 0..cfg.concurrency.max(1) {
            let (client, next, inputs, cfg) = (client.clone(), next.clone(), inputs.clone(), cfg.clone());
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cfg.requests || start.elapsed() >= cfg.max_time {
                        break;
                    }
                    done.push(send_one(&client, &inputs, &cfg, i).await);
                }
                done
            }));
        }
    }
    let mut rep = LoadReport::default();
    let mut lat = Vec::new();
    let mut bytes = 0usize;
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.expect("load task"));
    }
    let n = results.iter().map(|r| r.0 + 1).max().unwrap_or(0);
    rep.answers = vec![None; n];
    for (i, elapsed, b, r) in results {
        rep.requests += 1;
        bytes += b;
        match r {
            None => *rep.errors.entry("Abandoned".into()).or_default() += 1,
            Some(Ok(resp)) => {
                rep.ok += 1;
                lat.push(elapsed.as_secs_f64() * 1e3);
                for a in &resp.answers {
                    rep.samples += 1;
                    rep.degraded += usize::from(a.degraded);
                    *rep.exits.entry(a.exit).or_default() += 1;
                    *rep.tiers.entry(a.tier.clone()).or_default() += 1;
                }
                rep.answers[i] = Some(resp.answers);
            }
            Some(Err(s)) => *rep.errors.entry(format!("{:?}", s.code())).or_default() += 1,
        }
    }
    rep.seconds = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    rep.p50_ms = percentile(&lat, 50.0);
    rep.p90_ms = percentile(&lat, 90.0);
    rep.p99_ms = percentile(&lat, 99.0);
    rep.mean_ms = if lat.is_empty() {
        f64::NAN
    } else {
        lat.iter().sum::<f64>() / lat.len() as f64
    };
    rep.requests_per_s = rep.ok as f64 / rep.seconds;
    rep.samples_per_s = rep.samples as f64 / rep.seconds;
    rep.request_bytes_per_sample = bytes as f64 / (rep.requests * cfg.images_per_request).max(1) as f64;
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_without_the_block_asked_for_are_named() {
        let d = std::env::temp_dir().join(format!("earlyexit-pem-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let cert = d.join("cert.pem");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        assert!(read_pem(&cert, "CERTIFICATE").is_ok());
        // A certificate given as the key, and a file that is not PEM at all.
        let e = read_pem(&cert, "PRIVATE KEY").unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("PRIVATE KEY"), "{e}");
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let e = read_pem(&junk, "CERTIFICATE").unwrap_err().to_string();
        assert!(e.contains("junk.pem") && e.contains("not a PEM file"), "{e}");
        let key = d.join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(read_pem(&key, "PRIVATE KEY").is_ok());
        let _ = std::fs::remove_dir_all(d);
    }
}

//! Serving with real processes on loopback: `earlyexit serve` and three `earlyexit tier`s.
//!
//! Every child process is held by a guard that kills it on drop, on every path.
#![cfg(feature = "serve")]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use earlyexit::bench::forced_thresholds;
use earlyexit::infer::Policy;
use earlyexit::model::{ModelDescription, Shape, io};
use earlyexit::serve::client::{ConnectOptions, TierClient, tensor_image};
use earlyexit::serve::codec::{WireFormat, encode};
use earlyexit::serve::metrics::scrape;
use earlyexit::serve::proto::{self, ClassifyRequest, ForwardRequest};
use earlyexit::serve::server::load_for_serving;
use tonic::Code;

mod common;
use common::process::{EXE, Proc, TOKEN, free_port, spawn, spawn_logging};

struct Fixture {
    dir: PathBuf,
    policy: Policy,
    /// `[N, 1, 28, 28]` inputs, row-major.
    inputs: Vec<f32>,
    n: usize,
    /// The in-process engine's answers on `inputs` (one batch per `CHUNK`).
    expected: Vec<(usize, usize)>,
}

const CHUNK: usize = 16;
const CHW: [usize; 3] = [1, 28, 28];

/// A fresh eenet8 (3 stages) saved to a folder, with per-exit thresholds that make about 40 %
/// leave at exit 0 and 30 % at exit 1 on the test inputs.
fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("earlyexit-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::flex();
    device.seed(11);
    let desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "cuts:1,2".parse().unwrap());
    let arch = desc.resolve().unwrap();
    let net = arch.init_seeded(&device, 11);
    io::save_model(&dir, &arch.description, &net).unwrap();
    let (served, _) = load_for_serving(&dir, &device).unwrap();
    let n = 64;
    let x = Tensor::<4>::random([n, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device);
    let inputs: Vec<f32> = x.clone().into_data().try_to_vec::<f32>().unwrap();
    let policy = forced_thresholds(&served, x, &[0.4, 0.3]).unwrap();
    let mut expected = Vec::new();
    for c in 0..n / CHUNK {
        let part = inputs[c * CHUNK * 784..(c + 1) * CHUNK * 784].to_vec();
        let xb = Tensor::<4>::from_data(TensorData::new(part, [CHUNK, 1, 28, 28]), &device);
        let a = served.infer(xb, &policy).unwrap();
        expected.extend(a.class.iter().copied().zip(a.exit.iter().copied()));
    }
    Fixture {
        dir,
        policy,
        inputs,
        n,
        expected,
    }
}

impl Fixture {
    fn image(&self, i: usize) -> proto::Image {
        tensor_image(&self.inputs[i * 784..(i + 1) * 784], CHW, WireFormat::default())
    }

    fn chunk(&self, c: usize) -> ClassifyRequest {
        ClassifyRequest {
            images: (c * CHUNK..(c + 1) * CHUNK).map(|i| self.image(i)).collect(),
        }
    }

    fn model_args(&self) -> Vec<String> {
        vec![
            "--model".into(),
            self.dir.display().to_string(),
            "--policy".into(),
            self.policy.to_string(),
        ]
    }
}

/// `more[0]` (the subcommand), then the model arguments, then the rest of `more`.
fn args<'a>(base: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    std::iter::once(more[0])
        .chain(base.iter().map(|s| s.as_str()))
        .chain(more[1..].iter().copied())
        .collect()
}

fn client(addr: &str, token: Option<&str>) -> TierClient {
    TierClient::connect(
        addr,
        &ConnectOptions {
            token: token.map(String::from),
            ..Default::default()
        },
    )
    .unwrap()
}

struct Tiers {
    device: Proc,
    edge: Option<Proc>,
    _cloud: Proc,
    edge_port: u16,
}

fn three_tiers(f: &Fixture, extra_edge: &[&str]) -> Tiers {
    let base = f.model_args();
    let (p0, p1, p2) = (free_port(), free_port(), free_port());
    let cloud = spawn(&args(&base, &["tier", "--stages", "2..", "--name", "cloud"]), p2, true);
    let next2 = format!("127.0.0.1:{p2}");
    let mut edge_args = args(&base, &["tier", "--stages", "1..2", "--name", "edge", "--next", &next2]);
    edge_args.extend_from_slice(extra_edge);
    let edge = spawn(&edge_args, p1, true);
    let next1 = format!("127.0.0.1:{p1}");
    let device = spawn(
        &args(
            &base,
            &[
                "tier",
                "--stages",
                "0..1",
                "--name",
                "device",
                "--next",
                &next1,
                "--retries",
                "2",
                "--backoff-ms",
                "10",
                "--probe-ms",
                "50",
            ],
        ),
        p0,
        true,
    );
    Tiers {
        device,
        edge: Some(edge),
        _cloud: cloud,
        edge_port: p1,
    }
}

fn spawn_edge(f: &Fixture, port: u16, cloud: &str, extra: &[&str]) -> Proc {
    let base = f.model_args();
    let mut a = args(&base, &["tier", "--stages", "1..2", "--name", "edge", "--next", cloud]);
    a.extend_from_slice(extra);
    spawn(&a, port, true)
}

const TIER_NAMES: [&str; 3] = ["device", "edge", "cloud"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tiers_answer_like_the_engine_and_like_serve() {
    let f = fixture("three");
    // Edge → cloud in f16 with lz4 would change the numbers; keep f32 here and zstd to check
    // that compression is lossless.
    let tiers = three_tiers(&f, &["--compression", "zstd"]);
    let serve = spawn(&args(&f.model_args(), &["serve"]), free_port(), false);
    let dev = client(&tiers.device.addr, Some(TOKEN));
    let whole = client(&serve.addr, None);
    let t = Duration::from_secs(10);
    let mut exits = [0usize; 3];
    for c in 0..f.n / CHUNK {
        let a = dev.classify(f.chunk(c), t).await.unwrap().answers;
        let b = whole.classify(f.chunk(c), t).await.unwrap().answers;
        assert_eq!(a.len(), CHUNK);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let (class, exit) = f.expected[c * CHUNK + i];
            assert_eq!(
                (x.class as usize, x.exit as usize),
                (class, exit),
                "tiers, sample {i} of chunk {c}"
            );
            assert_eq!(
                (y.class as usize, y.exit as usize),
                (class, exit),
                "serve, sample {i} of chunk {c}"
            );
            assert_eq!(x.tier, TIER_NAMES[exit]);
            assert_eq!(y.tier, "serve");
            assert!(!x.degraded && !y.degraded);
            assert_eq!(x.id, i as u64);
            assert_eq!(x.macs, y.macs);
            assert!((x.confidence - y.confidence).abs() < 1e-5);
            for (p, q) in x.probs.iter().zip(&y.probs) {
                assert!((p - q).abs() < 1e-5);
            }
            exits[exit] += 1;
        }
    }
    assert!(exits.iter().all(|&e| e > 0), "every tier answers some: {exits:?}");
    // Metrics: the device tier saw every answer, and forwarded what did not leave at exit 0.
    let m = dev.metrics().await.unwrap();
    assert_eq!(scrape(&m, "earlyexit_answers_total", &[]), f.n as f64);
    assert_eq!(
        scrape(&m, "earlyexit_answers_total", &["answered_by=\"cloud\""]),
        exits[2] as f64
    );
    assert_eq!(
        scrape(&m, "earlyexit_forwarded_samples_total", &[]),
        (exits[1] + exits[2]) as f64
    );
    assert!(scrape(&m, "earlyexit_forwarded_bytes_total", &[]) > 0.0);
    assert_eq!(
        scrape(&m, "earlyexit_requests_total", &["rpc=\"classify\"", "code=\"OK\""]),
        (f.n / CHUNK) as f64
    );
    // Without the shared token the tiers refuse.
    let anon = client(&tiers.device.addr, None);
    assert_eq!(
        anon.classify(f.chunk(0), t).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let wrong = client(&tiers.device.addr, Some("guess"));
    assert_eq!(wrong.info().await.unwrap_err().code(), Code::Unauthenticated);
    // The standard health service answers without the token (probes carry none): the server
    // and the API are SERVING; an unknown service is NOT_FOUND.
    {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", tiers.device.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for service in ["", "earlyexit.v1.EarlyExit"] {
            let r = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.status(), ServingStatus::Serving, "`{service}`");
        }
        let e = health
            .check(HealthCheckRequest { service: "nope".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }
    // Classify goes to the first tier only.
    let edge = client(&tiers.edge.as_ref().unwrap().addr, Some(TOKEN));
    assert_eq!(
        edge.classify(f.chunk(0), t).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let info = edge.info().await.unwrap();
    assert_eq!((info.first_stage, info.end_stage, info.num_stages), (1, 2, 3));
    // A tier runs its slice of the stages on the compiled CPU path, and says so.
    assert!(info.implementation.starts_with("compiled"), "{}", info.implementation);
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_middle_tier_degrades_then_recovers() {
    let f = fixture("kill");
    let mut tiers = three_tiers(&f, &[]);
    let cloud_addr = tiers._cloud.addr.clone();
    let dev = client(&tiers.device.addr, Some(TOKEN));
    // 200 requests of 4 images from 4 concurrent senders, paced over about 3 s.
    let total = 200;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let mut senders = Vec::new();
    for s in 0..4 {
        let (dev, tx) = (dev.clone(), tx.clone());
        let images: Vec<Vec<proto::Image>> = (0..total / 4)
            .map(|r| (0..4).map(|k| f.image((s * 50 + r * 4 + k) % f.n)).collect())
            .collect();
        senders.push(tokio::spawn(async move {
            for (r, imgs) in images.into_iter().enumerate() {
                let sent = start.elapsed();
                let res = dev
                    .classify(ClassifyRequest { images: imgs }, Duration::from_secs(5))
                    .await;
                let _ = tx.send((s, r, sent, res));
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = start.elapsed();
    tiers.edge.take().unwrap().kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let edge = spawn_edge(&f, tiers.edge_port, &cloud_addr, &[]);
    client(&edge.addr, Some(TOKEN))
        .wait_ready(Duration::from_secs(10))
        .await
        .unwrap();
    let restarted_at = start.elapsed();
    let mut results = Vec::new();
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    for s in senders {
        s.await.unwrap();
    }
    // Nothing lost: every request answered OK, degraded answers flagged and from the device.
    assert_eq!(results.len(), total);
    let (mut degraded, mut after_restart, mut edge_or_cloud_after) = (0, 0, 0);
    for (s, r, sent, res) in &results {
        let answers = &res
            .as_ref()
            .unwrap_or_else(|e| panic!("sender {s} request {r}: {e:?}"))
            .answers;
        assert_eq!(answers.len(), 4);
        for a in answers {
            if a.degraded {
                degraded += 1;
                assert_eq!((a.tier.as_str(), a.exit), ("device", 0));
                assert!(!a.reason.is_empty());
                assert!(
                    *sent + Duration::from_millis(200) >= killed_at,
                    "degraded before the kill"
                );
            }
            if *sent > restarted_at + Duration::from_millis(200) {
                after_restart += 1;
                assert!(!a.degraded, "degraded after the restart: {a:?}");
                edge_or_cloud_after += usize::from(a.tier != "device");
            }
        }
    }
    assert!(degraded > 0, "no degraded answer while the edge was down");
    assert!(
        after_restart > 0 && edge_or_cloud_after > 0,
        "no traffic reached the restarted edge"
    );
    let m = dev.metrics().await.unwrap();
    assert_eq!(scrape(&m, "earlyexit_degraded_answers_total", &[]), degraded as f64);
    assert_eq!(scrape(&m, "earlyexit_answers_total", &[]), (total * 4) as f64);
    // The breaker opened while the edge was down (batches answered without trying it), and a
    // probe closed it again.
    assert!(
        scrape(&m, "earlyexit_forward_attempts_total", &["outcome=\"circuit_open\""]) > 0.0,
        "{m}"
    );
    assert_eq!(scrape(&m, "earlyexit_next_tier_down", &[]), 0.0);
    drop(edge);
    let _ = std::fs::remove_dir_all(&f.dir);
}

/// Waits until `log` holds `text` (or 20 s pass) and returns the log.
fn wait_for_log(log: &std::path::Path, text: &str) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = std::fs::read_to_string(log).unwrap_or_default();
        if s.contains(text) || Instant::now() >= until {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a tier of `stages` forwarding to `next`, its log in `log`, and waits for `text` in it.
fn tier_logging(
    base: &[String],
    stages: &str,
    next: &str,
    env_token: bool,
    log: &std::path::Path,
    text: &str,
) -> (Proc, String) {
    let tier = spawn_logging(
        &args(base, &["tier", "--stages", stages, "--next", next]),
        free_port(),
        env_token,
        Stdio::from(std::fs::File::create(log).unwrap()),
    );
    (tier, wait_for_log(log, text))
}

/// A next tier that leaves a stage gap, or wants another token, is logged as an error at
/// start-up, before any request finds out through degraded answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_tier_that_does_not_fit_is_logged_at_start_up() {
    let f = fixture("misfit");
    let base = f.model_args();
    let cloud_port = free_port();
    let cloud = spawn(
        &args(&base, &["tier", "--stages", "2..", "--name", "cloud"]),
        cloud_port,
        true,
    );
    let next = format!("127.0.0.1:{cloud_port}");
    // Stages 0..1, then a tier that starts at 2: stage 1 runs nowhere.
    let (gap, text) = tier_logging(&base, "0..1", &next, true, &f.dir.join("gap.log"), "does not fit");
    assert!(
        text.contains("ERROR") && text.contains(&next) && text.contains("stages 1..2 run nowhere"),
        "{text}"
    );
    drop(gap);
    // The right stages without the token the next tier wants.
    let (anon, text) = tier_logging(&base, "1..2", &next, false, &f.dir.join("token.log"), "token");
    assert!(
        text.contains("ERROR") && text.contains("refuses this tier's token"),
        "{text}"
    );
    drop(anon);
    // And a chain that fits says so.
    let (fits, text) = tier_logging(&base, "1..2", &next, true, &f.dir.join("fits.log"), "of the same model");
    assert!(
        text.contains("serves stages 2..3 of the same model") && !text.contains("ERROR"),
        "{text}"
    );
    drop((fits, cloud));
    let _ = std::fs::remove_dir_all(&f.dir);
}

/// Sends raw bytes as a `Classify` message (for undecodable protobuf).
async fn raw_classify(addr: &str, body: Vec<u8>) -> tonic::Status {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    #[derive(Default)]
    struct Raw;
    struct RawEnc;
    struct RawDec;
    impl Encoder for RawEnc {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            use bytes::BufMut;
            buf.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for RawDec {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            use bytes::Buf;
            Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEnc;
        type Decoder = RawDec;
        fn encoder(&mut self) -> RawEnc {
            RawEnc
        }
        fn decoder(&mut self) -> RawDec {
            RawDec
        }
    }
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/earlyexit.v1.EarlyExit/Classify");
    grpc.unary(tonic::Request::new(body), path, Raw).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_the_server_keeps_serving() {
    let f = fixture("bad");
    let serve = spawn(
        &args(
            &f.model_args(),
            &["serve", "--max-request-bytes", "100000", "--max-samples", "20"],
        ),
        free_port(),
        false,
    );
    let c = client(&serve.addr, None);
    let t = Duration::from_secs(10);
    let ok = |c: TierClient, req: ClassifyRequest| async move { c.classify(req, t).await };
    let code = |r: Result<proto::ClassifyResponse, tonic::Status>| r.unwrap_err().code();
    let one = |img: proto::Image| ClassifyRequest { images: vec![img] };

    // Malformed content.
    let empty = proto::Image { input: None };
    assert_eq!(code(ok(c.clone(), one(empty)).await), Code::InvalidArgument);
    let garbage = proto::Image {
        input: Some(proto::image::Input::Encoded(b"\x89PNG not really".to_vec())),
    };
    assert_eq!(code(ok(c.clone(), one(garbage)).await), Code::InvalidArgument);
    let mut short = encode(&[0.5; 784], &[1, 28, 28], WireFormat::default());
    short.data.truncate(100);
    let short = proto::Image {
        input: Some(proto::image::Input::Tensor(short)),
    };
    assert_eq!(code(ok(c.clone(), one(short)).await), Code::InvalidArgument);
    let nan = tensor_image(&[f32::NAN; 784], CHW, WireFormat::default());
    assert_eq!(code(ok(c.clone(), one(nan)).await), Code::InvalidArgument);
    // Finite but overflowing values: a flagged answer, never a plain OK with NaN in it.
    let huge = tensor_image(&[3e38; 784], CHW, WireFormat::default());
    let a = ok(c.clone(), one(huge)).await.unwrap().answers;
    assert!(a[0].degraded && a[0].reason.contains("not finite"), "{:?}", a[0]);
    assert_eq!(
        code(ok(c.clone(), ClassifyRequest { images: vec![] }).await),
        Code::InvalidArgument
    );
    // Undecodable protobuf: INTERNAL, as the gRPC status-code guide prescribes for parse errors.
    assert_eq!(raw_classify(&serve.addr, vec![0xff; 7]).await.code(), Code::Internal);

    // Oversized: 40 images of 3 KiB exceed 100 000 bytes; 21 images exceed 20 samples.
    let big = ClassifyRequest {
        images: (0..40).map(|i| f.image(i)).collect(),
    };
    let err = ok(c.clone(), big).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let many = ClassifyRequest {
        images: (0..21).map(|i| f.image(i)).collect(),
    };
    assert_eq!(code(ok(c.clone(), many).await), Code::InvalidArgument);

    // Wrong shapes: a 3×32×32 tensor, a 16×16 PNG.
    let rgb = tensor_image(&[0.5; 3 * 32 * 32], [3, 32, 32], WireFormat::default());
    let err = ok(c.clone(), one(rgb)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("[1, 28, 28]"), "{}", err.message());
    let mut png = Vec::new();
    image::GrayImage::new(16, 16)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let small = proto::Image {
        input: Some(proto::image::Input::Encoded(png)),
    };
    let err = ok(c.clone(), one(small)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("16x16"), "{}", err.message());

    // Forward with the wrong stage, or activations of the wrong shape.
    let fwd = |stage: u32, shape: &[usize]| ForwardRequest {
        ids: vec![0],
        stage,
        x: Some(encode(&vec![0.0; shape.iter().product()], shape, WireFormat::default())),
        ..Default::default()
    };
    let e = c.forward(fwd(1, &[1, 8, 14, 14]), t).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c.forward(fwd(0, &[1, 1, 28, 29]), t).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Activations for eight samples under one id: said as the mismatch it is, not as a size
    // limit the declared shape exceeds.
    let e = c.forward(fwd(0, &[8, 1, 28, 28]), t).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("[8, 1, 28, 28] for 1 ids") && !e.message().contains("allowed"),
        "{}",
        e.message()
    );

    // Still serving, and a correct PNG works.
    let a = ok(c.clone(), f.chunk(0)).await.unwrap().answers;
    assert_eq!(a.len(), CHUNK);
    for (i, x) in a.iter().enumerate() {
        assert_eq!((x.class as usize, x.exit as usize), f.expected[i]);
    }
    let m = c.metrics().await.unwrap();
    assert!(
        scrape(&m, "earlyexit_requests_total", &["code=\"INVALID_ARGUMENT\""]) >= 9.0,
        "{m}"
    );

    // The command-line client: one line per file.
    let png_path = f.dir.join("digit.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 5) % 256) as u8]))
        .save(&png_path)
        .unwrap();
    let out = Command::new(EXE)
        .args(["classify", "--server", &serve.addr])
        .arg(&png_path)
        .arg(&png_path)
        .env_remove("EARLYEXIT_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let cols: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(cols[0], png_path.display().to_string());
    assert!(cols[1].parse::<u32>().unwrap() < 10);
    assert!(cols[2].parse::<u32>().unwrap() < 3);
    assert_eq!(cols[3], "serve");
    assert!(cols[4].parse::<f32>().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_refuses_and_a_late_next_tier_degrades_within_the_deadline() {
    let f = fixture("load");
    // A queue of one request, batches of one image: a burst overflows it.
    let serve = spawn(
        &args(
            &f.model_args(),
            &["serve", "--queue", "1", "--max-batch", "1", "--max-wait-ms", "0"],
        ),
        free_port(),
        false,
    );
    let c = client(&serve.addr, None);
    c.wait_ready(Duration::from_secs(10)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let c = c.clone();
        let req = ClassifyRequest {
            images: (0..64).map(|i| f.image(i)).collect(),
        };
        tasks.push(tokio::spawn(
            async move { c.classify(req, Duration::from_secs(20)).await },
        ));
    }
    let (mut ok, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.answers.len(), 64);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                full += 1;
            }
        }
    }
    assert!(ok > 0 && full > 0, "ok {ok}, refused {full}");
    assert_eq!(ok + full, 48);

    // A next tier that accepts connections and never answers: the device answers degraded
    // from exit 0 before the client's deadline.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        hole.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            if let Ok((s, _)) = hole.accept() {
                conns.push(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let device = spawn(
        &args(
            &f.model_args(),
            &["tier", "--stages", "0..1", "--name", "device", "--next", &hole_addr],
        ),
        free_port(),
        false,
    );
    let d = client(&device.addr, None);
    let started = Instant::now();
    let a = d
        .classify(f.chunk(0), Duration::from_millis(400))
        .await
        .unwrap()
        .answers;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(400), "{took:?}");
    let mut degraded = 0;
    for (i, x) in a.iter().enumerate() {
        if f.expected[i].1 == 0 {
            assert!(!x.degraded);
        } else {
            degraded += 1;
            assert!(x.degraded && x.exit == 0 && x.reason.contains("deadline"), "{x:?}");
        }
    }
    assert!(degraded > 0);
    // Two more missed deadlines open the circuit (three in a row by default): then a request
    // with a long deadline is answered degraded at once instead of waiting it out.
    for _ in 0..2 {
        let a = d
            .classify(f.chunk(0), Duration::from_millis(400))
            .await
            .unwrap()
            .answers;
        assert!(a.iter().any(|x| x.reason.contains("deadline")));
    }
    let started = Instant::now();
    let a = d.classify(f.chunk(0), Duration::from_secs(3)).await.unwrap().answers;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    for (i, x) in a.iter().enumerate() {
        if f.expected[i].1 != 0 {
            assert!(x.degraded && x.reason.contains("next tier down"), "{x:?}");
        }
    }
    let m = d.metrics().await.unwrap();
    assert_eq!(scrape(&m, "earlyexit_next_tier_down", &[]), 1.0, "{m}");
    drop(device);
    held.join().unwrap();
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_between_client_and_tiers() {
    let f = fixture("tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (f.dir.join("cert.pem"), f.dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let base = f.model_args();
    // The edge serves TLS; the device reaches it over TLS and serves TLS to the client too.
    let edge_port = free_port();
    let edge = spawn(
        &args(
            &base,
            &[
                "tier",
                "--stages",
                "1..",
                "--name",
                "edge",
                "--tls-cert",
                &cert_s,
                "--tls-key",
                &key_s,
            ],
        ),
        edge_port,
        true,
    );
    let next = format!("localhost:{edge_port}");
    let device = spawn(
        &args(
            &base,
            &[
                "tier",
                "--stages",
                "0..1",
                "--name",
                "device",
                "--next",
                &next,
                "--tls-ca",
                &cert_s,
                "--tls-cert",
                &cert_s,
                "--tls-key",
                &key_s,
            ],
        ),
        free_port(),
        true,
    );
    let opts = ConnectOptions {
        tls_ca: Some(cert.clone()),
        tls_domain: Some("localhost".into()),
        token: Some(TOKEN.into()),
        connect_timeout: None,
    };
    let c = TierClient::connect(&device.addr, &opts).unwrap();
    let t = Duration::from_secs(10);
    let a = c.classify(f.chunk(0), t).await.unwrap().answers;
    for (i, x) in a.iter().enumerate() {
        assert_eq!((x.class as usize, x.exit as usize), f.expected[i]);
        assert!(!x.degraded, "{x:?}");
    }
    assert!(a.iter().any(|x| x.tier == "edge"));
    // Plain text to a TLS server fails; so does TLS without the token.
    assert!(client(&device.addr, Some(TOKEN)).classify(f.chunk(0), t).await.is_err());
    let no_token = TierClient::connect(&device.addr, &ConnectOptions { token: None, ..opts }).unwrap();
    assert_eq!(
        no_token.classify(f.chunk(0), t).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    drop((edge, device));
    let _ = std::fs::remove_dir_all(&f.dir);
}

/// A network trained in PyTorch, imported with fresh exits, answers over gRPC exactly as the
/// engine does (the "bring your own model" path ends in `serve`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_pytorch_network_serves_like_the_engine() {
    let dir = std::env::temp_dir().join(format!("earlyexit-serve-{}-imported", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let checkpoint =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/torch/cifar_resnet20_a_mnist.pt");
    let out = Command::new(EXE)
        .args([
            "import",
            "--weights",
            checkpoint.to_str().unwrap(),
            "--arch",
            "cifar:resnet20",
        ])
        .args([
            "--input",
            "1x28x28",
            "--classes",
            "10",
            "--exits",
            "cuts:3,5",
            "--out",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let device = Device::flex();
    let (served, _) = load_for_serving(&dir, &device).unwrap();
    let x = Tensor::<4>::random([CHUNK, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device);
    let inputs: Vec<f32> = x.clone().into_data().try_to_vec::<f32>().unwrap();
    let policy = forced_thresholds(&served, x.clone(), &[0.3, 0.3]).unwrap();
    let expected = served.infer(x, &policy).unwrap();
    let serve = spawn(
        &[
            "serve",
            "--model",
            dir.to_str().unwrap(),
            "--policy",
            &policy.to_string(),
        ],
        free_port(),
        false,
    );
    let request = ClassifyRequest {
        images: (0..CHUNK)
            .map(|i| tensor_image(&inputs[i * 784..(i + 1) * 784], CHW, WireFormat::default()))
            .collect(),
    };
    let answers = client(&serve.addr, None)
        .classify(request, Duration::from_secs(30))
        .await
        .unwrap()
        .answers;
    assert_eq!(answers.len(), CHUNK);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(
            (a.class as usize, a.exit as usize),
            (expected.class[i], expected.exit[i]),
            "sample {i}"
        );
    }
    assert!(
        expected.exit.iter().any(|&e| e < 2),
        "some samples leave early: {:?}",
        expected.exit
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `classify` answers every file it can and names each one it cannot: a missing file, a file
/// that is not an image, an image of the wrong size (the server refuses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_answers_each_file_and_names_the_ones_that_fail() {
    let f = fixture("classify");
    let serve = spawn(&args(&f.model_args(), &["serve"]), free_port(), false);
    let dir = f.dir.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let png = |name: &str, side: u32| {
        let path = dir.join(name);
        image::GrayImage::from_fn(side, side, |x, y| image::Luma([((x * 9 + y * 5) % 256) as u8]))
            .save(&path)
            .unwrap();
        path
    };
    let good_a = png("a.png", 28);
    let small = png("small.png", 16);
    let good_b = png("b.png", 28);
    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG not really").unwrap();
    let missing = dir.join("missing.png");
    let files = [&good_a, &small, &garbage, &missing, &good_b];
    let out = Command::new(EXE)
        .args(["classify", "--server", &serve.addr, "--batch", "8"])
        .args(files.iter().map(|p| p.as_os_str()))
        .env_remove("EARLYEXIT_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "some files failed: the exit status says so");
    // The two good images are answered, in file order, despite the three bad ones in their
    // request.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}\n{stderr}");
    assert!(lines[0].starts_with(&good_a.display().to_string()), "{stdout}");
    assert!(lines[1].starts_with(&good_b.display().to_string()), "{stdout}");
    // Each bad one is named with its own reason.
    for bad in [&small, &garbage, &missing] {
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&bad.display().to_string()))
            .unwrap_or_else(|| panic!("{} not named:\n{stderr}", bad.display()));
        assert!(line.len() > bad.display().to_string().len() + 2, "{line}");
    }
    assert!(stderr.contains("3 of 5 files"), "{stderr}");
    let _ = std::fs::remove_dir_all(&f.dir);
}

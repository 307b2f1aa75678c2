//! The Open Inference Protocol ("KServe v2") of `earlyexit serve`, spoken by the stubs generated
//! from the official proto (gRPC) and by plain HTTP/JSON (REST), and the stop on SIGTERM.
#![cfg(feature = "serve")]

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use earlyexit::bench::forced_thresholds;
use earlyexit::model::{ModelDescription, Shape, io};
use earlyexit::serve::client::{ConnectOptions, TierClient};
use earlyexit::serve::metrics::scrape;
use earlyexit::serve::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use earlyexit::serve::proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use earlyexit::serve::proto::inference::{self as v2, InferTensorContents, ModelInferRequest, ModelInferResponse};
use earlyexit::serve::proto::{self, ClassifyRequest};
use earlyexit::serve::server::load_for_serving;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::process::{Proc, TOKEN, free_port, spawn};

const MODEL: &str = "mnist-eenet8";

/// A fresh eenet8 saved to a folder with thresholds that send about 40 % out at exit 0 and 30 %
/// at exit 1 (of `pool`, `[N, 1, 28, 28]` values, else of uniform noise), served by
/// `earlyexit serve` with the HTTP port on.
struct Server {
    _proc: Proc,
    grpc: String,
    http: String,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn model_dir(name: &str, pool: Option<&[f32]>) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("earlyexit-v2-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::flex();
    let desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "cuts:1,2".parse().unwrap());
    let arch = desc.resolve().unwrap();
    let net = arch.init_seeded(&device, 5);
    io::save_model(&dir, &arch.description, &net).unwrap();
    let (model, _) = load_for_serving(&dir, &device).unwrap();
    device.seed(5);
    let x = match pool {
        Some(v) => Tensor::<4>::from_data(TensorData::new(v.to_vec(), [v.len() / 784, 1, 28, 28]), &device),
        None => Tensor::<4>::random([64, 1, 28, 28], Distribution::Uniform(0.0, 1.0), &device),
    };
    let policy = forced_thresholds(&model, x, &[0.4, 0.3]).unwrap();
    (dir, policy.to_string())
}

fn serve(name: &str, pool: Option<&[f32]>, extra: &[&str]) -> Server {
    serve_with_token(name, pool, extra, false)
}

/// [`serve`], with `EARLYEXIT_TOKEN` set when `token`.
fn serve_with_token(name: &str, pool: Option<&[f32]>, extra: &[&str], token: bool) -> Server {
    let (dir, policy) = model_dir(name, pool);
    let (port, http_port) = (free_port(), free_port());
    let http = format!("127.0.0.1:{http_port}");
    let dir_s = dir.display().to_string();
    let mut args = vec![
        "serve",
        "--model",
        &dir_s,
        "--policy",
        &policy,
        "--model-name",
        MODEL,
        "--http-listen",
        &http,
    ];
    args.extend_from_slice(extra);
    let proc = spawn(&args, port, token);
    Server {
        grpc: proc.addr.clone(),
        _proc: proc,
        http,
        dir,
    }
}

async fn v2_client(addr: &str) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// One HTTP/1.1 request (`Connection: close`): the status and the body as JSON (`Null` if it is
/// not JSON).
async fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    http_with(addr, method, path, body, "").await
}

/// [`http`] with extra header lines (each ending in `\r\n`).
async fn http_with(addr: &str, method: &str, path: &str, body: Option<&str>, headers: &str) -> (u16, Value) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// One sample's answer as the comparisons read it: class, exit, tier, degraded, MACs, probabilities.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    class: i64,
    exit: i64,
    tier: String,
    degraded: bool,
    macs: u64,
    probs: Vec<f32>,
}

fn native_answers(answers: &[proto::Answer]) -> Vec<Answer> {
    answers
        .iter()
        .map(|a| Answer {
            class: a.class.into(),
            exit: a.exit.into(),
            tier: a.tier.clone(),
            degraded: a.degraded,
            macs: a.macs,
            probs: a.probs.clone(),
        })
        .collect()
}

/// Reads the answers out of a gRPC v2 response, raw or typed.
fn grpc_answers(r: &ModelInferResponse) -> Vec<Answer> {
    let raw = !r.raw_output_contents.is_empty();
    let out = |name: &str| {
        let i = r.outputs.iter().position(|o| o.name == name).unwrap();
        (&r.outputs[i], r.raw_output_contents.get(i))
    };
    let f32s = |name: &str| -> Vec<f32> {
        let (t, bytes) = out(name);
        assert_eq!(t.datatype, "FP32");
        match raw {
            true => bytes
                .unwrap()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            false => t.contents.as_ref().unwrap().fp32_contents.clone(),
        }
    };
    let i64s = |name: &str| -> Vec<i64> {
        let (t, bytes) = out(name);
        assert_eq!(t.datatype, "INT64");
        match raw {
            true => bytes
                .unwrap()
                .chunks(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            false => t.contents.as_ref().unwrap().int64_contents.clone(),
        }
    };
    let (macs_t, macs_raw) = out("macs");
    let macs: Vec<u64> = match raw {
        true => macs_raw
            .unwrap()
            .chunks(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        false => macs_t.contents.as_ref().unwrap().uint64_contents.clone(),
    };
    let (deg_t, deg_raw) = out("degraded");
    let degraded: Vec<bool> = match raw {
        true => deg_raw.unwrap().iter().map(|&b| b != 0).collect(),
        false => deg_t.contents.as_ref().unwrap().bool_contents.clone(),
    };
    let (tier_t, tier_raw) = out("tier");
    let tiers: Vec<String> = match raw {
        true => {
            let mut rest = &tier_raw.unwrap()[..];
            let mut v = Vec::new();
            while !rest.is_empty() {
                let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                v.push(String::from_utf8(rest[4..4 + n].to_vec()).unwrap());
                rest = &rest[4 + n..];
            }
            v
        }
        false => tier_t
            .contents
            .as_ref()
            .unwrap()
            .bytes_contents
            .iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect(),
    };
    let (class, exit, probs) = (i64s("class"), i64s("exit"), f32s("probabilities"));
    let classes = out("probabilities").0.shape[1] as usize;
    (0..class.len())
        .map(|i| Answer {
            class: class[i],
            exit: exit[i],
            tier: tiers[i].clone(),
            degraded: degraded[i],
            macs: macs[i],
            probs: probs[i * classes..(i + 1) * classes].to_vec(),
        })
        .collect()
}

/// Reads the answers out of a REST v2 response.
fn rest_answers(body: &Value) -> Vec<Answer> {
    let out = |name: &str| -> &Value {
        let o = body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap();
        &o["data"]
    };
    let n = out("class").as_array().unwrap().len();
    let probs: Vec<f32> = out("probabilities")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let classes = probs.len() / n;
    (0..n)
        .map(|i| Answer {
            class: out("class")[i].as_i64().unwrap(),
            exit: out("exit")[i].as_i64().unwrap(),
            tier: out("tier")[i].as_str().unwrap().to_string(),
            degraded: out("degraded")[i].as_bool().unwrap(),
            macs: out("macs")[i].as_u64().unwrap(),
            probs: probs[i * classes..(i + 1) * classes].to_vec(),
        })
        .collect()
}

/// Same classes, exits, tiers, flags and MACs; probabilities equal to float rounding (JSON
/// prints them in decimal).
fn assert_same(what: &str, got: &[Answer], want: &[Answer]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            (g.class, g.exit, &g.tier, g.degraded, g.macs),
            (w.class, w.exit, &w.tier, w.degraded, w.macs),
            "{what}: sample {i}"
        );
        for (a, b) in g.probs.iter().zip(&w.probs) {
            assert!((a - b).abs() <= 1e-6, "{what}: sample {i}: {a} vs {b}");
        }
    }
}

fn fp32_input(values: &[f32], n: usize, raw: bool) -> (InferInputTensor, Option<Vec<u8>>) {
    let mut t = InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![n as i64, 1, 28, 28],
        ..Default::default()
    };
    if raw {
        return (t, Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    t.contents = Some(InferTensorContents {
        fp32_contents: values.to_vec(),
        ..Default::default()
    });
    (t, None)
}

fn bytes_input(files: &[Vec<u8>], raw: bool) -> (InferInputTensor, Option<Vec<u8>>) {
    let mut t = InferInputTensor {
        name: "input".into(),
        datatype: "BYTES".into(),
        shape: vec![files.len() as i64],
        ..Default::default()
    };
    if raw {
        let framed = files
            .iter()
            .flat_map(|f| (f.len() as u32).to_le_bytes().into_iter().chain(f.iter().copied()))
            .collect();
        return (t, Some(framed));
    }
    t.contents = Some(InferTensorContents {
        bytes_contents: files.to_vec(),
        ..Default::default()
    });
    (t, None)
}

fn infer_request(input: (InferInputTensor, Option<Vec<u8>>)) -> ModelInferRequest {
    ModelInferRequest {
        model_name: MODEL.into(),
        id: "req-1".into(),
        inputs: vec![input.0],
        raw_input_contents: input.1.into_iter().collect(),
        ..Default::default()
    }
}

/// The shared folder's 20 MNIST test PNGs (`../shared/data/samples/mnist_*.png`), in order.
fn mnist_samples() -> Vec<Vec<u8>> {
    let dir = std::env::var_os("EARLYEXIT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("../shared/data"))
        .join("samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (lay ../shared beside the clone)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("mnist_"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 20, "{}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// The v2 gRPC service (typed and raw, FP32 and BYTES) and the REST routes (FP32 and base64
/// BYTES) answer the 20 real MNIST sample PNGs exactly as the native `Classify` does; metadata,
/// liveness and readiness as the protocol defines them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs ../shared/data"]
async fn v2_grpc_and_rest_answer_the_mnist_samples_like_the_native_api() {
    let files = mnist_samples();
    let pixels: Vec<f32> = files
        .iter()
        .flat_map(|f| image::load_from_memory(f).unwrap().to_luma32f().into_raw())
        .collect();
    let s = serve("same", Some(&pixels), &[]);
    let native = TierClient::connect(&s.grpc, &ConnectOptions::default()).unwrap();
    let images = files
        .iter()
        .map(|f| proto::Image {
            input: Some(proto::image::Input::Encoded(f.clone())),
        })
        .collect();
    let want = native_answers(
        &native
            .classify(ClassifyRequest { images }, Duration::from_secs(30))
            .await
            .unwrap()
            .answers,
    );
    let exits: std::collections::BTreeSet<i64> = want.iter().map(|a| a.exit).collect();
    assert!(exits.len() >= 2, "the samples leave at more than one exit: {exits:?}");

    let mut client = v2_client(&s.grpc).await;
    for (what, input) in [
        ("BYTES typed", bytes_input(&files, false)),
        ("BYTES raw", bytes_input(&files, true)),
        ("FP32 typed", fp32_input(&pixels, 20, false)),
        ("FP32 raw", fp32_input(&pixels, 20, true)),
    ] {
        let raw = input.1.is_some();
        let r = client.model_infer(infer_request(input)).await.unwrap().into_inner();
        assert_eq!(
            (r.model_name.as_str(), r.model_version.as_str(), r.id.as_str()),
            (MODEL, "1", "req-1")
        );
        assert_eq!(
            r.raw_output_contents.is_empty(),
            !raw,
            "{what}: outputs mirror the inputs' form"
        );
        let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, earlyexit::serve::server::V2_OUTPUTS, "{what}");
        assert_same(&format!("gRPC {what}"), &grpc_answers(&r), &want);
    }
    // Asked for two outputs, it answers those two, in the order asked.
    let mut req = infer_request(fp32_input(&pixels, 20, false));
    req.outputs = ["exit", "class"]
        .map(|n| InferRequestedOutputTensor {
            name: n.into(),
            ..Default::default()
        })
        .into();
    let r = client.model_infer(req).await.unwrap().into_inner();
    let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["exit", "class"]);
    let exits: Vec<i64> = r.outputs[0].contents.as_ref().unwrap().int64_contents.clone();
    assert_eq!(exits, want.iter().map(|a| a.exit).collect::<Vec<_>>());

    // REST: nested FP32 data, and BYTES as base64.
    let nested: Vec<Vec<Vec<Vec<f32>>>> = pixels
        .chunks(784)
        .map(|img| vec![img.chunks(28).map(|row| row.to_vec()).collect()])
        .collect();
    let body = json!({"id": "r1", "inputs": [{"name": "input", "shape": [20, 1, 28, 28], "datatype": "FP32", "data": nested}]});
    let (status, r) = http(
        &s.http,
        "POST",
        &format!("/v2/models/{MODEL}/infer"),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!((r["model_name"].as_str(), r["id"].as_str()), (Some(MODEL), Some("r1")));
    assert_same("REST FP32", &rest_answers(&r), &want);
    let b64: Vec<String> = files
        .iter()
        .map(|f| base64::engine::general_purpose::STANDARD.encode(f))
        .collect();
    let body = json!({"inputs": [{"name": "input", "shape": [20], "datatype": "BYTES", "data": b64}]});
    let (status, r) = http(
        &s.http,
        "POST",
        &format!("/v2/models/{MODEL}/versions/1/infer"),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_same("REST BYTES", &rest_answers(&r), &want);

    // Metadata, liveness, readiness.
    let meta = client
        .model_metadata(v2::ModelMetadataRequest {
            name: MODEL.into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.inputs[0].shape, vec![-1, 1, 28, 28]);
    assert_eq!(meta.outputs[0].shape, vec![-1, 10]);
    assert!(
        meta.properties["implementation"].starts_with("compiled"),
        "{:?}",
        meta.properties
    );
    assert!(
        client
            .server_live(v2::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(v2::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = client
        .model_ready(v2::ModelReadyRequest {
            name: MODEL.into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready);
    let (status, m) = http(&s.http, "GET", &format!("/v2/models/{MODEL}"), None).await;
    assert_eq!(
        (status, m["inputs"][0]["datatype"].as_str()),
        (200, Some("FP32")),
        "{m}"
    );
    for (path, key) in [
        ("/v2/health/live".to_string(), "live"),
        ("/v2/health/ready".to_string(), "ready"),
        (format!("/v2/models/{MODEL}/ready"), "ready"),
    ] {
        let (status, r) = http(&s.http, "GET", &path, None).await;
        assert_eq!((status, r[key].as_bool()), (200, Some(true)), "{path}: {r}");
    }
    let (status, r) = http(&s.http, "GET", "/v2", None).await;
    assert_eq!((status, r["name"].as_str()), (200, Some("earlyexit")), "{r}");
}

/// Bad input on the v2 paths gets the protocol's codes with messages that name what is wrong,
/// and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_bad_input_gets_the_protocols_codes_and_the_server_keeps_serving() {
    let s = serve("bad", None, &["--max-request-bytes", "100000", "--max-samples", "20"]);
    let mut client = v2_client(&s.grpc).await;
    let good = vec![0.5f32; 784];
    let nan = {
        let mut v = good.clone();
        v[100] = f32::NAN;
        v
    };
    let inf = {
        let mut v = good.clone();
        v[3] = f32::INFINITY;
        v
    };
    let with = |f: &dyn Fn(&mut ModelInferRequest)| {
        let mut r = infer_request(fp32_input(&good, 1, false));
        f(&mut r);
        r
    };
    let cases: Vec<(&str, ModelInferRequest, Code, &str)> = vec![
        (
            "wrong datatype",
            with(&|r| r.inputs[0].datatype = "INT8".into()),
            Code::InvalidArgument,
            "datatype INT8",
        ),
        (
            "wrong shape",
            with(&|r| r.inputs[0].shape = vec![1, 1, 28, 27]),
            Code::InvalidArgument,
            "shape [1, 1, 28, 27]",
        ),
        (
            "missing input",
            with(&|r| r.inputs.clear()),
            Code::InvalidArgument,
            "exactly one input",
        ),
        (
            "unknown input",
            with(&|r| r.inputs[0].name = "pixels".into()),
            Code::InvalidArgument,
            "unknown input `pixels`",
        ),
        (
            "values for another shape",
            with(&|r| r.inputs[0].shape = vec![2, 1, 28, 28]),
            Code::InvalidArgument,
            "holds 784 values, not 1568",
        ),
        (
            "negative dimension",
            with(&|r| r.inputs[0].shape = vec![-1, 1, 28, 28]),
            Code::InvalidArgument,
            "not a tensor shape",
        ),
        (
            "unknown model",
            with(&|r| r.model_name = "resnet".into()),
            Code::NotFound,
            "model `resnet` is not served here",
        ),
        (
            "unknown version",
            with(&|r| r.model_version = "7".into()),
            Code::NotFound,
            "version 1 only",
        ),
        (
            "NaN pixel",
            infer_request(fp32_input(&nan, 1, false)),
            Code::InvalidArgument,
            "value 100 (image 0) is not finite",
        ),
        (
            "Inf pixel, raw",
            infer_request(fp32_input(&inf, 1, true)),
            Code::InvalidArgument,
            "value 3 (image 0) is not finite",
        ),
        (
            "too many samples",
            infer_request(fp32_input(&vec![0.5; 21 * 784], 21, true)),
            Code::InvalidArgument,
            "21 images",
        ),
        (
            "oversized",
            infer_request(fp32_input(&vec![0.5; 40 * 784], 40, true)),
            Code::InvalidArgument,
            "",
        ),
        (
            "unknown output",
            with(&|r| {
                r.outputs.push(InferRequestedOutputTensor {
                    name: "logits".into(),
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
            "unknown output `logits`",
        ),
        (
            "not an image",
            infer_request(bytes_input(&[b"not a png".to_vec()], false)),
            Code::InvalidArgument,
            "not a readable PNG or JPEG",
        ),
    ];
    for (what, req, code, text) in cases {
        let e = client.model_infer(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e:?}");
        assert!(e.message().contains(text), "{what}: {}", e.message());
    }
    let e = client
        .model_ready(v2::ModelReadyRequest {
            name: "resnet".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // REST: the same mistakes, the protocol's error object and HTTP statuses.
    let input = |shape: Value, datatype: &str, data: Value| {
        json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}).to_string()
    };
    let path = format!("/v2/models/{MODEL}/infer");
    let big = input(json!([40, 1, 28, 28]), "FP32", json!(vec![0.123456; 40 * 784]));
    for (what, p, body, status, text) in [
        (
            "wrong datatype",
            path.clone(),
            input(json!([1, 1, 28, 28]), "INT8", json!(good)),
            400,
            "datatype INT8",
        ),
        (
            "wrong shape",
            path.clone(),
            input(json!([1, 28, 28]), "FP32", json!(good)),
            400,
            "shape [1, 28, 28]",
        ),
        (
            "missing input",
            path.clone(),
            json!({"inputs": []}).to_string(),
            400,
            "exactly one input",
        ),
        (
            "unknown model",
            "/v2/models/resnet/infer".into(),
            input(json!([1, 1, 28, 28]), "FP32", json!(good)),
            404,
            "not served here",
        ),
        (
            "overflowing pixel",
            path.clone(),
            input(json!([1, 1, 28, 28]), "FP32", json!(vec![1e39; 784])),
            400,
            "not finite",
        ),
        ("not JSON", path.clone(), "{\"inputs\": [NaN]}".into(), 400, ""),
        ("oversized", path.clone(), big, 413, "exceeds 100000 bytes"),
        (
            "a string for a number",
            path.clone(),
            input(json!([1, 1, 28, 28]), "FP32", json!(["x"])),
            400,
            "not a number",
        ),
    ] {
        let (got, r) = http(&s.http, "POST", &p, Some(&body)).await;
        assert_eq!(got, status, "{what}: {r}");
        let message = r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error object: {r}"));
        assert!(message.contains(text), "{what}: {message}");
    }
    let (status, _) = http(&s.http, "GET", "/v2/models/resnet", None).await;
    assert_eq!(status, 404);

    // Still serving, on both paths.
    let r = client
        .model_infer(infer_request(fp32_input(&good, 1, false)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc_answers(&r).len(), 1);
    let (status, r) = http(
        &s.http,
        "POST",
        &path,
        Some(&input(json!([1, 1, 28, 28]), "FP32", json!(good))),
    )
    .await;
    assert_eq!((status, rest_answers(&r).len()), (200, 1), "{r}");
    let text = metrics_text(&s.http).await;
    assert_eq!(
        scrape(&text, "earlyexit_requests_total", &["rpc=\"infer\"", "code=\"OK\""]),
        2.0
    );
    assert!(
        scrape(
            &text,
            "earlyexit_requests_total",
            &["rpc=\"infer\"", "code=\"INVALID_ARGUMENT\""]
        ) >= 18.0
    );
}

async fn metrics_text(http_addr: &str) -> String {
    metrics_text_with(http_addr, "").await
}

/// `GET /metrics` with extra header lines (each ending in `\r\n`), the whole response as text.
async fn metrics_text_with(http_addr: &str, headers: &str) -> String {
    let mut sock = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).await.unwrap();
    text
}

/// On SIGTERM the server stops taking requests, tells a `grpc.health.v1` Watch stream
/// `NOT_SERVING`, answers every request it had accepted (native, v2 gRPC and REST, all waiting in
/// the batcher when the signal comes) and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_accepted_request_then_exits_zero() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    // Batches wait up to 3 s for company: the requests are still queued when SIGTERM comes.
    let mut s = serve(
        "drain",
        None,
        &[
            "--max-wait-ms",
            "3000",
            "--max-batch",
            "1024",
            "--drain-timeout-ms",
            "20000",
        ],
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let image = vec![0.25f32; 784];
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let native = TierClient::connect(&s.grpc, &ConnectOptions::default()).unwrap();
        let images = (0..16)
            .map(|_| earlyexit::serve::client::tensor_image(&image, [1, 28, 28], Default::default()))
            .collect();
        tasks.push(tokio::spawn(async move {
            native
                .classify(ClassifyRequest { images }, Duration::from_secs(30))
                .await
                .map(|r| r.answers.len())
                .map_err(|e| format!("native: {e:?}"))
        }));
    }
    for _ in 0..4 {
        let mut client = v2_client(&s.grpc).await;
        let values = image.repeat(16);
        tasks.push(tokio::spawn(async move {
            client
                .model_infer(infer_request(fp32_input(&values, 16, true)))
                .await
                .map(|r| grpc_answers(&r.into_inner()).len())
                .map_err(|e| format!("v2 gRPC: {e:?}"))
        }));
    }
    for _ in 0..2 {
        let addr = s.http.clone();
        let body = json!({"inputs": [{"name": "input", "shape": [16, 1, 28, 28], "datatype": "FP32", "data": image.repeat(16)}]});
        tasks.push(tokio::spawn(async move {
            let (status, r) = http(
                &addr,
                "POST",
                &format!("/v2/models/{MODEL}/infer"),
                Some(&body.to_string()),
            )
            .await;
            match status {
                200 => Ok(rest_answers(&r).len()),
                _ => Err(format!("REST: {status} {r}")),
            }
        }));
    }
    // Every request accepted (its samples counted) before the signal.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while scrape(&metrics_text(&s.http).await, "earlyexit_samples_total", &[]) < 160.0 {
        assert!(std::time::Instant::now() < until, "the 10 requests did not all arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "the requests must still be in flight at SIGTERM"
    );
    let pid = s._proc.child.id() as i32;
    // SAFETY: `kill` with a child's pid and a valid signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap();
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
    drop(watch);
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(16));
    }
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = s._proc.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < until,
            "the server did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// With a shared token, the v2 calls (gRPC and REST) and `/metrics` ask for it; the REST health
/// probes answer without it (as `grpc.health.v1` does), and a refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_v2_asks_for_it_but_the_health_probes_do_not() {
    let s = serve_with_token("token", None, &[], true);
    let body =
        json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": vec![0.5; 784]}]})
            .to_string();
    let infer = format!("/v2/models/{MODEL}/infer");
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    for (path, headers, status) in [
        (infer.as_str(), "", 401),
        (infer.as_str(), "Authorization: Bearer guess\r\n", 401),
        (infer.as_str(), bearer.as_str(), 200),
    ] {
        let (got, r) = http_with(&s.http, "POST", path, Some(&body), headers).await;
        assert_eq!(got, status, "{headers:?}: {r}");
    }
    for (path, status) in [
        ("/v2/health/live".to_string(), 200),
        ("/v2/health/ready".to_string(), 200),
        (format!("/v2/models/{MODEL}"), 401),
        (format!("/v2/models/{MODEL}/ready"), 401),
        ("/v2".to_string(), 401),
        ("/metrics".to_string(), 401),
    ] {
        let (got, r) = http(&s.http, "GET", &path, None).await;
        assert_eq!(got, status, "{path}: {r}");
    }
    let e = v2_client(&s.grpc)
        .await
        .model_infer(infer_request(fp32_input(&[0.5; 784], 1, false)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let text = metrics_text_with(&s.http, &bearer).await;
    assert_eq!(
        scrape(&text, "earlyexit_requests_total", &["code=\"UNAUTHENTICATED\""]),
        3.0,
        "{text}"
    );
    assert_eq!(
        scrape(&text, "earlyexit_requests_total", &["rpc=\"infer\"", "code=\"OK\""]),
        1.0
    );
}

//! The Open Inference Protocol's REST/JSON endpoints (axum), on the HTTP port beside
//! `GET /metrics`:
//!
//! | route | answer |
//! |---|---|
//! | `GET /v2` | server metadata |
//! | `GET /v2/health/live`, `GET /v2/health/ready` | `{"live": true}`; `{"ready": …}`, 503 while stopping |
//! | `GET /v2/models/{name}[/versions/1]` | model metadata |
//! | `GET /v2/models/{name}[/versions/1]/ready` | `{"name": …, "ready": …}`, 503 while stopping |
//! | `POST /v2/models/{name}[/versions/1]/infer` | inference |
//!
//! Tensor `data` is a flat or nested JSON array: numbers for `FP32`, and for `BYTES` strings that
//! hold base64 (standard alphabet) of the encoded image files, JSON having no bytes. Errors are
//! `{"error": "…"}` with 400 (bad request), 401 (token), 404 (model), 413 (body over the request
//! limit), 429 (queue full), 503 (stopping, next tier down) or 504 (deadline). With a shared
//! token every route but the two health probes asks for it (`Authorization: Bearer TOKEN`).

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{InputData, InputTensor, OutputData, V2, output_tensors, requested_outputs};
use crate::serve::error::ServeError;
use crate::serve::server::middleware::bearer_matches;

/// The HTTP status of a serving error.
fn http_status(e: &ServeError) -> StatusCode {
    use tonic::Code;
    match e.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The protocol's error object with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = (status, Json(json!({ "error": message.into() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    r
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        error(http_status(&self), self.to_string())
    }
}

/// A request input as JSON carries it.
#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

/// A requested output.
#[derive(Deserialize)]
struct OutputJson {
    name: String,
}

/// `$inference_request`. `parameters` (of the request, its inputs and outputs) are accepted and
/// not used: this server has none.
#[derive(Deserialize)]
struct InferJson {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

/// `$response_output`.
#[derive(Serialize)]
struct OutputTensorJson {
    name: &'static str,
    shape: Vec<i64>,
    datatype: &'static str,
    data: Value,
}

/// Every leaf of a flat or nested JSON array, in row-major order.
fn leaves<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
        leaf => out.push(leaf),
    }
}

/// The values of a JSON input, as its datatype reads them (another datatype is left unread for
/// [`V2::job_input`] to name).
fn input_tensor(t: InputJson) -> Result<InputTensor, ServeError> {
    let mut flat = Vec::new();
    leaves(&t.data, &mut flat);
    let data = match t.datatype.as_str() {
        "FP32" => InputData::Fp32(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64().map(|x| x as f32).ok_or_else(|| {
                        ServeError::invalid(format!("`{}` data element {i} is {v}, not a number", t.name))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        "BYTES" => InputData::Bytes(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    let s = v.as_str().ok_or_else(|| {
                        ServeError::invalid(format!("`{}` data element {i} is {v}, not a string of base64", t.name))
                    })?;
                    base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|e| ServeError::invalid(format!("`{}` data element {i} is not base64: {e}", t.name)))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => InputData::NotTaken,
    };
    Ok(InputTensor {
        name: t.name,
        datatype: t.datatype,
        shape: t.shape,
        data,
    })
}

fn output_json(data: OutputData) -> Value {
    match data {
        OutputData::Fp32(v) => json!(v),
        OutputData::Int64(v) => json!(v),
        OutputData::Uint64(v) => json!(v),
        OutputData::Bool(v) => json!(v),
        OutputData::Bytes(v) => json!(v),
    }
}

/// The router state: the protocol's view of the server and the shared token.
#[derive(Clone)]
struct Rest {
    v2: V2,
    token: Option<std::sync::Arc<[u8]>>,
}

impl Rest {
    /// The 401 answer when the server has a token and `headers` do not carry it.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        match &self.token {
            Some(t) if !bearer_matches(t, headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) => Some(error(
                StatusCode::UNAUTHORIZED,
                "the shared token is required: Authorization: Bearer TOKEN",
            )),
            _ => None,
        }
    }

    fn ready_status(&self) -> StatusCode {
        if self.v2.ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// A model path: `{name}` or `{name}/versions/{version}`.
#[derive(Deserialize)]
struct ModelPath {
    name: String,
    #[serde(default)]
    version: String,
}

async fn live() -> Response {
    Json(json!({ "live": true })).into_response()
}

async fn ready(State(s): State<Rest>) -> Response {
    (s.ready_status(), Json(json!({ "ready": s.v2.ready() }))).into_response()
}

async fn server_metadata(State(s): State<Rest>, headers: HeaderMap) -> Response {
    if let Some(r) = s.refusal(&headers) {
        return r;
    }
    Json(json!({ "name": "earlyexit", "version": env!("CARGO_PKG_VERSION"), "extensions": [] })).into_response()
}

async fn model_metadata(State(s): State<Rest>, Path(p): Path<ModelPath>, headers: HeaderMap) -> Response {
    if let Some(r) = s.refusal(&headers) {
        return r;
    }
    if let Err(e) = s.v2.check_model(&p.name, &p.version) {
        return e.into_response();
    }
    let m = s.v2.metadata();
    let tensors = |ts: Vec<super::TensorMeta>| -> Vec<Value> {
        ts.into_iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
            .collect()
    };
    let properties: serde_json::Map<String, Value> = m
        .properties
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    Json(json!({
        "name": m.name,
        "versions": [super::VERSION],
        "platform": m.platform,
        "inputs": tensors(m.inputs),
        "outputs": tensors(m.outputs),
        "parameters": properties,
    }))
    .into_response()
}

async fn model_ready(State(s): State<Rest>, Path(p): Path<ModelPath>, headers: HeaderMap) -> Response {
    if let Some(r) = s.refusal(&headers) {
        return r;
    }
    if let Err(e) = s.v2.check_model(&p.name, &p.version) {
        return e.into_response();
    }
    (s.ready_status(), Json(json!({ "name": p.name, "ready": s.v2.ready() }))).into_response()
}

async fn infer(
    State(s): State<Rest>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Result<Json<InferJson>, JsonRejection>,
) -> Response {
    let t0 = Instant::now();
    if let Some(r) = s.refusal(&headers) {
        s.v2.0
            .metrics
            .request("any", "UNAUTHENTICATED", std::time::Duration::ZERO);
        return r;
    }
    let deadline = t0 + s.v2.0.opts.default_deadline;
    // A body over the limit (413) or not the protocol's JSON (400, 415, 422) is answered with
    // axum's status and the protocol's error object.
    let req = match body {
        Ok(Json(req)) => req,
        Err(e) => {
            s.v2.0.metrics.request("infer", "INVALID_ARGUMENT", t0.elapsed());
            let message = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => format!(
                    "the request body exceeds {} bytes (--max-request-bytes)",
                    s.v2.0.opts.limits.max_request_bytes
                ),
                _ => e.body_text(),
            };
            return error(e.status(), message);
        }
    };
    let mut names = Vec::new();
    let id = req.id;
    let input =
        s.v2.check_model(&p.name, &p.version)
            .and_then(|()| {
                names = requested_outputs(req.outputs.into_iter().map(|o| o.name).collect())?;
                req.inputs.into_iter().map(input_tensor).collect::<Result<Vec<_>, _>>()
            })
            .and_then(|inputs| s.v2.job_input(inputs));
    let answers = match s.v2.service().answer("infer", input, deadline, t0).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let outputs: Vec<OutputTensorJson> = output_tensors(&answers, s.v2.0.rules.classes, &names)
        .into_iter()
        .map(|t| OutputTensorJson {
            name: t.name,
            shape: t.shape,
            datatype: t.datatype,
            data: output_json(t.data),
        })
        .collect();
    let mut body = json!({
        "model_name": p.name,
        "model_version": super::VERSION,
        "outputs": outputs,
    });
    if let Some(id) = id {
        body["id"] = Value::String(id);
    }
    Json(body).into_response()
}

/// The REST routes over `v2`, asking for `token` where there is one; request bodies are limited
/// to the server's request size.
pub(in crate::serve::server) fn routes(v2: V2, token: Option<std::sync::Arc<[u8]>>) -> Router {
    let limit = v2.0.opts.limits.max_request_bytes;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Rest { v2, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_read_the_same_and_bad_elements_are_named() {
        let t = |datatype: &str, data: Value| InputJson {
            name: "input".into(),
            shape: vec![1, 2, 2],
            datatype: datatype.into(),
            data,
        };
        let flat = input_tensor(t("FP32", json!([1, 2.5, 3, 4]))).unwrap();
        let nested = input_tensor(t("FP32", json!([[[1, 2.5], [3, 4]]]))).unwrap();
        for x in [flat, nested] {
            assert!(matches!(x.data, InputData::Fp32(v) if v == [1.0, 2.5, 3.0, 4.0]));
        }
        let e = input_tensor(t("FP32", json!([1, "a"]))).err().unwrap().to_string();
        assert!(e.contains("element 1 is \"a\", not a number"), "{e}");
        let b = input_tensor(t("BYTES", json!(["aGk="]))).unwrap();
        assert!(matches!(b.data, InputData::Bytes(v) if v == [b"hi".to_vec()]));
        let e = input_tensor(t("BYTES", json!(["***"]))).err().unwrap().to_string();
        assert!(e.contains("element 0 is not base64"), "{e}");
    }

    #[test]
    fn errors_map_to_http_statuses() {
        for (e, status) in [
            (ServeError::invalid("x"), 400),
            (ServeError::NotFound("m".into()), 404),
            (ServeError::ResourceExhausted("full".into()), 429),
            (ServeError::DeadlineExceeded("late".into()), 504),
            (ServeError::Unavailable("down".into()), 503),
        ] {
            assert_eq!(http_status(&e).as_u16(), status, "{e}");
        }
    }
}

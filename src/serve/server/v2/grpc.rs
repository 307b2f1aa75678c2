//! `inference.GRPCInferenceService` (the Open Inference Protocol over gRPC), on the same port,
//! token check and message limit as the native API.
//!
//! Tensor contents come typed (`contents.fp32_contents`, `contents.bytes_contents`) or raw
//! (`raw_input_contents`: little-endian FP32; BYTES elements each after a 4-byte little-endian
//! length, as Triton and KServe clients write them). The answer mirrors the request: raw outputs
//! (`raw_output_contents`) to a raw request, typed contents otherwise.

use std::collections::HashMap;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::{InputData, InputTensor, OutputData, OutputTensor, V2, output_tensors, requested_outputs};
use crate::serve::error::{ServeError, ServeResult};
use crate::serve::proto::inference::grpc_inference_service_server::GrpcInferenceService;
use crate::serve::proto::inference::model_infer_request::InferInputTensor;
use crate::serve::proto::inference::model_infer_response::InferOutputTensor;
use crate::serve::proto::inference::model_metadata_response::TensorMetadata;
use crate::serve::proto::inference::{self as pb, InferTensorContents};
use crate::serve::server::service::deadline_of;

/// Splits raw BYTES contents (`<u32 LE length><bytes>` per element) into elements.
fn split_raw_bytes(mut raw: &[u8], name: &str) -> ServeResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err(ServeError::invalid(format!(
                "raw BYTES contents of `{name}` end inside a 4-byte length prefix"
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(ServeError::invalid(format!(
                "raw BYTES contents of `{name}`: element {} declares {len} bytes, {} remain",
                out.len(),
                rest.len()
            )));
        }
        out.push(rest[..len].to_vec());
        raw = &rest[len..];
    }
    Ok(out)
}

/// One input tensor with its values, from typed contents or from its raw bytes.
fn input_tensor(t: InferInputTensor, raw: Option<Vec<u8>>) -> ServeResult<InputTensor> {
    let data = match (t.datatype.as_str(), raw) {
        ("FP32", Some(raw)) => {
            if raw.len() % 4 != 0 {
                return Err(ServeError::invalid(format!(
                    "raw FP32 contents of `{}` are {} bytes, not a multiple of 4",
                    t.name,
                    raw.len()
                )));
            }
            InputData::Fp32(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect(),
            )
        }
        ("BYTES", Some(raw)) => InputData::Bytes(split_raw_bytes(&raw, &t.name)?),
        ("FP32", None) => InputData::Fp32(t.contents.map(|c| c.fp32_contents).unwrap_or_default()),
        ("BYTES", None) => InputData::Bytes(t.contents.map(|c| c.bytes_contents).unwrap_or_default()),
        _ => InputData::NotTaken,
    };
    Ok(InputTensor {
        name: t.name,
        datatype: t.datatype,
        shape: t.shape,
        data,
    })
}

/// The request's inputs, raw contents matched to inputs by position.
fn inputs_of(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ServeResult<Vec<InputTensor>> {
    if raw.is_empty() {
        return inputs.into_iter().map(|t| input_tensor(t, None)).collect();
    }
    if raw.len() != inputs.len() {
        return Err(ServeError::invalid(format!(
            "{} raw_input_contents for {} inputs; give one per input, or typed contents",
            raw.len(),
            inputs.len()
        )));
    }
    if let Some(t) = inputs.iter().find(|t| t.contents.is_some()) {
        return Err(ServeError::invalid(format!(
            "input `{}` has typed contents in a request with raw_input_contents; use one or the other",
            t.name
        )));
    }
    inputs
        .into_iter()
        .zip(raw)
        .map(|(t, r)| input_tensor(t, Some(r)))
        .collect()
}

/// An output tensor's values as raw little-endian bytes.
fn raw_output(data: &OutputData) -> Vec<u8> {
    match data {
        OutputData::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        OutputData::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        OutputData::Uint64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        OutputData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        OutputData::Bytes(v) => v
            .iter()
            .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
            .collect(),
    }
}

/// An output tensor's values as typed contents.
fn typed_output(data: OutputData) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match data {
        OutputData::Fp32(v) => c.fp32_contents = v,
        OutputData::Int64(v) => c.int64_contents = v,
        OutputData::Uint64(v) => c.uint64_contents = v,
        OutputData::Bool(v) => c.bool_contents = v,
        OutputData::Bytes(v) => c.bytes_contents = v.into_iter().map(String::into_bytes).collect(),
    }
    c
}

fn meta(t: super::TensorMeta) -> TensorMetadata {
    TensorMetadata {
        name: t.name.into(),
        datatype: t.datatype.into(),
        shape: t.shape,
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for V2 {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        self.check_model(&r.name, &r.version)?;
        Ok(Response::new(pb::ModelReadyResponse { ready: self.ready() }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "earlyexit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        self.check_model(&r.name, &r.version)?;
        let m = self.metadata();
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: vec![super::VERSION.into()],
            platform: m.platform.into(),
            inputs: m.inputs.into_iter().map(meta).collect(),
            outputs: m.outputs.into_iter().map(meta).collect(),
            properties: m
                .properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<HashMap<_, _>>(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let t0 = Instant::now();
        let deadline = deadline_of(&request, self.0.opts.default_deadline, t0);
        let r = request.into_inner();
        let raw = !r.raw_input_contents.is_empty();
        let mut names = Vec::new();
        let input = self
            .check_model(&r.model_name, &r.model_version)
            .and_then(|()| {
                names = requested_outputs(r.outputs.into_iter().map(|o| o.name).collect())?;
                inputs_of(r.inputs, r.raw_input_contents)
            })
            .and_then(|inputs| self.job_input(inputs));
        let answers = self.service().answer("infer", input, deadline, t0).await?;
        let tensors = output_tensors(&answers, self.0.rules.classes, &names);
        let mut raw_output_contents = Vec::new();
        let outputs = tensors
            .into_iter()
            .map(|t: OutputTensor| {
                let contents = if raw {
                    raw_output_contents.push(raw_output(&t.data));
                    None
                } else {
                    Some(typed_output(t.data))
                };
                InferOutputTensor {
                    name: t.name.into(),
                    datatype: t.datatype.into(),
                    shape: t.shape,
                    parameters: HashMap::new(),
                    contents,
                }
            })
            .collect();
        Ok(Response::new(pb::ModelInferResponse {
            model_name: r.model_name,
            model_version: super::VERSION.into(),
            id: r.id,
            parameters: HashMap::new(),
            outputs,
            raw_output_contents,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_elements_are_length_prefixed() {
        let mut raw = Vec::new();
        for e in [&b"png1"[..], b"", b"xyz"] {
            raw.extend((e.len() as u32).to_le_bytes());
            raw.extend(e);
        }
        let got = split_raw_bytes(&raw, "input").unwrap();
        assert_eq!(got, vec![b"png1".to_vec(), vec![], b"xyz".to_vec()]);
        let e = split_raw_bytes(&raw[..raw.len() - 1], "input").unwrap_err().to_string();
        assert!(e.contains("element 2 declares 3 bytes, 2 remain"), "{e}");
        let e = split_raw_bytes(&[1, 0], "input").unwrap_err().to_string();
        assert!(e.contains("inside a 4-byte length prefix"), "{e}");
        // Outputs written raw read back with the same framing.
        let out = raw_output(&OutputData::Bytes(vec!["edge".into(), String::new()]));
        assert_eq!(split_raw_bytes(&out, "tier").unwrap(), vec![b"edge".to_vec(), vec![]]);
    }

    #[test]
    fn raw_contents_must_match_the_inputs() {
        let t = |name: &str| InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            ..Default::default()
        };
        let e = inputs_of(vec![t("a"), t("b")], vec![vec![0; 8]])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("1 raw_input_contents for 2 inputs"), "{e}");
        let e = inputs_of(vec![t("a")], vec![vec![0; 7]]).err().unwrap().to_string();
        assert!(e.contains("7 bytes, not a multiple of 4"), "{e}");
        let ok = inputs_of(vec![t("a")], vec![1.5f32.to_le_bytes().repeat(2)]).unwrap();
        assert!(matches!(&ok[0].data, InputData::Fp32(v) if v == &[1.5, 1.5]));
    }
}

//! The Open Inference Protocol ("KServe v2") beside the native API, over the same queue, engine
//! and limits: [`grpc`] serves `inference.GRPCInferenceService` on the gRPC port, [`rest`] its
//! REST/JSON twin on the HTTP port. This module is what both share: the model's one input and
//! its outputs, the checks of a request's tensors, and the answers as output tensors.
//!
//! The model takes one input, `input`: `FP32` images `[N, C, H, W]` (as `Classify` takes
//! tensors: already normalised), or `BYTES` `[N]` of encoded PNG/JPEG files (scaled to [0, 1] and
//! normalised as the training run did). It answers, per sample, `probabilities` `FP32
//! [N, classes]` and the early-exit facts: `class` `INT64`, `exit` `INT64`, `tier` `BYTES`,
//! `confidence` `FP32`, `macs` `UINT64`, `degraded` `BOOL` and `reason` `BYTES` (why it is
//! degraded; empty otherwise), each `[N]`.

pub(super) mod grpc;
pub(super) mod rest;

use std::sync::Arc;

use super::service::Shared;
use crate::serve::error::{ServeError, ServeResult};
use crate::serve::proto;
use crate::serve::tier::JobInput;

/// The name of the model's one input tensor.
pub const INPUT: &str = "input";

/// The output tensors, in the order a request without `outputs` gets them.
pub const OUTPUTS: [&str; 8] = [
    "probabilities",
    "class",
    "exit",
    "tier",
    "confidence",
    "macs",
    "degraded",
    "reason",
];

/// The one version of a served model (`/v2/models/{name}/versions/1`).
pub const VERSION: &str = "1";

/// Values of an input tensor, as either transport decoded them.
pub(super) enum InputData {
    /// `FP32` values, row-major.
    Fp32(Vec<f32>),
    /// `BYTES` elements: encoded image files.
    Bytes(Vec<Vec<u8>>),
    /// A datatype this model does not take: its values are not read, and
    /// [`V2::job_input`] refuses it by name.
    NotTaken,
}

/// An input tensor of an inference request.
pub(super) struct InputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: InputData,
}

/// Values of an output tensor.
#[derive(Debug, PartialEq)]
pub(super) enum OutputData {
    Fp32(Vec<f32>),
    Int64(Vec<i64>),
    Uint64(Vec<u64>),
    Bool(Vec<bool>),
    Bytes(Vec<String>),
}

/// An output tensor of an inference response.
#[derive(Debug, PartialEq)]
pub(super) struct OutputTensor {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
    pub data: OutputData,
}

/// A tensor's name, datatype and shape (`-1`: any size), as model metadata lists them.
pub(super) struct TensorMeta {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// What the model takes and answers, for `ModelMetadata`.
pub(super) struct ModelMeta {
    pub name: String,
    pub platform: &'static str,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
    /// Extra facts (model id, tier, policy, what answers), as `properties`.
    pub properties: Vec<(&'static str, String)>,
}

/// The protocol's view of one server.
#[derive(Clone)]
pub(super) struct V2(pub(super) Arc<Shared>);

/// The number of elements of `shape`, when every dimension is non-negative and the product fits.
fn element_count(shape: &[i64]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
}

impl V2 {
    /// The native service over the same state: its queue and metrics answer v2 calls too.
    pub(super) fn service(&self) -> super::service::Svc {
        super::service::Svc(self.0.clone())
    }

    /// Whether the server takes requests (false while it stops).
    pub(super) fn ready(&self) -> bool {
        self.0.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Checks that `name` (and `version`, if given) is the model served here.
    pub(super) fn check_model(&self, name: &str, version: &str) -> ServeResult<()> {
        let served = &self.0.opts.model_name;
        if name != served {
            return Err(ServeError::NotFound(format!(
                "model `{name}` is not served here; this server serves `{served}`"
            )));
        }
        if !version.is_empty() && version != VERSION {
            return Err(ServeError::NotFound(format!(
                "model `{name}` has version {VERSION} only, not `{version}`"
            )));
        }
        Ok(())
    }

    /// The model's input and outputs.
    pub(super) fn metadata(&self) -> ModelMeta {
        let s = &self.0;
        let i = s.rules.input;
        let classes = s.rules.classes as i64;
        let out = |name, datatype, shape: Vec<i64>| TensorMeta { name, datatype, shape };
        ModelMeta {
            name: s.opts.model_name.clone(),
            platform: "earlyexit",
            inputs: vec![out(INPUT, "FP32", vec![-1, i.c as i64, i.h as i64, i.w as i64])],
            outputs: vec![
                out("probabilities", "FP32", vec![-1, classes]),
                out("class", "INT64", vec![-1]),
                out("exit", "INT64", vec![-1]),
                out("tier", "BYTES", vec![-1]),
                out("confidence", "FP32", vec![-1]),
                out("macs", "UINT64", vec![-1]),
                out("degraded", "BOOL", vec![-1]),
                out("reason", "BYTES", vec![-1]),
            ],
            properties: vec![
                ("model_id", s.rules.model_id.clone()),
                ("tier", s.rules.name.clone()),
                ("stages", format!("{}..{}", s.rules.range.start, s.rules.range.end)),
                ("policy", s.rules.policy.to_string()),
                ("implementation", s.implementation.clone()),
                (
                    "bytes_input",
                    format!("{INPUT}: BYTES [-1] of encoded PNG or JPEG files"),
                ),
            ],
        }
    }

    /// Checks the request's tensors against the model and turns them into a job: exactly one
    /// input, named [`INPUT`], `FP32 [N, C, H, W]` or `BYTES [N]`, its values matching its shape.
    pub(super) fn job_input(&self, inputs: Vec<InputTensor>) -> ServeResult<JobInput> {
        let s = &self.0;
        let i = s.rules.input;
        let takes = format!("FP32 [N, {}, {}, {}] or BYTES [N] (encoded PNG/JPEG)", i.c, i.h, i.w);
        let mut inputs = inputs.into_iter();
        let (Some(t), None) = (inputs.next(), inputs.next()) else {
            return Err(ServeError::invalid(format!(
                "the request must hold exactly one input, `{INPUT}`: {takes}"
            )));
        };
        if t.name != INPUT {
            return Err(ServeError::invalid(format!(
                "unknown input `{}`; this model takes one input, `{INPUT}`: {takes}",
                t.name
            )));
        }
        let count = element_count(&t.shape)
            .ok_or_else(|| ServeError::invalid(format!("input shape {:?} is not a tensor shape", t.shape)))?;
        match (t.datatype.as_str(), t.data) {
            ("FP32", InputData::Fp32(x)) => {
                let dims_ok = t.shape.len() == 4 && t.shape[1..] == [i.c as i64, i.h as i64, i.w as i64];
                if !dims_ok {
                    return Err(ServeError::invalid(format!(
                        "input `{INPUT}` has shape {:?}; this model takes {takes}",
                        t.shape
                    )));
                }
                if x.len() != count {
                    return Err(ServeError::invalid(format!(
                        "input `{INPUT}` of shape {:?} holds {} values, not {count}",
                        t.shape,
                        x.len()
                    )));
                }
                s.rules.tensor_batch_input(x, t.shape[0] as usize)
            }
            ("BYTES", InputData::Bytes(files)) => {
                let dims_ok = matches!(t.shape.as_slice(), [_] | [_, 1]);
                if !dims_ok || files.len() != count {
                    return Err(ServeError::invalid(format!(
                        "input `{INPUT}` of shape {:?} holds {} elements; BYTES input is [N] encoded files",
                        t.shape,
                        files.len()
                    )));
                }
                let images = files
                    .into_iter()
                    .map(|f| proto::Image {
                        input: Some(proto::image::Input::Encoded(f)),
                    })
                    .collect();
                s.rules.classify_input(proto::ClassifyRequest { images })
            }
            (other, _) => Err(ServeError::invalid(format!(
                "input `{INPUT}` has datatype {other}; this model takes {takes}"
            ))),
        }
    }
}

/// Checks the names of the outputs a request asks for (none: every output, in [`OUTPUTS`]
/// order) and returns them.
pub(super) fn requested_outputs(names: Vec<String>) -> ServeResult<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(OUTPUTS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            OUTPUTS.iter().copied().find(|o| o == n).ok_or_else(|| {
                ServeError::invalid(format!(
                    "unknown output `{n}`; this model answers {}",
                    OUTPUTS.join(", ")
                ))
            })
        })
        .collect()
}

/// The answers as the output tensors `names` (checked by [`requested_outputs`]).
pub(super) fn output_tensors(answers: &[proto::Answer], classes: usize, names: &[&'static str]) -> Vec<OutputTensor> {
    let n = answers.len() as i64;
    names
        .iter()
        .map(|&name| {
            let per_sample = |datatype, data| OutputTensor {
                name,
                datatype,
                shape: vec![n],
                data,
            };
            let strings = |f: fn(&proto::Answer) -> &str| answers.iter().map(|a| f(a).to_string()).collect();
            match name {
                "probabilities" => OutputTensor {
                    name,
                    datatype: "FP32",
                    shape: vec![n, classes as i64],
                    data: OutputData::Fp32(answers.iter().flat_map(|a| a.probs.iter().copied()).collect()),
                },
                "class" => per_sample(
                    "INT64",
                    OutputData::Int64(answers.iter().map(|a| a.class.into()).collect()),
                ),
                "exit" => per_sample(
                    "INT64",
                    OutputData::Int64(answers.iter().map(|a| a.exit.into()).collect()),
                ),
                "tier" => per_sample("BYTES", OutputData::Bytes(strings(|a| &a.tier))),
                "confidence" => per_sample("FP32", OutputData::Fp32(answers.iter().map(|a| a.confidence).collect())),
                "macs" => per_sample("UINT64", OutputData::Uint64(answers.iter().map(|a| a.macs).collect())),
                "degraded" => per_sample("BOOL", OutputData::Bool(answers.iter().map(|a| a.degraded).collect())),
                "reason" => per_sample("BYTES", OutputData::Bytes(strings(|a| &a.reason))),
                other => unreachable!("output `{other}` passed requested_outputs"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_checked_by_name_and_carry_every_answer() {
        assert_eq!(requested_outputs(vec![]).unwrap(), OUTPUTS.to_vec());
        assert_eq!(
            requested_outputs(vec!["exit".into(), "class".into()]).unwrap(),
            vec!["exit", "class"]
        );
        let e = requested_outputs(vec!["logits".into()]).unwrap_err().to_string();
        assert!(
            e.contains("unknown output `logits`") && e.contains("probabilities, class"),
            "{e}"
        );
        let answers = vec![
            proto::Answer {
                class: 3,
                probs: vec![0.1, 0.9],
                exit: 1,
                tier: "edge".into(),
                confidence: 0.9,
                macs: 1000,
                ..Default::default()
            },
            proto::Answer {
                class: 0,
                probs: vec![0.6, 0.4],
                exit: 2,
                tier: "cloud".into(),
                degraded: true,
                reason: "late".into(),
                ..Default::default()
            },
        ];
        let t = output_tensors(&answers, 2, &OUTPUTS);
        assert_eq!(t[0].shape, vec![2, 2]);
        assert_eq!(t[0].data, OutputData::Fp32(vec![0.1, 0.9, 0.6, 0.4]));
        assert_eq!(t[1].data, OutputData::Int64(vec![3, 0]));
        assert_eq!(t[2].data, OutputData::Int64(vec![1, 2]));
        assert_eq!(t[3].data, OutputData::Bytes(vec!["edge".into(), "cloud".into()]));
        assert_eq!(t[5].data, OutputData::Uint64(vec![1000, 0]));
        assert_eq!(t[6].data, OutputData::Bool(vec![false, true]));
        assert_eq!(t[7].data, OutputData::Bytes(vec![String::new(), "late".into()]));
    }

    #[test]
    fn element_counts_refuse_negative_and_overflowing_shapes() {
        assert_eq!(element_count(&[2, 1, 28, 28]), Some(1568));
        assert_eq!(element_count(&[-1, 3]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
        assert_eq!(element_count(&[]), Some(1));
    }
}

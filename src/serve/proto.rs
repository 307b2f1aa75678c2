//! Code generated from `proto/earlyexit.proto` (package `earlyexit.v1`): messages, the
//! `EarlyExit` server trait and client.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("earlyexit.v1");

/// Code generated from the vendored Open Inference Protocol (`proto/open_inference_grpc.proto`,
/// package `inference`, Apache-2.0): the `GRPCInferenceService` server trait, its client and
/// messages, as KServe, Triton and Seldon clients send them.
pub mod inference {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("inference");
}

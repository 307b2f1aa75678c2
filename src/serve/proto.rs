//! Code generated from `proto/earlyexit.proto` (package `earlyexit.v1`): messages, the
//! `EarlyExit` server trait and client.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("earlyexit.v1");

//! Serving early-exit networks over gRPC, whole or split across tiers (device → edge → cloud).
//!
//! - [`server::start`] serves a model, or a slice of its stages ([`tier::TierOptions`]), with
//!   dynamic batching ([`batcher`]) and per-sample exits inside each batch;
//! - a tier forwards the samples none of its exits takes to the next tier as activations
//!   ([`codec`]: f32 or f16, optionally lz4 or zstd), and answers `degraded` from the most
//!   confident exit reached when the next tier is down or late ([`tier`]), at once while a
//!   [`breaker`] knows it is down;
//! - [`client`] classifies files or tensors and generates bounded load;
//! - [`plan`] chooses split points from exit rates, tier speeds and link costs;
//! - [`metrics`] keeps Prometheus counters and histograms.
//!
//! The API is `proto/earlyexit.proto` ([`proto`]). Status codes: malformed, oversized or
//! wrong-shape requests `INVALID_ARGUMENT`; a full queue `RESOURCE_EXHAUSTED`; a missing or
//! wrong token `UNAUTHENTICATED`; past the deadline `DEADLINE_EXCEEDED`.

pub mod batcher;
pub mod breaker;
pub mod client;
pub mod codec;
mod error;
pub mod metrics;
pub mod plan;
pub mod proto;
pub mod server;
pub mod tier;

pub use error::{ServeError, ServeResult};

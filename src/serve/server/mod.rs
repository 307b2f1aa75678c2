//! The server of a tier (or of the whole model), by concern: [`RequestRules`] validates
//! requests where they are decoded, `service` queues them (the native `EarlyExit` API), `v2`
//! speaks the Open Inference Protocol over gRPC and REST, `middleware` checks the token and maps
//! oversized messages, `http` serves the REST routes and `/metrics` over plain HTTP, and
//! `startup` binds, starts the model worker and stops it.

mod http;
mod middleware;
mod request;
mod service;
mod startup;
mod v2;

pub use request::RequestRules;
pub use service::parse_grpc_timeout;
pub(crate) use startup::check_token;
pub use startup::{NetOptions, Served, load_for_serving, model_id, run_blocking, start};
pub use v2::{INPUT as V2_INPUT, OUTPUTS as V2_OUTPUTS};

//! The gRPC server of a tier (or of the whole model), by concern: [`RequestRules`] validates
//! requests where they are decoded, `service` queues them, `middleware` checks the token and maps oversized messages,
//! `metrics_http` serves `/metrics` over plain HTTP, and `startup` binds, starts the model
//! worker and stops it.

mod metrics_http;
mod middleware;
mod request;
mod service;
mod startup;

pub use request::RequestRules;
pub use service::parse_grpc_timeout;
pub(crate) use startup::check_token;
pub use startup::{NetOptions, Served, load_for_serving, model_id, run_blocking, start};

//! Inference: exit policies and the early-exit engine.

mod engine;
mod policy;

pub use engine::*;
pub use policy::*;

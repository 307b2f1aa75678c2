//! Models in from and out to the tools users already have: PyTorch checkpoints of the zoo's
//! networks in ([`import_torch`]), with the layer-by-layer name table both directions share
//! ([`names`]).

mod import;
pub mod names;

pub use import::{ImportSpec, Imported, import_torch, resolve_arch};

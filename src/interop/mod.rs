//! Models in from and out to the tools users already have: PyTorch checkpoints of the zoo's
//! networks in ([`import_torch`]), with the layer-by-layer name table ([`names`]); the cascade out
//! as ONNX graphs per stage and per exit with a manifest ([`export_onnx`]), and for PyTorch as
//! safetensors with a self-contained Python module ([`export_torch`]).

mod export;
mod import;
pub mod names;
mod onnx;
mod torch;

pub use export::{ExitEntry, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, NormalizeEntry, StageEntry, export_onnx};
pub use import::{ImportSpec, Imported, import_torch, resolve_arch};
pub use onnx::{OPSET, onnx_graphs};
pub use torch::{
    TORCH_ARCHITECTURE_FILE, TORCH_MODULE_FILE, TORCH_WEIGHTS_FILE, TorchExport, export_torch, load_torch_export,
};

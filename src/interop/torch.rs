//! PyTorch out and back: `earlyexit export --format torch`.
//!
//! The folder holds `model.safetensors` with PyTorch's conventions (our module paths without
//! enum variants, BatchNorm's `weight`/`bias`, linear weights `[out, in]`; burn-store's
//! `BurnToPyTorchAdapter` does the conversion), `architecture.json` (the resolved architecture,
//! the policy and the input normalisation) and `earlyexit_model.py`, a self-contained PyTorch
//! module that rebuilds the network with its exits from `architecture.json`, loads the weights
//! and applies the policy with real per-sample exits. [`load_torch_export`] reads the folder back
//! (the round trip is bit-identical).

use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::export::{NormalizeEntry, write_folder};
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::infer::MultiExitModel;
use crate::model::io::write_atomic;
use crate::model::{Architecture, ModelDescription};
use crate::policy::Policy;

/// The weights file of a PyTorch export.
pub const TORCH_WEIGHTS_FILE: &str = "model.safetensors";
/// The architecture file of a PyTorch export.
pub const TORCH_ARCHITECTURE_FILE: &str = "architecture.json";
/// The Python module of a PyTorch export.
pub const TORCH_MODULE_FILE: &str = "earlyexit_model.py";

const TORCH_MODULE: &str = include_str!("earlyexit_model.py");

/// `architecture.json`: what the Python module rebuilds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TorchExport {
    /// The description (what `model.json` holds).
    pub description: ModelDescription,
    /// The resolved architecture: every block's spec and shapes, the cuts and the heads.
    pub architecture: Architecture,
    /// The exit policy.
    pub policy: Policy,
    /// Input normalisation (pixels in `[0, 1]`, then `(v − mean) / std`), when trained with one.
    pub normalize: Option<NormalizeEntry>,
}

/// Writes `model` for PyTorch into the new folder `out` (see the module documentation).
///
/// ```no_run
/// use burn::tensor::Device;
/// use earlyexit::infer::MultiExitModel;
/// use earlyexit::interop::{export_torch, load_torch_export};
///
/// let model = MultiExitModel::load("runs/resnet20a-heads".as_ref(), &Device::flex())?;
/// export_torch(&model, &"maxprob:0.9".parse()?, None, "exported-torch".as_ref())?;
/// let back = load_torch_export("exported-torch".as_ref(), &Device::flex())?;
/// assert_eq!(back.arch, model.arch);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_torch(model: &MultiExitModel, policy: &Policy, normalize: Option<&Normalize>, out: &Path) -> Result<()> {
    policy
        .check(model.arch.num_exits(), model.arch.heads.iter().all(|h| h.confidence))
        .map_err(|e| Error::invalid("policy", e.to_string()))?;
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true);
    let weights_err = |reason: String| Error::Weights {
        file: out.join(TORCH_WEIGHTS_FILE),
        reason,
    };
    model
        .net
        .save_into(&mut store)
        .map_err(|e| weights_err(e.to_string()))?;
    let bytes = store.get_bytes().map_err(|e| weights_err(e.to_string()))?;
    let spec = TorchExport {
        description: model.arch.description.clone(),
        architecture: model.arch.clone(),
        policy: policy.clone(),
        normalize: normalize.map(|n| NormalizeEntry {
            mean: n.mean.clone(),
            std: n.std.clone(),
        }),
    };
    let json = serde_json::to_vec_pretty(&spec).expect("architectures serialise");
    write_folder(out, |tmp| {
        write_atomic(&tmp.join(TORCH_WEIGHTS_FILE), &bytes)?;
        write_atomic(&tmp.join(TORCH_ARCHITECTURE_FILE), &json)?;
        write_atomic(&tmp.join(TORCH_MODULE_FILE), TORCH_MODULE.as_bytes())
    })
}

/// Reads a folder written by [`export_torch`] (or by the Python module's `save`) back.
pub fn load_torch_export(dir: &Path, device: &Device) -> Result<MultiExitModel> {
    let arch_file = dir.join(TORCH_ARCHITECTURE_FILE);
    let text = std::fs::read_to_string(&arch_file).map_err(|e| Error::io(&arch_file, e))?;
    let spec: TorchExport = serde_json::from_str(&text).map_err(|e| Error::Parse {
        file: arch_file.clone(),
        reason: e.to_string(),
    })?;
    let arch = spec.description.resolve()?;
    let weights = dir.join(TORCH_WEIGHTS_FILE);
    let mut net = arch.init_seeded(device, 0);
    let mut store = SafetensorsStore::from_file(&weights)
        .with_from_adapter(PyTorchToBurnAdapter)
        .skip_enum_variants(true)
        .allow_partial(true);
    let result = net.load_from(&mut store).map_err(|e| Error::Weights {
        file: weights.clone(),
        reason: format!("the weights do not fit {}: {e}", arch_file.display()),
    })?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        let missing: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        return Err(Error::Weights {
            file: weights,
            reason: format!(
                "the weights do not fit {}: missing {missing:?}, unused {:?}, errors {:?}",
                arch_file.display(),
                result.unused,
                result.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
            ),
        });
    }
    Ok(MultiExitModel { arch, net })
}

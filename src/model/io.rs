//! Saving and loading models: a description (JSON or TOML) plus weights in safetensors.
//!
//! Files are written to a temporary name and renamed into place, so a crash never leaves a
//! half-written model behind.

use std::fs;
use std::path::{Path, PathBuf};

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;

use super::backbones::BackboneSpec;
use super::network::{Architecture, EarlyExitNet, ModelDescription};
use super::placement::{Placement, Rule, legacy_golden_cuts};
use crate::error::{Error, Result};

/// File name of the description inside a model folder.
pub const DESCRIPTION_FILE: &str = "model.json";
/// File name of the weights inside a model folder.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Reads a description from a `.json` or `.toml` file.
pub fn read_description(path: &Path) -> Result<ModelDescription> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|reason| Error::Parse {
        file: path.into(),
        reason,
    })
}

/// Serialises the network's weights to safetensors bytes.
pub fn weights_to_bytes(net: &EarlyExitNet) -> Result<Vec<u8>> {
    let mut store = SafetensorsStore::from_bytes(None);
    net.save_into(&mut store).map_err(|e| Error::Weights {
        file: PathBuf::from("<memory>"),
        reason: e.to_string(),
    })?;
    store.get_bytes().map_err(|e| Error::Weights {
        file: PathBuf::from("<memory>"),
        reason: e.to_string(),
    })
}

/// Writes the weights to `path` atomically.
pub fn save_weights(net: &EarlyExitNet, path: &Path) -> Result<()> {
    write_atomic(path, &weights_to_bytes(net)?)
}

/// Loads weights from `path` into `net`, checking every tensor against the description.
pub fn load_weights(net: EarlyExitNet, path: &Path) -> Result<EarlyExitNet> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    load_weights_from_bytes(net, bytes, path)
}

/// A safetensors file's header (JSON) and the data after it.
fn safetensors_header<'a>(
    bytes: &'a [u8],
    origin: &Path,
) -> Result<(serde_json::Map<String, serde_json::Value>, &'a [u8])> {
    let bad = |why: String| Error::Weights {
        file: origin.into(),
        reason: format!("not a safetensors file: {why}"),
    };
    let len = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("shorter than 8 bytes".into()))? as usize;
    let header = bytes
        .get(8..8usize.saturating_add(len))
        .ok_or_else(|| bad("header runs past the end of the file".into()))?;
    let json = serde_json::from_slice(header).map_err(|e| bad(format!("header is not JSON ({e})")))?;
    Ok((json, &bytes[8 + len..]))
}

/// The first non-finite value (NaN or ±infinity) of a safetensors file's float tensors, as
/// (tensor, element index): weights that would answer NaN for every input, or a diverged training.
fn first_non_finite(bytes: &[u8], origin: &Path) -> Result<Option<(String, usize)>> {
    let (json, data) = safetensors_header(bytes, origin)?;
    for (name, v) in json {
        let (Some(dtype), Some([begin, end])) = (
            v.get("dtype").and_then(|d| d.as_str()),
            v.get("data_offsets")
                .and_then(|o| o.as_array())
                .and_then(|a| <[serde_json::Value; 2]>::try_from(a.clone()).ok()),
        ) else {
            continue;
        };
        let (Some(begin), Some(end)) = (begin.as_u64(), end.as_u64()) else {
            continue;
        };
        let raw = data.get(begin as usize..end as usize).ok_or_else(|| Error::Weights {
            file: origin.into(),
            reason: format!("not a safetensors file: tensor `{name}` runs past the end of the file"),
        })?;
        let at = match dtype {
            "F32" => raw
                .chunks_exact(4)
                .position(|b| !f32::from_le_bytes(b.try_into().expect("4 bytes")).is_finite()),
            "F64" => raw
                .chunks_exact(8)
                .position(|b| !f64::from_le_bytes(b.try_into().expect("8 bytes")).is_finite()),
            // Half precision: exponent bits all ones.
            "F16" => raw
                .chunks_exact(2)
                .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00),
            "BF16" => raw
                .chunks_exact(2)
                .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80),
            _ => None,
        };
        if let Some(i) = at {
            return Ok(Some((name, i)));
        }
    }
    Ok(None)
}

/// Tensor names and shapes from a safetensors header (without reading the data).
fn safetensors_shapes(bytes: &[u8], origin: &Path) -> Result<std::collections::BTreeMap<String, Vec<usize>>> {
    let bad = |why: &str| Error::Weights {
        file: origin.into(),
        reason: format!("not a safetensors file: {why}"),
    };
    let (json, _) = safetensors_header(bytes, origin)?;
    let mut out = std::collections::BTreeMap::new();
    for (name, v) in json {
        if name == "__metadata__" {
            continue;
        }
        let shape = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad(&format!("tensor `{name}` has no shape")))?;
        out.insert(name, shape);
    }
    Ok(out)
}

/// Like [`load_weights`], from bytes already read (`origin` names them in errors).
///
/// Every tensor the description needs must be in the file with the same shape, and the file
/// may hold no tensor the description has no place for.
pub fn load_weights_from_bytes(mut net: EarlyExitNet, bytes: Vec<u8>, origin: &Path) -> Result<EarlyExitNet> {
    let found = safetensors_shapes(&bytes, origin)?;
    let expected = net.collect(None, None, false);
    for t in &expected {
        match found.get(&t.name) {
            None => {
                let missing = expected.iter().filter(|t| !found.contains_key(&t.name)).count();
                return Err(Error::Weights {
                    file: origin.into(),
                    reason: format!(
                        "tensor `{}` required by the description is missing ({missing} missing in all): \
                         wrong description for these weights?",
                        t.name
                    ),
                });
            }
            Some(shape) if shape.as_slice() != t.shape.as_slice() => {
                return Err(Error::WeightShape {
                    file: origin.into(),
                    tensor: t.name.clone(),
                    expected: t.shape.to_vec(),
                    found: shape.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let known: std::collections::BTreeSet<&str> = expected.iter().map(|t| t.name.as_str()).collect();
    if let Some(extra) = found.keys().find(|k| !known.contains(k.as_str())) {
        return Err(Error::Weights {
            file: origin.into(),
            reason: format!("tensor `{extra}` has no place in the description: wrong description for these weights?"),
        });
    }
    if let Some((tensor, i)) = first_non_finite(&bytes, origin)? {
        return Err(Error::Weights {
            file: origin.into(),
            reason: format!(
                "tensor `{tensor}` holds a non-finite value (NaN or infinity) at element {i}: the \
                 weights would answer NaN; the file is damaged or the training diverged"
            ),
        });
    }
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = net.load_from(&mut store).map_err(|e| Error::Weights {
        file: origin.into(),
        reason: e.to_string(),
    })?;
    if let Some(err) = result.errors.first() {
        return Err(Error::Weights {
            file: origin.into(),
            reason: format!("{err:?}"),
        });
    }
    Ok(net)
}

/// Saves a model folder: `model.json` and `weights.safetensors`.
pub fn save_model(dir: &Path, description: &ModelDescription, net: &EarlyExitNet) -> Result<()> {
    // The cuts, not the rule that chose them: the folder keeps the architecture its weights were
    // trained on even if a rule's meaning changes (as `golden:N`'s did).
    let mut description = description.clone();
    if !matches!(description.exits, Placement::Cuts(_)) {
        description.exits = Placement::Cuts(description.resolve()?.cuts);
    }
    let json = serde_json::to_vec_pretty(&description).expect("descriptions serialise");
    save_weights(net, &dir.join(WEIGHTS_FILE))?;
    write_atomic(&dir.join(DESCRIPTION_FILE), &json)
}

/// A `model.json` that places its exits by `golden:N` was written before that rule followed
/// EENets' tables (and before folders recorded cuts): for N other than 2 the rule now means other
/// blocks than the weights were trained on. Refused, naming the cuts to write instead, rather
/// than loaded onto the wrong blocks.
fn refuse_legacy_golden(description: &ModelDescription, path: &Path) -> Result<()> {
    let Placement::Rule { rule: Rule::Golden, n } = description.exits else {
        return Ok(());
    };
    if n == 2 {
        return Ok(());
    }
    let backbone = BackboneSpec::new(
        &description.backbone,
        description.input,
        description.classes,
        description.width,
    )?;
    let old = legacy_golden_cuts(&backbone, description.placement_macs, n);
    let list: Vec<String> = old.iter().map(|c| c.to_string()).collect();
    Err(Error::Parse {
        file: path.into(),
        reason: format!(
            "\"exits\": \"golden:{n}\" was written when golden:N meant 1 − 0.618^k of the MACs; it now follows EENets' tables (0.618^k from the end) and would put the exits on other blocks than these weights were trained on: write \"exits\": \"cuts:{}\" to keep them",
            list.join(",")
        ),
    })
}

/// Loads a model folder written by [`save_model`].
pub fn load_model(dir: &Path, device: &Device) -> Result<(Architecture, EarlyExitNet)> {
    let desc_path = dir.join(DESCRIPTION_FILE);
    let description = read_description(&desc_path)?;
    refuse_legacy_golden(&description, &desc_path)?;
    let arch = description.resolve().map_err(|e| Error::Parse {
        file: desc_path.clone(),
        reason: e.to_string(),
    })?;
    let net = load_weights(arch.init(device), &dir.join(WEIGHTS_FILE))?;
    Ok((arch, net))
}

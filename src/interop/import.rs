//! A trained PyTorch network in, with fresh exits: `earlyexit import`.
//!
//! burn-store reads the file (`.pt`/`.pth` pickles through [`PytorchStore`], `.safetensors`
//! through [`SafetensorsStore`]); the layer table of [`super::names`] renames each tensor to our
//! module path and burn-store's [`PyTorchToBurnAdapter`] converts BatchNorm names and linear
//! layouts. Before anything is applied, every tensor the backbone needs is checked against the
//! file (present, same shape, floating point) and every tensor of the file must have a place;
//! the error lists all offenders with the shapes expected. The exit heads are not in the file:
//! they keep their fresh, seeded initialisation (partial loading).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::store::{ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use burn::tensor::{DType, Device};

use super::names::{CifarNames, Family, LayerName, layer_names};
use crate::error::{Error, Result};
use crate::infer::MultiExitModel;
use crate::model::io::save_model;
use crate::model::{HeadKind, ModelDescription, Placement, Shape};
use crate::train::{CONFIG_FILE, TrainConfig};

/// What to import and how to extend it.
#[derive(Clone, Debug)]
pub struct ImportSpec {
    /// `torchvision:NAME` (`resnet18`, `vgg16_bn`, `mobilenet_v2`, `densenet121`,
    /// `inception_v3`, …), `cifar:resnetN` (the CIFAR zoos; option A or B is read off the
    /// checkpoint) or a zoo backbone name.
    pub arch: String,
    /// Input shape per sample.
    pub input: Shape,
    /// Classes of the checkpoint's classifier.
    pub classes: usize,
    /// Width option of the backbone (`mobilenet_v2`: width multiplier in percent).
    pub width: Option<usize>,
    /// Fresh exits to attach (`none` keeps the plain network).
    pub exits: Placement,
    /// Their head kind.
    pub head: HeadKind,
    /// Whether the heads carry a confidence branch.
    pub confidence: bool,
    /// Seed of the fresh heads' weights.
    pub seed: u64,
}

impl ImportSpec {
    /// `arch` for `input` and `classes`, no exits, `pool` heads with confidence, seed 0.
    pub fn new(arch: &str, input: Shape, classes: usize) -> Self {
        Self {
            arch: arch.into(),
            input,
            classes,
            width: None,
            exits: Placement::Cuts(Vec::new()),
            head: HeadKind::Pool,
            confidence: true,
            seed: 0,
        }
    }
}

/// An imported network.
#[derive(Debug)]
pub struct Imported {
    /// The description to save beside the weights.
    pub description: ModelDescription,
    /// The network, backbone from the file, exits fresh.
    pub model: MultiExitModel,
    /// Tensors applied from the file.
    pub applied: usize,
    /// Tensors of the file that have no use at inference and were left out
    /// (`num_batches_tracked`, Inception-v3's auxiliary classifier).
    pub ignored: Vec<String>,
}

impl Imported {
    /// The configuration that makes the imported folder a run folder on `dataset` (files in
    /// `data_dir`): `calibrate`, `eval`, `serve --run` and `class-exit` then open it as they open
    /// a trained run. It trains nothing by itself: exits are trained by a configuration whose
    /// `init` is this folder (`heads-only`, or a fine-tune).
    pub fn run_config(&self, dataset: &str, data_dir: &Path) -> Result<TrainConfig> {
        let mut t = toml::Table::new();
        t.insert("seed".into(), toml::Value::Integer(0));
        t.insert("epochs".into(), toml::Value::Integer(1));
        let model = toml::Value::try_from(&self.description).map_err(|e| Error::invalid("model", e.to_string()))?;
        t.insert("model".into(), model);
        let mut data = toml::Table::new();
        data.insert("dataset".into(), dataset.into());
        data.insert("dir".into(), data_dir.to_string_lossy().as_ref().into());
        data.insert("batch_size".into(), toml::Value::Integer(128));
        t.insert("data".into(), data.into());
        let mut objective = toml::Table::new();
        objective.insert("kind".into(), "joint".into());
        t.insert("objective".into(), objective.into());
        let mut optimizer = toml::Table::new();
        optimizer.insert("kind".into(), "sgd".into());
        optimizer.insert("lr".into(), toml::Value::Float(0.01));
        t.insert("optimizer".into(), optimizer.into());
        let text = toml::to_string(&t).expect("tables serialise");
        let cfg = TrainConfig::from_toml(&text, Path::new("--data"), &[])?;
        // The dataset must exist and fit the network (shape and classes).
        cfg.dataset_kind()?;
        Ok(cfg)
    }

    /// [`Imported::save`] as a run folder with [`Imported::run_config`] as its `config.toml`.
    pub fn save_run(&self, dir: &Path, dataset: &str, data_dir: &Path) -> Result<()> {
        let cfg = self.run_config(dataset, data_dir)?;
        super::export::write_folder(dir, |tmp| {
            save_model(tmp, &self.description, &self.model.net)?;
            crate::model::io::write_atomic(&tmp.join(CONFIG_FILE), cfg.to_toml().as_bytes())
        })
    }

    /// Creates the model folder `dir` (`model.json`, `weights.safetensors`): written beside it
    /// under a temporary name, then renamed, so that a failure leaves nothing behind. `dir` must
    /// not exist yet.
    pub fn save(&self, dir: &Path) -> Result<()> {
        super::export::write_folder(dir, |tmp| save_model(tmp, &self.description, &self.model.net))
    }
}

/// The zoo backbone and naming family of `arch`, given the checkpoint's `keys`.
pub fn resolve_arch(arch: &str, keys: &[String]) -> Result<(String, Family)> {
    let cifar = CifarNames::detect(keys.iter().map(String::as_str));
    let zoo = if let Some(name) = arch.strip_prefix("torchvision:") {
        match name {
            "mobilenet_v2" | "densenet121" | "inception_v3" => name.to_string(),
            n if (n.starts_with("resnet") || n.starts_with("vgg")) && !n.ends_with("_imagenet") => {
                format!("{n}_imagenet")
            }
            other => {
                return Err(Error::invalid(
                    "arch",
                    format!(
                        "unknown torchvision network `{other}`: expected resnet18/34/50/101/152, \
                         vgg11/13/16 (also _bn), mobilenet_v2, densenet121 or inception_v3"
                    ),
                ));
            }
        }
    } else if let Some(name) = arch.strip_prefix("cifar:") {
        let depth_ok = name
            .strip_prefix("resnet")
            .and_then(|d| d.parse::<usize>().ok())
            .is_some_and(|d| [20, 32, 44, 56, 110].contains(&d));
        if !depth_ok {
            return Err(Error::invalid(
                "arch",
                format!("unknown CIFAR network `{name}`: expected resnet20, resnet32, resnet44, resnet56 or resnet110"),
            ));
        }
        // Option A has no weights on its shortcuts.
        let projects = keys.iter().any(|k| k.contains(&format!(".{}.", cifar.shortcut)));
        if projects {
            name.to_string()
        } else {
            format!("{name}_a")
        }
    } else {
        arch.to_string()
    };
    let family = Family::of(&zoo, cifar)?;
    Ok((zoo, family))
}

/// The checkpoint's tensors by name, from `.pt`/`.pth` (a state dict, also nested under
/// `state_dict` or `model`) or `.safetensors`.
fn read_tensors(path: &Path) -> Result<BTreeMap<String, burn::store::burn_pack::Tensor>> {
    let bad = |reason: String| Error::Weights {
        file: path.into(),
        reason,
    };
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such weights file"),
        ));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let read_pt = |key: Option<&str>| -> Result<BTreeMap<String, _>> {
        let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
        if let Some(k) = key {
            store = store.with_top_level_key(k);
        }
        store
            .get_all_tensors()
            .cloned()
            .map_err(|e| bad(format!("cannot read it as a PyTorch checkpoint: {e}")))
    };
    match ext {
        "pt" | "pth" | "bin" => {
            let all = read_pt(None)?;
            // Training checkpoints nest the state dict.
            for key in ["state_dict", "model_state_dict", "model"] {
                let prefix = format!("{key}.");
                if !all.is_empty() && all.keys().all(|k| k.starts_with(&prefix)) {
                    return read_pt(Some(key));
                }
            }
            Ok(all)
        }
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path).map_indices_contiguous(false);
            store
                .get_all_tensors()
                .cloned()
                .map_err(|e| bad(format!("cannot read it as safetensors: {e}")))
        }
        other => Err(bad(format!(
            "unknown weights format `.{other}`: expected .pt, .pth or .safetensors"
        ))),
    }
}

/// Tensors a checkpoint may carry that inference has no use for.
fn ignorable(key: &str, family: Family) -> bool {
    key.ends_with(".num_batches_tracked") || (family == Family::Inception && key.starts_with("AuxLogits."))
}

/// Every backbone tensor our module needs, by its PyTorch name: (our path, PyTorch shape).
///
/// PyTorch calls BatchNorm's `gamma`/`beta` `weight`/`bias` and stores a linear weight as
/// `[out, in]` (our only 2-D weights are linear ones).
pub(crate) fn expected_tensors(
    model: &MultiExitModel,
    layers: &[LayerName],
) -> Result<BTreeMap<String, (String, Vec<usize>)>> {
    let by_layer: BTreeMap<&str, &str> = layers.iter().map(|l| (l.ours.as_str(), l.torch.as_str())).collect();
    let mut out = BTreeMap::new();
    for t in model.net.collect(None, None, false) {
        if !t.name.starts_with("backbone.") {
            continue;
        }
        let (layer, leaf) = t.name.rsplit_once('.').expect("tensor paths have a leaf");
        let torch_layer = by_layer.get(layer).ok_or_else(|| {
            Error::invalid(
                "arch",
                format!("our tensor `{}` has no PyTorch name (a gap in the layer table)", t.name),
            )
        })?;
        let torch_leaf = match leaf {
            "gamma" => "weight",
            "beta" => "bias",
            other => other,
        };
        let mut shape = t.shape.to_vec();
        if leaf == "weight" && shape.len() == 2 {
            shape.reverse();
        }
        out.insert(format!("{torch_layer}.{torch_leaf}"), (t.name.clone(), shape));
    }
    Ok(out)
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::Flex32)
}

/// Lists at most 12 items, then how many more.
fn list(items: &[String]) -> String {
    let mut s = items.iter().take(12).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 12 {
        s.push_str(&format!(" and {} more", items.len() - 12));
    }
    s
}

/// Imports the checkpoint at `weights` as `spec` says, on `device`. Nothing is written.
///
/// ```no_run
/// use burn::tensor::Device;
/// use earlyexit::interop::{ImportSpec, import_torch};
/// use earlyexit::model::Shape;
///
/// let mut spec = ImportSpec::new("torchvision:resnet18", Shape::new(3, 224, 224), 1000);
/// spec.exits = "pareto:3".parse()?;
/// let imported = import_torch("resnet18.pth".as_ref(), &spec, &Device::flex())?;
/// imported.save("runs/resnet18-imported".as_ref())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import_torch(weights: &Path, spec: &ImportSpec, device: &Device) -> Result<Imported> {
    let file = read_tensors(weights)?;
    let keys: Vec<String> = file.keys().cloned().collect();
    let (zoo, family) = resolve_arch(&spec.arch, &keys)?;
    let mut description = ModelDescription::new(&zoo, spec.input, spec.classes, spec.exits.clone());
    description.width = spec.width;
    description.head = spec.head;
    description.confidence = spec.confidence;
    let arch = description.resolve()?;
    let layers = layer_names(&arch.backbone, family)?;
    let mut model = MultiExitModel {
        net: arch.init_seeded(device, spec.seed),
        arch,
    };
    let expected = expected_tensors(&model, &layers)?;

    let weights_err = |reason: String| Error::Weights {
        file: PathBuf::from(weights),
        reason,
    };
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for (key, (_, shape)) in &expected {
        match file.get(key) {
            None => missing.push(format!("{key} {shape:?}")),
            Some(t) if t.shape.to_vec() != *shape => {
                wrong.push(format!("{key}: {:?}, expected {shape:?}", t.shape.to_vec()))
            }
            Some(t) if !is_float(t.dtype) => wrong.push(format!("{key}: dtype {:?}, expected a float", t.dtype)),
            Some(_) => {}
        }
    }
    let (ignored, extra): (Vec<String>, Vec<String>) = keys
        .iter()
        .filter(|k| !expected.contains_key(*k))
        .cloned()
        .partition(|k| ignorable(k, family));
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing tensors (expected shape): {}", list(&missing)));
    }
    if !wrong.is_empty() {
        problems.push(format!("tensors that do not fit: {}", list(&wrong)));
    }
    if !extra.is_empty() {
        problems.push(format!("tensors with no place in `{zoo}`: {}", list(&extra)));
    }
    if !problems.is_empty() {
        return Err(weights_err(format!(
            "does not match `{}` as `{zoo}` for a {} input and {} classes: {}",
            spec.arch,
            spec.input,
            spec.classes,
            problems.join("; ")
        )));
    }

    // A NaN or an infinity (a diverged training, or a float too large for f32) would answer NaN
    // for every input: refused here, by tensor and element, like a run's own weights at load.
    for key in expected.keys() {
        let data = burn::store::bridge::to_data(&file[key]).map_err(|e| weights_err(format!("tensor `{key}`: {e}")))?;
        let values = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| weights_err(format!("tensor `{key}`: {e:?}")))?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(weights_err(format!(
                "tensor `{key}` holds a non-finite value (NaN, infinity, or a number too large for f32) at element {i}"
            )));
        }
    }
    let renamed: Vec<_> = expected
        .iter()
        .map(|(key, (ours, _))| {
            let mut t = file[key].clone();
            t.name = ours.clone();
            t
        })
        .collect();
    let result = model
        .net
        .apply(renamed, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    if !result.errors.is_empty() || !result.unused.is_empty() || result.applied.len() != expected.len() {
        return Err(weights_err(format!(
            "applying the tensors failed: {} applied of {}, errors: {}; unused: {}",
            result.applied.len(),
            expected.len(),
            list(&result.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()),
            list(&result.unused)
        )));
    }
    Ok(Imported {
        description,
        model,
        applied: result.applied.len(),
        ignored,
    })
}

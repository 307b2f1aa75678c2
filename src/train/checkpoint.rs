//! Checkpoints: everything needed to continue a run exactly where it stopped, in **one**
//! safetensors file written atomically (temporary file, then rename).
//!
//! `checkpoints/last.safetensors` holds
//! - `model/<tensor>`: the network's weights and BatchNorm statistics (the names of
//!   `weights.safetensors`);
//! - `optim/<parameter path>/<slot>`: the optimiser's per-parameter state (momentum buffer, or
//!   Adam's `m` and `v`), f32;
//! - metadata `earlyexit.state`: the [`TrainState`] as JSON (epoch, batch within the epoch,
//!   iteration, best validation so far, the partial epoch's running sums, the metrics history);
//!   `earlyexit.optim_steps`: each parameter's step count.
//!
//! One file means there is no moment at which weights and optimiser state disagree: a crash
//! leaves either the previous checkpoint or the new one, never half of each.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::metrics::EpochMetrics;
use super::optim::{Optimizer, OptimizerRecord};
use crate::error::{Error, Result};
use crate::model::EarlyExitNet;
use crate::model::io::{load_weights_from_bytes, weights_to_bytes, write_atomic};

/// Folder of the checkpoints inside a run folder.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The latest checkpoint inside [`CHECKPOINT_DIR`].
pub const LAST_CHECKPOINT: &str = "last.safetensors";

const FORMAT: &str = "earlyexit-checkpoint-1";

/// The best validation result so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Validation accuracy under the eval policy.
    pub accuracy: f64,
}

/// Where a run stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch in progress (0-based); equals `epochs` when training is complete.
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// Iterations (optimiser steps) since the start.
    pub iteration: u64,
    /// The training seed; with `epoch`, `batch` and `iteration` it fixes every random number to
    /// come (data order and augmentation from `(seed, epoch, batch)`, device RNG reseeded from
    /// `(seed, iteration)` before each step).
    pub seed: u64,
    /// Best validation result so far.
    pub best: Option<Best>,
    /// Partial epoch: sum of the batch losses.
    pub loss_sum: f64,
    /// Partial epoch: batches summed.
    pub loss_batches: u64,
    /// Partial epoch: correct training predictions.
    pub correct: u64,
    /// Partial epoch: training samples seen.
    pub seen: u64,
    /// Partial epoch: seconds spent so far.
    pub epoch_seconds: f64,
    /// Every finished epoch's metrics.
    pub metrics: Vec<EpochMetrics>,
}

impl TrainState {
    /// Moves to the next epoch: its first batch, its running sums at zero.
    pub fn start_next_epoch(&mut self) {
        self.epoch += 1;
        self.batch = 0;
        self.loss_sum = 0.0;
        self.loss_batches = 0;
        self.correct = 0;
        self.seen = 0;
        self.epoch_seconds = 0.0;
    }

    /// Mean training loss and accuracy of the epoch so far.
    pub fn running(&self) -> (f64, f64) {
        (
            self.loss_sum / self.loss_batches.max(1) as f64,
            self.correct as f64 / self.seen.max(1) as f64,
        )
    }
}

/// A checkpoint read back.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Where the run stands.
    pub state: TrainState,
    /// The weights, as `weights.safetensors` bytes.
    pub weights: Vec<u8>,
    /// The optimiser state.
    pub optimizer: OptimizerRecord,
}

/// Path of the latest checkpoint of the run in `run_dir`.
pub fn last_checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join(CHECKPOINT_DIR).join(LAST_CHECKPOINT)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn ckpt_err(file: &Path, reason: impl Into<String>) -> Error {
    Error::Parse {
        file: file.into(),
        reason: reason.into(),
    }
}

/// Serialises a checkpoint to bytes.
pub fn checkpoint_bytes(state: &TrainState, net: &EarlyExitNet, optimizer: &Optimizer) -> Result<Vec<u8>> {
    let weights = weights_to_bytes(net)?;
    let model = SafeTensors::deserialize(&weights).map_err(|e| ckpt_err(Path::new("<memory>"), e.to_string()))?;
    let record = optimizer.to_record();
    let optim_data: Vec<(String, Vec<u8>, usize)> = record
        .params
        .iter()
        .flat_map(|(path, (_, slots))| {
            slots
                .iter()
                .enumerate()
                .map(move |(i, s)| (format!("optim/{path}/{i}"), f32_bytes(s), s.len()))
        })
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = model
        .tensors()
        .into_iter()
        .map(|(name, view)| (format!("model/{name}"), view))
        .collect();
    for (name, bytes, len) in &optim_data {
        let view = TensorView::new(Dtype::F32, vec![*len], bytes).expect("consistent f32 view");
        views.push((name.clone(), view));
    }
    let steps: BTreeMap<&String, u64> = record.params.iter().map(|(k, (s, _))| (k, *s)).collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert(
        "earlyexit.state".to_string(),
        serde_json::to_string(state).expect("state serialises"),
    );
    meta.insert(
        "earlyexit.optim_steps".to_string(),
        serde_json::to_string(&steps).expect("steps serialise"),
    );
    safetensors::serialize(views, Some(meta)).map_err(|e| ckpt_err(Path::new("<memory>"), e.to_string()))
}

/// Writes a checkpoint to `path` atomically.
pub fn save_checkpoint(path: &Path, state: &TrainState, net: &EarlyExitNet, optimizer: &Optimizer) -> Result<()> {
    write_atomic(path, &checkpoint_bytes(state, net, optimizer)?)
}

/// Reads a checkpoint written by [`save_checkpoint`].
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ckpt_err(path, format!("not a checkpoint: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| ckpt_err(path, format!("not a checkpoint: {e}")))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| ckpt_err(path, "no metadata: not an earlyexit checkpoint"))?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(ckpt_err(
            path,
            format!("unknown checkpoint format {:?}, expected {FORMAT}", meta.get("format")),
        ));
    }
    let state: TrainState = serde_json::from_str(meta.get("earlyexit.state").map_or("", |s| s.as_str()))
        .map_err(|e| ckpt_err(path, format!("earlyexit.state: {e}")))?;
    let steps: BTreeMap<String, u64> =
        serde_json::from_str(meta.get("earlyexit.optim_steps").map_or("", |s| s.as_str()))
            .map_err(|e| ckpt_err(path, format!("earlyexit.optim_steps: {e}")))?;
    let mut model = Vec::new();
    let mut slots: BTreeMap<String, BTreeMap<usize, Vec<f32>>> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if let Some(n) = name.strip_prefix("model/") {
            model.push((n.to_string(), view));
        } else if let Some(rest) = name.strip_prefix("optim/") {
            let (p, i) = rest
                .rsplit_once('/')
                .and_then(|(p, i)| Some((p, i.parse::<usize>().ok()?)))
                .ok_or_else(|| ckpt_err(path, format!("bad optimiser tensor name `{name}`")))?;
            if view.dtype() != Dtype::F32 {
                return Err(ckpt_err(path, format!("optimiser tensor `{name}` is not f32")));
            }
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            slots.entry(p.to_string()).or_default().insert(i, v);
        } else {
            return Err(ckpt_err(path, format!("unexpected tensor `{name}`")));
        }
    }
    let mut params = BTreeMap::new();
    for (p, step) in steps {
        let s: Vec<Vec<f32>> = slots.remove(&p).map(|m| m.into_values().collect()).unwrap_or_default();
        params.insert(p, (step, s));
    }
    if let Some(p) = slots.keys().next() {
        return Err(ckpt_err(path, format!("optimiser state for `{p}` has no step count")));
    }
    let weights = safetensors::serialize(model, None).map_err(|e| ckpt_err(path, e.to_string()))?;
    Ok(Checkpoint {
        state,
        weights,
        optimizer: OptimizerRecord { params },
    })
}

impl Checkpoint {
    /// Loads the checkpoint's weights into `net` (checked tensor by tensor).
    pub fn apply_weights(&self, net: EarlyExitNet, origin: &Path) -> Result<EarlyExitNet> {
        load_weights_from_bytes(net, self.weights.clone(), origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelDescription;
    use crate::train::optim::OptimizerConfig;
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use burn::tensor::{Device, Distribution, Tensor};

    fn trained(device: &Device) -> (EarlyExitNet, Optimizer) {
        let d = ModelDescription::new("eenet8", "1x28x28".parse().unwrap(), 10, "cuts:1,2".parse().unwrap());
        device.seed(7);
        let net = d.resolve().unwrap().init(device);
        let mut opt = Optimizer::new(OptimizerConfig::adam(1e-3)).unwrap();
        let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Default, device);
        let loss = net
            .forward_all(x)
            .into_iter()
            .map(|o| o.logits.sum())
            .reduce(|a, b| a + b)
            .unwrap();
        let g = GradientsParams::from_grads(loss.backward(), &net);
        let net = opt.step(net, g, |_| 1e-3);
        (net, opt)
    }

    #[test]
    fn round_trip_restores_weights_optimizer_and_state() {
        let device = Device::flex().autodiff();
        let (net, opt) = trained(&device);
        let dir = std::env::temp_dir().join(format!("ee-ckpt-{}", std::process::id()));
        let path = dir.join("last.safetensors");
        let state = TrainState {
            epoch: 1,
            batch: 17,
            iteration: 40,
            seed: 9,
            loss_sum: 3.5,
            ..Default::default()
        };
        save_checkpoint(&path, &state, &net, &opt).unwrap();
        let ck = load_checkpoint(&path).unwrap();
        assert_eq!(ck.state, state);
        assert_eq!(ck.optimizer, opt.to_record());
        assert!(!ck.optimizer.params.is_empty());
        let fresh = {
            let d = ModelDescription::new("eenet8", "1x28x28".parse().unwrap(), 10, "cuts:1,2".parse().unwrap());
            d.resolve().unwrap().init(&device)
        };
        let restored = ck.apply_weights(fresh, &path).unwrap();
        assert!(same_tensors(&restored, &net));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn failed_write_leaves_previous_checkpoint_intact() {
        let device = Device::flex().autodiff();
        let (net, opt) = trained(&device);
        let dir = std::env::temp_dir().join(format!("ee-ckpt-atomic-{}", std::process::id()));
        let path = dir.join("last.safetensors");
        let first = TrainState {
            epoch: 1,
            ..Default::default()
        };
        save_checkpoint(&path, &first, &net, &opt).unwrap();
        let before = std::fs::read(&path).unwrap();
        // Make the rename fail: a non-empty directory where the temporary file would go cannot
        // be created as a file, so the write errors before anything replaces the checkpoint.
        let tmp = dir.join(format!(".last.safetensors.tmp{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("blocker")).unwrap();
        let second = TrainState {
            epoch: 2,
            ..Default::default()
        };
        assert!(save_checkpoint(&path, &second, &net, &opt).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(load_checkpoint(&path).unwrap().state.epoch, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn corrupt_checkpoint_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("ee-ckpt-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("last.safetensors");
        std::fs::write(&path, b"not a checkpoint").unwrap();
        let e = load_checkpoint(&path).unwrap_err().to_string();
        assert!(e.contains("last.safetensors") && e.contains("not a checkpoint"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn valid_copy_serialises_like_the_training_net() {
        let device = Device::flex().autodiff();
        let (net, _) = trained(&device);
        assert!(same_tensors(&net.valid(), &net));
    }

    /// Every tensor of `a` equals `b`'s, bit for bit (the files' byte layout may differ).
    fn same_tensors(a: &EarlyExitNet, b: &EarlyExitNet) -> bool {
        let (ba, bb) = (weights_to_bytes(a).unwrap(), weights_to_bytes(b).unwrap());
        let (sa, sb) = (
            SafeTensors::deserialize(&ba).unwrap(),
            SafeTensors::deserialize(&bb).unwrap(),
        );
        let mut na = sa.names();
        na.sort();
        let mut nb = sb.names();
        nb.sort();
        na == nb
            && na.iter().all(|n| {
                let (x, y) = (sa.tensor(n).unwrap(), sb.tensor(n).unwrap());
                x.shape() == y.shape() && x.data() == y.data()
            })
    }
}

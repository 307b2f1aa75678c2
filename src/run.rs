//! A training run folder, as [`crate::train::train`] writes it — the contract that evaluation,
//! calibration and serving build on.
//!
//! ```text
//! runs/NAME/
//!   config.toml                 the resolved TrainConfig
//!   model.json                  the ModelDescription
//!   weights.safetensors         the best weights by validation accuracy (under the eval policy)
//!   checkpoints/last.safetensors  weights + optimiser state + position, for --resume
//!   metrics.jsonl               one EpochMetrics object per finished epoch
//!   policy.json                 (optional, written by calibration) the exit policy to use
//! ```
//!
//! ```no_run
//! use burn::tensor::Device;
//! use earlyexit::run::Run;
//! use earlyexit::train::DataSplit;
//!
//! let run = Run::open("runs/quickstart")?;
//! let model = run.load_model(&Device::flex())?;
//! let policy = run.policy()?;
//! let data = run.data()?; // the dataset, split exactly as training split it
//! for batch in run.loader(&data, DataSplit::Test, 1000)?.epoch(0) {
//!     let (x, _labels) = earlyexit::train::data::batch_tensors(&batch, &Device::flex());
//!     let answers = model.infer(x, &policy)?;
//!     # let _ = answers;
//! }
//! println!("{} epochs", run.metrics()?.len());
//! # Ok::<(), earlyexit::Error>(())
//! ```

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::data::Loader;
use crate::error::{Error, Result};
use crate::infer::{MultiExitModel, Policy};
use crate::model::ModelDescription;
use crate::model::io::{DESCRIPTION_FILE, load_model, read_description};
use crate::train::checkpoint::last_checkpoint_path;
use crate::train::metrics::{EpochMetrics, METRICS_FILE, read_metrics};
use crate::train::{CONFIG_FILE, DataSplit, RunData, TrainConfig};

/// File name of a calibrated policy inside a run folder.
pub const POLICY_FILE: &str = "policy.json";

/// An opened run folder.
#[derive(Clone, Debug)]
pub struct Run {
    /// The folder.
    pub dir: PathBuf,
    /// The resolved training configuration (`config.toml`).
    pub config: TrainConfig,
    /// The model description (`model.json`).
    pub description: ModelDescription,
}

impl Run {
    /// Opens `dir`, reading `config.toml` and `model.json`; errors name the file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such run folder"),
            ));
        }
        let config = TrainConfig::from_file(&dir.join(CONFIG_FILE), &[])?;
        let description = read_description(&dir.join(DESCRIPTION_FILE))?;
        Ok(Self {
            dir,
            config,
            description,
        })
    }

    /// The best model (by validation accuracy), on `device`.
    pub fn load_model(&self, device: &Device) -> Result<MultiExitModel> {
        let (arch, net) = load_model(&self.dir, device)?;
        Ok(MultiExitModel { arch, net })
    }

    /// The exit policy: `policy.json` if calibration wrote one (a JSON string such as
    /// `"maxprob:0.9"`, or an object with a `policy` field), else the configuration's eval policy.
    pub fn policy(&self) -> Result<Policy> {
        let path = self.dir.join(POLICY_FILE);
        if !path.exists() {
            return Ok(self.config.eval_policy());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
            file: path.clone(),
            reason: e.to_string(),
        })?;
        let s = match &value {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Object(o) => o.get("policy").and_then(|p| p.as_str()).ok_or_else(|| Error::Parse {
                file: path.clone(),
                reason: "expected a `policy` field holding a policy string".into(),
            })?,
            _ => {
                return Err(Error::Parse {
                    file: path.clone(),
                    reason: "expected a policy string or an object with a `policy` field".into(),
                });
            }
        };
        s.parse().map_err(|e: Error| Error::Parse {
            file: path.clone(),
            reason: format!("field `policy`: {e}"),
        })
    }

    /// The run's dataset, split (and normalised) exactly as training split it.
    pub fn data(&self) -> Result<RunData> {
        RunData::load(&self.config.data)
    }

    /// A sequential, unaugmented loader over `split` of `data` (from [`Run::data`]).
    pub fn loader(&self, data: &RunData, split: DataSplit, batch_size: usize) -> Result<Loader> {
        data.eval_loader(split, batch_size, self.config.data.workers)
    }

    /// The metrics of every finished epoch (`metrics.jsonl`).
    pub fn metrics(&self) -> Result<Vec<EpochMetrics>> {
        read_metrics(&self.dir.join(METRICS_FILE))
    }

    /// The latest checkpoint's path (present while or after training).
    pub fn checkpoint(&self) -> PathBuf {
        last_checkpoint_path(&self.dir)
    }
}

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
//!   state.json                  epochs trained of epochs planned (finished, stopped, untrained)
//!   policy.json                 (optional, written by calibration) the exit policy to use
//!   class-design.json           (a class-specific design applied to a baseline, written by
//!                               `class-exit --apply`) the design's exits and predicted figures
//! ```
//!
//! This module is the one reader and writer of the folder's files: every command opens a run
//! here, gets its model ready to run ([`Run::load_model`]), and its policy with one fallback
//! ([`Run::policy_or`]: the policy given, else `policy.json`, else the configuration's eval
//! policy).
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

use crate::classexit::{Applied, AppliedDesign};
use crate::data::Loader;
use crate::error::{Error, Result};
use crate::infer::{Calibration, InMemorySplit, MultiExitModel, Policy, SplitKind};
use crate::model::ModelDescription;
use crate::model::io::{DESCRIPTION_FILE, read_description, write_atomic};
use crate::train::checkpoint::last_checkpoint_path;
use crate::train::metrics::{EpochMetrics, METRICS_FILE, read_metrics};
use crate::train::progress::{RunProgress, STATE_FILE, read_progress};
use crate::train::{CONFIG_FILE, DataSplit, RunData, TrainConfig};
use serde::Deserialize;

/// File name of a calibrated policy inside a run folder.
pub const POLICY_FILE: &str = "policy.json";

/// File name of an applied class-specific design's record inside a run folder.
pub const CLASS_DESIGN_FILE: &str = "class-design.json";

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

    /// The best model (by validation accuracy), on `device`, ready to run.
    ///
    /// # Errors
    /// Besides unreadable files: a run whose training never finished an epoch (its weights are
    /// the initial ones; [`Run::progress`]). A run stopped part-way loads: callers say so
    /// ([`RunProgress::describe`]).
    pub fn load_model(&self, device: &Device) -> Result<MultiExitModel> {
        if let Some(p) = self.progress()?
            && !p.has_trained_epoch()
        {
            return Err(Error::invalid(
                "run",
                format!(
                    "{} has no trained epoch ({}: training stopped before epoch 1 ended), so its weights are the initial ones; resume it with `earlyexit train --config {} --out {} --resume`",
                    self.dir.display(),
                    self.dir.join(STATE_FILE).display(),
                    self.dir.join(CONFIG_FILE).display(),
                    self.dir.display()
                ),
            ));
        }
        MultiExitModel::load(&self.dir, device)
    }

    /// How far training got (`state.json`); `None` for a folder the trainer did not write
    /// (an imported model, an older run).
    pub fn progress(&self) -> Result<Option<RunProgress>> {
        read_progress(&self.dir)
    }

    /// The exit policy: `policy.json` if calibration wrote one, else the configuration's eval
    /// policy.
    pub fn policy(&self) -> Result<Policy> {
        self.policy_or(None)
    }

    /// The policy a command runs: `given` if any, else [`Run::policy`]. Every command that takes
    /// `--policy` resolves it here, so all fall back the same way.
    pub fn policy_or(&self, given: Option<&Policy>) -> Result<Policy> {
        if let Some(p) = given {
            return Ok(p.clone());
        }
        Ok(match read_policy_file(&self.dir)? {
            Some(PolicyFile { policy, .. }) => policy,
            None => self.config.eval_policy(),
        })
    }

    /// The calibration recorded in `policy.json`, if calibration wrote one (a hand-written policy
    /// string has none).
    pub fn calibration(&self) -> Result<Option<Calibration>> {
        Ok(read_policy_file(&self.dir)?.and_then(|f| f.calibration))
    }

    /// Share of validation samples leaving at each exit under the calibrated policy (final last),
    /// if calibration recorded it.
    pub fn calibrated_rates(&self) -> Result<Option<Vec<f64>>> {
        Ok(self.calibration()?.map(|c| c.validation.coverage))
    }

    /// Writes `cal` to this run's `policy.json` (atomically).
    pub fn write_calibration(&self, cal: &Calibration) -> Result<PathBuf> {
        write_calibration(&self.dir, cal)
    }

    /// `split` of the run's data held in memory, split and normalised as training split it. Only
    /// [`SplitKind::Test`] opens the test files: calibration, sweeps and pruning never do.
    pub fn split(&self, kind: SplitKind) -> Result<InMemorySplit> {
        let data = match kind {
            SplitKind::Test => self.data()?,
            _ => RunData::load_without_test(&self.config.data)?,
        };
        let split = match kind {
            SplitKind::Train => DataSplit::Train,
            SplitKind::Val => DataSplit::Val,
            SplitKind::Test => DataSplit::Test,
        };
        let mut out = InMemorySplit {
            kind,
            shape: [0; 3],
            images: Vec::new(),
            labels: Vec::new(),
        };
        for b in self.loader(&data, split, 512)?.epoch(0) {
            out.shape = b.shape;
            out.images.extend_from_slice(&b.images);
            out.labels.extend(b.labels.iter().map(|&l| l as usize));
        }
        Ok(out)
    }

    /// The input normalisation training applied: the dataset's standard one, else the one fitted
    /// on the training split (which reads the dataset).
    pub fn normalize(&self) -> Result<crate::data::Normalize> {
        let kind = self.config.dataset_kind()?;
        match crate::data::Normalize::for_kind(kind) {
            Some(n) => Ok(n),
            None => Ok(self.data()?.normalize),
        }
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

    /// The class-specific design this run applies (`class-design.json`, written by
    /// [`write_applied_run`]); `None` for every other run.
    pub fn class_design(&self) -> Result<Option<AppliedDesign>> {
        let path = self.dir.join(CLASS_DESIGN_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| Error::Parse {
            file: path,
            reason: e.to_string(),
        })
    }

    /// Sets, in an evaluation of this run under a class policy, each class's predicted gain and
    /// loss from the design the run applies ([`crate::classexit::predict`]); nothing for a run
    /// that applies none.
    pub fn predict_class_gains(&self, eval: &mut crate::infer::EvalReport) -> Result<()> {
        if let (Some(design), Some(c)) = (self.class_design()?, eval.class_specific.as_mut()) {
            crate::classexit::predict(&design, c);
        }
        Ok(())
    }

    /// The latest checkpoint's path (present while or after training).
    pub fn checkpoint(&self) -> PathBuf {
        last_checkpoint_path(&self.dir)
    }
}

/// What a `policy.json` holds: the policy, and the calibration that chose it when calibration
/// wrote the file.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyFile {
    /// The exit policy.
    pub policy: Policy,
    /// The calibration, absent when the file holds only a policy.
    pub calibration: Option<Calibration>,
}

/// A model ready to deploy (serve, export): the model, the policy it runs and the input
/// normalisation its training applied.
#[derive(Debug)]
pub struct Deployable {
    /// The model (best weights of a run, or a bare model folder's).
    pub model: MultiExitModel,
    /// `given` if any, else the run's policy ([`Run::policy_or`]), else a bare folder's
    /// `policy.json`.
    pub policy: Policy,
    /// The run's input normalisation; `None` for a bare model folder.
    pub normalize: Option<crate::data::Normalize>,
    /// The run, when `dir` is one.
    pub run: Option<Run>,
}

/// Opens `dir` for deployment, the one way every serving and exporting command does: as a run
/// folder when `as_run` (an error when it is not one: without its `config.toml` the input
/// normalisation is unknown, and answering unnormalised inputs would be silently wrong), else as
/// a bare model folder (which then needs `given` or a `policy.json`).
pub fn open_deployable(dir: &Path, as_run: bool, given: Option<&Policy>, device: &Device) -> Result<Deployable> {
    if as_run {
        let run = Run::open(dir)?;
        return Ok(Deployable {
            model: run.load_model(device)?,
            policy: run.policy_or(given)?,
            normalize: Some(run.normalize()?),
            run: Some(run),
        });
    }
    let model = MultiExitModel::load(dir, device)?;
    let policy = match (given, read_policy_file(dir)?) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => f.policy,
        (None, None) => {
            return Err(Error::invalid(
                "policy",
                format!(
                    "the bare model folder {} has no policy.json: give --policy",
                    dir.display()
                ),
            ));
        }
    };
    Ok(Deployable {
        model,
        policy,
        normalize: None,
        run: None,
    })
}

/// Reads `dir/policy.json` if there is one: a [`Calibration`] (as `earlyexit calibrate` writes
/// it), or, written by hand, a policy string (`"maxprob:0.9"`) or an object with a `policy`
/// field. Errors name the file and what was expected. The one parser of this file.
pub fn read_policy_file(dir: &Path) -> Result<Option<PolicyFile>> {
    let path = dir.join(POLICY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse_policy_file(&text, &path).map(Some)
}

/// Parses the text of a `policy.json` ([`read_policy_file`]); `path` names it in errors.
///
/// ```
/// use std::path::Path;
/// use earlyexit::run::parse_policy_file;
/// let f = parse_policy_file(r#"{"policy": "maxprob:0.9,off"}"#, Path::new("policy.json"))?;
/// assert_eq!(f.policy.to_string(), "maxprob:0.9,off");
/// assert!(parse_policy_file(r#""entropy:-1""#, Path::new("policy.json")).is_err());
/// # Ok::<(), earlyexit::Error>(())
/// ```
pub fn parse_policy_file(text: &str, path: &Path) -> Result<PolicyFile> {
    let parse_err = |reason: String| Error::Parse {
        file: path.into(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    let policy_of = |s: &str| {
        s.parse::<Policy>()
            .map_err(|e: Error| parse_err(format!("field `policy`: {e}")))
    };
    match &value {
        serde_json::Value::String(s) => Ok(PolicyFile {
            policy: policy_of(s)?,
            calibration: None,
        }),
        serde_json::Value::Object(o) => {
            let policy = o
                .get("policy")
                .and_then(|p| p.as_str())
                .ok_or_else(|| parse_err("expected a `policy` field holding a policy string".into()))?;
            let policy = policy_of(policy)?;
            // Only `policy` (and perhaps notes): a hand-written file. More: a calibration, whole.
            let calibration = if o.contains_key("goal") {
                Some(Calibration::deserialize(&value).map_err(|e| parse_err(format!("not a calibration: {e}")))?)
            } else {
                None
            };
            Ok(PolicyFile { policy, calibration })
        }
        _ => Err(parse_err(
            "expected a policy string or an object with a `policy` field".into(),
        )),
    }
}

/// Writes a class-specific design applied to `baseline` ([`crate::classexit::apply`]) as a new
/// run folder `out`: `config.toml` (the baseline's data and normalisation; the model with its
/// branches, `heads-only` from the baseline as the scheme that would retrain them),
/// `model.json` and `weights.safetensors`, `policy.json` (the class policy) and
/// `class-design.json`. The folder is written under a temporary name and renamed into place;
/// an existing `out` is an error (a run is never overwritten).
pub fn write_applied_run(baseline: &Run, applied: &Applied, out: &Path) -> Result<()> {
    use crate::train::{ObjectiveConfig, ObjectiveKind};
    if out.exists() {
        return Err(Error::io(
            out,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists: give a new folder for the applied design",
            ),
        ));
    }
    let mut config = baseline.config.clone();
    config.model = applied.model.arch.description.clone();
    config.eval_policy = Some(applied.policy.clone());
    config.init = Some(baseline.dir.clone());
    let mut objective = ObjectiveConfig::new(ObjectiveKind::HeadsOnly);
    objective.base = Some(ObjectiveKind::Joint);
    config.objective = objective;
    config
        .validate()
        .map_err(|e| Error::invalid("applied configuration", e.to_string()))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let write = || -> Result<()> {
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        write_atomic(&tmp.join(CONFIG_FILE), config.to_toml().as_bytes())?;
        crate::model::io::save_model(&tmp, &applied.model.arch.description, &applied.model.net)?;
        let policy = serde_json::json!({
            "policy": applied.policy.to_string(),
            "note": format!("class-specific design on {} (class-exit --apply)", baseline.dir.display()),
        });
        write_atomic(
            &tmp.join(POLICY_FILE),
            &serde_json::to_vec_pretty(&policy).expect("json serialises"),
        )?;
        write_atomic(
            &tmp.join(CLASS_DESIGN_FILE),
            &serde_json::to_vec_pretty(&applied.design).expect("designs serialise"),
        )?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&tmp);
    })
}

/// Writes `cal` to `dir/policy.json` atomically (write, then rename); returns the path.
pub fn write_calibration(dir: &Path, cal: &Calibration) -> Result<PathBuf> {
    let path = dir.join(POLICY_FILE);
    let bytes = serde_json::to_vec_pretty(cal).map_err(|e| Error::invalid("calibration", e.to_string()))?;
    write_atomic(&path, &bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("earlyexit-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn policy_files_by_hand_and_by_calibration_and_bad_ones() {
        let d = dir("policy");
        assert_eq!(read_policy_file(&d).unwrap(), None);
        std::fs::write(d.join(POLICY_FILE), r#""maxprob:0.8""#).unwrap();
        let f = read_policy_file(&d).unwrap().unwrap();
        assert_eq!((f.policy.to_string(), f.calibration), ("maxprob:0.8".to_string(), None));
        std::fs::write(d.join(POLICY_FILE), r#"{"policy": "entropy:0.3", "note": "by hand"}"#).unwrap();
        assert_eq!(read_policy_file(&d).unwrap().unwrap().policy.to_string(), "entropy:0.3");
        for (bad, says) in [
            ("[1, 2]", "policy string"),
            (r#"{"threshold": 0.5}"#, "`policy` field"),
            (r#"{"policy": "sometimes"}"#, "field `policy`"),
            (r#"{"policy": "maxprob:1.5"}"#, "`1.5` is outside [0, 1]"),
            (r#"{"policy": "entropy:-1"}"#, "`-1` is outside [0, 1]"),
            (r#"{"policy": "maxprob:0.9", "goal": 3}"#, "not a calibration"),
            ("{", "EOF"),
        ] {
            std::fs::write(d.join(POLICY_FILE), bad).unwrap();
            let e = read_policy_file(&d).unwrap_err().to_string();
            assert!(e.contains(POLICY_FILE) && e.contains(says), "{bad}: {e}");
        }
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_bare_model_folder_asked_for_as_a_run_is_an_error_not_an_unnormalised_model() {
        use crate::model::{ModelDescription, Shape};
        let d = dir("bare-as-run");
        let device = Device::flex();
        let desc = ModelDescription::new("lenet5", Shape::new(1, 28, 28), 10, "cuts:1".parse().unwrap());
        let net = desc.resolve().unwrap().init_seeded(&device, 1);
        crate::model::io::save_model(&d, &desc, &net).unwrap();
        let policy: Policy = "maxprob:0.9".parse().unwrap();
        let e = open_deployable(&d, true, Some(&policy), &device)
            .unwrap_err()
            .to_string();
        assert!(e.contains(CONFIG_FILE), "{e}");
        // As a bare model folder it opens, without a normalisation.
        let ok = open_deployable(&d, false, Some(&policy), &device).unwrap();
        assert!(ok.normalize.is_none() && ok.run.is_none());
        let _ = std::fs::remove_dir_all(d);
    }
}

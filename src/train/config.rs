//! The training configuration: one TOML file that says everything a run needs.
//!
//! ```toml
//! seed = 1
//! epochs = 20
//! eval_policy = "confidence:0.5"   # optional: default confidence:0.5 when the loss trains the
//!                                  # confidence branches, maxprob:0.9 otherwise
//!
//! [model]                          # a ModelDescription
//! backbone = "eenet8"
//! input = "1x28x28"
//! classes = 10
//! head = "pool"
//! exits = "cuts:1,2"
//!
//! [data]
//! dataset = "mnist"
//! dir = "data"
//! batch_size = 32
//!
//! [objective]
//! kind = "eenet-v2"
//! lambda = 1.0
//!
//! [optimizer]
//! kind = "adam"
//! lr = 0.001
//!
//! [schedule]                       # optional, constant by default
//! kind = "constant"
//! ```
//!
//! Unknown fields are errors; every error names the file and the field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::objectives::{Objective, ObjectiveConfig, ObjectiveKind};
use super::optim::OptimizerConfig;
use super::schedule::ScheduleConfig;
use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::model::{Architecture, MacConvention, ModelDescription};
use crate::policy::{Policy, Thresholds};

fn eval_batch() -> usize {
    500
}
fn workers() -> usize {
    1
}
fn every_secs() -> f64 {
    60.0
}

/// Training-time augmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentKind {
    /// The papers' choice for the dataset: random crop + flip for CIFAR-like data, none for digits.
    #[default]
    Paper,
    /// None.
    None,
    /// Random crop (pad 4) and horizontal flip.
    Cifar,
}

/// The `[data]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset name (`mnist`, `fashion-mnist`, `cifar10`, …; see `earlyexit_data::DatasetKind`).
    pub dataset: String,
    /// Folder holding the dataset's files (or a standard subfolder such as `mnist/`). Relative
    /// paths are relative to the working directory.
    pub dir: PathBuf,
    /// Seed of the train/validation split (independent of the training seed, so runs with
    /// different seeds share one validation set). Default 0.
    #[serde(default)]
    pub split_seed: u64,
    /// Training batch size.
    pub batch_size: usize,
    /// Evaluation batch size (default 500).
    #[serde(default = "eval_batch")]
    pub eval_batch_size: usize,
    /// Augmentation (default `paper`).
    #[serde(default)]
    pub augment: AugmentKind,
    /// Use only the first `n` training samples of the split (quick experiments, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Use only the first `n` validation samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_limit: Option<usize>,
    /// Loader worker threads (default 1; 0 builds batches on the training thread).
    #[serde(default = "workers")]
    pub workers: usize,
}

/// The `[checkpoint]` table: when to write `checkpoints/last.safetensors` besides every epoch end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Also every this many seconds, mid-epoch (default 60; 0: epoch ends only).
    #[serde(default = "every_secs")]
    pub every_secs: f64,
    /// Also every this many iterations, mid-epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_steps: Option<u64>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_secs: every_secs(),
            every_steps: None,
        }
    }
}

/// Everything a training run needs. Written, resolved, to `runs/NAME/config.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of the initial weights, the data order and every random operation.
    pub seed: u64,
    /// Epochs.
    pub epochs: usize,
    /// Exit policy for validation metrics (and the default policy of the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_policy: Option<Policy>,
    /// Start from the backbone of a trained model folder or run (required by `heads-only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// The network.
    pub model: ModelDescription,
    /// The data.
    pub data: DataConfig,
    /// The loss / training scheme.
    pub objective: ObjectiveConfig,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Mid-epoch checkpoints.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

/// Parses one `--set key.path=value` override into a TOML value (a TOML literal if it parses as
/// one, a string otherwise). A value written as a number that is not one TOML can hold (an
/// integer beyond i64) is an error that says so, not a string the field then refuses by type.
fn override_value(o: &str, raw: &str) -> Result<toml::Value> {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => Ok(t.remove("v").expect("the key just parsed")),
        Err(_) if looks_numeric(raw) => {
            let reason = if raw.contains(['.', 'e', 'E']) {
                "is not a number TOML can read".to_string()
            } else {
                format!("is too large for an integer (at most {})", i64::MAX)
            };
            Err(Error::invalid("--set", format!("`{o}`: `{raw}` {reason}")))
        }
        Err(_) => Ok(toml::Value::String(raw.to_string())),
    }
}

/// Whether `raw` is written as a number: an optional sign, a digit, then digits, `_`, `.`, or an
/// exponent.
fn looks_numeric(raw: &str) -> bool {
    let body = raw.strip_prefix(['+', '-']).unwrap_or(raw);
    body.starts_with(|c: char| c.is_ascii_digit())
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '_' | '.' | 'e' | 'E' | '+' | '-'))
}

/// Applies `key.path=value` overrides to a TOML table; `key.path=` (nothing after `=`) removes
/// the key, so that its default applies.
pub fn apply_overrides(table: &mut toml::Table, overrides: &[String]) -> Result<()> {
    for o in overrides {
        let (key, value) = o
            .split_once('=')
            .ok_or_else(|| Error::invalid("--set", format!("`{o}`: expected key.path=value")))?;
        let parts: Vec<&str> = key.trim().split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(Error::invalid("--set", format!("`{o}`: empty key")));
        }
        let mut t = &mut *table;
        for p in &parts[..parts.len() - 1] {
            let entry = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry
                .as_table_mut()
                .ok_or_else(|| Error::invalid("--set", format!("`{o}`: `{p}` is not a table")))?;
        }
        let last = parts[parts.len() - 1].to_string();
        if value.trim().is_empty() {
            t.remove(&last);
        } else {
            t.insert(last, override_value(o, value.trim())?);
        }
    }
    Ok(())
}

impl TrainConfig {
    /// Parses and validates a configuration from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path, overrides: &[String]) -> Result<Self> {
        let parse_err = |reason: String| Error::Parse {
            file: origin.into(),
            reason,
        };
        let cfg: TrainConfig = if overrides.is_empty() {
            toml::from_str(text).map_err(|e| parse_err(e.to_string()))?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
            apply_overrides(&mut table, overrides)?;
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| parse_err(format!("{e} (with overrides {overrides:?})")))?
        };
        cfg.validate().map_err(|e| match e {
            Error::Invalid { field, reason } => parse_err(format!("field `{field}`: {reason}")),
            other => parse_err(other.to_string()),
        })?;
        Ok(cfg)
    }

    /// Reads, overrides and validates a configuration file.
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path, overrides)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configurations serialise to TOML")
    }

    /// The dataset kind.
    pub fn dataset_kind(&self) -> Result<DatasetKind> {
        self.data
            .dataset
            .parse()
            .map_err(|e: crate::data::Error| Error::invalid("data.dataset", e.to_string()))
    }

    /// The resolved architecture.
    pub fn architecture(&self) -> Result<Architecture> {
        self.model.resolve().map_err(|e| Error::invalid("model", e.to_string()))
    }

    /// The objective bound to the architecture.
    pub fn objective(&self, arch: &Architecture) -> Result<Objective> {
        let costs = arch.cost.relative(MacConvention::All);
        let has_conf = arch.heads.iter().all(|h| h.confidence);
        Objective::new(&self.objective, &costs, has_conf, self.epochs)
    }

    /// The exit policy for evaluation: the configured one, else `confidence:0.5` when the loss
    /// trains the confidence branches (EENets Algorithm 1), else `maxprob:0.9`.
    pub fn eval_policy(&self) -> Policy {
        self.eval_policy.clone().unwrap_or_else(|| {
            if self.objective.trains_confidence() && self.model.confidence {
                Policy::Confidence(Thresholds::Shared(0.5))
            } else {
                Policy::MaxProb(Thresholds::Shared(0.9))
            }
        })
    }

    /// The configuration with every default that depends on others written out (what goes to
    /// the run folder).
    pub fn resolved(&self) -> Self {
        let mut c = self.clone();
        c.eval_policy = Some(self.eval_policy());
        if c.objective.lambda.is_none() && c.objective.loss_kind().has_lambda() {
            c.objective.lambda = Some(1.0);
        }
        if c.objective.kind == ObjectiveKind::HeadsOnly && c.objective.base.is_none() {
            c.objective.base = Some(ObjectiveKind::Joint);
        }
        c
    }

    /// Checks everything that can be checked without the data; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("epochs", "must be at least 1"));
        }
        if self.data.batch_size == 0 {
            return Err(Error::invalid("data.batch_size", "must be at least 1"));
        }
        if self.data.eval_batch_size == 0 {
            return Err(Error::invalid("data.eval_batch_size", "must be at least 1"));
        }
        if self.data.train_limit == Some(0) || self.data.val_limit == Some(0) {
            return Err(Error::invalid("data.train_limit", "limits must be at least 1"));
        }
        let kind = self.dataset_kind()?;
        if let Some(shape) = kind.shape()
            && shape != self.model.input.dims()
        {
            return Err(Error::invalid(
                "model.input",
                format!(
                    "{} has {}x{}x{} samples, the model expects {}",
                    self.data.dataset, shape[0], shape[1], shape[2], self.model.input
                ),
            ));
        }
        if let Some(k) = kind.classes()
            && k != self.model.classes
        {
            return Err(Error::invalid(
                "model.classes",
                format!(
                    "{} has {k} classes, the model says {}",
                    self.data.dataset, self.model.classes
                ),
            ));
        }
        self.optimizer.validate()?;
        self.schedule.validate()?;
        if !(self.checkpoint.every_secs.is_finite() && self.checkpoint.every_secs >= 0.0) {
            return Err(Error::invalid("checkpoint.every_secs", "must be ≥ 0"));
        }
        if self.checkpoint.every_steps == Some(0) {
            return Err(Error::invalid("checkpoint.every_steps", "must be ≥ 1"));
        }
        let arch = self.architecture()?;
        self.objective(&arch)?;
        if self.objective.kind == ObjectiveKind::HeadsOnly && self.init.is_none() {
            return Err(Error::invalid(
                "init",
                "`heads-only` trains the exits of a trained backbone: set `init` to a run or model folder",
            ));
        }
        let has_conf = arch.heads.iter().all(|h| h.confidence);
        let policy = self.eval_policy();
        policy
            .check(arch.num_exits(), has_conf)
            .and_then(|()| policy.check_classes(arch.description.classes))
            .map_err(|e| Error::invalid("eval_policy", e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
seed = 3
epochs = 2

[model]
backbone = "eenet8"
input = "1x28x28"
classes = 10
exits = "cuts:1,2"

[data]
dataset = "mnist"
dir = "data"
batch_size = 32

[objective]
kind = "eenet-v2"

[optimizer]
kind = "adam"
lr = 0.001
"#;

    fn parse(text: &str, overrides: &[&str]) -> Result<TrainConfig> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        TrainConfig::from_toml(text, Path::new("configs/x.toml"), &o)
    }

    #[test]
    fn parses_defaults_and_round_trips() {
        let c = parse(BASE, &[]).unwrap();
        assert_eq!(c.eval_policy().to_string(), "confidence:0.5");
        assert_eq!(c.data.eval_batch_size, 500);
        let r = c.resolved();
        assert_eq!(r.objective.lambda, Some(1.0));
        let back = parse(&r.to_toml(), &[]).unwrap();
        assert_eq!(back, r);
        let j = parse(BASE, &["objective.kind=joint"]).unwrap();
        assert_eq!(j.eval_policy().to_string(), "maxprob:0.9");
    }

    #[test]
    fn overrides_apply() {
        let c = parse(
            BASE,
            &[
                "objective.lambda=0.5",
                "epochs=7",
                "eval_policy=maxprob:0.8",
                "model.width=8",
            ],
        )
        .unwrap();
        assert_eq!(c.objective.lambda, Some(0.5));
        assert_eq!(c.epochs, 7);
        assert_eq!(c.eval_policy.unwrap().to_string(), "maxprob:0.8");
        assert_eq!(c.model.width, Some(8));
        assert!(parse(BASE, &["nonsense"]).is_err());
        let j = parse(
            BASE,
            &["objective.kind=joint", "objective.lambda=1", "objective.lambda="],
        )
        .unwrap();
        assert_eq!(j.objective.lambda, None);
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = parse(
            &BASE.replace("kind = \"eenet-v2\"", "kind = \"eenet-v2\"\nlamda = 1"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("configs/x.toml") && e.contains("lamda"), "{e}");
        let e = parse(BASE, &["optimizer.lr=-1"]).unwrap_err().to_string();
        assert!(e.contains("configs/x.toml") && e.contains("optimizer.lr"), "{e}");
        let e = parse(BASE, &["model.input=3x32x32"]).unwrap_err().to_string();
        assert!(e.contains("model.input"), "{e}");
        let e = parse(BASE, &["data.dataset=imagenet"]).unwrap_err().to_string();
        assert!(e.contains("data.dataset"), "{e}");
        let e = parse(BASE, &["objective.kind=eenet-v3"]).unwrap_err().to_string();
        assert!(e.contains("eenet-v3"), "{e}");
        let e = parse(BASE, &["model.confidence=false"]).unwrap_err().to_string();
        assert!(e.contains("objective.kind"), "{e}");
        let e = parse(BASE, &["objective.kind=heads-only"]).unwrap_err().to_string();
        assert!(e.contains("`init`"), "{e}");
        // An integer too large for TOML is said as such (it used to become the string
        // "99999999999999999999", refused as "invalid type: string").
        let e = parse(BASE, &["epochs=99999999999999999999"]).unwrap_err().to_string();
        assert!(
            e.contains("too large") && e.contains("epochs=") && !e.contains("invalid type"),
            "{e}"
        );
        // Words stay strings: a policy, a dataset name.
        assert!(parse(BASE, &["eval_policy=never"]).is_ok());
        let e = parse(BASE, &["eval_policy=maxprob:0.9,0.9,0.9"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("eval_policy"), "{e}");
        let e = parse(BASE, &["schedule.kind=step"]).unwrap_err().to_string();
        assert!(e.contains("schedule.step_size"), "{e}");
        let e = parse("seed = 1", &[]).unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
    }
}

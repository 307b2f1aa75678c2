//! How far a run's training got (`state.json`): written by the trainer when a run starts and
//! after every epoch, so a folder says whether it is finished, stopped part-way, or holds no
//! trained epoch at all (its `model.json` and weights are written before the first epoch ends,
//! and on their own look like a finished model).
//!
//! A run folder without the file was not written by the trainer (an imported model, a run from
//! before the file existed): nothing is known about it, and nothing is refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::io::write_atomic;

/// File name of a run's training progress.
pub const STATE_FILE: &str = "state.json";

/// Epochs trained out of epochs planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    /// Epochs whose end was reached (validated, checkpointed).
    pub trained_epochs: usize,
    /// Epochs the configuration asks for.
    pub epochs: usize,
}

impl RunProgress {
    /// Whether every planned epoch was trained.
    pub fn finished(&self) -> bool {
        self.trained_epochs >= self.epochs
    }

    /// Whether at least one epoch was trained (the weights are more than initial ones).
    pub fn has_trained_epoch(&self) -> bool {
        self.trained_epochs > 0
    }

    /// `finished (N epochs)`, `stopped after epoch K of N` or `no trained epoch (of N)`.
    pub fn describe(&self) -> String {
        match (self.has_trained_epoch(), self.finished()) {
            (_, true) => format!("finished ({} epochs)", self.epochs),
            (true, false) => format!("stopped after epoch {} of {}", self.trained_epochs, self.epochs),
            (false, false) => format!("no trained epoch (of {})", self.epochs),
        }
    }
}

/// Writes `dir/state.json` atomically.
pub fn write_progress(dir: &Path, p: RunProgress) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(&p).map_err(|e| Error::invalid("state", e.to_string()))?;
    write_atomic(&dir.join(STATE_FILE), &bytes)
}

/// Reads `dir/state.json`, `None` without one; errors name the file.
pub fn read_progress(dir: &Path) -> Result<Option<RunProgress>> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Parse {
        file: path,
        reason: format!("expected {{\"trained_epochs\": K, \"epochs\": N}}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_says_where_it_stands() {
        let d = std::env::temp_dir().join(format!("earlyexit-progress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(read_progress(&d).unwrap(), None);
        for (k, says) in [
            (0, "no trained epoch"),
            (1, "stopped after epoch 1 of 3"),
            (3, "finished"),
        ] {
            let p = RunProgress {
                trained_epochs: k,
                epochs: 3,
            };
            write_progress(&d, p).unwrap();
            assert_eq!(read_progress(&d).unwrap(), Some(p));
            assert!(p.describe().contains(says), "{}", p.describe());
        }
        std::fs::write(d.join(STATE_FILE), "{\"epochs\": 2}").unwrap();
        let e = read_progress(&d).unwrap_err().to_string();
        assert!(e.contains(STATE_FILE) && e.contains("trained_epochs"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }
}

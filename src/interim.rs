//! Interim run-folder data access, until the data crate and the training branch's `run::Run`
//! land: MNIST-format IDX readers (gzip or plain) and the validation / test splits a run
//! records in its `data.json`.
//!
//! Validation is the **last** `val` samples of the official training set (never shuffled into
//! training); test is the official test set. Pixels are scaled to `[0, 1]`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::infer::{InMemorySplit, SplitKind};

/// File name of the data record inside a run folder.
pub const DATA_FILE: &str = "data.json";

/// Where a run's data comes from and how it was split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunData {
    /// Folder with the four IDX files (`train-images-idx3-ubyte[.gz]`, …).
    pub dir: PathBuf,
    /// Number of validation samples taken from the end of the training set.
    pub val: usize,
}

impl RunData {
    /// Reads `data.json` from a run folder.
    pub fn read(run: &Path) -> Result<Self> {
        let path = run.join(DATA_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Parse {
            file: path,
            reason: e.to_string(),
        })
    }

    /// Writes `data.json` into a run folder.
    pub fn write(&self, run: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("serialises");
        crate::model::io::write_atomic(&run.join(DATA_FILE), &json)
    }

    /// The training samples (all but the last `val` of the official training set).
    pub fn train(&self) -> Result<InMemorySplit> {
        let mut s = self.official("train")?;
        let keep = s.labels.len().saturating_sub(self.val);
        let per = s.shape.iter().product::<usize>();
        s.labels.truncate(keep);
        s.images.truncate(keep * per);
        s.kind = SplitKind::Train;
        Ok(s)
    }

    /// One split. Reading `val` never opens the test files, and reading `test` never the
    /// training files.
    pub fn split(&self, kind: SplitKind) -> Result<InMemorySplit> {
        match kind {
            SplitKind::Train => self.train(),
            SplitKind::Test => {
                let mut s = self.official("t10k")?;
                s.kind = SplitKind::Test;
                Ok(s)
            }
            SplitKind::Val => {
                let s = self.official("train")?;
                let n = s.labels.len();
                if self.val == 0 || self.val >= n {
                    return Err(Error::invalid(
                        "data.val",
                        format!("{} validation samples out of {n}", self.val),
                    ));
                }
                let per = s.shape.iter().product::<usize>();
                Ok(InMemorySplit {
                    kind: SplitKind::Val,
                    shape: s.shape,
                    images: s.images[(n - self.val) * per..].to_vec(),
                    labels: s.labels[n - self.val..].to_vec(),
                })
            }
        }
    }

    fn official(&self, prefix: &str) -> Result<InMemorySplit> {
        let images = read_maybe_gz(&self.dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels = read_maybe_gz(&self.dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let (shape, pixels) = parse_images(&images.1, &images.0)?;
        let labels = parse_labels(&labels.1, &labels.0)?;
        if labels.len() * shape[1] * shape[2] != pixels.len() {
            return Err(Error::Parse {
                file: images.0,
                reason: format!("{} labels for {} pixels", labels.len(), pixels.len()),
            });
        }
        Ok(InMemorySplit {
            kind: SplitKind::Train,
            shape,
            images: pixels,
            labels,
        })
    }
}

fn read_maybe_gz(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() {
        let f = std::fs::File::open(&gz).map_err(|e| Error::io(&gz, e))?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut out)
            .map_err(|e| Error::io(&gz, e))?;
        return Ok((gz, out));
    }
    let plain = dir.join(name);
    let bytes = std::fs::read(&plain).map_err(|e| Error::io(&plain, e))?;
    Ok((plain, bytes))
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

fn parse_images(b: &[u8], file: &Path) -> Result<([usize; 3], Vec<f32>)> {
    if b.len() < 16 || be32(b, 0) != 0x0803 {
        return Err(Error::Parse {
            file: file.into(),
            reason: "not an IDX image file (magic 0x00000803)".into(),
        });
    }
    let (n, h, w) = (be32(b, 4), be32(b, 8), be32(b, 12));
    if b.len() != 16 + n * h * w {
        return Err(Error::Parse {
            file: file.into(),
            reason: format!("{n}×{h}×{w} images need {} bytes, found {}", 16 + n * h * w, b.len()),
        });
    }
    Ok(([1, h, w], b[16..].iter().map(|&p| p as f32 / 255.0).collect()))
}

fn parse_labels(b: &[u8], file: &Path) -> Result<Vec<usize>> {
    if b.len() < 8 || be32(b, 0) != 0x0801 || b.len() != 8 + be32(b, 4) {
        return Err(Error::Parse {
            file: file.into(),
            reason: "not an IDX label file (magic 0x00000801)".into(),
        });
    }
    Ok(b[8..].iter().map(|&l| l as usize).collect())
}

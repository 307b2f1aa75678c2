//! The scikit-learn digits CSV (`digits.csv.gz`): one sample per line, 64 pixel values 0..=16 (an 8x8
//! image, row-major) then the label 0..=9, comma-separated, no header. 1,797 samples.
//!
//! The set has no official train/test split. [`Split::Train`] is the first half (898 samples) and
//! [`Split::Test`] the second half (899), as in scikit-learn's "Recognizing hand-written digits"
//! example (`train_test_split(..., test_size=0.5, shuffle=False)`). Pixels keep their 0..=16 values;
//! the dataset's [`Dataset::pixel_max`] is 16.

use std::path::Path;

pub use crate::dataset::{DIGITS_TOTAL, DIGITS_TRAIN};
use crate::dataset::{Dataset, Split};
use crate::error::{Error, Result, mem, read_file};
use crate::gz::maybe_gunzip;

fn parse_at(bytes: &[u8], path: &Path) -> Result<Dataset> {
    let bytes = maybe_gunzip(bytes, path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 65 {
            return Err(Error::format(
                path,
                format!(
                    "line {}: expected 65 comma-separated values (64 pixels, label), found {}",
                    i + 1,
                    fields.len()
                ),
            ));
        }
        for (j, f) in fields[..64].iter().enumerate() {
            let v: f64 = f
                .parse()
                .map_err(|_| Error::format(path, format!("line {}: pixel {j} is not a number: {f:?}", i + 1)))?;
            if !(0.0..=16.0).contains(&v) || v.fract() != 0.0 {
                return Err(Error::format(
                    path,
                    format!("line {}: pixel {j} is {f}, expected an integer 0..=16", i + 1),
                ));
            }
            pixels.push(v as u8);
        }
        let f = fields[64];
        let l: f64 = f
            .parse()
            .map_err(|_| Error::format(path, format!("line {}: label is not a number: {f:?}", i + 1)))?;
        if !(0.0..=9.0).contains(&l) || l.fract() != 0.0 {
            return Err(Error::LabelOutOfRange {
                path: path.to_path_buf(),
                index: labels.len(),
                label: if l.is_finite() { l as i64 } else { i64::MIN },
                expected: "0..=9".into(),
            });
        }
        labels.push(l as u32);
    }
    if labels.is_empty() {
        return Err(Error::format(path, "no samples"));
    }
    Ok(Dataset::new("digits", [1, 8, 8], 10, pixels, labels)?
        .with_pixel_max(16)
        .with_class_names(crate::names::digits()))
}

/// Parses a digits CSV (raw or gzip) held in memory: all samples. Errors report the path `<memory>`.
pub fn parse_digits_csv(bytes: &[u8]) -> Result<Dataset> {
    parse_at(bytes, mem())
}

/// Reads a digits CSV (raw or gzip): all samples (1,797 for the scikit-learn file).
pub fn digits_csv(path: &Path) -> Result<Dataset> {
    parse_at(&read_file(path)?, path)
}

/// The train half (first `floor(n/2)` samples) or the test half (the rest) of a digits dataset.
pub fn digits_split(all: &Dataset, split: Split) -> Result<Dataset> {
    let n_train = all.len() / 2;
    let idx: Vec<usize> = match split {
        Split::Train => (0..n_train).collect(),
        Split::Test => (n_train..all.len()).collect(),
    };
    all.subset(&idx)
}

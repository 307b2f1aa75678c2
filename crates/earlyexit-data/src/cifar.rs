//! CIFAR-10 and CIFAR-100 binary batch files.
//!
//! CIFAR-10 (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`): records of 1 label byte
//! then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each 32x32 row-major), i.e. CHW.
//! CIFAR-100 (`train.bin`, `test.bin`): records of 1 coarse-label byte, 1 fine-label byte, then the
//! same 3072 pixel bytes. The files have no header.

use std::path::{Path, PathBuf};

use crate::dataset::{Cifar100Label, Dataset};
use crate::error::{Error, Result, mem, read_file};

/// Pixel bytes per CIFAR image (3 x 32 x 32).
pub const CIFAR_IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes per CIFAR-10 record.
pub const CIFAR10_RECORD: usize = 1 + CIFAR_IMAGE_BYTES;
/// Bytes per CIFAR-100 record.
pub const CIFAR100_RECORD: usize = 2 + CIFAR_IMAGE_BYTES;

/// The records of one CIFAR binary file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarBatch {
    /// `n * 3072` pixel bytes, CHW per image.
    pub pixels: Vec<u8>,
    /// The label of each record (CIFAR-100: the fine label).
    pub labels: Vec<u8>,
    /// CIFAR-100 only: the coarse (superclass) label of each record.
    pub coarse: Option<Vec<u8>>,
}

impl CifarBatch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if there are no records.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

fn parse_at(bytes: &[u8], path: &Path, label_bytes: usize) -> Result<CifarBatch> {
    let record = label_bytes + CIFAR_IMAGE_BYTES;
    let what = if label_bytes == 1 {
        "CIFAR-10 batch"
    } else {
        "CIFAR-100 batch"
    };
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        let expected = (bytes.len() / record + 1) * record;
        return Err(Error::truncated(
            path,
            format!("{what} ({record}-byte records)"),
            expected as u64,
            bytes.len() as u64,
        ));
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * CIFAR_IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    let mut coarse = Vec::with_capacity(if label_bytes == 2 { n } else { 0 });
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let (lab, px) = rec.split_at(label_bytes);
        let (fine, max_fine) = if label_bytes == 1 { (lab[0], 9) } else { (lab[1], 99) };
        if label_bytes == 2 {
            if lab[0] > 19 {
                return Err(Error::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index: i,
                    label: lab[0] as i64,
                    expected: "0..=19 (CIFAR-100 coarse label)".into(),
                });
            }
            coarse.push(lab[0]);
        }
        if fine > max_fine {
            return Err(Error::LabelOutOfRange {
                path: path.to_path_buf(),
                index: i,
                label: fine as i64,
                expected: format!("0..={max_fine}"),
            });
        }
        labels.push(fine);
        pixels.extend_from_slice(px);
    }
    Ok(CifarBatch {
        pixels,
        labels,
        coarse: (label_bytes == 2).then_some(coarse),
    })
}

/// Parses a CIFAR-10 binary batch held in memory. Errors report the path `<memory>`.
pub fn parse_cifar10(bytes: &[u8]) -> Result<CifarBatch> {
    parse_at(bytes, mem(), 1)
}

/// Parses a CIFAR-100 binary file held in memory. Errors report the path `<memory>`.
pub fn parse_cifar100(bytes: &[u8]) -> Result<CifarBatch> {
    parse_at(bytes, mem(), 2)
}

/// Reads a CIFAR-10 binary batch file.
pub fn read_cifar10(path: &Path) -> Result<CifarBatch> {
    parse_at(&read_file(path)?, path, 1)
}

/// Reads a CIFAR-100 binary file.
pub fn read_cifar100(path: &Path) -> Result<CifarBatch> {
    parse_at(&read_file(path)?, path, 2)
}

/// A 10-class 3x32x32 dataset from CIFAR-10 batch files, concatenated in the order given.
pub fn cifar10_files(paths: &[PathBuf]) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let b = read_cifar10(p)?;
        pixels.extend_from_slice(&b.pixels);
        labels.extend(b.labels.iter().map(|&l| l as u32));
    }
    Dataset::new("cifar10", [3, 32, 32], 10, pixels, labels)
}

/// A 3x32x32 dataset from a CIFAR-100 binary file, with the fine (100) or coarse (20) labels.
pub fn cifar100_file(path: &Path, label: Cifar100Label) -> Result<Dataset> {
    let b = read_cifar100(path)?;
    let (labels, classes, name) = match label {
        Cifar100Label::Fine => (b.labels, 100, "cifar100"),
        Cifar100Label::Coarse => (b.coarse.unwrap_or_default(), 20, "cifar100-coarse"),
    };
    Dataset::new(
        name,
        [3, 32, 32],
        classes,
        b.pixels,
        labels.into_iter().map(u32::from).collect(),
    )
}

/// Reads a CIFAR label-names file (`batches.meta.txt`, `fine_label_names.txt`, ...): one name per
/// line, blank lines ignored. `None` if the file is absent or does not hold exactly `n` names.
pub(crate) fn read_names(path: &Path, n: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (names.len() == n).then_some(names)
}

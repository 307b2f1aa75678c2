//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
//!
//! The format: two zero bytes, an element-type byte (`0x08` = unsigned byte, the only type these
//! datasets use), a byte giving the number of dimensions, then one big-endian `u32` per dimension,
//! then the data in row-major order. Images are `idx3` (`0x00000803`: count, rows, cols), labels are
//! `idx1` (`0x00000801`: count).

use std::path::Path;

use crate::dataset::Dataset;
use crate::error::{Error, Result, mem, read_file};
use crate::gz::maybe_gunzip;

/// Images read from an `idx3-ubyte` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows (height) of each image.
    pub rows: usize,
    /// Columns (width) of each image.
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
}

/// Parses the header of an unsigned-byte IDX file with `ndims` dimensions.
/// Returns the dimensions and the data (exactly the size the header promises).
fn parse_header<'a>(bytes: &'a [u8], ndims: u8, format: &str, path: &Path) -> Result<(Vec<usize>, &'a [u8])> {
    let expected_magic = format!("0x000008{ndims:02x}");
    if bytes.len() < 4 {
        return Err(Error::truncated(
            path,
            format!("{format} header"),
            4,
            bytes.len() as u64,
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 || bytes[3] != ndims {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            format: format.to_string(),
            expected: expected_magic,
            found: format!("0x{magic:08x}"),
        });
    }
    if bytes[2] != 0x08 {
        return Err(Error::format(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported (expected 0x08, unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let header_len = 4 + 4 * ndims as usize;
    if bytes.len() < header_len {
        return Err(Error::truncated(
            path,
            format!("{format} header"),
            header_len as u64,
            bytes.len() as u64,
        ));
    }
    let dims: Vec<usize> = (0..ndims as usize)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let data_len = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| Error::format(path, format!("{format} dimensions {dims:?} overflow")))?;
    let found = (bytes.len() - header_len) as u64;
    if found < data_len {
        return Err(Error::truncated(path, format!("{format} data"), data_len, found));
    }
    if found > data_len {
        return Err(Error::format(
            path,
            format!(
                "{} bytes after the {format} data (header promises {data_len} bytes, file has {found})",
                found - data_len
            ),
        ));
    }
    Ok((dims, &bytes[header_len..]))
}

fn parse_images_at(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let bytes = maybe_gunzip(bytes, path)?;
    let (dims, data) = parse_header(&bytes, 3, "IDX images (idx3-ubyte)", path)?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: data.to_vec(),
    })
}

fn parse_labels_at(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let bytes = maybe_gunzip(bytes, path)?;
    let (_, data) = parse_header(&bytes, 1, "IDX labels (idx1-ubyte)", path)?;
    Ok(data.to_vec())
}

/// Parses an IDX image file (`idx3-ubyte`) held in memory, gzip-compressed or raw.
/// Errors report the path `<memory>`.
pub fn parse_idx_images(bytes: &[u8]) -> Result<IdxImages> {
    parse_images_at(bytes, mem())
}

/// Parses an IDX label file (`idx1-ubyte`) held in memory, gzip-compressed or raw.
/// Errors report the path `<memory>`.
pub fn parse_idx_labels(bytes: &[u8]) -> Result<Vec<u8>> {
    parse_labels_at(bytes, mem())
}

/// Reads an IDX image file (gzip-compressed or raw).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    parse_images_at(&read_file(path)?, path)
}

/// Reads an IDX label file (gzip-compressed or raw).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels_at(&read_file(path)?, path)
}

/// Builds a 10-class greyscale dataset from an IDX image file and an IDX label file
/// (MNIST, Fashion-MNIST or any dataset in the same format). The name is `"idx"`; rename it with
/// [`Dataset::with_name`].
///
/// Errors: the files' own errors, [`Error::CountMismatch`] if the counts differ, and
/// [`Error::LabelOutOfRange`] for a label above 9.
pub fn mnist_idx(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    idx_dataset(images, labels, images_path, labels_path)
}

pub(crate) fn idx_dataset(
    images: IdxImages,
    labels: Vec<u8>,
    images_path: &Path,
    labels_path: &Path,
) -> Result<Dataset> {
    if images.count != labels.len() {
        return Err(Error::CountMismatch {
            images_path: images_path.to_path_buf(),
            labels_path: labels_path.to_path_buf(),
            images: images.count,
            labels: labels.len(),
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(Error::LabelOutOfRange {
            path: labels_path.to_path_buf(),
            index,
            label: label as i64,
            expected: "0..=9".into(),
        });
    }
    Dataset::new(
        "idx",
        [1, images.rows, images.cols],
        10,
        images.pixels,
        labels.into_iter().map(u32::from).collect(),
    )
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The shared real-data folder: `$EARLYEXIT_SHARED_DATA`, else `<crate>/../../../shared/data`
/// (CI lays `shared/` beside the clone). Panics with a clear message when it is absent, so that the
/// real-data tests fail loudly instead of passing without data.
pub fn shared_data() -> PathBuf {
    let p = std::env::var_os("EARLYEXIT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    assert!(
        p.join("mnist").is_dir() && p.join("samples").is_dir(),
        "the shared real-data folder was not found at {} (expected mnist/, fashion-mnist/, digits/, samples/); \
         lay ../shared beside the repository or set EARLYEXIT_SHARED_DATA",
        p.display()
    );
    p
}

/// A fresh temporary folder, removed when dropped.
pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("earlyexit-data-test")
        .tempdir()
        .expect("temp dir")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// IDX3 image file bytes (uncompressed).
pub fn idx_images(n: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&(d as u32).to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

/// IDX1 label file bytes (uncompressed).
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// CIFAR-10 records (label byte + 3072 CHW pixels).
pub fn cifar10_bytes(pixels: &[u8], labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        v.push(l);
        v.extend_from_slice(&pixels[i * 3072..(i + 1) * 3072]);
    }
    v
}

/// CIFAR-100 records (coarse, fine, 3072 pixels).
pub fn cifar100_bytes(pixels: &[u8], coarse: &[u8], fine: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..fine.len() {
        v.push(coarse[i]);
        v.push(fine[i]);
        v.extend_from_slice(&pixels[i * 3072..(i + 1) * 3072]);
    }
    v
}

/// Writes an RGB PNG from CHW pixels.
pub fn write_png_rgb(path: &Path, w: u32, h: u32, chw: &[u8]) {
    let plane = (w * h) as usize;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let i = (y * w + x) as usize;
        image::Rgb([chw[i], chw[plane + i], chw[2 * plane + i]])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// Writes a greyscale PNG.
pub fn write_png_grey(path: &Path, w: u32, h: u32, px: &[u8]) {
    let img = image::GrayImage::from_raw(w, h, px.to_vec()).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// The sample PNGs of one set (`cifar10`, `cifar100`, `mnist`, `fashionMNIST`): (path, index, label),
/// sorted by index. Names are `<set>_<index>_<label>.png`.
pub fn samples(set: &str) -> Vec<(PathBuf, usize, u32)> {
    let dir = shared_data().join("samples");
    let mut v: Vec<(PathBuf, usize, u32)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".png")?;
            let mut parts = stem.rsplitn(3, '_');
            let label = parts.next()?.parse().ok()?;
            let index = parts.next()?.parse().ok()?;
            (parts.next()? == set).then_some((e.path(), index, label))
        })
        .collect();
    v.sort_by_key(|s| s.1);
    v
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// What `shared_data()` requires inside the shared folder.
const SHARED_ENTRIES: [&str; 4] = ["mnist", "fashion-mnist", "digits", "samples"];

/// The shared real-data folder: `$EARLYEXIT_SHARED_DATA`, else `<repo>/../shared/data` (CI lays
/// `shared/` beside the clone). The tests that call it are `#[ignore = "needs ../shared/data"]`, so a
/// bare clone reports them as ignored; run with `--include-ignored`, it panics naming the path it
/// looked at, so a missing folder is a failure, never a silent pass.
pub fn shared_data() -> PathBuf {
    let (p, from) = match std::env::var_os("EARLYEXIT_SHARED_DATA") {
        Some(v) => (PathBuf::from(v), "$EARLYEXIT_SHARED_DATA"),
        None => (
            // <repo>/crates/earlyexit-data -> <repo>/.. ; ancestors keep the message free of `..`.
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .nth(3)
                .expect("the crate sits at <repo>/crates/earlyexit-data")
                .join("shared/data"),
            "<repo>/../shared/data",
        ),
    };
    let problem = if !p.is_dir() {
        "does not exist".to_string()
    } else {
        let missing: Vec<String> = SHARED_ENTRIES
            .iter()
            .filter(|e| !p.join(e).is_dir())
            .map(|e| format!("{e}/"))
            .collect();
        if missing.is_empty() {
            return p;
        }
        format!("lacks {}", missing.join(", "))
    };
    panic!(
        "this test needs the shared real-data folder ../shared/data (with {}/), but {} (from {from}) {problem}; \
         lay ../shared beside the clone or set EARLYEXIT_SHARED_DATA, or run without --include-ignored to skip \
         the data tests",
        SHARED_ENTRIES.join("/, "),
        p.display(),
    );
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

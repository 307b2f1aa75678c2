//! Helpers shared by the command-line tests: run the binary from the repository root, write tiny
//! IDX data sets and run folders.
#![allow(dead_code)] // each test file uses a subset

pub mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root: the binary runs there, so `configs/…` and `data/` resolve as for a user.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `earlyexit` as a command, in the repository root.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_earlyexit"));
    c.current_dir(repo_root());
    c
}

/// Runs `earlyexit ARGS` to completion.
pub fn earlyexit(args: &[&str]) -> Output {
    command().args(args).output().expect("the earlyexit binary runs")
}

/// Runs `earlyexit ARGS`: whether it succeeded, and its stdout and stderr together.
pub fn earlyexit_text(args: &[&str]) -> (bool, String) {
    let out = earlyexit(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Writes an MNIST-format IDX pair `{prefix}-images-idx3-ubyte` / `{prefix}-labels-idx1-ubyte`
/// with `n` 28×28 images: labels cycle 0..10, each image has a row of value `bright` at row
/// `2 + 2·label` (a class signal even an untrained backbone's pooled features carry a little of)
/// over noise from `seed`.
pub fn write_idx(dir: &Path, prefix: &str, n: usize, seed: u32, bright: u8) {
    let mut images = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    let mut s = seed;
    for i in 0..n {
        let label = (i % 10) as u8;
        labels.push(label);
        for p in 0..784 {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let v = if p / 28 == 2 + 2 * label as usize {
                bright
            } else {
                (s >> 24) as u8 / 4
            };
            images.push(v);
        }
    }
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

/// The CIFAR-zoo ResNet-20 (option A) trained on MNIST in PyTorch (`scripts/make-torch-fixtures.py`).
pub const TORCH_CHECKPOINT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/torch/cifar_resnet20_a_mnist.pt"
);

/// A fresh, empty scratch folder for test `name`.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("earlyexit-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `earlyexit import` of [`TORCH_CHECKPOINT`] (as `cifar:resnet20` on 1×28×28 inputs) into `out`,
/// with `extra` arguments (at least `--classes`).
pub fn import_checkpoint(out: &Path, extra: &[&str]) -> Output {
    let base = [
        "import",
        "--weights",
        TORCH_CHECKPOINT,
        "--arch",
        "cifar:resnet20",
        "--input",
        "1x28x28",
        "--out",
        out.to_str().unwrap(),
    ];
    earlyexit(&[&base[..], extra].concat())
}

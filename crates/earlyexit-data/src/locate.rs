//! Finding a dataset's standard files in a folder and dispatching to the reader for its format:
//! [`find_dataset_dir`] and [`load`].
//!
//! This is the one module that imports every reader; the readers import only the types in
//! `dataset.rs`, so nothing imports back in a cycle. [`crate::verify()`] shares the file probes.

use std::path::{Path, PathBuf};

use crate::dataset::{Cifar100Label, Dataset, DatasetKind, Split};
use crate::error::{Error, Result};
use crate::{cifar, digits, folder, idx, mat, names};

impl Dataset {
    /// Loads one split of a dataset from its standard files in `dir` (or a standard subfolder of
    /// `dir`); see [`load`]. Defined here, not beside the type, so that `dataset.rs` needs no reader.
    pub fn load(kind: DatasetKind, dir: &Path, split: Split) -> Result<Dataset> {
        load(kind, dir, split)
    }
}

/// Subfolders, besides `dir` itself, where each kind's files are looked for.
fn candidate_subdirs(kind: DatasetKind) -> &'static [&'static str] {
    match kind {
        DatasetKind::Mnist => &["mnist", "MNIST", "MNIST/raw", "mnist/raw"],
        DatasetKind::FashionMnist => &[
            "fashion-mnist",
            "fashion_mnist",
            "FashionMNIST",
            "FashionMNIST/raw",
            "fashion-mnist/raw",
        ],
        DatasetKind::Cifar10 => &[
            "cifar-10-batches-bin",
            "cifar10",
            "cifar-10",
            "cifar10/cifar-10-batches-bin",
            "cifar-10/cifar-10-batches-bin",
        ],
        DatasetKind::Cifar100 { .. } => &[
            "cifar-100-binary",
            "cifar100",
            "cifar-100",
            "cifar100/cifar-100-binary",
            "cifar-100/cifar-100-binary",
        ],
        DatasetKind::Svhn => &["svhn", "SVHN"],
        DatasetKind::TinyImageNet => &[
            "tiny-imagenet-200",
            "tiny-imagenet",
            "tinyimagenet",
            "tiny-imagenet/tiny-imagenet-200",
        ],
        DatasetKind::ImageFolder => &["cinic-10", "cinic10", "CINIC-10"],
        DatasetKind::Digits => &["digits"],
    }
}

/// Returns the first existing file among `names` in `dir`, trying each name with `.gz` too when
/// `gz` is set.
pub(crate) fn find_file(dir: &Path, names: &[&str], gz: bool) -> Option<PathBuf> {
    for n in names {
        let p = dir.join(n);
        if p.is_file() {
            return Some(p);
        }
        if gz {
            let p = dir.join(format!("{n}.gz"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The IDX image and label files of `split` in `dir` (raw or `.gz`), under either naming in use.
pub(crate) fn idx_files(dir: &Path, split: Split) -> Option<(PathBuf, PathBuf)> {
    let (img, lab): (&[&str], &[&str]) = match split {
        Split::Train => (
            &["train-images-idx3-ubyte", "train-images.idx3-ubyte"],
            &["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"],
        ),
        Split::Test => (
            &["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"],
            &["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"],
        ),
    };
    Some((find_file(dir, img, true)?, find_file(dir, lab, true)?))
}

/// True if `dir` holds the files that `kind` needs for `split` (without reading them).
pub(crate) fn has_files(kind: DatasetKind, dir: &Path, split: Split) -> bool {
    match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => idx_files(dir, split).is_some(),
        DatasetKind::Cifar10 => match split {
            Split::Train => dir.join("data_batch_1.bin").is_file(),
            Split::Test => dir.join("test_batch.bin").is_file(),
        },
        DatasetKind::Cifar100 { .. } => dir.join(format!("{split}.bin")).is_file(),
        DatasetKind::Svhn => dir.join(format!("{split}_32x32.mat")).is_file(),
        DatasetKind::TinyImageNet => {
            dir.join("wnids.txt").is_file()
                && match split {
                    Split::Train => dir.join("train").is_dir(),
                    Split::Test => dir.join("val").join("val_annotations.txt").is_file(),
                }
        }
        DatasetKind::ImageFolder => folder::folder_split_dir(dir, split).is_some(),
        DatasetKind::Digits => find_file(dir, &["digits.csv"], true).is_some(),
    }
}

/// Finds the folder holding `kind`'s files for `split`: `dir` itself or one of the standard
/// subfolder names (`mnist/`, `cifar-10-batches-bin/`, `tiny-imagenet-200/`, ...).
pub fn find_dataset_dir(kind: DatasetKind, dir: &Path, split: Split) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(Error::missing(dir, "data folder does not exist or is not a folder"));
    }
    // Image folders are recognised by their train/test subfolders, which other layouts also have,
    // so only the standard names are tried for them before `dir` itself.
    let subs = candidate_subdirs(kind);
    for s in subs {
        let d = dir.join(s);
        if d.is_dir() && has_files(kind, &d, split) {
            return Ok(d);
        }
    }
    if has_files(kind, dir, split) {
        return Ok(dir.to_path_buf());
    }
    Err(Error::missing(
        dir,
        format!("no {kind} {split} files here {}", expected_files(kind, split, subs)),
    ))
}

fn expected_files(kind: DatasetKind, split: Split, subs: &[&str]) -> String {
    let files = match (kind, split) {
        (DatasetKind::Mnist | DatasetKind::FashionMnist, Split::Train) => {
            "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"
        }
        (DatasetKind::Mnist | DatasetKind::FashionMnist, Split::Test) => {
            "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
        }
        (DatasetKind::Cifar10, Split::Train) => "data_batch_1.bin .. data_batch_5.bin",
        (DatasetKind::Cifar10, Split::Test) => "test_batch.bin",
        (DatasetKind::Cifar100 { .. }, Split::Train) => "train.bin",
        (DatasetKind::Cifar100 { .. }, Split::Test) => "test.bin",
        (DatasetKind::Svhn, Split::Train) => "train_32x32.mat",
        (DatasetKind::Svhn, Split::Test) => "test_32x32.mat",
        (DatasetKind::TinyImageNet, Split::Train) => "wnids.txt and train/<wnid>/images/",
        (DatasetKind::TinyImageNet, Split::Test) => "wnids.txt and val/val_annotations.txt",
        (DatasetKind::ImageFolder, Split::Train) => "train/<class>/<images> (or <class>/<images>)",
        (DatasetKind::ImageFolder, Split::Test) => "test/<class>/<images> (or val/, valid/)",
        (DatasetKind::Digits, _) => "digits.csv[.gz]",
    };
    format!("(expected {files}, in this folder or in one of: {})", subs.join(", "))
}

/// Loads one split of a dataset from its standard files in `dir` or a standard subfolder of `dir`
/// (see [`find_dataset_dir`]). The dataset's name is the kind's CLI name; class names are attached
/// where known.
pub fn load(kind: DatasetKind, dir: &Path, split: Split) -> Result<Dataset> {
    let d = find_dataset_dir(kind, dir, split)?;
    let ds = match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            let (img, lab) = idx_files(&d, split).ok_or_else(|| Error::missing(&d, "IDX files vanished"))?;
            let names = if kind == DatasetKind::Mnist {
                names::digits()
            } else {
                names::strings(&names::FASHION_MNIST)
            };
            idx::mnist_idx(&img, &lab)?.with_class_names(names)
        }
        DatasetKind::Cifar10 => {
            let files: Vec<PathBuf> = match split {
                Split::Train => (1..=5).map(|i| d.join(format!("data_batch_{i}.bin"))).collect(),
                Split::Test => vec![d.join("test_batch.bin")],
            };
            let names =
                cifar::read_names(&d.join("batches.meta.txt"), 10).unwrap_or_else(|| names::strings(&names::CIFAR10));
            cifar::cifar10_files(&files)?.with_class_names(names)
        }
        DatasetKind::Cifar100 { label } => {
            let (file, n, default): (_, _, &[&str]) = match label {
                Cifar100Label::Fine => ("fine_label_names.txt", 100, &names::CIFAR100_FINE),
                Cifar100Label::Coarse => ("coarse_label_names.txt", 20, &names::CIFAR100_COARSE),
            };
            let names = cifar::read_names(&d.join(file), n).unwrap_or_else(|| names::strings(default));
            cifar::cifar100_file(&d.join(format!("{split}.bin")), label)?.with_class_names(names)
        }
        DatasetKind::Svhn => mat::svhn_mat(&d.join(format!("{split}_32x32.mat")))?,
        DatasetKind::TinyImageNet => folder::tiny_imagenet(&d, split)?,
        DatasetKind::ImageFolder => {
            let root = folder::folder_split_dir(&d, split)
                .ok_or_else(|| Error::missing(&d, format!("no {split} folder of class folders")))?;
            // The test split takes its class list from the train split so that labels agree.
            let classes = match split {
                Split::Test => folder::folder_split_dir(&d, Split::Train)
                    .filter(|t| t != &root)
                    .map(|t| folder::class_dirs(&t))
                    .transpose()?,
                Split::Train => None,
            };
            folder::image_folder(&root, classes.as_deref())?
        }
        DatasetKind::Digits => {
            let f = find_file(&d, &["digits.csv"], true).ok_or_else(|| Error::missing(&d, "digits.csv vanished"))?;
            digits::digits_split(&digits::digits_csv(&f)?, split)?
        }
    };
    Ok(match kind {
        // A user's folder keeps its own name (e.g. `cinic-10`).
        DatasetKind::ImageFolder => {
            let name = d
                .file_name()
                .map_or_else(|| "folder".into(), |n| n.to_string_lossy().into_owned());
            ds.with_name(name)
        }
        _ => ds.with_name(kind.cli_name()),
    })
}

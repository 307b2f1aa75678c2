//! The in-memory [`Dataset`], the dataset kinds and the `load` entry point that finds each dataset's
//! standard files in a folder.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::{cifar, digits, folder, idx, mat, names};

/// A labelled image dataset held in memory: `u8` pixels, channel-major (CHW) per sample, samples
/// one after the other; one `u32` label per sample, in `0..classes`.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    name: String,
    shape: [usize; 3],
    classes: usize,
    class_names: Option<Vec<String>>,
    pixel_max: u8,
    pixels: Vec<u8>,
    labels: Vec<u32>,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("shape", &self.shape)
            .field("classes", &self.classes)
            .field("pixel_max", &self.pixel_max)
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Builds a dataset, checking that `pixels` holds a whole number of `c*h*w` samples, that there is
    /// one label per sample and that every label is below `classes`. Pixel values run from 0 to 255;
    /// see [`Dataset::with_pixel_max`] for other ranges.
    pub fn new(
        name: impl Into<String>,
        shape: [usize; 3],
        classes: usize,
        pixels: Vec<u8>,
        labels: Vec<u32>,
    ) -> Result<Self> {
        let name = name.into();
        let sample = shape[0] * shape[1] * shape[2];
        if sample == 0 {
            return Err(Error::Config(format!(
                "dataset {name}: sample shape {shape:?} is empty"
            )));
        }
        if pixels.len() != sample * labels.len() {
            return Err(Error::Config(format!(
                "dataset {name}: {} pixel bytes for {} labels of shape {shape:?} (expected {})",
                pixels.len(),
                labels.len(),
                sample * labels.len()
            )));
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= classes) {
            return Err(Error::Config(format!(
                "dataset {name}: label {l} of sample {i} is not below the class count {classes}"
            )));
        }
        Ok(Dataset {
            name,
            shape,
            classes,
            class_names: None,
            pixel_max: 255,
            pixels,
            labels,
        })
    }

    /// Renames the dataset.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Attaches class names; ignored (left unset) unless there is exactly one per class.
    pub fn with_class_names(mut self, names: Vec<String>) -> Self {
        if names.len() == self.classes {
            self.class_names = Some(names);
        }
        self
    }

    /// Sets the value that stands for full intensity (255 for images; 16 for the sklearn digits).
    /// Transforms map a pixel `v` to `v / pixel_max` before normalising. A zero is treated as 1.
    pub fn with_pixel_max(mut self, pixel_max: u8) -> Self {
        self.pixel_max = pixel_max.max(1);
        self
    }

    /// The dataset's name (e.g. `mnist`, `cifar100-coarse`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sample shape `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Class names, one per class, if known.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// The pixel value of full intensity (255, or 16 for the digits).
    pub fn pixel_max(&self) -> u8 {
        self.pixel_max
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per sample (`c*h*w`).
    pub fn sample_len(&self) -> usize {
        self.shape[0] * self.shape[1] * self.shape[2]
    }

    /// All pixels, `len() * sample_len()` bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// All labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The pixels of sample `i` (CHW). Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.sample_len();
        &self.pixels[i * s..(i + 1) * s]
    }

    /// The label of sample `i`. Panics if `i >= len()`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// Number of samples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A new dataset holding the given samples, in the given order (indices may repeat).
    /// Errors if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let s = self.sample_len();
        let mut pixels = Vec::with_capacity(indices.len() * s);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::Config(format!(
                    "index {i} out of range for dataset {} of {} samples",
                    self.name,
                    self.len()
                )));
            }
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok(Dataset {
            pixels,
            labels,
            ..self.clone_meta()
        })
    }

    fn clone_meta(&self) -> Dataset {
        Dataset {
            name: self.name.clone(),
            shape: self.shape,
            classes: self.classes,
            class_names: self.class_names.clone(),
            pixel_max: self.pixel_max,
            pixels: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Appends the samples of `other` (same shape, class count and pixel range).
    pub fn append(&mut self, other: Dataset) -> Result<()> {
        if other.shape != self.shape || other.classes != self.classes || other.pixel_max != self.pixel_max {
            return Err(Error::Config(format!(
                "cannot append {} ({:?}, {} classes) to {} ({:?}, {} classes)",
                other.name, other.shape, other.classes, self.name, self.shape, self.classes
            )));
        }
        self.pixels.extend_from_slice(&other.pixels);
        self.labels.extend_from_slice(&other.labels);
        Ok(())
    }

    /// Loads one split of a dataset from its standard files in `dir` (or a standard subfolder of
    /// `dir`); see [`load`].
    pub fn load(kind: DatasetKind, dir: &Path, split: Split) -> Result<Dataset> {
        load(kind, dir, split)
    }
}

/// Which labels to use for CIFAR-100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cifar100Label {
    /// The 100 fine classes.
    Fine,
    /// The 20 superclasses (coarse labels).
    Coarse,
}

/// The datasets this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// MNIST: IDX files.
    Mnist,
    /// Fashion-MNIST: IDX files.
    FashionMnist,
    /// CIFAR-10: binary batches `data_batch_{1..5}.bin`, `test_batch.bin`.
    Cifar10,
    /// CIFAR-100: `train.bin`, `test.bin`, with fine or coarse labels.
    Cifar100 {
        /// Fine (100) or coarse (20) labels.
        label: Cifar100Label,
    },
    /// SVHN cropped digits: `train_32x32.mat`, `test_32x32.mat`.
    Svhn,
    /// Tiny-ImageNet-200: `train/<wnid>/images`, `val/` with `val_annotations.txt`.
    TinyImageNet,
    /// One folder per class (CINIC-10 and user data): `train/<class>/*`, `test/<class>/*`.
    ImageFolder,
    /// The sklearn digits CSV (8x8, values 0..16, label last), gzip-compressed or raw.
    Digits,
}

impl DatasetKind {
    /// Every kind, with CIFAR-100 once per label choice.
    pub const ALL: [DatasetKind; 9] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100 {
            label: Cifar100Label::Fine,
        },
        DatasetKind::Cifar100 {
            label: Cifar100Label::Coarse,
        },
        DatasetKind::Svhn,
        DatasetKind::TinyImageNet,
        DatasetKind::ImageFolder,
        DatasetKind::Digits,
    ];

    /// The command-line name: `mnist`, `fashion-mnist`, `cifar10`, `cifar100`, `cifar100-coarse`,
    /// `svhn`, `tiny-imagenet`, `folder`, `digits`.
    pub fn cli_name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 {
                label: Cifar100Label::Fine,
            } => "cifar100",
            DatasetKind::Cifar100 {
                label: Cifar100Label::Coarse,
            } => "cifar100-coarse",
            DatasetKind::Svhn => "svhn",
            DatasetKind::TinyImageNet => "tiny-imagenet",
            DatasetKind::ImageFolder => "folder",
            DatasetKind::Digits => "digits",
        }
    }

    /// Number of classes, where the kind fixes it (`None` for image folders).
    pub fn classes(self) -> Option<usize> {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist | DatasetKind::Cifar10 | DatasetKind::Svhn => Some(10),
            DatasetKind::Digits => Some(10),
            DatasetKind::Cifar100 {
                label: Cifar100Label::Fine,
            } => Some(100),
            DatasetKind::Cifar100 {
                label: Cifar100Label::Coarse,
            } => Some(20),
            DatasetKind::TinyImageNet => Some(200),
            DatasetKind::ImageFolder => None,
        }
    }

    /// Sample shape `[c, h, w]`, where the kind fixes it.
    pub fn shape(self) -> Option<[usize; 3]> {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => Some([1, 28, 28]),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 { .. } | DatasetKind::Svhn => Some([3, 32, 32]),
            DatasetKind::TinyImageNet => Some([3, 64, 64]),
            DatasetKind::Digits => Some([1, 8, 8]),
            DatasetKind::ImageFolder => None,
        }
    }

    /// Official (train, test) sample counts, where fixed.
    pub fn official_counts(self) -> Option<(usize, usize)> {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => Some((60_000, 10_000)),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 { .. } => Some((50_000, 10_000)),
            DatasetKind::Svhn => Some((73_257, 26_032)),
            DatasetKind::TinyImageNet => Some((100_000, 10_000)),
            DatasetKind::Digits => Some((digits::DIGITS_TRAIN, digits::DIGITS_TOTAL - digits::DIGITS_TRAIN)),
            DatasetKind::ImageFolder => None,
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;

    /// Accepts the CLI names (case-insensitive) and a few aliases: `fashion`, `fashionmnist`,
    /// `cifar-10`, `cifar-100`, `cifar100-fine`, `cifar100-super`, `tinyimagenet`, `image-folder`,
    /// `imagefolder`, `cinic10`, `cinic-10`.
    fn from_str(s: &str) -> Result<Self> {
        let k = s.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match k.as_str() {
            "mnist" => DatasetKind::Mnist,
            "fashion-mnist" | "fashionmnist" | "fashion" => DatasetKind::FashionMnist,
            "cifar10" | "cifar-10" => DatasetKind::Cifar10,
            "cifar100" | "cifar-100" | "cifar100-fine" => DatasetKind::Cifar100 {
                label: Cifar100Label::Fine,
            },
            "cifar100-coarse" | "cifar-100-coarse" | "cifar100-super" | "cifar100-superclass" => {
                DatasetKind::Cifar100 {
                    label: Cifar100Label::Coarse,
                }
            }
            "svhn" => DatasetKind::Svhn,
            "tiny-imagenet" | "tinyimagenet" | "tiny-imagenet-200" => DatasetKind::TinyImageNet,
            "folder" | "image-folder" | "imagefolder" | "cinic10" | "cinic-10" => DatasetKind::ImageFolder,
            "digits" => DatasetKind::Digits,
            _ => {
                return Err(Error::UnknownDataset {
                    name: s.to_string(),
                    known: DatasetKind::ALL
                        .iter()
                        .map(|k| k.cli_name())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        })
    }
}

/// Official split of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The official training set (validation is carved from it by [`crate::Splits`]).
    Train,
    /// The official test set (Tiny-ImageNet: `val/`, whose labels are public; digits: see
    /// [`crate::digits`]).
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Subfolders, besides `dir` itself, where each kind's files are looked for.
pub(crate) fn candidate_subdirs(kind: DatasetKind) -> &'static [&'static str] {
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

//! The data types every reader builds on: the in-memory [`Dataset`], [`DatasetKind`], [`Split`] and
//! [`Cifar100Label`].
//!
//! Readers import this module and nothing imports a reader back into it, so there is no cycle;
//! finding and dispatching to a reader lives in `locate.rs`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

// The digits sizes live here, not in `digits.rs`, because `DatasetKind::official_counts` needs them
// and this module must not import a reader; `digits` re-exports them.
/// Samples in the scikit-learn digits set.
pub const DIGITS_TOTAL: usize = 1797;
/// Samples in the digits train half ([`Split::Train`]).
pub const DIGITS_TRAIN: usize = 898;

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
            DatasetKind::Digits => Some((DIGITS_TRAIN, DIGITS_TOTAL - DIGITS_TRAIN)),
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

//! Data pipeline of **earlyexit**: dataset readers, seeded splits, transforms and a prefetching batch
//! loader. Pure Rust, no tensors: batches are `Vec<f32>` that the main crate turns into tensors.
//!
//! - Readers, each for the dataset's own format: IDX ([`idx`], MNIST and Fashion-MNIST, raw or
//!   gzip), CIFAR-10/100 binary batches ([`cifar`]), SVHN level-5 MAT-files ([`mat`]), image folders
//!   and Tiny-ImageNet ([`folder`]), the scikit-learn digits CSV ([`digits`]). [`load`] finds a
//!   dataset's standard files in a folder; [`DatasetKind`] parses the CLI names.
//! - [`Splits`]: train / validation from the official training set and the official test set, drawn
//!   from a seed, with the papers' sizes by default ([`SplitSizes::paper`]).
//! - [`Normalize`], [`RandomCrop`], [`HorizontalFlip`], [`Augment`], [`Transform`].
//! - [`Loader`]: shuffled (or sequential) batches per epoch, built on worker threads with bounded
//!   prefetch, bit-identical for a given seed and epoch whatever the worker count.
//! - [`verify()`]: recognise and check the datasets in a folder; [`fetch()`]: download the official
//!   archives where a network exists.
//!
//! Bad input gives an [`Error`] naming the file and what is wrong; nothing here panics on file
//! contents. Byte-slice parsers ([`parse_idx_images`], [`parse_cifar10`], [`parse_mat`], ...) are
//! the fuzzing entry points.
//!
//! ```no_run
//! use std::{path::Path, sync::Arc};
//! use earlyexit_data::*;
//!
//! # fn main() -> earlyexit_data::Result<()> {
//! let kind: DatasetKind = "cifar10".parse()?;
//! let dir = Path::new("../shared/data");
//! let train = Arc::new(load(kind, dir, Split::Train)?);
//! let test = Arc::new(load(kind, dir, Split::Test)?);
//! let splits = Splits::for_datasets(kind, &train, &test, 42)?;
//! let norm = Normalize::for_dataset(kind, &train, &splits.train);
//! let cfg = LoaderConfig::train(128, norm.clone(), Augment::paper(kind), 42);
//! let loader = Loader::new(train.clone(), splits.train.clone(), cfg)?;
//! for batch in loader.epoch(0) {
//!     // batch.images: n * c * h * w f32, batch.labels: n u32
//!     # let _ = batch;
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod cifar;
mod dataset;
pub mod digits;
mod error;
pub mod fetch;
pub mod folder;
mod gz;
pub mod idx;
mod loader;
mod locate;
pub mod mat;
pub mod names;
mod splits;
mod transform;
pub mod verify;

pub use cifar::{CifarBatch, cifar10_files, cifar100_file, parse_cifar10, parse_cifar100, read_cifar10, read_cifar100};
pub use dataset::{Cifar100Label, Dataset, DatasetKind, Split};
pub use digits::{digits_csv, parse_digits_csv};
pub use error::{Error, MEMORY_PATH, Result};
pub use fetch::{FetchOptions, fetch};
pub use folder::{image_folder, tiny_imagenet};
pub use idx::{IdxImages, mnist_idx, parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels};
pub use loader::{Batch, Epoch, Loader, LoaderConfig};
pub use locate::{find_dataset_dir, load};
pub use mat::{MatArray, MatData, MatFile, parse_mat, parse_svhn, read_mat, svhn_mat};
pub use splits::{SplitSizes, Splits};
pub use transform::{Augment, HorizontalFlip, Normalize, RandomCrop, Transform};
pub use verify::{VerifyReport, verify};

/// The repository's `data/` folder (which ships MNIST in `data/mnist/`), as located when this crate
/// was compiled (`<crate>/../../data`). Use it as the default `--data-dir` when running from a
/// checkout.
pub fn repo_data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("data")
}

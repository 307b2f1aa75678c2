//! Seeded train / validation / test splits.
//!
//! Train and validation are disjoint subsets of the official training set; test is the official test
//! set, whole. The validation split is the one calibration uses; it never overlaps test because the
//! two come from different official sets.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Dataset, DatasetKind};
use crate::error::{Error, Result};

/// How many samples of the official training set go to training and to validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SplitSizes {
    /// Training samples.
    pub train: usize,
    /// Validation samples.
    pub val: usize,
}

impl SplitSizes {
    /// The papers' defaults for an official training set of `official_train` samples:
    /// CIFAR-10/100 hold out a fifth (40k / 10k of 50k, class-specific seed §4); MNIST and
    /// Fashion-MNIST a twelfth (55k / 5k of 60k); every other dataset a tenth (SVHN 65,932 / 7,325,
    /// Tiny-ImageNet 90k / 10k, digits 809 / 89 of the 898-sample train half).
    pub fn paper(kind: DatasetKind, official_train: usize) -> SplitSizes {
        let val = match kind {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 { .. } => official_train / 5,
            DatasetKind::Mnist | DatasetKind::FashionMnist => official_train / 12,
            _ => official_train / 10,
        };
        SplitSizes {
            train: official_train - val,
            val,
        }
    }
}

/// Index lists into the official train set (`train`, `val`) and test set (`test`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Splits {
    /// Indices into the official training set used for training, ascending.
    pub train: Vec<usize>,
    /// Indices into the official training set held out for validation (calibration), ascending.
    pub val: Vec<usize>,
    /// Indices into the official test set: all of them, ascending.
    pub test: Vec<usize>,
}

impl Splits {
    /// Draws `sizes.val` validation and then `sizes.train` training indices from a permutation of
    /// `0..train_len` made by `ChaCha8Rng` seeded with `seed`; `test` is `0..test_len`. The same
    /// arguments always give the same splits. Errors if `sizes.train + sizes.val > train_len`.
    pub fn new(train_len: usize, test_len: usize, sizes: SplitSizes, seed: u64) -> Result<Splits> {
        let need = sizes.train.saturating_add(sizes.val);
        if need > train_len {
            return Err(Error::Config(format!(
                "split sizes train {} + val {} exceed the {train_len} samples of the training set",
                sizes.train, sizes.val
            )));
        }
        let mut perm: Vec<usize> = (0..train_len).collect();
        perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut val = perm[..sizes.val].to_vec();
        let mut train = perm[sizes.val..need].to_vec();
        val.sort_unstable();
        train.sort_unstable();
        Ok(Splits {
            train,
            val,
            test: (0..test_len).collect(),
        })
    }

    /// [`Splits::new`] with the papers' sizes ([`SplitSizes::paper`]).
    pub fn paper(kind: DatasetKind, train_len: usize, test_len: usize, seed: u64) -> Result<Splits> {
        Splits::new(train_len, test_len, SplitSizes::paper(kind, train_len), seed)
    }

    /// [`Splits::paper`] for loaded train and test datasets.
    pub fn for_datasets(kind: DatasetKind, train: &Dataset, test: &Dataset, seed: u64) -> Result<Splits> {
        Splits::paper(kind, train.len(), test.len(), seed)
    }
}

//! The data of a run, split exactly as training split it, and batches as tensors.

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::{AugmentKind, DataConfig};
use crate::data::{Augment, Batch, Dataset, DatasetKind, Loader, LoaderConfig, Normalize, Split, Splits};
use crate::error::Result;

/// Which part of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataSplit {
    /// The training indices (part of the official training set).
    Train,
    /// The validation indices (the rest of the official training set, disjoint from `Train`).
    Val,
    /// The official test set.
    Test,
}

impl std::str::FromStr for DataSplit {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Self::Train),
            "val" | "validation" => Ok(Self::Val),
            "test" => Ok(Self::Test),
            _ => Err(crate::Error::UnknownName {
                what: "split",
                name: s.into(),
                expected: "train, val, test".into(),
            }),
        }
    }
}

/// A dataset loaded for a run: the official sets, the seeded split and the normalisation.
#[derive(Clone, Debug)]
pub struct RunData {
    /// The dataset.
    pub kind: DatasetKind,
    /// The official training set (train and validation indices point into it).
    pub train_set: Arc<Dataset>,
    /// The official test set.
    pub test_set: Arc<Dataset>,
    /// Train / validation / test indices (limits applied).
    pub splits: Splits,
    /// Normalisation (the dataset's standard constants, or fitted on the training indices).
    pub normalize: Normalize,
}

impl RunData {
    /// Loads the dataset of `cfg` and splits it with `cfg.split_seed`.
    pub fn load(cfg: &DataConfig) -> Result<Self> {
        Self::load_with(cfg, true)
    }

    /// [`RunData::load`] without ever opening the test files: the test split is empty. For
    /// whatever must not see the test data (calibration, sweeps, exit pruning); the training and
    /// validation splits are the same as [`RunData::load`]'s.
    pub fn load_without_test(cfg: &DataConfig) -> Result<Self> {
        Self::load_with(cfg, false)
    }

    fn load_with(cfg: &DataConfig, with_test: bool) -> Result<Self> {
        let kind: DatasetKind = cfg.dataset.parse()?;
        let train_set = Arc::new(crate::data::load(kind, &cfg.dir, Split::Train)?);
        let test_set = Arc::new(if with_test {
            crate::data::load(kind, &cfg.dir, Split::Test)?
        } else {
            train_set.subset(&[])?
        });
        let mut splits = Splits::for_datasets(kind, &train_set, &test_set, cfg.split_seed)?;
        if let Some(n) = cfg.train_limit {
            splits.train.truncate(n);
        }
        if let Some(n) = cfg.val_limit {
            splits.val.truncate(n);
        }
        let normalize = Normalize::for_dataset(kind, &train_set, &splits.train);
        Ok(Self {
            kind,
            train_set,
            test_set,
            splits,
            normalize,
        })
    }

    /// Number of samples in `split`.
    pub fn len(&self, split: DataSplit) -> usize {
        match split {
            DataSplit::Train => self.splits.train.len(),
            DataSplit::Val => self.splits.val.len(),
            DataSplit::Test => self.splits.test.len(),
        }
    }

    /// The shuffled, augmented training loader of a run with seed `seed`.
    pub fn train_loader(&self, cfg: &DataConfig, seed: u64) -> Result<Loader> {
        let augment = match cfg.augment {
            AugmentKind::Paper => Augment::paper(self.kind),
            AugmentKind::None => Augment::none(),
            AugmentKind::Cifar => Augment::cifar(),
        };
        let mut lc = LoaderConfig::train(cfg.batch_size, self.normalize.clone(), augment, seed);
        lc.workers = cfg.workers;
        Ok(Loader::new(self.train_set.clone(), self.splits.train.clone(), lc)?)
    }

    /// A sequential, unaugmented loader over `split`.
    pub fn eval_loader(&self, split: DataSplit, batch_size: usize, workers: usize) -> Result<Loader> {
        let (set, idx) = match split {
            DataSplit::Train => (&self.train_set, &self.splits.train),
            DataSplit::Val => (&self.train_set, &self.splits.val),
            DataSplit::Test => (&self.test_set, &self.splits.test),
        };
        let mut lc = LoaderConfig::eval(batch_size, self.normalize.clone());
        lc.workers = workers;
        Ok(Loader::new(set.clone(), idx.clone(), lc)?)
    }
}

/// A batch as tensors on `device`: images `[N, C, H, W]` and labels `[N]`.
pub fn batch_tensors(batch: &Batch, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let [c, h, w] = batch.shape;
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), [batch.n, c, h, w]), device);
    let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch.n]), device);
    (x, y)
}

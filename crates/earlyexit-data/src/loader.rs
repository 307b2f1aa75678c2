//! Batching with augmentation on worker threads and bounded prefetch.
//!
//! Each epoch's order is a permutation of the loader's indices drawn from `(seed, epoch)` (or the
//! given order when `shuffle` is off), and each batch's augmentation RNG is derived from
//! `(seed, epoch, batch index)`. Batches are therefore bit-identical whatever the number of workers,
//! and any batch can be recomputed on its own — which is how [`Loader::epoch_from`] resumes an epoch
//! in the middle.
//!
//! Worker `w` of `W` builds batches `w, w + W, w + 2W, ...` and sends them over its own bounded
//! channel; the consumer takes them round-robin, so batches arrive in order. At most about
//! `prefetch + workers` batches are in memory. Dropping an [`Epoch`] stops its workers.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::transform::{Augment, Normalize, Transform};

/// How a [`Loader`] batches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle every epoch (training); off keeps the given index order (evaluation).
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Augmentation ([`Augment::none`] for evaluation).
    pub augment: Augment,
    /// Normalisation; `None` only scales pixels to `[0, 1]`.
    pub normalize: Option<Normalize>,
    /// Worker threads; 0 builds batches on the consuming thread.
    pub workers: usize,
    /// Batches to build ahead (spread over the workers; at least one per worker).
    pub prefetch: usize,
    /// Seed of the shuffles and augmentations.
    pub seed: u64,
}

impl Default for LoaderConfig {
    /// Batch 128, sequential, keep the last batch, no augmentation, no normalisation, 2 workers,
    /// prefetch 4, seed 0.
    fn default() -> Self {
        LoaderConfig {
            batch_size: 128,
            shuffle: false,
            drop_last: false,
            augment: Augment::none(),
            normalize: None,
            workers: 2,
            prefetch: 4,
            seed: 0,
        }
    }
}

impl LoaderConfig {
    /// Training: shuffled, with the given augmentation and normalisation, last partial batch kept.
    pub fn train(batch_size: usize, normalize: Normalize, augment: Augment, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            augment,
            normalize: Some(normalize),
            seed,
            ..LoaderConfig::default()
        }
    }

    /// Evaluation: sequential, no augmentation.
    pub fn eval(batch_size: usize, normalize: Normalize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            normalize: Some(normalize),
            ..LoaderConfig::default()
        }
    }
}

/// One batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n * c * h * w` normalised values, sample after sample, CHW.
    pub images: Vec<f32>,
    /// The label of each sample.
    pub labels: Vec<u32>,
    /// The dataset index of each sample (for reports).
    pub indices: Vec<usize>,
    /// Number of samples.
    pub n: usize,
    /// Sample shape `[c, h, w]`.
    pub shape: [usize; 3],
    /// The epoch the batch belongs to.
    pub epoch: usize,
    /// The batch's position in its epoch (0-based).
    pub index: usize,
}

struct Shared {
    dataset: Arc<Dataset>,
    transform: Transform,
    order: Vec<usize>,
    batch_size: usize,
    seed: u64,
    epoch: usize,
}

const TAG_SHUFFLE: u64 = 0x5348_5546_464c_4521;
const TAG_BATCH: u64 = 0x4241_5443_4841_5547;

/// A ChaCha8 generator keyed by the four words (a 256-bit seed), so every (seed, purpose, epoch, batch)
/// has its own independent stream.
fn keyed_rng(seed: u64, tag: u64, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (i, w) in [seed, tag, a, b].into_iter().enumerate() {
        key[i * 8..(i + 1) * 8].copy_from_slice(&w.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

impl Shared {
    fn make_batch(&self, index: usize) -> Batch {
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let idx = &self.order[start..end];
        let shape = self.transform.shape();
        let per = shape[0] * shape[1] * shape[2];
        let mut images = vec![0f32; idx.len() * per];
        let mut labels = Vec::with_capacity(idx.len());
        let mut rng = keyed_rng(self.seed, TAG_BATCH, self.epoch as u64, index as u64);
        let augment = !self.transform.augment().is_none();
        for (out, &i) in images.chunks_exact_mut(per).zip(idx) {
            let src = self.dataset.image(i);
            if augment {
                self.transform.apply(src, &mut rng, out);
            } else {
                self.transform.apply_eval(src, out);
            }
            labels.push(self.dataset.label(i));
        }
        Batch {
            images,
            labels,
            indices: idx.to_vec(),
            n: idx.len(),
            shape,
            epoch: self.epoch,
            index,
        }
    }
}

/// Hands out batches of a dataset's samples, epoch after epoch.
#[derive(Debug, Clone)]
pub struct Loader {
    dataset: Arc<Dataset>,
    indices: Arc<Vec<usize>>,
    transform: Transform,
    config: LoaderConfig,
}

impl Loader {
    /// A loader over `dataset[indices]` (for example [`crate::Splits::train`]).
    /// Errors if the batch size is 0, an index is out of range, or the normalisation's channel
    /// count differs from the dataset's.
    pub fn new(dataset: Arc<Dataset>, indices: Vec<usize>, config: LoaderConfig) -> Result<Loader> {
        if config.batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(Error::Config(format!(
                "index {i} is out of range for dataset {} of {} samples",
                dataset.name(),
                dataset.len()
            )));
        }
        let shape = dataset.shape();
        let normalize = config
            .normalize
            .clone()
            .unwrap_or_else(|| Normalize::identity(shape[0]));
        let transform = Transform::new(shape, dataset.pixel_max(), &normalize, config.augment)?;
        Ok(Loader {
            dataset,
            indices: Arc::new(indices),
            transform,
            config,
        })
    }

    /// A loader over every sample of `dataset`, in order.
    pub fn all(dataset: Arc<Dataset>, config: LoaderConfig) -> Result<Loader> {
        let n = dataset.len();
        Loader::new(dataset, (0..n).collect(), config)
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Number of samples the loader draws from.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True if the loader has no samples.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.indices.len(), self.config.batch_size);
        if self.config.drop_last { n / b } else { n.div_ceil(b) }
    }

    /// The sample order of `epoch` (dataset indices).
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order = self.indices.as_ref().clone();
        if self.config.shuffle {
            order.shuffle(&mut keyed_rng(self.config.seed, TAG_SHUFFLE, epoch as u64, 0));
        }
        order
    }

    fn shared(&self, epoch: usize) -> Arc<Shared> {
        Arc::new(Shared {
            dataset: self.dataset.clone(),
            transform: self.transform.clone(),
            order: self.order(epoch),
            batch_size: self.config.batch_size,
            seed: self.config.seed,
            epoch,
        })
    }

    /// Builds batch `index` of `epoch` on the calling thread (`None` past the end of the epoch).
    pub fn batch(&self, epoch: usize, index: usize) -> Option<Batch> {
        (index < self.batches_per_epoch()).then(|| self.shared(epoch).make_batch(index))
    }

    /// The batches of `epoch`, built ahead on the worker threads.
    pub fn epoch(&self, epoch: usize) -> Epoch {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `skip` on (to resume an epoch after `skip` finished steps);
    /// the batches are identical to those of [`Loader::epoch`] at the same positions.
    pub fn epoch_from(&self, epoch: usize, skip: usize) -> Epoch {
        let shared = self.shared(epoch);
        let end = self.batches_per_epoch();
        let start = skip.min(end);
        let workers = self.config.workers.min(end - start);
        let cap = self.config.prefetch.div_ceil(workers.max(1)).max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx): (SyncSender<Batch>, Receiver<Batch>) = sync_channel(cap);
            let sh = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("earlyexit-data-{w}"))
                .spawn(move || {
                    for b in (start + w..end).step_by(workers) {
                        if tx.send(sh.make_batch(b)).is_err() {
                            return; // the epoch was dropped
                        }
                    }
                });
            match spawned {
                Ok(h) => {
                    receivers.push(rx);
                    handles.push(h);
                }
                Err(_) => break, // no threads to be had: build the rest inline
            }
        }
        if receivers.len() < workers {
            // A partial pool would break the round-robin order; fall back to inline building.
            receivers.clear();
            for h in handles.drain(..) {
                let _ = h.join();
            }
        }
        Epoch {
            shared,
            next: start,
            start,
            end,
            receivers,
            handles,
            wait: Duration::ZERO,
        }
    }
}

/// The batches of one epoch, in order. Iterating blocks only when the workers are behind;
/// [`Epoch::wait_time`] adds up that blocking (the "data time" of a training loop).
pub struct Epoch {
    shared: Arc<Shared>,
    next: usize,
    start: usize,
    end: usize,
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<JoinHandle<()>>,
    wait: Duration,
}

impl Epoch {
    /// Total time `next()` has spent waiting for (or, with no workers, building) batches.
    pub fn wait_time(&self) -> Duration {
        self.wait
    }

    /// The epoch number.
    pub fn epoch(&self) -> usize {
        self.shared.epoch
    }

    /// Index of the next batch to be returned.
    pub fn position(&self) -> usize {
        self.next
    }
}

impl Iterator for Epoch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.end {
            return None;
        }
        let t0 = Instant::now();
        let b = self.next;
        let batch = if self.receivers.is_empty() {
            self.shared.make_batch(b)
        } else {
            let rx = &self.receivers[(b - self.start) % self.receivers.len()];
            // A worker that died (it cannot panic on valid indices, but be safe) is replaced inline.
            rx.recv().unwrap_or_else(|_| self.shared.make_batch(b))
        };
        self.wait += t0.elapsed();
        self.next += 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Closing the channels makes blocked workers return.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

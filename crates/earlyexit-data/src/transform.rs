//! Normalisation and augmentation: `u8` CHW in, normalised `f32` CHW out.
//!
//! A pixel `v` becomes `(v / pixel_max - mean[c]) / std[c]` (a 256-entry lookup table per channel).
//! Training augmentation for CIFAR-style data is a random crop with zero padding 4 (the padding is
//! black, as torchvision's `RandomCrop(32, padding=4)`) and a horizontal flip with probability 1/2.
//! Evaluation uses no augmentation. The random draws come from the RNG the caller passes, so a
//! seeded RNG gives reproducible output.

use rand::Rng;

use crate::dataset::{Dataset, DatasetKind};
use crate::error::{Error, Result};

/// Per-channel mean and standard deviation, on pixel values scaled to `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel (all > 0).
    pub std: Vec<f32>,
}

impl Normalize {
    /// Checks that `mean` and `std` have the same, non-zero length and every std is finite and > 0.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Normalize> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(Error::Config(format!(
                "normalisation needs one mean and one std per channel, got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if std.iter().any(|s| !s.is_finite() || *s <= 0.0) || mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::Config(format!(
                "invalid normalisation mean {mean:?} std {std:?}"
            )));
        }
        Ok(Normalize { mean, std })
    }

    /// Mean 0, std 1: pixels only scaled to `[0, 1]`.
    pub fn identity(channels: usize) -> Normalize {
        Normalize {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The usual constants of a standard dataset (computed on its training set):
    /// MNIST 0.1307 / 0.3081, Fashion-MNIST 0.2860 / 0.3530,
    /// CIFAR-10 (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616),
    /// CIFAR-100 (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762),
    /// SVHN (0.4377, 0.4438, 0.4728) / (0.1980, 0.2010, 0.1970),
    /// Tiny-ImageNet (0.4802, 0.4481, 0.3975) / (0.2302, 0.2265, 0.2262),
    /// digits 0.3053 / 0.3760 (on values / 16, all 1,797 samples).
    /// `None` for image folders: use [`Normalize::fit`].
    pub fn for_kind(kind: DatasetKind) -> Option<Normalize> {
        let (m, s): (&[f32], &[f32]) = match kind {
            DatasetKind::Mnist => (&[0.1307], &[0.3081]),
            DatasetKind::FashionMnist => (&[0.2860], &[0.3530]),
            DatasetKind::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            DatasetKind::Cifar100 { .. } => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
            DatasetKind::Svhn => (&[0.4377, 0.4438, 0.4728], &[0.1980, 0.2010, 0.1970]),
            DatasetKind::TinyImageNet => (&[0.4802, 0.4481, 0.3975], &[0.2302, 0.2265, 0.2262]),
            DatasetKind::Digits => (&[0.3053], &[0.3760]),
            DatasetKind::ImageFolder => return None,
        };
        Some(Normalize {
            mean: m.to_vec(),
            std: s.to_vec(),
        })
    }

    /// Per-channel mean and std (population) of the given samples (all samples if `indices` is
    /// empty), on values scaled by the dataset's `pixel_max`. A channel with zero spread gets std 1.
    pub fn fit(dataset: &Dataset, indices: &[usize]) -> Normalize {
        let [c, h, w] = dataset.shape();
        let plane = h * w;
        let mut hist = vec![[0u64; 256]; c];
        let mut add = |i: usize| {
            let img = dataset.image(i);
            for (ch, hc) in hist.iter_mut().enumerate() {
                for &v in &img[ch * plane..(ch + 1) * plane] {
                    hc[v as usize] += 1;
                }
            }
        };
        if indices.is_empty() {
            (0..dataset.len()).for_each(&mut add);
        } else {
            indices.iter().filter(|&&i| i < dataset.len()).for_each(|&i| add(i));
        }
        let scale = dataset.pixel_max() as f64;
        let (mut mean, mut std) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for hc in &hist {
            let n: u64 = hc.iter().sum();
            let n = n.max(1) as f64;
            let m: f64 = hc
                .iter()
                .enumerate()
                .map(|(v, &k)| v as f64 / scale * k as f64)
                .sum::<f64>()
                / n;
            let var: f64 = hc
                .iter()
                .enumerate()
                .map(|(v, &k)| (v as f64 / scale - m).powi(2) * k as f64)
                .sum::<f64>()
                / n;
            mean.push(m as f32);
            std.push(if var > 0.0 { var.sqrt() as f32 } else { 1.0 });
        }
        Normalize { mean, std }
    }

    /// [`Normalize::for_kind`] if the kind has constants, else [`Normalize::fit`] on `indices`.
    pub fn for_dataset(kind: DatasetKind, dataset: &Dataset, indices: &[usize]) -> Normalize {
        Normalize::for_kind(kind).unwrap_or_else(|| Normalize::fit(dataset, indices))
    }
}

/// Random crop of the original size from the image zero-padded by `pad` on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RandomCrop {
    /// Padding on each side, in pixels.
    pub pad: usize,
}

/// Horizontal (left-right) flip with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HorizontalFlip {
    /// Probability of flipping, in `[0, 1]`.
    pub p: f64,
}

impl Default for HorizontalFlip {
    fn default() -> Self {
        HorizontalFlip { p: 0.5 }
    }
}

/// Training-time augmentation. [`Augment::none`] (the default) for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    /// Random crop with padding, if any.
    pub crop: Option<RandomCrop>,
    /// Horizontal flip, if any.
    pub flip: Option<HorizontalFlip>,
}

impl Augment {
    /// No augmentation (evaluation).
    pub fn none() -> Augment {
        Augment::default()
    }

    /// CIFAR-style training: `RandomCrop { pad: 4 }` and `HorizontalFlip { p: 0.5 }`.
    pub fn cifar() -> Augment {
        Augment {
            crop: Some(RandomCrop { pad: 4 }),
            flip: Some(HorizontalFlip::default()),
        }
    }

    /// The papers' training augmentation: CIFAR-style for CIFAR-10/100, Tiny-ImageNet and image
    /// folders (CINIC-10); none for the digit datasets (MNIST, Fashion-MNIST, SVHN, digits), where
    /// flips change the class. For a folder of digits or text, use [`Augment::none`].
    pub fn paper(kind: DatasetKind) -> Augment {
        match kind {
            DatasetKind::Cifar10
            | DatasetKind::Cifar100 { .. }
            | DatasetKind::TinyImageNet
            | DatasetKind::ImageFolder => Augment::cifar(),
            _ => Augment::none(),
        }
    }

    /// True if the augmentation does nothing.
    pub fn is_none(&self) -> bool {
        self.crop.is_none_or(|c| c.pad == 0) && self.flip.is_none_or(|f| f.p <= 0.0)
    }
}

/// A ready-to-apply normalisation plus augmentation for one sample shape.
#[derive(Debug, Clone)]
pub struct Transform {
    shape: [usize; 3],
    lut: Vec<[f32; 256]>,
    augment: Augment,
}

impl Transform {
    /// Builds the per-channel lookup tables. Errors if `normalize` does not have one entry per
    /// channel of `shape`, or the flip probability is outside `[0, 1]`.
    pub fn new(shape: [usize; 3], pixel_max: u8, normalize: &Normalize, augment: Augment) -> Result<Transform> {
        if normalize.mean.len() != shape[0] || normalize.std.len() != shape[0] {
            return Err(Error::Config(format!(
                "normalisation has {} channels but the samples have {}",
                normalize.mean.len(),
                shape[0]
            )));
        }
        if let Some(f) = augment.flip
            && !(0.0..=1.0).contains(&f.p)
        {
            return Err(Error::Config(format!("flip probability {} is outside [0, 1]", f.p)));
        }
        let max = pixel_max.max(1) as f32;
        let lut = (0..shape[0])
            .map(|c| {
                let mut t = [0f32; 256];
                for (v, x) in t.iter_mut().enumerate() {
                    *x = (v as f32 / max - normalize.mean[c]) / normalize.std[c];
                }
                t
            })
            .collect();
        Ok(Transform { shape, lut, augment })
    }

    /// The sample shape.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The augmentation applied by [`Transform::apply`].
    pub fn augment(&self) -> Augment {
        self.augment
    }

    /// Normalises `src` (CHW `u8`, `c*h*w` bytes) into `out` (same length) with augmentation drawn
    /// from `rng`: crop offsets (row, then column) first, then the flip. Panics if the lengths are
    /// not `c*h*w`.
    pub fn apply<R: Rng + ?Sized>(&self, src: &[u8], rng: &mut R, out: &mut [f32]) {
        let pad = self.augment.crop.map_or(0, |c| c.pad);
        let (dy, dx) = if pad > 0 {
            (rng.random_range(0..=2 * pad), rng.random_range(0..=2 * pad))
        } else {
            (pad, pad)
        };
        let flip = self.augment.flip.is_some_and(|f| f.p > 0.0 && rng.random_bool(f.p));
        self.apply_with(src, dy as isize - pad as isize, dx as isize - pad as isize, flip, out);
    }

    /// Normalises without augmentation (evaluation).
    pub fn apply_eval(&self, src: &[u8], out: &mut [f32]) {
        self.apply_with(src, 0, 0, false, out);
    }

    /// Normalises with a fixed shift and flip: output pixel `(y, x)` is input pixel
    /// `(y + dy, x' + dx)` with `x' = w - 1 - x` if `flip`, else `x`; pixels outside the image are 0
    /// (black) before normalisation.
    pub fn apply_with(&self, src: &[u8], dy: isize, dx: isize, flip: bool, out: &mut [f32]) {
        let [c, h, w] = self.shape;
        let plane = h * w;
        assert_eq!(src.len(), c * plane, "source sample has the wrong length");
        assert_eq!(out.len(), c * plane, "output sample has the wrong length");
        for ch in 0..c {
            let lut = &self.lut[ch];
            let zero = lut[0];
            let s = &src[ch * plane..(ch + 1) * plane];
            let o = &mut out[ch * plane..(ch + 1) * plane];
            for y in 0..h {
                let orow = &mut o[y * w..(y + 1) * w];
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    orow.fill(zero);
                    continue;
                }
                let srow = &s[sy as usize * w..(sy as usize + 1) * w];
                if dx == 0 && !flip {
                    for (o, &v) in orow.iter_mut().zip(srow) {
                        *o = lut[v as usize];
                    }
                    continue;
                }
                for (x, o) in orow.iter_mut().enumerate() {
                    let xx = if flip { w - 1 - x } else { x } as isize + dx;
                    *o = if xx < 0 || xx >= w as isize {
                        zero
                    } else {
                        lut[srow[xx as usize] as usize]
                    };
                }
            }
        }
    }
}

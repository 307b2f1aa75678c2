//! The early-exit branch `e` of the class-specific method and its training with B frozen.
//!
//! The seed's branch (Fig. 3) is ReLU → global pooling → one dense layer, on the features at
//! cut point `i` (KP=Off) or at `i` and every earlier cut point, concatenated (KP=On, the
//! "keep previous connections" dense connection). B never changes, so `pool(relu(·))` of every
//! cut point is a fixed function of the input: one inference pass of B over a split yields the
//! inputs of **every** branch (every place × KP × target class). Training a branch is then
//! logistic regression on those cached vectors, on the host, with no autodiff graph and no
//! second pass of B. One dense layer with one sigmoid output per target class is the same as
//! one binary branch per class trained apart (the summed loss has independent terms, and each
//! class keeps the weights of its own best validation epoch).

use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::infer::{LabelledData, argmax};
use crate::model::Backbone;

/// The connection type of the seed (§3.1): `On` keeps the previous connections (dense branch
/// over every cut point up to `i`), `Off` reads cut point `i` alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kp {
    /// This cut point only.
    Off,
    /// This and every earlier cut point.
    On,
}

impl std::fmt::Display for Kp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kp::Off => "Off",
            Kp::On => "On",
        })
    }
}

/// [`branch_pool`] of the features at every cut point `c`, B's prediction and the label, for
/// every sample of a split: everything the branches and the criteria ever read.
#[derive(Clone, Debug)]
pub struct Features {
    /// Width of the pooled features at each cut point (cut points `0..dims.len()`).
    pub dims: Vec<usize>,
    /// Per cut point, `n × dims[c]` floats, sample after sample.
    pub pooled: Vec<Vec<f32>>,
    /// Labels.
    pub labels: Vec<usize>,
    /// B's predicted class (its own final classifier).
    pub b_pred: Vec<usize>,
}

impl Features {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Width of branch `(cut, kp)`'s input.
    pub fn width(&self, cut: usize, kp: Kp) -> usize {
        match kp {
            Kp::Off => self.dims[cut],
            Kp::On => self.dims[..=cut].iter().sum(),
        }
    }

    /// The input rows of branch `(cut, kp)`: `n × width` floats (KP=On concatenates cut points
    /// `0..=cut` in order, as the dense head does).
    pub fn input(&self, cut: usize, kp: Kp) -> Vec<f32> {
        let parts: Vec<usize> = match kp {
            Kp::Off => vec![cut],
            Kp::On => (0..=cut).collect(),
        };
        let w = self.width(cut, kp);
        let mut out = Vec::with_capacity(self.len() * w);
        for i in 0..self.len() {
            for &c in &parts {
                let d = self.dims[c];
                out.extend_from_slice(&self.pooled[c][i * d..(i + 1) * d]);
            }
        }
        out
    }
}

/// The branch's ReLU and pooling (Fig. 3 of the seed) on the features at one cut point:
/// [`crate::model::relu_pool`], the pooling the deployed `relupool` head runs.
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C·grid²]`
pub fn branch_pool(x: Tensor<4>, grid: usize) -> Tensor<2> {
    crate::model::relu_pool(x, grid)
}

/// One inference pass of the frozen backbone over `rows` of `data` (all rows when `None`):
/// [`branch_pool`]ed features at every cut point (every block but the last) and B's
/// predictions.
pub fn extract(
    backbone: &Backbone,
    data: &dyn LabelledData,
    rows: Option<&[usize]>,
    batch: usize,
    grid: usize,
    device: &Device,
) -> Result<Features> {
    let all: Vec<usize>;
    let rows = match rows {
        Some(r) => r,
        None => {
            all = (0..data.len()).collect();
            &all
        }
    };
    let cuts = backbone.blocks.len().saturating_sub(1);
    let mut f = Features {
        dims: Vec::new(),
        pooled: vec![Vec::new(); cuts],
        labels: Vec::with_capacity(rows.len()),
        b_pred: Vec::with_capacity(rows.len()),
    };
    for chunk in rows.chunks(batch.max(1)) {
        let (mut x, labels) = data.batch(chunk, device)?;
        let mut dims = Vec::with_capacity(cuts);
        for (c, block) in backbone.blocks.iter().enumerate() {
            x = block.forward(x);
            if c < cuts {
                let p = branch_pool(x.clone(), grid);
                dims.push(p.dims()[1]);
                f.pooled[c].extend(host(p));
            }
        }
        let logits = backbone.classifier.forward(x);
        let k = logits.dims()[1];
        f.b_pred.extend(host(logits).chunks(k).map(argmax));
        f.labels.extend(labels);
        f.dims = dims;
    }
    Ok(f)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 data")
}

/// How branches are trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Stop once no class's validation accuracy has improved for this many epochs (seed §3.2: 10).
    pub patience: usize,
    /// Hard cap on epochs.
    pub max_epochs: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the shuffling.
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            patience: 10,
            max_epochs: 100,
            batch: 256,
            lr: 0.01,
            seed: 1,
        }
    }
}

impl TrainSettings {
    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.patience == 0 {
            return Err(Error::invalid("patience", "must be at least 1"));
        }
        if self.max_epochs == 0 {
            return Err(Error::invalid("max_epochs", "must be at least 1"));
        }
        if self.batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid("lr", format!("must be > 0, got {}", self.lr)));
        }
        Ok(())
    }
}

/// A trained branch: one dense layer from `pool(relu(·))` features to one logit per target
/// class (`σ(z_k)` is the branch's confidence that the sample is of `k`, compared with α).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    /// Cut point `i`.
    pub cut: usize,
    /// Connection type.
    pub kp: Kp,
    /// Input width.
    pub width: usize,
    /// The target classes, one output each.
    pub classes: Vec<usize>,
    /// `width × classes.len()` weights, row-major (on the raw pooled features).
    pub weight: Vec<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
    /// Per output, the epoch (1-based) whose weights were kept.
    pub best_epoch: Vec<usize>,
    /// Per output, the binary validation accuracy at σ = 0.5 of the kept weights.
    pub val_accuracy: Vec<f64>,
    /// Epochs run.
    pub epochs: usize,
}

impl Branch {
    /// `σ(z)` for every sample (`n × classes.len()`, row-major) of `x` (`n × width`).
    pub fn probabilities(&self, x: &[f32]) -> Vec<f32> {
        logits(x, self.width, &self.weight, &self.bias)
            .into_iter()
            .map(|z| sigmoid(z as f64) as f32)
            .collect()
    }

    /// The column of output `k` (a target class) from [`Branch::probabilities`]' result.
    pub fn column(&self, probs: &[f32], class: usize) -> Option<Vec<f32>> {
        let j = self.classes.iter().position(|&c| c == class)?;
        let m = self.classes.len();
        Some(probs.chunks(m).map(|r| r[j]).collect())
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn logits(x: &[f32], d: usize, w: &[f32], b: &[f32]) -> Vec<f32> {
    let m = b.len();
    let n = x.len() / d.max(1);
    let mut z = Vec::with_capacity(n * m);
    for row in x.chunks(d) {
        let start = z.len();
        z.extend_from_slice(b);
        let out = &mut z[start..];
        for (xi, wrow) in row.iter().zip(w.chunks(m)) {
            for (o, wv) in out.iter_mut().zip(wrow) {
                *o += xi * wv;
            }
        }
    }
    z
}

/// Binary accuracy per output at `z > 0` (σ > 0.5).
fn binary_accuracy(z: &[f32], labels: &[usize], classes: &[usize]) -> Vec<f64> {
    let m = classes.len();
    let mut right = vec![0usize; m];
    for (row, &y) in z.chunks(m).zip(labels) {
        for (j, &c) in classes.iter().enumerate() {
            right[j] += ((row[j] > 0.0) == (y == c)) as usize;
        }
    }
    right
        .into_iter()
        .map(|r| r as f64 / labels.len().max(1) as f64)
        .collect()
}

/// Trains branch `(cut, kp)` for `classes` on `train` and stops on `val` (seed §3.2: until the
/// branch's validation accuracy has not improved for `patience` epochs), with Adam on the
/// summed binary cross-entropy of the outputs. Features are standardised with the training
/// mean and deviation for the optimiser's sake and the scaling is folded back into the weights,
/// so the branch is still one dense layer on the raw pooled features.
pub fn train_branch(
    cut: usize,
    kp: Kp,
    train: &Features,
    val: &Features,
    classes: &[usize],
    s: &TrainSettings,
) -> Result<Branch> {
    s.validate()?;
    if train.is_empty() || val.is_empty() {
        return Err(Error::invalid(
            "data",
            "the training and validation splits must not be empty",
        ));
    }
    let d = train.width(cut, kp);
    let m = classes.len();
    let n = train.len();
    let mut x = train.input(cut, kp);
    let mut xv = val.input(cut, kp);
    // Standardise.
    let mut mean = vec![0f64; d];
    let mut var = vec![0f64; d];
    for row in x.chunks(d) {
        for (a, &v) in mean.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    mean.iter_mut().for_each(|a| *a /= n as f64);
    for row in x.chunks(d) {
        for ((a, &v), mu) in var.iter_mut().zip(row).zip(&mean) {
            *a += (v as f64 - mu).powi(2);
        }
    }
    let sd: Vec<f64> = var.iter().map(|v| (v / n as f64).sqrt().max(1e-6)).collect();
    for buf in [&mut x, &mut xv] {
        for row in buf.chunks_mut(d) {
            for ((v, mu), s) in row.iter_mut().zip(&mean).zip(&sd) {
                *v = ((*v as f64 - mu) / s) as f32;
            }
        }
    }
    let targets: Vec<f32> = train
        .labels
        .iter()
        .flat_map(|&y| classes.iter().map(move |&c| (y == c) as u8 as f32))
        .collect();

    let mut w = vec![0f32; d * m];
    let mut b = vec![0f32; m];
    let (mut mw, mut vw, mut mb, mut vb) = (vec![0f32; d * m], vec![0f32; d * m], vec![0f32; m], vec![0f32; m]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let lr = s.lr as f32;
    let mut step = 0i32;
    let mut best_acc = vec![f64::NEG_INFINITY; m];
    let mut best_epoch = vec![0usize; m];
    let mut best_w = w.clone();
    let mut best_b = b.clone();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s.seed ^ ((cut as u64) << 8) ^ kp as u64);
    let mut epochs = 0;
    let mut gw = vec![0f32; d * m];
    let mut gb = vec![0f32; m];
    for epoch in 1..=s.max_epochs {
        epochs = epoch;
        order.shuffle(&mut rng);
        for chunk in order.chunks(s.batch) {
            gw.iter_mut().for_each(|g| *g = 0.0);
            gb.iter_mut().for_each(|g| *g = 0.0);
            let scale = 1.0 / chunk.len() as f32;
            let mut z = vec![0f32; m];
            for &i in chunk {
                let row = &x[i * d..(i + 1) * d];
                z.copy_from_slice(&b);
                for (xi, wrow) in row.iter().zip(w.chunks(m)) {
                    for (o, wv) in z.iter_mut().zip(wrow) {
                        *o += xi * wv;
                    }
                }
                // d/dz BCE(σ(z), y) = σ(z) − y.
                for (j, zj) in z.iter_mut().enumerate() {
                    *zj = (sigmoid(*zj as f64) as f32 - targets[i * m + j]) * scale;
                    gb[j] += *zj;
                }
                for (xi, grow) in row.iter().zip(gw.chunks_mut(m)) {
                    for (g, dz) in grow.iter_mut().zip(&z) {
                        *g += xi * dz;
                    }
                }
            }
            step += 1;
            let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
            for (((p, g), mo), ve) in w.iter_mut().zip(&gw).zip(&mut mw).zip(&mut vw) {
                *mo = b1 * *mo + (1.0 - b1) * g;
                *ve = b2 * *ve + (1.0 - b2) * g * g;
                *p -= lr * (*mo / c1) / ((*ve / c2).sqrt() + eps);
            }
            for (((p, g), mo), ve) in b.iter_mut().zip(&gb).zip(&mut mb).zip(&mut vb) {
                *mo = b1 * *mo + (1.0 - b1) * g;
                *ve = b2 * *ve + (1.0 - b2) * g * g;
                *p -= lr * (*mo / c1) / ((*ve / c2).sqrt() + eps);
            }
        }
        let acc = binary_accuracy(&logits(&xv, d, &w, &b), &val.labels, classes);
        for j in 0..m {
            if acc[j] > best_acc[j] {
                best_acc[j] = acc[j];
                best_epoch[j] = epoch;
                for r in 0..d {
                    best_w[r * m + j] = w[r * m + j];
                }
                best_b[j] = b[j];
            }
        }
        if best_epoch.iter().all(|&e| epoch - e >= s.patience) {
            break;
        }
    }
    // Fold the standardisation: z = Σ_r w_r (x_r − μ_r)/σ_r + b.
    let mut weight = vec![0f32; d * m];
    let mut bias: Vec<f64> = best_b.iter().map(|&v| v as f64).collect();
    for r in 0..d {
        for j in 0..m {
            let wr = best_w[r * m + j] as f64 / sd[r];
            weight[r * m + j] = wr as f32;
            bias[j] -= wr * mean[r];
        }
    }
    Ok(Branch {
        cut,
        kp,
        width: d,
        classes: classes.to_vec(),
        weight,
        bias: bias.into_iter().map(|v| v as f32).collect(),
        best_epoch,
        val_accuracy: best_acc,
        epochs,
    })
}

//! Reading an [`ExitTable`] from a model: labelled splits and one pass of every exit over them.

use burn::tensor::{Device, Tensor};

use super::executor::Executor;
use crate::error::{Error, Result};
use crate::model::MacConvention;
use crate::policy::{ExitColumn, ExitTable, SplitKind};

/// A labelled split that can be read by index.
///
/// Implemented by the run folder's splits and by [`InMemorySplit`]. Calibration only ever
/// reads a source whose [`LabelledData::split`] is [`SplitKind::Val`].
pub trait LabelledData {
    /// Which split this is.
    fn split(&self) -> SplitKind;
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The samples at `indices` as a `[n, C, H, W]` batch on `device`, with their labels.
    fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor<4>, Vec<usize>)>;
}

/// A split held in memory (row-major `N × C × H × W` floats and labels).
#[derive(Clone, Debug)]
pub struct InMemorySplit {
    /// Which split it is.
    pub kind: SplitKind,
    /// Per-sample shape `[C, H, W]`.
    pub shape: [usize; 3],
    /// Pixels, sample after sample.
    pub images: Vec<f32>,
    /// Labels.
    pub labels: Vec<usize>,
}

impl LabelledData for InMemorySplit {
    fn split(&self) -> SplitKind {
        self.kind
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor<4>, Vec<usize>)> {
        let [c, h, w] = self.shape;
        let per = c * h * w;
        let mut data = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.labels.len() {
                return Err(Error::invalid(
                    "index",
                    format!("sample {i} of a {}-sample split", self.labels.len()),
                ));
            }
            data.extend_from_slice(&self.images[i * per..(i + 1) * per]);
            labels.push(self.labels[i]);
        }
        let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(data, [indices.len(), c, h, w]), device);
        Ok((x, labels))
    }
}

/// The samples at `indices` of `data` on the host: their `[C, H, W]` and their values, sample
/// after sample (what a report shows of them; read on the CPU).
pub fn host_samples(data: &dyn LabelledData, indices: &[usize]) -> Result<([usize; 3], Vec<f32>)> {
    let (x, _) = data.batch(indices, &Device::flex())?;
    let [_, c, h, w] = x.dims();
    let values = x
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::invalid("samples", format!("{e:?}")))?;
    Ok(([c, h, w], values))
}

impl ExitTable {
    /// Runs every exit over every sample of `data` in batches of `batch`, on the code `exec`
    /// runs (the code that answers in deployment), and keeps the per-exit predictions and
    /// scores.
    pub fn collect(exec: &Executor, data: &dyn LabelledData, batch: usize) -> Result<Self> {
        Self::collect_indices(exec, data, &(0..data.len()).collect::<Vec<_>>(), batch)
    }

    /// Like [`Self::collect`], for the samples at `indices` only.
    pub fn collect_indices(exec: &Executor, data: &dyn LabelledData, indices: &[usize], batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        let model = exec.model();
        let n_out = model.net.num_exits() + 1;
        let mut exits: Vec<ExitColumn> = (0..n_out)
            .map(|k| ExitColumn {
                pred: Vec::new(),
                maxprob: Vec::new(),
                certainty: Vec::new(),
                confidence: (k + 1 < n_out && model.net.heads[k].has_confidence()).then(Vec::new),
                top_sigmoid: Vec::new(),
            })
            .collect();
        let mut labels = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(batch) {
            let (x, y) = data.batch(chunk, exec.device())?;
            labels.extend(y);
            for (col, out) in exits.iter_mut().zip(exec.exit_outputs(x)?) {
                col.pred.extend(out.preds());
                col.maxprob.extend(out.max_prob());
                col.certainty.extend(out.certainty());
                col.top_sigmoid.extend(out.top_sigmoid());
                if let (Some(v), Some(conf)) = (col.confidence.as_mut(), out.confidence()) {
                    v.extend(conf);
                }
            }
        }
        Ok(Self {
            split: data.split(),
            labels,
            exits,
            exit_macs: model.arch.cost.exit_macs(MacConvention::All),
            backbone_macs: model.arch.cost.backbone.macs(MacConvention::All),
        })
    }
}

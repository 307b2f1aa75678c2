//! Per-epoch metrics (`metrics.jsonl`, one JSON object per line) and evaluation of a network on
//! a split under an exit policy.

use std::path::Path;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::data::batch_tensors;
use super::objectives::{LossContext, Objective, log_mixtures};
use crate::data::Loader;
use crate::error::{Error, Result};
use crate::model::EarlyExitNet;
use crate::policy::{ExitLogits, Policy, argmax};

/// File name of the metrics inside a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One line of `metrics.jsonl`: what an epoch did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, 1-based.
    pub epoch: usize,
    /// Iterations done at the end of the epoch.
    pub iteration: u64,
    /// `layerwise`: the exit trained in this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<usize>,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy under the eval policy, on the batches as they were trained (for
    /// `layerwise`: of the exit being trained).
    pub train_accuracy: f64,
    /// Mean validation loss (same objective).
    pub val_loss: f64,
    /// Validation accuracy of every exit on its own, final classifier last.
    pub val_exit_accuracy: Vec<f64>,
    /// Validation samples leaving at each exit under the eval policy, final classifier last.
    pub val_exit_counts: Vec<usize>,
    /// Validation accuracy under the eval policy.
    pub val_accuracy: f64,
    /// Mean relative MAC cost per validation sample under the eval policy (1 = the plain
    /// backbone; earlier heads included).
    pub val_expected_cost: f64,
    /// The eval policy.
    pub policy: String,
    /// Base learning rate during the epoch (before per-stage factors).
    pub lr: f64,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
}

impl EpochMetrics {
    /// One line for a log: `epoch 2/3: loss …, train acc …, val acc … (policy), exits […], cost …,
    /// per-exit acc […], 12s`.
    pub fn summary(&self, epochs: usize) -> String {
        let per_exit: Vec<String> = self
            .val_exit_accuracy
            .iter()
            .map(|a| format!("{:.2}%", 100.0 * a))
            .collect();
        format!(
            "epoch {}/{}: loss {:.4}, train acc {:.2}%, val acc {:.2}% ({}), exits {:?}, cost {:.3}, per-exit acc [{}], {:.0}s",
            self.epoch,
            epochs,
            self.train_loss,
            100.0 * self.train_accuracy,
            100.0 * self.val_accuracy,
            self.policy,
            self.val_exit_counts,
            self.val_expected_cost,
            per_exit.join(", "),
            self.seconds
        )
    }
}

/// Reads `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Parse {
                file: path.into(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Writes `metrics.jsonl` atomically, one object per line.
pub fn write_metrics(path: &Path, metrics: &[EpochMetrics]) -> Result<()> {
    let mut out = String::new();
    for m in metrics {
        out.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        out.push('\n');
    }
    crate::model::io::write_atomic(path, out.as_bytes())
}

/// A network's results on one split under one policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Samples.
    pub samples: usize,
    /// Mean loss (when an objective was given).
    pub loss: f64,
    /// Accuracy of every exit on its own, final last.
    pub exit_accuracy: Vec<f64>,
    /// Samples leaving at each exit under the policy, final last.
    pub exit_counts: Vec<usize>,
    /// Accuracy under the policy.
    pub accuracy: f64,
    /// Mean relative MAC cost under the policy.
    pub expected_cost: f64,
}

/// Per-sample exit decisions of `policy` given every exit's output, on the host
/// ([`Policy::simulate`]), with each sample's prediction at its exit.
///
/// Returns `(exit, predicted class)` per sample; `Ensemble` answers with the soft-conditional
/// mixture at the final exit.
pub fn decide(outs: &[crate::model::ExitOutput], policy: &Policy) -> (Vec<usize>, Vec<usize>, Vec<Vec<usize>>) {
    let n_exits = outs.len() - 1;
    let host = |t: Tensor<2>| -> (Vec<f32>, usize) {
        let [_, k] = t.dims();
        (t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32"), k)
    };
    let preds: Vec<Vec<usize>> = outs
        .iter()
        .map(|o| {
            let (v, k) = host(o.logits.clone());
            v.chunks(k).map(argmax).collect()
        })
        .collect();
    let n = preds[0].len();
    let (exits, chosen) = match policy {
        Policy::Ensemble => {
            let mix = log_mixtures(outs).swap_remove(0);
            let (v, k) = host(mix);
            (vec![n_exits; n], v.chunks(k).map(argmax).collect())
        }
        // A plain network: every sample leaves at its only classifier.
        _ if n_exits == 0 => (vec![0; n], preds[0].clone()),
        _ => {
            let scores: Vec<Vec<f32>> = outs[..n_exits]
                .iter()
                .map(|o| policy.score(&ExitLogits::from_output(o)))
                .collect();
            let exits = policy.simulate(&scores, &preds[..n_exits]);
            let chosen = exits.iter().enumerate().map(|(i, &e)| preds[e][i]).collect();
            (exits, chosen)
        }
    };
    (exits, chosen, preds)
}

/// The relative cost of a sample that leaves at `exit` under `policy` (`never` runs the plain
/// backbone, cost 1; `ensemble` runs every head).
pub fn exit_cost(policy: &Policy, costs: &[f64], exit: usize) -> f64 {
    match policy {
        Policy::Never => 1.0,
        Policy::Ensemble => costs[costs.len() - 1],
        _ => costs[exit],
    }
}

/// Evaluates `net` (in inference mode: pass `net.valid()`) on every batch of `loader`.
pub fn evaluate(
    net: &EarlyExitNet,
    loader: &Loader,
    policy: &Policy,
    costs: &[f64],
    objective: Option<(&Objective, LossContext)>,
    device: &burn::tensor::Device,
) -> Result<Evaluation> {
    let n_out = net.num_exits() + 1;
    let mut exit_correct = vec![0usize; n_out];
    let mut counts = vec![0usize; n_out];
    let (mut correct, mut samples, mut cost, mut loss_sum) = (0usize, 0usize, 0.0f64, 0.0f64);
    for batch in loader.epoch(0) {
        let (x, y) = batch_tensors(&batch, device);
        let outs = net.forward_all(x);
        if let Some((obj, ctx)) = objective {
            let l: f32 = obj.loss(&outs, y, ctx).into_scalar::<f32>();
            loss_sum += l as f64 * batch.n as f64;
        }
        let (exits, chosen, preds) = decide(&outs, policy);
        for i in 0..batch.n {
            let label = batch.labels[i] as usize;
            for (k, p) in preds.iter().enumerate() {
                exit_correct[k] += usize::from(p[i] == label);
            }
            counts[exits[i]] += 1;
            correct += usize::from(chosen[i] == label);
            cost += exit_cost(policy, costs, exits[i]);
        }
        samples += batch.n;
    }
    let d = samples.max(1) as f64;
    Ok(Evaluation {
        samples,
        loss: loss_sum / d,
        exit_accuracy: exit_correct.iter().map(|&c| c as f64 / d).collect(),
        exit_counts: counts,
        accuracy: correct as f64 / d,
        expected_cost: cost / d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExitOutput;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn a_plain_network_answers_every_sample_at_its_classifier() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![0.1f32, 2.0, 3.0, -1.0, 0.0, 0.5], [3, 2]), &device);
        let outs = [ExitOutput {
            logits,
            confidence: None,
        }];
        for policy in ["confidence:0.5", "maxprob:0.9", "never"] {
            let (exits, chosen, preds) = decide(&outs, &policy.parse().unwrap());
            assert_eq!(exits, vec![0, 0, 0], "{policy}");
            assert_eq!(chosen, vec![1, 0, 1], "{policy}");
            assert_eq!(preds, vec![vec![1, 0, 1]]);
        }
    }
}

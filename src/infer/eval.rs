//! Honest evaluation: real exits, analytic cost of the exits taken, calibration error,
//! over-thinking, and measured wall-clock time against the same weights run without exits.
//!
//! ```
//! use burn::tensor::Device;
//! use earlyexit::infer::{EvalOptions, InMemorySplit, MultiExitModel, SplitKind, evaluate};
//! use earlyexit::model::{ModelDescription, Shape};
//!
//! let device = Device::flex();
//! let desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "cuts:1,2".parse()?);
//! let model = MultiExitModel::new(desc.resolve()?, &device);
//! let data = InMemorySplit { kind: SplitKind::Test, shape: [1, 28, 28],
//!                            images: vec![0.5; 6 * 784], labels: vec![0, 1, 2, 3, 4, 5] };
//! let opts = EvalOptions { timing_samples: 4, large_batch: 3, ..EvalOptions::default() };
//! let report = evaluate(&model, &data, &"maxprob:0.5".parse()?, &opts, &device)?;
//! assert_eq!(report.exits.len(), 3);
//! assert!((report.exits.iter().map(|e| e.coverage).sum::<f64>() - 1.0).abs() < 1e-9);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::engine::{Answers, MultiExitModel};
use super::executor::Executor;
use super::table::LabelledData;
use crate::choice::ExecChoice;
use crate::error::{Error, Result};
use crate::model::MacConvention;
use crate::policy::Policy;
use crate::policy::{ExitTable, SplitKind};

/// Number of equal-width confidence bins of [`ece`].
pub const ECE_BINS: usize = 15;

/// Expected calibration error with `bins` equal-width bins over `[0, 1]`:
/// `Σ_b (n_b / N) · |accuracy_b − mean confidence_b|`. A confidence of exactly 0 falls in the
/// first bin; bin `b` holds `(b/B, (b+1)/B]`.
pub fn ece(confidence: &[f32], correct: &[bool], bins: usize) -> f64 {
    let n = confidence.len();
    if n == 0 || bins == 0 {
        return 0.0;
    }
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut right = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let c = (c as f64).clamp(0.0, 1.0);
        let b = ((c * bins as f64).ceil() as usize).saturating_sub(1).min(bins - 1);
        count[b] += 1;
        conf[b] += c;
        right[b] += ok as usize;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let nb = count[b] as f64;
            (nb / n as f64) * (right[b] as f64 / nb - conf[b] / nb).abs()
        })
        .sum()
}

/// Options of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Batch size for the accuracy pass.
    pub batch: usize,
    /// Samples timed one at a time (batch 1), for the policy and for the plain network each.
    pub timing_samples: usize,
    /// The large batch size for timing.
    pub large_batch: usize,
    /// Samples timed at the large batch (rounded up to whole batches, at most the split).
    pub large_batch_samples: usize,
    /// Timing repeats; the fastest repeat counts (least disturbed by other work).
    pub repeats: usize,
    /// Answer and time a copy with BatchNorm folded into the convolutions (the policy and the
    /// plain network alike), as a deployment would run it.
    pub fold_bn: bool,
    /// Which code is timed (the policy and the plain network alike): by default the compiled
    /// CPU path where it runs the model, as a CPU deployment would.
    #[serde(default, alias = "timing_path")]
    pub path: ExecChoice,
}

impl EvalOptions {
    /// Checks every count before any computing starts (a 0 would fail only after the accuracy
    /// pass); errors name the option.
    pub fn check(&self) -> Result<()> {
        for (name, v) in [
            ("batch", self.batch),
            ("timing_samples", self.timing_samples),
            ("large_batch", self.large_batch),
            ("large_batch_samples", self.large_batch_samples),
            ("repeats", self.repeats),
        ] {
            if v == 0 {
                return Err(Error::invalid(name, "must be at least 1"));
            }
        }
        Ok(())
    }
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch: 256,
            timing_samples: 300,
            large_batch: 256,
            large_batch_samples: 2048,
            repeats: 3,
            fold_bn: true,
            path: ExecChoice::Auto,
        }
    }
}

/// One exit's row of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitEval {
    /// Exit index (the final classifier last).
    pub exit: usize,
    /// Share of samples leaving here.
    pub coverage: f64,
    /// Number of samples leaving here.
    pub count: usize,
    /// Accuracy of the samples leaving here (`None` where none does).
    pub accuracy: Option<f64>,
    /// Accuracy of this exit on every sample (as if all left here).
    pub accuracy_all: f64,
    /// Relative cost of a sample leaving here.
    pub relative_cost: f64,
}

/// Wall-clock timing at one batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Batch size.
    pub batch: usize,
    /// Samples timed.
    pub samples: usize,
    /// Microseconds per sample with the policy (real early exits).
    pub policy_us: f64,
    /// Microseconds per sample for the same weights without exits (`never`).
    pub plain_us: f64,
    /// `plain_us / policy_us`.
    pub speedup: f64,
}

/// Everything `earlyexit eval` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The split evaluated.
    pub split: SplitKind,
    /// The policy.
    pub policy: Policy,
    /// Number of samples.
    pub samples: usize,
    /// Accuracy of the answers.
    pub accuracy: f64,
    /// Accuracy of the full network (final classifier on every sample).
    pub full_accuracy: f64,
    /// Mean MACs spent per sample (exits actually taken, earlier heads included).
    pub mean_macs: f64,
    /// Plain backbone MACs per sample.
    pub backbone_macs: u64,
    /// `mean_macs / backbone_macs`.
    pub relative_cost: f64,
    /// `backbone_macs / mean_macs`: the speed-up the cost model predicts.
    pub predicted_speedup: f64,
    /// Measured speed-up at batch 1 (see [`EvalReport::timing`]).
    pub measured_speedup: f64,
    /// Measured speed-up at the large batch.
    pub measured_speedup_large: f64,
    /// Timings, batch 1 first.
    pub timing: Vec<Timing>,
    /// The code that was timed ([`Executor::describe`]).
    #[serde(default, alias = "timing_path")]
    pub implementation: String,
    /// Expected calibration error of the answers (15 bins, confidence = largest probability).
    pub ece: f64,
    /// Samples an earlier exit had right and the final classifier gets wrong.
    pub overthinking: usize,
    /// Samples answered wrongly by the policy that some exit before the answering one had right.
    pub overthinking_answered: usize,
    /// Per exit, the final classifier last.
    pub exits: Vec<ExitEval>,
    /// Under a class-specific policy ([`Policy::Class`]): per target class and for the rest,
    /// what the real exits did and the time they took against B's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_specific: Option<ClassSpecificEval>,
}

/// One target class of a class-specific policy, measured (the class-specific seed's figures on
/// real exits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetClassEval {
    /// The class `k`.
    pub k: usize,
    /// Samples of `k`.
    pub samples: usize,
    /// Share of the samples of `k` answered `k` (at any exit).
    pub accuracy: f64,
    /// Share of the answers `k` (at any exit) that are right; `None` when nothing is answered `k`.
    pub precision: Option<f64>,
    /// Samples of `k` leaving early as `k` (`tp` at `Out:EE`).
    pub early_right: usize,
    /// Samples of other classes leaving early as `k` (`fp` at `Out:EE`).
    pub early_wrong: usize,
    /// Share of the samples of `k` leaving early.
    pub early_share: f64,
    /// Samples of `k` leaving (as `k`) at each early exit.
    pub early_by_exit: Vec<usize>,
    /// Microseconds per sample of `k` at batch 1 with the policy.
    pub policy_us: f64,
    /// Microseconds per sample of `k` at batch 1 without exits (B).
    pub plain_us: f64,
    /// `plain_us / policy_us`: the measured gain for the samples of `k`.
    pub gain: f64,
    /// Samples of `k` timed.
    pub timed: usize,
    /// The gain the design's time model (the class-specific seed's eq. 3, or its two-exit form)
    /// predicts at the exit rates measured here, when the run records its design
    /// ([`crate::classexit::predict`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_gain: Option<f64>,
    /// The design's loss `t'/t` (eq. 1): how much slower a sample that does not leave early is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_loss: Option<f64>,
}

/// The samples of no target class under a class-specific policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestEval {
    /// Samples.
    pub samples: usize,
    /// Share answered right.
    pub accuracy: f64,
    /// Share of the answers of these classes (at any exit) that are right.
    pub precision: Option<f64>,
    /// Share leaving early (answered as a target class: always wrong).
    pub early_share: f64,
    /// Microseconds per sample at batch 1 with the policy.
    pub policy_us: f64,
    /// Microseconds per sample at batch 1 without exits.
    pub plain_us: f64,
    /// `policy_us / plain_us`: how many times slower the branches make them.
    pub slowdown: f64,
    /// Samples timed.
    pub timed: usize,
}

/// What [`evaluate`] adds under [`Policy::Class`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassSpecificEval {
    /// Per class the policy answers early, in label order.
    pub classes: Vec<TargetClassEval>,
    /// Every other sample.
    pub rest: RestEval,
}

/// The answers' figures for the samples whose label `of` accepts: `(samples, accuracy,
/// precision, leaving early)`, `precision` over the answers `of` accepts.
fn class_figures(
    answers: &Answers,
    labels: &[usize],
    num_exits: usize,
    of: &dyn Fn(usize) -> bool,
) -> (usize, f64, Option<f64>, usize) {
    let mut samples = 0;
    let mut right = 0;
    let mut early = 0;
    let mut answered = 0;
    let mut answered_right = 0;
    for (i, &y) in labels.iter().enumerate() {
        let a = answers.class[i];
        if of(y) {
            samples += 1;
            right += (a == y) as usize;
            early += (answers.exit[i] < num_exits) as usize;
        }
        if of(a) {
            answered += 1;
            answered_right += (a == y) as usize;
        }
    }
    (
        samples,
        right as f64 / samples.max(1) as f64,
        (answered > 0).then(|| answered_right as f64 / answered as f64),
        early,
    )
}

/// Microseconds per sample at batch 1 of `policy` and of `never` over `rows` (fastest of
/// `repeats`, the two interleaved so that both see the same machine).
fn time_rows_batch1(
    exec: &Executor,
    data: &dyn LabelledData,
    policy: &Policy,
    rows: &[usize],
    repeats: usize,
) -> Result<(f64, f64)> {
    let inputs: Vec<_> = rows
        .iter()
        .map(|&r| data.batch(&[r], exec.device()).map(|b| b.0))
        .collect::<Result<_>>()?;
    let Some(first) = inputs.first() else {
        return Ok((f64::NAN, f64::NAN));
    };
    exec.infer(first.clone(), policy)?;
    exec.infer(first.clone(), &Policy::Never)?;
    let mut best = [f64::INFINITY; 2];
    for _ in 0..repeats.max(1) {
        for (slot, p) in [policy, &Policy::Never].into_iter().enumerate() {
            let start = Instant::now();
            for x in &inputs {
                std::hint::black_box(exec.infer(x.clone(), p)?);
            }
            best[slot] = best[slot].min(start.elapsed().as_secs_f64());
        }
    }
    let per = |s: f64| s * 1e6 / inputs.len() as f64;
    Ok((per(best[0]), per(best[1])))
}

/// [`ClassSpecificEval`] of `answers` under class policy `policy`, timing up to `timed` samples
/// of each group at batch 1.
fn class_specific(
    exec: &Executor,
    data: &dyn LabelledData,
    policy: &Policy,
    answers: &Answers,
    labels: &[usize],
    timed: usize,
    repeats: usize,
) -> Result<Option<ClassSpecificEval>> {
    let Policy::Class(exits) = policy else {
        return Ok(None);
    };
    let num_exits = exits.len();
    let mut targets: Vec<usize> = exits.iter().flatten().map(|r| r.class).collect();
    targets.sort_unstable();
    targets.dedup();
    let rows_of = |keep: &dyn Fn(usize) -> bool| -> Vec<usize> {
        (0..labels.len()).filter(|&i| keep(labels[i])).take(timed).collect()
    };
    let mut classes = Vec::with_capacity(targets.len());
    for &k in &targets {
        let (samples, accuracy, precision, _) = class_figures(answers, labels, num_exits, &|c| c == k);
        // Samples answered `k` at an early exit: right ones per exit, wrong ones counted.
        let mut early_by_exit = vec![0; num_exits];
        let mut early_wrong = 0;
        for i in 0..labels.len() {
            if answers.class[i] == k && answers.exit[i] < num_exits {
                if labels[i] == k {
                    early_by_exit[answers.exit[i]] += 1;
                } else {
                    early_wrong += 1;
                }
            }
        }
        let early_right: usize = early_by_exit.iter().sum();
        let rows = rows_of(&|c| c == k);
        let (policy_us, plain_us) = time_rows_batch1(exec, data, policy, &rows, repeats)?;
        classes.push(TargetClassEval {
            k,
            samples,
            accuracy,
            precision,
            early_right,
            early_wrong,
            early_share: early_right as f64 / samples.max(1) as f64,
            early_by_exit,
            policy_us,
            plain_us,
            gain: plain_us / policy_us,
            timed: rows.len(),
            predicted_gain: None,
            predicted_loss: None,
        });
    }
    let is_rest = |c: usize| !targets.contains(&c);
    let (samples, accuracy, precision, early) = class_figures(answers, labels, num_exits, &is_rest);
    let rows = rows_of(&is_rest);
    let (policy_us, plain_us) = time_rows_batch1(exec, data, policy, &rows, repeats)?;
    Ok(Some(ClassSpecificEval {
        classes,
        rest: RestEval {
            samples,
            accuracy,
            precision,
            early_share: early as f64 / samples.max(1) as f64,
            policy_us,
            plain_us,
            slowdown: policy_us / plain_us,
            timed: rows.len(),
        },
    }))
}

/// Runs `policy` for real over `data` (batches of `batch`) on the code `exec` runs and returns
/// the answers with their labels.
pub fn answer_all(
    exec: &Executor,
    data: &dyn LabelledData,
    policy: &Policy,
    batch: usize,
) -> Result<(Answers, Vec<usize>)> {
    if batch == 0 {
        return Err(Error::invalid("batch", "must be at least 1"));
    }
    let mut all = Answers {
        classes: exec.model().arch.description.classes,
        class: vec![],
        probs: vec![],
        exit: vec![],
        confidence: vec![],
        macs: vec![],
    };
    let mut labels = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch) {
        let (x, y) = data.batch(chunk, exec.device())?;
        let a = exec.infer(x, policy)?;
        all.class.extend(a.class);
        all.probs.extend(a.probs);
        all.exit.extend(a.exit);
        all.confidence.extend(a.confidence);
        all.macs.extend(a.macs);
        labels.extend(y);
    }
    Ok((all, labels))
}

/// Microseconds per sample of `policy` over the first `samples` samples at `batch`, fastest of
/// `repeats`.
pub fn time_policy(
    exec: &Executor,
    data: &dyn LabelledData,
    policy: &Policy,
    batch: usize,
    samples: usize,
    repeats: usize,
    device: &Device,
) -> Result<(f64, usize)> {
    let samples = samples.min(data.len());
    if samples == 0 || batch == 0 {
        return Err(Error::invalid(
            "timing",
            "needs at least one sample and a batch of at least 1",
        ));
    }
    let idx: Vec<usize> = (0..samples).collect();
    let batches: Vec<_> = idx
        .chunks(batch)
        .map(|c| data.batch(c, device))
        .collect::<Result<_>>()?;
    // Warm-up (allocations, kernels).
    exec.infer(batches[0].0.clone(), policy)?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        for (x, _) in &batches {
            let a = exec.infer(x.clone(), policy)?;
            std::hint::black_box(&a);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok((best * 1e6 / samples as f64, samples))
}

/// Evaluates `policy` on `data`: real per-sample exits for accuracy, coverage and cost; a table
/// of every exit (same code) for over-thinking and the full network's accuracy; wall-clock time at
/// batch 1 and at `opts.large_batch` against the same weights without exits.
pub fn evaluate(
    model: &MultiExitModel,
    data: &dyn LabelledData,
    policy: &Policy,
    opts: &EvalOptions,
    device: &Device,
) -> Result<EvalReport> {
    Ok(evaluate_with_table(model, data, policy, opts, device)?.0)
}

/// [`evaluate`], also returning the table of every exit on `data` it computed (what a report's
/// curves are drawn from), so that a caller needing both does not run the network twice.
pub fn evaluate_with_table(
    model: &MultiExitModel,
    data: &dyn LabelledData,
    policy: &Policy,
    opts: &EvalOptions,
    device: &Device,
) -> Result<(EvalReport, ExitTable)> {
    if data.is_empty() {
        return Err(Error::invalid("split", format!("the {} split is empty", data.split())));
    }
    opts.check()?;
    // One executor answers, fills the table and is timed: the figures are of the code that
    // would answer in deployment.
    let deployed = if opts.fold_bn {
        model.clone().fold_bn()
    } else {
        model.clone()
    };
    let exec = Executor::new(deployed, device, opts.path)?;
    let (answers, labels) = answer_all(&exec, data, policy, opts.batch)?;
    let table = ExitTable::collect(&exec, data, opts.batch)?;
    let mut report = report_from(&answers, &labels, &table, policy);
    let mut timing = Vec::new();
    for (batch, samples) in [(1, opts.timing_samples), (opts.large_batch, opts.large_batch_samples)] {
        let samples = samples.max(batch).min(data.len());
        let (p, n) = time_policy(&exec, data, policy, batch, samples, opts.repeats, device)?;
        let (b, _) = time_policy(&exec, data, &Policy::Never, batch, samples, opts.repeats, device)?;
        timing.push(Timing {
            batch,
            samples: n,
            policy_us: p,
            plain_us: b,
            speedup: b / p,
        });
    }
    report.class_specific = class_specific(
        &exec,
        data,
        policy,
        &answers,
        &labels,
        opts.timing_samples,
        opts.repeats,
    )?;
    report.measured_speedup = timing[0].speedup;
    report.measured_speedup_large = timing[1].speedup;
    report.timing = timing;
    report.implementation = exec.describe();
    Ok((report, table))
}

/// The metrics of an evaluation from answers, labels and a table of the same samples (no
/// timing).
pub fn report_from(answers: &Answers, labels: &[usize], table: &ExitTable, policy: &Policy) -> EvalReport {
    let n = labels.len();
    let n_out = table.exits.len();
    let correct: Vec<bool> = answers.class.iter().zip(labels).map(|(a, b)| a == b).collect();
    let mut count = vec![0usize; n_out];
    let mut right = vec![0usize; n_out];
    for (&e, &ok) in answers.exit.iter().zip(&correct) {
        count[e] += 1;
        right[e] += ok as usize;
    }
    let top: Vec<f32> = (0..n)
        .map(|i| answers.probs_of(i).iter().copied().fold(0.0, f32::max))
        .collect();
    let mean_macs = answers.macs.iter().map(|&m| m as f64).sum::<f64>() / n.max(1) as f64;
    let backbone_macs = table.backbone_macs;
    let overthinking_answered = (0..n)
        .filter(|&i| !correct[i] && (0..answers.exit[i]).any(|k| table.correct(k, i)))
        .count();
    let rel = table.exit_macs.iter().map(|&m| m as f64 / backbone_macs as f64);
    EvalReport {
        split: table.split,
        policy: policy.clone(),
        samples: n,
        accuracy: correct.iter().filter(|&&c| c).count() as f64 / n.max(1) as f64,
        full_accuracy: table.full_accuracy(),
        mean_macs,
        backbone_macs,
        relative_cost: mean_macs / backbone_macs as f64,
        predicted_speedup: backbone_macs as f64 / mean_macs,
        measured_speedup: f64::NAN,
        measured_speedup_large: f64::NAN,
        timing: vec![],
        implementation: String::new(),
        ece: ece(&top, &correct, ECE_BINS),
        overthinking: table.overthinking(),
        overthinking_answered,
        exits: (0..n_out)
            .zip(rel)
            .map(|(k, r)| ExitEval {
                exit: k,
                coverage: count[k] as f64 / n.max(1) as f64,
                count: count[k],
                accuracy: (count[k] > 0).then(|| right[k] as f64 / count[k] as f64),
                accuracy_all: table.exit_accuracy_all(k),
                relative_cost: r,
            })
            .collect(),
        class_specific: None,
    }
}

/// MACs of the plain backbone under the `all` convention.
pub fn backbone_macs(model: &MultiExitModel) -> u64 {
    model.arch.cost.backbone.macs(MacConvention::All)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_matches_a_hand_computed_case() {
        // Bin 14 (0.9333…, 1]: confidences 0.95, 0.99 — one right, one wrong.
        //   |0.5 − 0.97| = 0.47, weight 2/5.
        // Bin 7 (0.4667, 0.5333]: 0.5 right → |1 − 0.5| = 0.5, weight 1/5.
        // Bin 0 [0, 0.0667]: 0.0 and 0.05, both wrong → |0 − 0.025| = 0.025, weight 2/5.
        let conf = [0.95, 0.99, 0.5, 0.0, 0.05];
        let ok = [true, false, true, false, false];
        let want = 0.4 * 0.47 + 0.2 * 0.5 + 0.4 * 0.025;
        assert!((ece(&conf, &ok, 15) - want).abs() < 1e-6, "{}", ece(&conf, &ok, 15));
        // Perfect calibration: confidence 1 and always right.
        assert!(ece(&[1.0, 1.0], &[true, true], 15).abs() < 1e-12);
        // Two confidences in one bin are averaged before comparing: 0.5 and 0.52 (bin 7),
        // one right → |0.5 − 0.51| = 0.01.
        assert!((ece(&[0.5, 0.52], &[true, false], 15) - 0.01).abs() < 1e-6);
    }
}

//! The early-exit inference engine: real per-sample exits on batches.
//!
//! After each stage the samples whose exit fires are answered and only the rest go on: the
//! survivors are gathered on the device (`select`), so later stages really run on fewer
//! samples. The only host transfer per stage is the exit mask; answers are gathered on the device
//! and brought back once at the end.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Int, Tensor, TensorData};

use super::policy::{Policy, PolicyState, max_prob};
use crate::error::Result;
use crate::model::{Architecture, EarlyExitNet, MacConvention, StageState, check_input};

/// Per-sample answers of [`MultiExitModel::infer`], in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct Answers {
    /// Number of classes.
    pub classes: usize,
    /// Predicted class per sample.
    pub class: Vec<usize>,
    /// Class probabilities, row-major `N × classes`.
    pub probs: Vec<f32>,
    /// Exit that answered (the final classifier is `num_exits`).
    pub exit: Vec<usize>,
    /// The policy's confidence score at the answering exit.
    pub confidence: Vec<f32>,
    /// MACs spent on each sample (convention `all`), earlier heads included.
    pub macs: Vec<u64>,
}

impl Answers {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.class.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.class.is_empty()
    }

    /// Probabilities of sample `i`.
    pub fn probs_of(&self, i: usize) -> &[f32] {
        &self.probs[i * self.classes..(i + 1) * self.classes]
    }
}

/// A network together with its resolved architecture: what inference, calibration and serving
/// work with.
#[derive(Debug)]
pub struct MultiExitModel {
    /// Shapes, cut points and costs.
    pub arch: Architecture,
    /// The module.
    pub net: EarlyExitNet,
}

struct Answered {
    rows: Vec<usize>,
    exit: usize,
    probs: Tensor<2>,
    score: Tensor<1>,
}

impl MultiExitModel {
    /// Builds a freshly initialised model from its architecture.
    pub fn new(arch: Architecture, device: &burn::tensor::Device) -> Self {
        let net = arch.init(device);
        Self { arch, net }
    }

    /// The same model with BatchNorm folded into its convolutions, for faster inference (same
    /// answers within float rounding). Do not train the result.
    pub fn fold_bn(self) -> Self {
        Self {
            arch: self.arch,
            net: self.net.fold_bn(),
        }
    }

    /// MACs spent by a sample that leaves at each exit (final last), convention `all`.
    pub fn exit_macs(&self) -> Vec<u64> {
        self.arch.cost.exit_macs(MacConvention::All)
    }

    /// Real per-sample early exit on a batch.
    ///
    /// Returns, in input order, each sample's class, probabilities, exit, confidence and MACs.
    ///
    /// # Shapes
    /// `x`: `[N, C, H, W]` with `C×H×W` the model's input shape.
    pub fn infer(&self, x: Tensor<4>, policy: &Policy) -> Result<Answers> {
        check_input(&x, self.arch.description.input)?;
        let has_conf = self.net.heads.iter().all(|h| h.has_confidence());
        let num_exits = self.net.num_exits();
        policy.check(num_exits, has_conf)?;
        let [n, ..] = x.dims();
        let classes = self.arch.description.classes;
        let device = x.device();
        let exit_macs = self.exit_macs();

        match policy {
            Policy::Never => {
                let logits = self.net.forward_backbone(x);
                let score = max_prob(&logits);
                let probs = softmax(logits, 1);
                let answered = vec![Answered {
                    rows: (0..n).collect(),
                    exit: num_exits,
                    probs,
                    score,
                }];
                return Ok(assemble(n, classes, answered, |_| {
                    self.arch.cost.backbone.macs(MacConvention::All)
                }));
            }
            Policy::Ensemble => {
                let outs = self.net.forward_all(x);
                let mut mix = softmax(outs[num_exits].logits.clone(), 1);
                for o in outs[..num_exits].iter().rev() {
                    let g = sigmoid(o.confidence.clone().expect("checked: confidence heads"));
                    mix = softmax(o.logits.clone(), 1) * g.clone() + mix * g.neg().add_scalar(1.0);
                }
                let score = mix.clone().max_dim(1).reshape([n]);
                let answered = vec![Answered {
                    rows: (0..n).collect(),
                    exit: num_exits,
                    probs: mix,
                    score,
                }];
                return Ok(assemble(n, classes, answered, |e| exit_macs[e]));
            }
            _ => {}
        }

        let mut rows: Vec<usize> = (0..n).collect();
        let mut state = StageState::new(x);
        let mut pstate = PolicyState::new();
        let mut answered = Vec::with_capacity(num_exits + 1);
        for k in 0..num_exits {
            state = self.net.run_stage(k, state);
            let out = self.net.exit(k, &state);
            let score = policy.score(&out);
            let mask = policy.decide(k, &out, &score, &mut pstate);
            let mask: Vec<bool> = mask.into_data().try_to_vec::<bool>().expect("bool mask");
            let (leave, stay): (Vec<usize>, Vec<usize>) = (0..rows.len()).partition(|&i| mask[i]);
            if leave.is_empty() {
                continue;
            }
            let leave_t = index_tensor(&leave, &device);
            answered.push(Answered {
                rows: leave.iter().map(|&i| rows[i]).collect(),
                exit: k,
                probs: softmax(out.logits.select(0, leave_t.clone()), 1),
                score: score.select(0, leave_t),
            });
            if stay.is_empty() {
                rows.clear();
                break;
            }
            let stay_t = index_tensor(&stay, &device);
            state = state.select(stay_t.clone());
            pstate = pstate.select(stay_t);
            rows = stay.iter().map(|&i| rows[i]).collect();
        }
        if !rows.is_empty() {
            state = self.net.run_stage(num_exits, state);
            let out = self.net.exit(num_exits, &state);
            let score = max_prob(&out.logits);
            answered.push(Answered {
                rows,
                exit: num_exits,
                probs: softmax(out.logits, 1),
                score,
            });
        }
        Ok(assemble(n, classes, answered, |e| exit_macs[e]))
    }
}

fn index_tensor(idx: &[usize], device: &burn::tensor::Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(v, [idx.len()]), device)
}

/// One transfer for all probabilities and one for all scores, then placement in input order.
fn assemble(n: usize, classes: usize, answered: Vec<Answered>, macs_of: impl Fn(usize) -> u64) -> Answers {
    let mut out = Answers {
        classes,
        class: vec![0; n],
        probs: vec![0.0; n * classes],
        exit: vec![0; n],
        confidence: vec![0.0; n],
        macs: vec![0; n],
    };
    if answered.is_empty() {
        return out;
    }
    let probs: Vec<f32> = Tensor::cat(answered.iter().map(|a| a.probs.clone()).collect(), 0)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 probs");
    let scores: Vec<f32> = Tensor::cat(answered.iter().map(|a| a.score.clone()).collect(), 0)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 scores");
    let mut j = 0;
    for a in &answered {
        for &r in &a.rows {
            let p = &probs[j * classes..(j + 1) * classes];
            out.probs[r * classes..(r + 1) * classes].copy_from_slice(p);
            out.class[r] = argmax(p);
            out.exit[r] = a.exit;
            out.confidence[r] = scores[j];
            out.macs[r] = macs_of(a.exit);
            j += 1;
        }
    }
    out
}

/// Index of the largest value (first on ties), as `argmax` on the device does.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

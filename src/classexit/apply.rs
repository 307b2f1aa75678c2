//! A class-specific design made deployable: baseline B with the chosen branches as exits and a
//! [`Policy::Class`] that fires them as the design does.
//!
//! Each class's design (its pick, and its second exit when that improves gain / loss) names
//! branches `(cut, KP)` and thresholds α. The applied model is B's backbone and classifier
//! with one exit per distinct cut: a `relupool` head for KP=Off (ReLU, average pooling to the
//! design's grid, one dense layer: the seed's Fig. 3) and a `dense` head for KP=On (the same over
//! every cut point up to this one, concatenated; global pooling only), without confidence
//! branches. A head's dense layer holds
//! the trained branch's weights in the columns of the classes its exit answers; every other
//! class gets weight 0 and bias [`OTHER_CLASS_LOGIT`], so the exit's predicted class is always
//! one it answers and `σ(z_k)` is exactly the branch's output. With the policy
//! `class:k@α,…` a sample leaves at the first exit whose predicted class passes its α: for one
//! class, exactly the design's rule (first branch ≥ α₁, else second ≥ α₂), answering `k`.
//!
//! Several classes may share one exit (their branches at the same cut and KP are one dense
//! layer with one output per target class: the exit answers the class with the larger logit
//! if it passes its own α). Two classes whose designs put different connection types at one cut
//! cannot share a head: that is an error naming both (design them with one `--kp`).

use std::collections::BTreeMap;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{Assessment, Baseline, Branch, ClassExitReport, Counts, Kp};
use crate::error::{Error, Result};
use crate::infer::MultiExitModel;
use crate::model::{HeadKind, Placement};
use crate::policy::{ClassRule, Policy};

/// The logit a class-specific exit gives every class it does not answer: far below any trained
/// branch's logit, so the exit's argmax is always one of its own classes, and `exp` of it is 0
/// (its softmax share vanishes) without being infinite.
pub const OTHER_CLASS_LOGIT: f32 = -1.0e4;

/// One exit of an applied design, in the applied model's exit order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedExit {
    /// Cut point (block index) of the branch.
    pub cut: usize,
    /// Connection type of the branch.
    pub kp: Kp,
    /// The classes this exit answers, each with its α.
    pub rules: Vec<ClassRule>,
}

/// One class's design as applied, with the figures the design predicted (what `eval` of the
/// applied run sets its measurements beside).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedClass {
    /// Target class `k`.
    pub k: usize,
    /// The applied model's exits that answer `k` (one, or two with a second exit).
    pub exits: Vec<usize>,
    /// B's β, η, ζ on validation.
    pub baseline: Baseline,
    /// The design's counts on validation (both exits' acceptances with two).
    pub counts: Counts,
    /// Eq. 4–7 on validation.
    pub assessment: Assessment,
    /// The time model's gain (eq. 3 or its two-exit form) on validation.
    pub gain: f64,
    /// The time model's loss on validation.
    pub loss: f64,
    /// The gain on the test split, when the design was evaluated on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_gain: Option<f64>,
}

/// What [`apply`] records next to the applied model (`class-design.json` in its run folder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedDesign {
    /// B's backbone.
    pub backbone: String,
    /// B's time per sample `t` (seconds) and the times the gains were computed from, as the
    /// design measured them.
    pub times: super::Times,
    /// The exits, in order.
    pub exits: Vec<AppliedExit>,
    /// Per applied class.
    pub classes: Vec<AppliedClass>,
}

/// The applied model, its policy and its record.
#[derive(Clone, Debug)]
pub struct Applied {
    /// B with the design's branches as exits.
    pub model: MultiExitModel,
    /// `class:k@α,…`, one group per exit.
    pub policy: Policy,
    /// The design as applied.
    pub design: AppliedDesign,
}

/// Builds the deployable model of `report`'s designs on baseline `model` (the B the design ran
/// on) with the trained `branches` ([`ClassExitReport::branch_weights`], or
/// [`super::load_branches`]).
///
/// `earlyexit class-exit --apply RUN` is this, then [`crate::run::write_applied_run`].
///
/// ```
/// use burn::tensor::Device;
/// use earlyexit::classexit::{ClassExitConfig, Splits, apply, design};
/// use earlyexit::infer::{InMemorySplit, MultiExitModel, SplitKind};
/// use earlyexit::model::{ModelDescription, Shape};
///
/// let device = Device::flex();
/// let desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "none".parse()?);
/// let b = MultiExitModel::new(desc.resolve()?, &device); // B (untrained here)
/// // Class 3 is bright, the others dark: a branch tells them apart.
/// let split = |kind, n: usize| InMemorySplit {
///     kind,
///     shape: [1, 28, 28],
///     images: (0..n * 784).map(|i| if (i / 784) % 10 == 3 { 0.9 } else { ((i * 7919) % 97) as f32 / 400.0 }).collect(),
///     labels: (0..n).map(|i| i % 10).collect(),
/// };
/// let (train, val) = (split(SplitKind::Train, 100), split(SplitKind::Val, 60));
/// let mut cfg = ClassExitConfig::new(vec![3]);
/// cfg.alpha = "0.5:1.0:0.1".parse()?;
/// cfg.train.max_epochs = 5;
/// cfg.timing_reps = 1;
/// let report = design(&b, Splits { train: &train, val: &val, test: None }, &cfg, &device)?;
/// let applied = apply(&b, &report, &report.branch_weights, &device)?;
/// assert!(applied.policy.to_string().starts_with("class:3@"));
/// assert_eq!(applied.model.net.num_exits(), applied.design.exits.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// No class has a viable design; a KP=On branch pools to a grid (only `relupool` heads do); a
/// branch the design names is missing; two designs put different connection types
/// at one cut; the baseline is not the one the report was made on.
pub fn apply(
    model: &MultiExitModel,
    report: &ClassExitReport,
    branches: &[Branch],
    device: &Device,
) -> Result<Applied> {
    let arch = &model.arch;
    if arch.backbone.name != report.backbone
        || arch.description.classes != report.num_classes
        || arch.backbone.input != report.input
    {
        return Err(Error::invalid(
            "baseline",
            format!(
                "the design was made on {} ({} classes, input {}), the baseline given is {} ({} classes, input {})",
                report.backbone,
                report.num_classes,
                report.input,
                arch.backbone.name,
                arch.description.classes,
                arch.backbone.input
            ),
        ));
    }
    let grid = report.config.grid;
    // Every (cut, KP) a design uses, with the classes it answers there.
    let mut at: BTreeMap<usize, (Kp, Vec<ClassRule>, Vec<usize>)> = BTreeMap::new();
    let mut designed = Vec::new();
    for c in &report.classes {
        let Some((first, second)) = c.design() else { continue };
        let mut uses = vec![(first.cut, first.kp, first.alpha)];
        if let Some(s) = second {
            uses.push((s.cut, s.kp, s.alpha));
        }
        for &(cut, kp, alpha) in &uses {
            let entry = at.entry(cut).or_insert_with(|| (kp, Vec::new(), Vec::new()));
            if entry.0 != kp {
                return Err(Error::invalid(
                    "design",
                    format!(
                        "classes {:?} and {} put branches of different connection types (KP={} and KP={kp}) after block {cut}; one exit has one head: design them with a single --kp",
                        entry.2, c.k, entry.0
                    ),
                ));
            }
            entry.1.push(ClassRule {
                class: c.k,
                alpha: alpha as f32,
            });
            entry.2.push(c.k);
        }
        designed.push((c, uses));
    }
    if grid > 1
        && let Some((cut, _)) = at.iter().find(|(_, v)| v.0 == Kp::On)
    {
        return Err(Error::invalid(
            "grid",
            format!(
                "the KP=On branch after block {cut} pools every earlier cut point to {grid}×{grid}, which no exit head does yet: design with --kp off, or --grid 1"
            ),
        ));
    }
    if designed.is_empty() {
        return Err(Error::invalid(
            "design",
            "no target class has a viable design (every candidate breaks eq. 5–7): nothing to apply",
        ));
    }
    let cuts: Vec<usize> = at.keys().copied().collect();
    let mut desc = arch.description.clone();
    desc.exits = Placement::Cuts(cuts.clone());
    desc.confidence = false;
    let kinds: Vec<HeadKind> = at
        .values()
        .map(|(kp, ..)| match kp {
            Kp::Off => HeadKind::Relupool,
            Kp::On => HeadKind::Dense,
        })
        .collect();
    desc.head = kinds[0];
    desc.exit_heads = Some(kinds);
    desc.head_grid = (grid > 1).then_some(grid);
    let applied_arch = desc.resolve()?;
    let mut net = applied_arch.init(device);
    net.backbone = model.net.backbone.clone();
    let classes = arch.description.classes;
    let mut exits = Vec::with_capacity(cuts.len());
    for (head, (&cut, (kp, rules, _))) in net.heads.iter_mut().zip(&at) {
        let branch = branches.iter().find(|b| b.cut == cut && b.kp == *kp).ok_or_else(|| {
            Error::invalid(
                "branches",
                format!(
                    "the design uses the branch after block {cut} with KP={kp}, which the trained branches do not hold"
                ),
            )
        })?;
        let d = branch.width;
        let m = branch.classes.len();
        let [rows, cols] = head.classifier.weight.dims();
        if rows != d || cols != classes || branch.weight.len() != d * m {
            return Err(Error::invalid(
                "branches",
                format!(
                    "the branch after block {cut} (KP={kp}) has {d} inputs for {m} classes, the exit head reads {rows} features for {cols} classes"
                ),
            ));
        }
        let mut w = vec![0f32; d * classes];
        let mut b = vec![OTHER_CLASS_LOGIT; classes];
        for r in rules {
            let j = branch.classes.iter().position(|&c| c == r.class).ok_or_else(|| {
                Error::invalid(
                    "branches",
                    format!(
                        "the branch after block {cut} (KP={kp}) has no output for class {}",
                        r.class
                    ),
                )
            })?;
            for i in 0..d {
                w[i * classes + r.class] = branch.weight[i * m + j];
            }
            b[r.class] = branch.bias[j];
        }
        head.classifier.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [d, classes]), device));
        head.classifier.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [classes]),
            device,
        )));
        exits.push(AppliedExit {
            cut,
            kp: *kp,
            rules: rules.clone(),
        });
    }
    let policy = Policy::Class(exits.iter().map(|e| e.rules.clone()).collect());
    let classes_applied = designed
        .into_iter()
        .map(|(c, uses)| {
            let (first, second) = c.design().expect("designed");
            let (gain, loss, assessment) = c.design_figures().expect("designed");
            AppliedClass {
                k: c.k,
                exits: uses
                    .iter()
                    .map(|u| cuts.iter().position(|&x| x == u.0).expect("an exit per cut"))
                    .collect(),
                baseline: c.baseline,
                counts: second.map_or(first.counts, |s| s.counts),
                assessment: *assessment,
                gain,
                loss,
                test_gain: c.test.as_ref().map(|t| t.gain),
            }
        })
        .collect();
    Ok(Applied {
        model: MultiExitModel {
            arch: applied_arch,
            net,
        },
        policy,
        design: AppliedDesign {
            backbone: report.backbone.clone(),
            times: report.times.clone(),
            exits,
            classes: classes_applied,
        },
    })
}

/// Sets each target class's predicted gain and loss in `eval` (an evaluation of the applied
/// run) from `design`: the time model with the design's measured times `t`, `δ`, `e` at the exit
/// rates `eval` measured (eq. 3 for one exit, eq. 8–11 for two), so that the measured gain is
/// set beside the model's on the same samples.
pub fn predict(design: &AppliedDesign, eval: &mut crate::infer::ClassSpecificEval) {
    let t = design.times.t;
    for c in &mut eval.classes {
        let Some(d) = design.classes.iter().find(|d| d.k == c.k) else {
            continue;
        };
        // `δ` and `e` of the applied exit `e` and the samples of `k` leaving there; `None` when
        // `class-design.json` and the evaluated policy do not agree (a hand-edited file), so
        // that no figure is predicted rather than a wrong one or a panic.
        let exit = |e: usize| -> Option<(f64, f64, f64)> {
            let x = design.exits.get(e)?;
            Some((
                *design.times.delta.get(x.cut)?,
                design.times.e(x.cut, x.kp)?,
                *c.early_by_exit.get(e)? as f64,
            ))
        };
        let n = c.samples.max(1) as f64;
        let (gain, loss) = match d.exits[..] {
            [i] => {
                let Some((delta, e, left)) = exit(i) else { continue };
                (
                    super::gain(t, super::t_mean(t, delta, e, left / n)),
                    super::loss(t, super::t_max(t, e)),
                )
            }
            [i, j] => {
                let (Some((di, ei, ni)), Some((dj, ej, nj))) = (exit(i), exit(j)) else {
                    continue;
                };
                let rate_i = ni / n;
                let rate_j = nj / (n - ni).max(1.0);
                let tm = super::t_mean_two(t, di, ei, rate_i, dj - di, ej, rate_j);
                (super::gain(t, tm), (t + ei + ej) / t)
            }
            _ => continue,
        };
        c.predicted_gain = Some(gain);
        c.predicted_loss = Some(loss);
    }
}

/// File name of the trained branches beside a class-exit report.
pub const BRANCHES_FILE: &str = "branches.safetensors";

const BRANCHES_KEY: &str = "earlyexit.branches";

/// Writes trained branches to `path` atomically: one `weight` (`[width, classes]`) and `bias`
/// tensor per branch (`{cut}-{kp}.weight`), their other fields in the file's metadata.
pub fn save_branches(path: &std::path::Path, branches: &[Branch]) -> Result<()> {
    use safetensors::{Dtype, tensor::TensorView};
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = branches
        .iter()
        .flat_map(|b| {
            let key = super::Times::key(b.cut, b.kp);
            let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            [
                (format!("{key}.weight"), le(&b.weight), vec![b.width, b.classes.len()]),
                (format!("{key}.bias"), le(&b.bias), vec![b.classes.len()]),
            ]
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid("branches", e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: Vec<Branch> = branches
        .iter()
        .map(|b| Branch {
            weight: Vec::new(),
            bias: Vec::new(),
            ..b.clone()
        })
        .collect();
    let meta = std::collections::HashMap::from([(
        BRANCHES_KEY.to_string(),
        serde_json::to_string(&meta).expect("branches serialise"),
    )]);
    let file = safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid("branches", e.to_string()))?;
    crate::model::io::write_atomic(path, &file)
}

/// Reads branches [`save_branches`] wrote; errors name the file and what is wrong.
pub fn load_branches(path: &std::path::Path) -> Result<Vec<Branch>> {
    use safetensors::SafeTensors;
    let bad = |reason: String| Error::Parse {
        file: path.into(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(BRANCHES_KEY))
        .ok_or_else(|| bad(format!("no `{BRANCHES_KEY}` metadata: not a file of trained branches")))?;
    let mut branches: Vec<Branch> =
        serde_json::from_str(text).map_err(|e| bad(format!("metadata `{BRANCHES_KEY}`: {e}")))?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    for b in &mut branches {
        let key = super::Times::key(b.cut, b.kp);
        let read = |name: String, len: usize| -> Result<Vec<f32>> {
            let view = tensors
                .tensor(&name)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if view.dtype() != safetensors::Dtype::F32 || view.data().len() != len * 4 {
                return Err(bad(format!(
                    "tensor `{name}`: expected {len} f32 values, found {:?} of {} bytes",
                    view.dtype(),
                    view.data().len()
                )));
            }
            Ok(view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let m = b.classes.len();
        let values = b
            .width
            .checked_mul(m)
            .filter(|v| v.checked_mul(4).is_some())
            .ok_or_else(|| bad(format!("branch `{key}`: {} inputs × {m} classes is too large", b.width)))?;
        b.weight = read(format!("{key}.weight"), values)?;
        b.bias = read(format!("{key}.bias"), m)?;
    }
    Ok(branches)
}

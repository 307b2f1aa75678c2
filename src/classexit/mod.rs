//! Class-specific early exits on a frozen baseline (Bonato & Bouganis, the class-specific seed).
//!
//! Given a trained baseline B and a target class `k`, find where to attach one early-exit
//! branch so that samples of `k` leave early while B's accuracy is kept for every class:
//!
//! 1. [`branch`]: for every candidate place `i` and connection type ([`Kp`]), a branch
//!    ReLU → pool → dense trained with B frozen to recognise `k` (§3.2);
//! 2. [`criteria`]: the accuracy criteria, eq. 4–7, from counts;
//! 3. [`time`]: the time model, eq. 1–3 and 8–12, on times measured here;
//! 4. [`search`]: the α sweep (§3.3), the viable designs and their Pareto front of gain against
//!    loss (§3.4), and a second exit after the first (§3.1.1);
//! 5. [`design`] ties them together and evaluates the chosen design on the test split
//!    (Tables 3 and 4). [`crate::report::class_exit`] writes the tables and the plot.
//!
//! B runs once per split: the pooled features of every cut point feed every branch of every
//! class (see [`branch`]).
//!
//! ```
//! use burn::tensor::Device;
//! use earlyexit::classexit::{ClassExitConfig, Splits, design};
//! use earlyexit::infer::{InMemorySplit, MultiExitModel, SplitKind};
//! use earlyexit::model::{ModelDescription, Shape};
//!
//! let device = Device::flex();
//! let desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "none".parse()?);
//! let model = MultiExitModel::new(desc.resolve()?, &device); // B (untrained here)
//! let split = |kind, n: usize| InMemorySplit {
//!     kind,
//!     shape: [1, 28, 28],
//!     images: (0..n * 784).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect(),
//!     labels: (0..n).map(|i| i % 10).collect(),
//! };
//! let (train, val, test) = (split(SplitKind::Train, 60), split(SplitKind::Val, 40), split(SplitKind::Test, 40));
//! let mut cfg = ClassExitConfig::new(vec![3]);
//! cfg.train.max_epochs = 2;
//! cfg.timing_reps = 2;
//! let report = design(&model, Splits { train: &train, val: &val, test: Some(&test) }, &cfg, &device)?;
//! let k3 = &report.classes[0];
//! assert_eq!(k3.k, 3);
//! // One candidate per place and connection type, each with β and η of B.
//! assert_eq!(k3.candidates.len(), 2 * report.places.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod apply;
pub mod branch;
pub mod criteria;
pub mod search;
pub mod time;

use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

pub use apply::{
    Applied, AppliedClass, AppliedDesign, AppliedExit, BRANCHES_FILE, OTHER_CLASS_LOGIT, apply, load_branches, predict,
    save_branches,
};
pub use branch::{Branch, Features, Kp, TrainSettings, branch_pool, extract, train_branch};
pub use criteria::{Assessment, Baseline, Counts, gamma_second};
pub use search::{AlphaGrid, Candidate, SecondExit, Split, best_alpha, candidate, pareto_pick, second_exit};
pub use time::{Times, gain, loss, measure, t_max, t_mean, t_mean_two};

use crate::choice::ExecChoice;
use crate::error::{Error, Result};
use crate::infer::{LabelledData, MultiExitModel};
use crate::model::{MacConvention, Placement, Shape};

/// What to explore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassExitConfig {
    /// Target classes `k` (each gets its own design; they share B's passes and the branches'
    /// training).
    pub classes: Vec<usize>,
    /// Connection types to try.
    pub kp: Vec<Kp>,
    /// Candidate places: `every` cut point or `sample:P` evenly spread ones (§3.2), or `cuts:…`.
    pub places: Placement,
    /// α values (§3.3).
    pub alpha: AlphaGrid,
    /// Early exits per design: 1, or 2 for a second exit searched after the first (§3.1.1).
    pub exits: usize,
    /// Branch training.
    pub train: TrainSettings,
    /// Train the branches on the first this-many training samples only.
    pub train_limit: Option<usize>,
    /// Timed runs per measured time (best kept).
    pub timing_reps: usize,
    /// Batch size of B's inference passes.
    pub batch: usize,
    /// The branch pools each feature map to `grid × grid` before its dense layer (1: global
    /// average pooling).
    pub grid: usize,
    /// Which code times B and its prefixes (the branches run on the Burn module).
    #[serde(default)]
    pub path: ExecChoice,
}

impl ClassExitConfig {
    /// Defaults of the seed: both connection types, every place, α 0.95:1.0:0.01, one exit,
    /// patience 10.
    pub fn new(classes: Vec<usize>) -> Self {
        Self {
            classes,
            kp: vec![Kp::Off, Kp::On],
            places: Placement::Every,
            alpha: AlphaGrid::default(),
            exits: 1,
            train: TrainSettings::default(),
            train_limit: None,
            timing_reps: 30,
            batch: 256,
            grid: 1,
            path: ExecChoice::Auto,
        }
    }

    /// Checks the configuration against a baseline with `n_classes` classes; errors name the
    /// field.
    pub fn validate(&self, n_classes: usize) -> Result<()> {
        if self.classes.is_empty() {
            return Err(Error::invalid("class", "no target class given"));
        }
        for (i, &k) in self.classes.iter().enumerate() {
            if k >= n_classes {
                return Err(Error::invalid(
                    "class",
                    format!("{k} is not a class of the baseline (0..{})", n_classes - 1),
                ));
            }
            if self.classes[..i].contains(&k) {
                return Err(Error::invalid("class", format!("{k} is given twice")));
            }
        }
        if self.kp.is_empty() {
            return Err(Error::invalid("kp", "no connection type given"));
        }
        if !(1..=2).contains(&self.exits) {
            return Err(Error::invalid("exits", format!("must be 1 or 2, got {}", self.exits)));
        }
        if self.train_limit == Some(0) {
            return Err(Error::invalid("train_limit", "must be at least 1"));
        }
        if self.batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        if !(1..=8).contains(&self.grid) {
            return Err(Error::invalid("grid", format!("must be 1 to 8, got {}", self.grid)));
        }
        self.alpha.validate()?;
        self.train.validate()
    }
}

/// The three splits: branches train on `train`, stop and are tuned on `val`; `test` (optional)
/// only evaluates the chosen designs.
#[derive(Clone, Copy)]
pub struct Splits<'a> {
    /// Training split.
    pub train: &'a dyn LabelledData,
    /// Validation split.
    pub val: &'a dyn LabelledData,
    /// Test split.
    pub test: Option<&'a dyn LabelledData>,
}

/// A candidate place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// Cut point (block index).
    pub cut: usize,
    /// The block's name.
    pub block: String,
    /// Share of B's MACs up to and including this block.
    pub mac_share: f64,
}

/// How a branch trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BranchSummary {
    /// Cut point.
    pub cut: usize,
    /// Connection type.
    pub kp: Kp,
    /// Input width.
    pub width: usize,
    /// Epochs run.
    pub epochs: usize,
    /// Per target class (in [`ClassExitConfig::classes`] order), the epoch kept.
    pub best_epoch: Vec<usize>,
    /// Per target class, the binary validation accuracy at σ = 0.5.
    pub val_accuracy: Vec<f64>,
}

/// The chosen design on the test split (the primed columns of Table 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// β', η', ζ' of B on the test split.
    pub baseline: Baseline,
    /// Counts of the design (both exits' acceptances when it has two).
    pub counts: Counts,
    /// Eq. 4–7 against the **validation** β and η (as the seed's Table 3).
    pub assessment: Assessment,
    /// Whether eq. 5–7 hold against the test split's own β' and η'.
    pub holds_vs_test_baseline: [bool; 3],
    /// Gain on the test split.
    pub gain: f64,
    /// Loss (the same as on validation: it depends on times only).
    pub loss: f64,
}

/// One target class's exploration and design.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassResult {
    /// Target class `k`.
    pub k: usize,
    /// β, η, ζ of B on validation.
    pub baseline: Baseline,
    /// Every branch at its best α (validation), place-major.
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the best viable design per connection type (by gain / loss;
    /// Table 2), in [`ClassExitConfig::kp`] order.
    pub best_per_kp: Vec<Option<usize>>,
    /// Index into `candidates` of the pick (§3.4), `None` when no design is viable.
    pub chosen: Option<usize>,
    /// The best second exit after the pick (with `exits = 2`); kept in the design only if it
    /// `improves` gain / loss.
    pub second: Option<SecondExit>,
    /// The design on the test split.
    pub test: Option<TestResult>,
}

impl ClassResult {
    /// The design kept for this class: the pick, with the second exit when it improves
    /// gain / loss; `None` when no design is viable.
    pub fn design(&self) -> Option<(&Candidate, Option<&SecondExit>)> {
        let c = &self.candidates[self.chosen?];
        Some((c, self.second.as_ref().filter(|s| s.improves)))
    }

    /// Gain, loss and eq. 4–7 of [`ClassResult::design`] on validation.
    pub fn design_figures(&self) -> Option<(f64, f64, &Assessment)> {
        self.design().map(|(c, s)| match s {
            Some(s) => (s.gain, s.loss, &s.assessment),
            None => (c.gain, c.loss, &c.assessment),
        })
    }
}

/// One row of the false-negative table (Table 4): samples of each class that B, at `Out:B`,
/// assigns to another class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FnRow {
    /// Target class of the design; `None` for B alone.
    pub k: Option<usize>,
    /// Cut point of the (first) exit.
    pub cut: Option<usize>,
    /// Its α.
    pub alpha: Option<f64>,
    /// Per class.
    pub per_class: Vec<usize>,
    /// Sum.
    pub total: usize,
    /// Change of `total` against B, in %.
    pub change_pct: f64,
}

/// Wall-clock seconds of each phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// B's passes over the splits.
    pub features: f64,
    /// Branch training.
    pub training: f64,
    /// Time measurements.
    pub timing: f64,
    /// α sweeps, selection, test evaluation.
    pub search: f64,
}

/// Everything [`design`] found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassExitReport {
    /// B's backbone.
    pub backbone: String,
    /// Input shape.
    pub input: Shape,
    /// Number of classes of B.
    pub num_classes: usize,
    /// The configuration.
    pub config: ClassExitConfig,
    /// Candidate places.
    pub places: Vec<Place>,
    /// Samples used: train (after the limit), validation, test (0 without).
    pub samples: [usize; 3],
    /// B's accuracy on validation and test.
    pub baseline_accuracy: [f64; 2],
    /// Measured times.
    pub times: Times,
    /// Per branch, its training.
    pub branches: Vec<BranchSummary>,
    /// Per target class.
    pub classes: Vec<ClassResult>,
    /// Table 4 on the test split (validation without one): B, then one row per class with a
    /// design.
    pub false_negatives: Vec<FnRow>,
    /// Which split Table 4 counts.
    pub false_negatives_split: String,
    /// Seconds per phase.
    pub seconds: PhaseSeconds,
    /// Class names in label order, for the report (not set by [`design`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// The trained branches, weights included, in [`ClassExitReport::branches`] order: what
    /// [`apply`] builds exits from. Not in the JSON ([`save_branches`] writes them beside it);
    /// empty for a report read back from JSON.
    #[serde(skip)]
    pub branch_weights: Vec<Branch>,
}

/// Runs the class-specific method on baseline `model` (its backbone and final classifier; any
/// early exits it has are ignored) for every class of `cfg.classes`.
pub fn design(
    model: &MultiExitModel,
    data: Splits<'_>,
    cfg: &ClassExitConfig,
    device: &Device,
) -> Result<ClassExitReport> {
    let arch = &model.arch;
    let backbone = &model.net.backbone;
    let n_classes = arch.description.classes;
    cfg.validate(n_classes)?;
    if data.train.is_empty() || data.val.is_empty() {
        return Err(Error::invalid(
            "data",
            "the training and validation splits must not be empty",
        ));
    }
    let cuts = cfg.places.resolve(&arch.backbone, MacConvention::All)?;
    if cuts.is_empty() {
        return Err(Error::invalid("places", "no candidate place"));
    }
    let summary = arch.summary(MacConvention::All);
    let places: Vec<Place> = cuts
        .iter()
        .map(|&c| Place {
            cut: c,
            block: summary.blocks[c].name.clone(),
            mac_share: summary.blocks[c].fraction,
        })
        .collect();

    // 1. One pass of B per split.
    let started = Instant::now();
    let limit = cfg.train_limit.unwrap_or(usize::MAX).min(data.train.len());
    let rows: Vec<usize> = (0..limit).collect();
    let train = extract(backbone, data.train, Some(&rows), cfg.batch, cfg.grid, device)?;
    let val = extract(backbone, data.val, None, cfg.batch, cfg.grid, device)?;
    let test = data
        .test
        .map(|t| extract(backbone, t, None, cfg.batch, cfg.grid, device))
        .transpose()?;
    let t_features = started.elapsed().as_secs_f64();

    // 2. Branches, all target classes at once.
    let started = Instant::now();
    let mut branches = Vec::new();
    for &cut in &cuts {
        for &kp in &cfg.kp {
            let b = train_branch(cut, kp, &train, &val, &cfg.classes, &cfg.train)?;
            tracing::info!(cut, %kp, epochs = b.epochs, "branch trained");
            branches.push(b);
        }
    }
    let t_training = started.elapsed().as_secs_f64();

    // 3. Times.
    let started = Instant::now();
    let specs: Vec<(usize, Kp)> = branches.iter().map(|b| (b.cut, b.kp)).collect();
    let times = measure(model, &specs, cfg.timing_reps, cfg.grid, cfg.path, device)?;
    let t_timing = started.elapsed().as_secs_f64();

    // 4. Search per class.
    let started = Instant::now();
    let val_probs: Vec<Vec<f32>> = branches
        .iter()
        .map(|b| b.probabilities(&val.input(b.cut, b.kp)))
        .collect();
    let test_probs: Option<Vec<Vec<f32>>> = test.as_ref().map(|t| {
        branches
            .iter()
            .map(|b| b.probabilities(&t.input(b.cut, b.kp)))
            .collect()
    });
    let blocks: Vec<String> = summary.blocks.iter().map(|b| b.name.clone()).collect();
    let evidence = Evidence {
        branches: &branches,
        times: &times,
        blocks: &blocks,
        val: &val,
        val_probs: &val_probs,
        test: test.as_ref().zip(test_probs.as_ref()),
    };
    let classes: Vec<ClassResult> = cfg.classes.iter().map(|&k| design_class(k, &evidence, cfg)).collect();

    // Table 4.
    let (fn_feats, fn_probs, fn_split) = match (&test, &test_probs) {
        (Some(t), Some(p)) => (t, p, "test"),
        _ => (&val, &val_probs, "val"),
    };
    let false_negatives = false_negative_rows(&classes, &branches, fn_feats, fn_probs, n_classes);
    let t_search = started.elapsed().as_secs_f64();

    let acc = |f: &Features| ratio(f.labels.iter().zip(&f.b_pred).filter(|(y, b)| y == b).count(), f.len());
    Ok(ClassExitReport {
        backbone: arch.backbone.name.clone(),
        input: arch.backbone.input,
        num_classes: n_classes,
        config: cfg.clone(),
        places,
        samples: [train.len(), val.len(), test.as_ref().map_or(0, |t| t.len())],
        baseline_accuracy: [acc(&val), test.as_ref().map_or(0.0, acc)],
        times,
        branches: branches
            .iter()
            .map(|b| BranchSummary {
                cut: b.cut,
                kp: b.kp,
                width: b.width,
                epochs: b.epochs,
                best_epoch: b.best_epoch.clone(),
                val_accuracy: b.val_accuracy.clone(),
            })
            .collect(),
        classes,
        false_negatives,
        false_negatives_split: fn_split.into(),
        seconds: PhaseSeconds {
            features: t_features,
            training: t_training,
            timing: t_timing,
            search: t_search,
        },
        class_names: None,
        branch_weights: branches,
    })
}

/// What the per-class search reads: the trained branches, the measured times, the blocks' names,
/// B's features and the branches' outputs on validation (and on test, when there is one).
struct Evidence<'a> {
    branches: &'a [Branch],
    times: &'a Times,
    blocks: &'a [String],
    val: &'a Features,
    val_probs: &'a [Vec<f32>],
    test: Option<(&'a Features, &'a Vec<Vec<f32>>)>,
}

/// The design for target class `k` (§3.4): every candidate place scored on validation, the Pareto
/// pick, the best per connection type, the second exit, and the pick applied to test.
fn design_class(k: usize, ev: &Evidence<'_>, cfg: &ClassExitConfig) -> ClassResult {
    let (branches, times, val, val_probs) = (ev.branches, ev.times, ev.val, ev.val_probs);
    let block_name = |c: usize| ev.blocks[c].clone();
    let val_split = Split {
        labels: &val.labels,
        b_pred: &val.b_pred,
    };
    let base = Baseline::of(k, &val.labels, &val.b_pred);
    let columns: Vec<Vec<f32>> = branches
        .iter()
        .zip(val_probs)
        .map(|(b, p)| b.column(p, k).expect("every branch has every class"))
        .collect();
    let mut candidates: Vec<Candidate> = branches
        .iter()
        .zip(&columns)
        .map(|(b, p)| {
            let (alpha, counts, a) = best_alpha(k, p, &val_split, &base, &cfg.alpha);
            let e = times.e(b.cut, b.kp).expect("measured");
            candidate(
                b.cut,
                &block_name(b.cut),
                b.kp,
                alpha,
                counts,
                a,
                times.t,
                times.delta[b.cut],
                e,
            )
        })
        .collect();
    let chosen = pareto_pick(&mut candidates);
    let best_per_kp = cfg
        .kp
        .iter()
        .map(|&kp| {
            (0..candidates.len())
                .filter(|&i| candidates[i].viable && candidates[i].kp == kp)
                .max_by(|&a, &b| {
                    let (ra, rb) = (
                        candidates[a].gain / candidates[a].loss,
                        candidates[b].gain / candidates[b].loss,
                    );
                    ra.partial_cmp(&rb)
                        .expect("finite")
                        .then(candidates[b].cut.cmp(&candidates[a].cut))
                })
        })
        .collect();
    let scored = |i: usize| search::Scored {
        cut: candidates[i].cut,
        block: &candidates[i].block,
        kp: candidates[i].kp,
        p: &columns[i],
        delta: candidates[i].delta,
        e: candidates[i].e,
    };
    let second = match (chosen, cfg.exits) {
        (Some(c), 2) => {
            let later: Vec<search::Scored> = (0..candidates.len())
                .filter(|&j| candidates[j].cut > candidates[c].cut)
                .map(scored)
                .collect();
            second_exit(
                k,
                &scored(c),
                candidates[c].alpha,
                &later,
                &val_split,
                &base,
                &cfg.alpha,
                times.t,
            )
        }
        _ => None,
    };
    let test_result = match (chosen, ev.test) {
        (Some(c), Some((tf, tp))) => {
            let ch = &candidates[c];
            let at_first = exits_of(branches, tp, k, (c, ch.alpha), None);
            let first = Counts::tally(k, &tf.labels, &tf.b_pred, &at_first);
            let two = second.as_ref().filter(|s| s.improves);
            let exited = exits_of(branches, tp, k, (c, ch.alpha), two);
            let (g, l) = match two {
                Some(s) => {
                    let both = Counts::tally(k, &tf.labels, &tf.b_pred, &exited);
                    let rate_i = ratio(first.tp_ee, first.k);
                    let rate_j = ratio(both.tp_ee - first.tp_ee, first.k - first.tp_ee);
                    let tm = t_mean_two(times.t, ch.delta, ch.e, rate_i, s.delta_j, s.e_j, rate_j);
                    (gain(times.t, tm), s.loss)
                }
                None => (
                    gain(times.t, t_mean(times.t, ch.delta, ch.e, ratio(first.tp_ee, first.k))),
                    ch.loss,
                ),
            };
            let counts = Counts::tally(k, &tf.labels, &tf.b_pred, &exited);
            let tb = Baseline::of(k, &tf.labels, &tf.b_pred);
            Some(TestResult {
                baseline: tb,
                counts,
                assessment: Assessment::of(&counts, &base),
                holds_vs_test_baseline: Assessment::of(&counts, &tb).holds,
                gain: g,
                loss: l,
            })
        }
        _ => None,
    };
    ClassResult {
        k,
        baseline: base,
        candidates,
        best_per_kp,
        chosen,
        second,
        test: test_result,
    }
}

/// Which samples leave at a class's design: branch `first.0` at threshold `first.1`, or the
/// second exit's branch at its own threshold. `probs[i]` are branch `i`'s outputs on the split.
fn exits_of(
    branches: &[Branch],
    probs: &[Vec<f32>],
    k: usize,
    first: (usize, f64),
    second: Option<&SecondExit>,
) -> Vec<bool> {
    let (i, alpha) = first;
    let p1 = branches[i].column(&probs[i], k).expect("every branch has every class");
    let mut exited: Vec<bool> = p1.iter().map(|&p| p as f64 >= alpha).collect();
    if let Some(s) = second {
        let j = (0..branches.len())
            .find(|&j| branches[j].cut == s.cut && branches[j].kp == s.kp)
            .expect("second exit's branch");
        let p2 = branches[j].column(&probs[j], k).expect("every branch has every class");
        for (e, &p) in exited.iter_mut().zip(&p2) {
            *e |= p as f64 >= s.alpha;
        }
    }
    exited
}

/// Table 4: B's false negatives per class, then each class's design's, on `feats` (the test
/// split when there is one).
fn false_negative_rows(
    classes: &[ClassResult],
    branches: &[Branch],
    feats: &Features,
    probs: &[Vec<f32>],
    n_classes: usize,
) -> Vec<FnRow> {
    let count = |exited: &[bool]| -> Vec<usize> {
        let mut v = vec![0usize; n_classes];
        for ((&y, &b), &e) in feats.labels.iter().zip(&feats.b_pred).zip(exited) {
            if !e && b != y {
                v[y] += 1;
            }
        }
        v
    };
    let b_fn = count(&vec![false; feats.len()]);
    let b_total: usize = b_fn.iter().sum();
    let mut rows = vec![FnRow {
        k: None,
        cut: None,
        alpha: None,
        total: b_total,
        per_class: b_fn,
        change_pct: 0.0,
    }];
    for c in classes {
        let Some(i) = c.chosen else { continue };
        let ch = &c.candidates[i];
        let second = c.second.as_ref().filter(|s| s.improves);
        let per_class = count(&exits_of(branches, probs, c.k, (i, ch.alpha), second));
        let total: usize = per_class.iter().sum();
        rows.push(FnRow {
            k: Some(c.k),
            cut: Some(ch.cut),
            alpha: Some(ch.alpha),
            per_class,
            total,
            change_pct: if b_total == 0 {
                0.0
            } else {
                100.0 * (total as f64 - b_total as f64) / b_total as f64
            },
        });
    }
    rows
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

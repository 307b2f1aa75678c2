//! Calibration, evaluation, exit pruning and reports on small real networks.

mod common;

use std::cell::RefCell;

use burn::tensor::{Device, Tensor};
use earlyexit::ExecChoice;
use earlyexit::infer::{
    EvalOptions, Executor, ExitColumn, ExitTable, Goal, InMemorySplit, LabelledData, MultiExitModel, Policy, ScoreKind,
    SplitKind, calibrate_split, evaluate, prune_plan,
};
use earlyexit::model::{HeadKind, MacConvention, Shape, io};
use earlyexit::report::{ReportInputs, write_report};
use rand::{Rng, SeedableRng};

fn model(exits: &str, seed: u64) -> MultiExitModel {
    common::model("eenet8", Shape::new(1, 28, 28), exits, HeadKind::Pool, seed)
}

fn data(kind: SplitKind, n: usize, seed: u64) -> InMemorySplit {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    InMemorySplit {
        kind,
        shape: [1, 28, 28],
        images: (0..n * 784).map(|_| rng.random::<f32>()).collect(),
        labels: (0..n).map(|_| rng.random_range(0..10)).collect(),
    }
}

/// Records every read; reading panics if `poisoned` (a split calibration must never touch).
struct Recording {
    inner: InMemorySplit,
    poisoned: bool,
    reads: RefCell<Vec<usize>>,
}

impl LabelledData for Recording {
    fn split(&self) -> SplitKind {
        self.inner.kind
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn batch(&self, indices: &[usize], device: &Device) -> earlyexit::Result<(Tensor<4>, Vec<usize>)> {
        assert!(
            !self.poisoned,
            "read {} samples of the {} split",
            indices.len(),
            self.inner.kind
        );
        self.reads.borrow_mut().extend_from_slice(indices);
        self.inner.batch(indices, device)
    }
}

#[test]
fn calibration_never_reads_the_test_split() {
    let m = model("cuts:0,1,2", 1);
    let device = Device::flex();
    let exec = Executor::new(m, &device, ExecChoice::Auto).unwrap();
    let val = Recording {
        inner: data(SplitKind::Val, 96, 1),
        poisoned: false,
        reads: RefCell::new(vec![]),
    };
    let test = Recording {
        inner: data(SplitKind::Test, 96, 2),
        poisoned: true,
        reads: RefCell::new(vec![]),
    };
    // Handing it the test split is refused before any sample is read (a read would panic).
    let e = calibrate_split(&exec, &test, Goal::MaxAccuracyDrop(1.0), ScoreKind::MaxProb, true, 32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("validation split only"), "{e}");
    // On the validation split it reads every validation sample exactly once, and only those.
    let (cal, table) = calibrate_split(&exec, &val, Goal::MaxAccuracyDrop(1.0), ScoreKind::MaxProb, true, 32).unwrap();
    let mut reads = val.reads.borrow().clone();
    reads.sort();
    assert_eq!(reads, (0..96).collect::<Vec<_>>());
    assert_eq!(cal.split, SplitKind::Val);
    assert_eq!(table.split, SplitKind::Val);
    assert!(cal.validation.accuracy >= cal.full_accuracy - 0.01 - 1e-12);
    // A table of the test split is refused too.
    let mut t = table.clone();
    t.split = SplitKind::Test;
    assert!(earlyexit::infer::calibrate(&t, Goal::Budget(0.5), ScoreKind::MaxProb, true).is_err());
}

/// Ten samples: under `maxprob:0.5`, `leave0` of them leave at exit 0 and `leave1` at exit 1.
fn synthetic(m: &MultiExitModel, leave0: usize, leave1: usize) -> ExitTable {
    let n = 10;
    let col = |hi: std::ops::Range<usize>| ExitColumn {
        pred: vec![0; n],
        maxprob: (0..n).map(|i| if hi.contains(&i) { 0.9 } else { 0.2 }).collect(),
        certainty: vec![0.0; n],
        confidence: None,
        top_sigmoid: vec![],
    };
    ExitTable {
        split: SplitKind::Val,
        labels: vec![0; n],
        exits: vec![col(0..leave0), col(leave0..leave0 + leave1), col(0..0)],
        exit_macs: m.arch.cost.exit_macs(MacConvention::All),
        backbone_macs: m.arch.cost.backbone.macs(MacConvention::All),
    }
}

#[test]
fn prune_exits_eq4_eq5_with_hand_computed_rates_and_costs() {
    let m = model("cuts:0,2", 3);
    let s = m.arch.summary(MacConvention::All);
    let b = s.backbone_macs as f64;
    let (c0, c1) = (m.arch.cuts[0], m.arch.cuts[1]);
    let g = |e: usize| s.exits[e].macs as f64 / b; // γ_e, heads included
    let seg = |from: usize, to: usize| s.blocks[from..to].iter().map(|bl| bl.macs as f64).sum::<f64>() / b;
    let gc = |e: usize| s.exits[e].head_macs as f64 / b;
    let policy: Policy = "maxprob:0.5".parse().unwrap();

    // 6 of 10 leave at exit 0 (I_0 = 1, I_1 = 0.4), 2 at exit 1 (I_2 = 0.2).
    let table = synthetic(&m, 6, 2);
    let plan = prune_plan(&m.arch, &table, &policy, 1.0).unwrap();
    let (a, z) = (&plan.checks[0], &plan.checks[1]);
    assert!((a.reach - 1.0).abs() < 1e-12 && (a.reach_next - 0.4).abs() < 1e-12);
    assert!((z.reach - 0.4).abs() < 1e-12 && (z.reach_next - 0.2).abs() < 1e-12);
    assert!((a.cm - 0.4).abs() < 1e-12 && (z.cm - 0.5).abs() < 1e-12);
    assert!((a.gamma - g(0)).abs() < 1e-12 && (a.gamma_next - g(1)).abs() < 1e-12);
    assert!((a.gamma_f - seg(0, c0 + 1)).abs() < 1e-12);
    assert!((a.gamma_f_next - seg(c0 + 1, c1 + 1)).abs() < 1e-12);
    assert!((z.gamma_f_next - (1.0 - seg(0, c1 + 1))).abs() < 1e-9); // to the end, classifier included
    assert!((a.gamma_c - gc(0)).abs() < 1e-12);
    let eq4_0 = (g(1) - g(0)) * (1.0 - 0.4) > g(0) * 0.4;
    let eq4_1 = (g(2) - g(1)) * (0.4 - 0.2) > g(1) * 0.2;
    assert_eq!((a.eq4, z.eq4), (eq4_0, eq4_1));
    let eq5_0 = (1.0 - 0.4) * seg(c0 + 1, c1 + 1) - (1.0 - 0.4) * gc(0) - 0.0 * seg(0, c0 + 1);
    assert!((a.eq5_value - eq5_0).abs() < 1e-12);
    assert_eq!(a.kept, eq4_0 && eq5_0 >= 0.0);

    // Nobody leaves at exit 0: it cannot pay (eq. 4: 0 > γ_0); it is dropped and exit 1 is
    // re-checked with every sample reaching it and the merged backbone segment before it.
    let table = synthetic(&m, 0, 5);
    let plan = prune_plan(&m.arch, &table, &policy, 1.0).unwrap();
    assert!(!plan.checks[0].eq4 && !plan.checks[0].kept);
    let z = &plan.checks[1];
    assert!((z.reach - 1.0).abs() < 1e-12 && (z.reach_next - 0.5).abs() < 1e-12);
    assert!((z.gamma_f - seg(0, c1 + 1)).abs() < 1e-12);
    // Without exit 0's head, γ_1 is the backbone to cut 1 plus head 1 only.
    assert!((z.gamma - (seg(0, c1 + 1) + gc(1))).abs() < 1e-9);
    assert_eq!(
        z.kept,
        (g(2) - gc(0) - z.gamma) * 0.5 > z.gamma * 0.5 && z.eq5_value >= 0.0
    );
    assert!(!plan.keep.contains(&0));
    // Here exit 1 saves MACs (net saving > 0) but fails eq. 4 as the survey writes it
    // ((γ_2 − γ_1)·0.5 ≤ γ_1·0.5 since γ_1 > 0.5): the literal rule drops it, leaving the plain
    // network (relative cost exactly 1), and the report shows the disagreement.
    assert!(z.net_saving > 0.0 && !z.eq4);
    assert!(plan.keep.is_empty() && (plan.after.relative_cost - 1.0).abs() < 1e-12);
    assert!(plan.before.relative_cost < 1.0);
    // TH out of range names the flag.
    assert!(
        prune_plan(&m.arch, &table, &policy, 1.5)
            .unwrap_err()
            .to_string()
            .contains("--th")
    );
}

#[test]
fn dropping_exits_keeps_every_other_weight() {
    let m = model("cuts:0,1,2", 4);
    let device = Device::flex();
    let x = data(SplitKind::Test, 5, 9).batch(&[0, 1, 2, 3, 4], &device).unwrap().0;
    let before = m.net.forward_all(x.clone());
    let arch = m.arch.retain_exits(&[0, 2]).unwrap();
    assert_eq!(arch.cuts, vec![m.arch.cuts[0], m.arch.cuts[2]]);
    let net = m.net.clone().retain_exits(&[0, 2]).unwrap();
    let dir = std::env::temp_dir().join(format!("earlyexit-prune-{}", std::process::id()));
    io::save_model(&dir, &arch.description, &net).unwrap();
    let (arch2, net2) = io::load_model(&dir, &device).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(arch2.cuts, arch.cuts);
    let after = net2.forward_all(x);
    assert_eq!(after.len(), 3);
    for (a, b) in [(0, 0), (1, 2), (2, 3)] {
        let d = (after[a].logits.clone() - before[b].logits.clone())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-5, "output {a} vs {b}: {d}");
    }
    assert!(m.arch.retain_exits(&[2, 1]).is_err());
}

#[test]
fn report_files_are_produced_and_non_empty_for_a_tiny_run() {
    let m = model("cuts:0,2", 5);
    let device = Device::flex();
    let val = data(SplitKind::Val, 64, 11);
    let test = data(SplitKind::Test, 64, 12);
    let exec = Executor::new(m.clone(), &device, ExecChoice::Auto).unwrap();
    let val_table = ExitTable::collect(&exec, &val, 32).unwrap();
    let test_table = ExitTable::collect(&exec, &test, 32).unwrap();
    let cal = earlyexit::infer::calibrate(&val_table, Goal::MaxAccuracyDrop(2.0), ScoreKind::MaxProb, true).unwrap();
    let opts = EvalOptions {
        batch: 32,
        timing_samples: 8,
        large_batch: 16,
        large_batch_samples: 32,
        repeats: 1,
        fold_bn: true,
        ..EvalOptions::default()
    };
    let eval = evaluate(&m, &test, &cal.policy, &opts, &device).unwrap();
    assert_eq!(eval.timing.len(), 2);
    assert!(eval.measured_speedup > 0.0 && eval.measured_speedup_large > 0.0);
    // The real engine's exits agree with the table's simulation of the same policy.
    let sim = test_table.outcome(&cal.policy).unwrap();
    assert!((sim.accuracy - eval.accuracy).abs() < 1e-9);
    assert!((sim.relative_cost - eval.relative_cost).abs() < 1e-9);
    let mut inputs = ReportInputs::simulated(
        "tiny",
        &val_table,
        &test_table,
        cal.policy.clone(),
        Some(cal),
        Some(eval),
    )
    .unwrap();
    inputs.metrics = Some(
        (1..=3)
            .map(|e| {
                format!(
                    r#"{{"epoch": {e}, "train_loss": {}, "val_accuracy": 0.{e}}}"#,
                    3.0 / e as f64
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // EARLYEXIT_KEEP_REPORT=DIR keeps the files there for a look.
    let keep = std::env::var_os("EARLYEXIT_KEEP_REPORT").map(std::path::PathBuf::from);
    let dir = keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("earlyexit-report-{}", std::process::id())));
    let files = write_report(&dir, &inputs).unwrap();
    for name in [
        "report.md",
        "tradeoff.png",
        "tradeoff.svg",
        "exits.png",
        "exits.svg",
        "confidence.png",
        "confidence.svg",
        "training.png",
        "training.svg",
    ] {
        let p = dir.join(name);
        assert!(files.contains(&p), "{name} not reported");
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len > 500, "{name}: {len} bytes");
        if name.ends_with(".png") {
            let img = image::open(&p).unwrap();
            assert!(img.width() >= 640 && img.height() >= 300);
        }
        if name.ends_with(".svg") {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.contains("<text") && text.contains("relative cost") == (name == "tradeoff.svg"));
        }
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("tradeoff.png") && md.contains("| accuracy |") && md.contains("Calibration"));
    if keep.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
}

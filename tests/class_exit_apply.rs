//! A class-specific design applied: the engine, running the applied model with its class policy,
//! reproduces the design's counts on validation (tp/fp/tn/fn), eq. 5–7 hold on its answers, the
//! compiled path answers as the Burn module does (globally pooled and grid-pooled branches), and
//! bad requests are refused by name.

mod common;

use burn::tensor::Device;
use earlyexit::choice::ExecChoice;
use earlyexit::classexit::{
    Assessment, ClassExitConfig, ClassExitReport, Counts, Kp, OTHER_CLASS_LOGIT, Splits, apply, design, load_branches,
    save_branches,
};
use earlyexit::infer::{Executor, InMemorySplit, LabelledData, MultiExitModel, Policy, SplitKind};
use earlyexit::model::{ModelDescription, Shape};

/// `n` 28×28 images of label `i % 10`: class 3 bright all over, every other class one lit row
/// (which global pooling cannot tell apart), on noise from `seed`.
fn split(kind: SplitKind, n: usize, seed: u64) -> InMemorySplit {
    let noise = common::normal(n * 784, 0.12, 0.06, seed);
    let mut images = Vec::with_capacity(n * 784);
    for i in 0..n {
        let label = i % 10;
        for p in 0..784 {
            let lit = label == 3 || p / 28 == 2 + 2 * label;
            images.push(noise[i * 784 + p].abs() + if lit { 0.6 } else { 0.0 });
        }
    }
    InMemorySplit {
        kind,
        shape: [1, 28, 28],
        images,
        labels: (0..n).map(|i| i % 10).collect(),
    }
}

struct Fixture {
    baseline: MultiExitModel,
    val: InMemorySplit,
    report: ClassExitReport,
}

fn designed(kp: Vec<Kp>, exits: usize, grid: usize) -> Fixture {
    let device = Device::flex();
    let desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "none".parse().unwrap());
    let arch = desc.resolve().unwrap();
    let net = arch.init_seeded(&device, 3);
    let baseline = MultiExitModel { arch, net };
    let (train, val, test) = (
        split(SplitKind::Train, 300, 1),
        split(SplitKind::Val, 200, 2),
        split(SplitKind::Test, 200, 3),
    );
    let mut cfg = ClassExitConfig::new(vec![3]);
    cfg.kp = kp;
    cfg.exits = exits;
    cfg.alpha = "0.5:1.0:0.05".parse().unwrap();
    cfg.train.max_epochs = 8;
    cfg.train.patience = 3;
    cfg.timing_reps = 2;
    cfg.batch = 100;
    cfg.grid = grid;
    let report = design(
        &baseline,
        Splits {
            train: &train,
            val: &val,
            test: Some(&test),
        },
        &cfg,
        &device,
    )
    .unwrap();
    Fixture { baseline, val, report }
}

/// B's own answers (its final classifier) on `data`.
fn b_pred(b: &MultiExitModel, data: &InMemorySplit) -> Vec<usize> {
    let (x, _) = data
        .batch(&(0..data.len()).collect::<Vec<_>>(), &Device::flex())
        .unwrap();
    b.infer(x, &Policy::Never).unwrap().class
}

#[test]
fn the_applied_model_reproduces_the_designs_validation_counts_on_both_paths() {
    // eenet8's cut points are 14×14 and 7×7: a 4×4 grid has windows of unequal sizes.
    for (kp, grid) in [(Kp::Off, 1), (Kp::On, 1), (Kp::Off, 4)] {
        let f = designed(vec![kp], 1, grid);
        let c = &f.report.classes[0];
        let (pick, _) = c.design().expect("class 3 is the bright one: a viable design");
        let applied = apply(&f.baseline, &f.report, &f.report.branch_weights, &Device::flex()).unwrap();
        assert_eq!(applied.model.net.num_exits(), 1);
        assert_eq!(applied.model.arch.cuts, vec![pick.cut]);
        assert_eq!(applied.policy.to_string(), format!("class:3@{}", pick.alpha as f32));
        // The exit's other classes sit far below: its answer is always 3.
        let idx: Vec<usize> = (0..f.val.len()).collect();
        let (x, labels) = f.val.batch(&idx, &Device::flex()).unwrap();
        let outs = applied.model.net.forward_all(x.clone());
        let logits = outs[0].logits.clone().into_data().try_to_vec::<f32>().unwrap();
        for row in logits.chunks(10) {
            assert!(
                row.iter()
                    .enumerate()
                    .all(|(j, &z)| (j == 3) != (z == OTHER_CLASS_LOGIT)),
                "{row:?}"
            );
        }
        let answers = applied.model.infer(x.clone(), &applied.policy).unwrap();
        let exited: Vec<bool> = answers.exit.iter().map(|&e| e == 0).collect();
        let b = b_pred(&f.baseline, &f.val);
        // Samples that do not leave get B's answer; samples that leave get 3.
        for i in 0..labels.len() {
            assert_eq!(
                answers.class[i],
                if exited[i] { 3 } else { b[i] },
                "sample {i} (KP={kp})"
            );
        }
        let counts = Counts::tally(3, &labels, &b, &exited);
        assert_eq!(counts, pick.counts, "KP={kp} grid {grid}");
        assert!(counts.tp_ee > 0, "some samples of 3 leave early: {counts:?}");
        // Eq. 5–7 hold on the applied model's own answers.
        let a = Assessment::of(&counts, &c.baseline);
        assert!(a.keeps_accuracy(), "{a:?}");
        assert_eq!(a.holds, pick.assessment.holds);

        // The compiled path (what eval, serve and tier run) answers the same.
        let exec = Executor::new(applied.model.clone(), &Device::flex(), ExecChoice::Auto).unwrap();
        assert!(exec.describe().contains("compiled"), "{}", exec.describe());
        let fast = exec.infer(x, &applied.policy).unwrap();
        assert_eq!(fast.exit, answers.exit, "KP={kp} grid {grid}");
        assert_eq!(fast.class, answers.class, "KP={kp} grid {grid}");
        for (p, q) in fast.confidence.iter().zip(&answers.confidence) {
            assert!((p - q).abs() < 1e-4, "{p} {q}");
        }
    }
}

#[test]
fn branches_round_trip_and_eval_counts_what_the_engine_did() {
    let f = designed(vec![Kp::Off, Kp::On], 2, 1);
    let dir = std::env::temp_dir().join(format!("earlyexit-apply-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("branches.safetensors");
    save_branches(&path, &f.report.branch_weights).unwrap();
    assert_eq!(load_branches(&path).unwrap(), f.report.branch_weights);
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let e = load_branches(&path).unwrap_err().to_string();
    assert!(e.contains("branches.safetensors"), "{e}");

    // Applied from the branches as read back: the same model, a policy per exit.
    let applied = apply(&f.baseline, &f.report, &f.report.branch_weights, &Device::flex()).unwrap();
    let Policy::Class(exits) = &applied.policy else {
        panic!("{}", applied.policy)
    };
    assert_eq!(exits.len(), applied.model.net.num_exits());
    let c = &f.report.classes[0];
    let (_, second) = c.design().unwrap();
    assert_eq!(exits.len(), 1 + second.is_some() as usize);
    assert_eq!(applied.design.classes[0].exits.len(), exits.len());
    // Eval on validation: the class section counts what the engine did.
    let opts = earlyexit::infer::EvalOptions {
        timing_samples: 5,
        large_batch: 20,
        large_batch_samples: 20,
        repeats: 1,
        ..Default::default()
    };
    let eval = earlyexit::infer::evaluate(&applied.model, &f.val, &applied.policy, &opts, &Device::flex()).unwrap();
    let cs = eval.class_specific.as_ref().expect("a class policy gets its section");
    assert_eq!(cs.classes.len(), 1);
    let counts = second.map_or(c.candidates[c.chosen.unwrap()].counts, |s| s.counts);
    assert_eq!(cs.classes[0].early_right, counts.tp_ee);
    assert_eq!(cs.classes[0].early_wrong, counts.fp_ee);
    assert_eq!(cs.classes[0].samples, counts.k);
    assert_eq!(cs.rest.samples, f.val.len() - counts.k);
    let mut cs = cs.clone();
    earlyexit::classexit::predict(&applied.design, &mut cs);
    let g = cs.classes[0].predicted_gain.unwrap();
    assert!(g.is_finite() && g > 0.0, "{g}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_requests_are_refused_by_name() {
    let device = Device::flex();
    // KP=On branches pooled to a grid have no deployable head.
    let on = designed(vec![Kp::On], 1, 2);
    let e = apply(&on.baseline, &on.report, &on.report.branch_weights, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("KP=On") && e.contains("2×2") && e.contains("--kp off"),
        "{e}"
    );
    let f = designed(vec![Kp::Off], 1, 1);
    // Branches of another grid than the design's do not fit its heads.
    let mut gridded = f.report.clone();
    gridded.config.grid = 2;
    let e = apply(&f.baseline, &gridded, &f.report.branch_weights, &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inputs") && e.contains("features"), "{e}");
    // No viable design: nothing to apply.
    let mut none = f.report.clone();
    none.classes[0].chosen = None;
    let e = apply(&f.baseline, &none, &f.report.branch_weights, &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no target class has a viable design"), "{e}");
    // Branches missing (a report read back without its branches file).
    let e = apply(&f.baseline, &f.report, &[], &device).unwrap_err().to_string();
    assert!(e.contains("after block") && e.contains("KP=Off"), "{e}");
    // Another baseline than the design's.
    let other = common::model("lenet5", Shape::new(1, 28, 28), "none", Default::default(), 1);
    let e = apply(&other, &f.report, &f.report.branch_weights, &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("eenet8") && e.contains("lenet5"), "{e}");
    // A class policy naming a class the model does not have.
    let x = common::input(2, Shape::new(1, 28, 28), 1);
    let e = f.baseline.infer(x, &"class:12@0.9".parse().unwrap());
    // (the baseline has no early exit: the exit count is wrong first)
    assert!(e.is_err());
    let applied = apply(&f.baseline, &f.report, &f.report.branch_weights, &device).unwrap();
    let x = common::input(2, Shape::new(1, 28, 28), 1);
    let e = applied
        .model
        .infer(x, &"class:12@0.9".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("class 12") && e.contains("0 to 9"), "{e}");
}

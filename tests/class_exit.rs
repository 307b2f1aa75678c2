//! The class-specific method (`earlyexit::classexit`): eq. 4–7 and the time model (eq. 1–3,
//! 11–12) against hand-computed counts, the α sweep, the Pareto pick and branch training
//! (the command end to end: `crates/earlyexit-cli/tests/cli_class_exit.rs`).

use burn::tensor::Device;
use earlyexit::classexit::search::Scored;
use earlyexit::classexit::*;
use earlyexit::model::{ModelDescription, Shape};
use rand::{Rng, SeedableRng};

// ---- criteria ----
/// Ten samples, k = 1. Labels, B's predictions and early exits chosen by hand:
///
/// | i | y | b | exit | role |
/// |---|---|---|------|------|
/// | 0 | 1 | 1 | yes | tp_EE |
/// | 1 | 1 | 0 | yes | tp_EE (B would have been wrong) |
/// | 2 | 1 | 1 | no  | fn_EE, tp_k,B |
/// | 3 | 1 | 2 | no  | fn_EE, fn_k,B |
/// | 4 | 0 | 0 | no  | tn_EE, right at B |
/// | 5 | 0 | 1 | yes | fp_EE (B wrong anyway) |
/// | 6 | 2 | 2 | no  | tn_EE, right at B |
/// | 7 | 2 | 0 | no  | tn_EE, wrong at B |
/// | 8 | 0 | 0 | no  | tn_EE, right at B |
/// | 9 | 2 | 2 | yes | fp_EE (B was right) |
fn example() -> (Vec<usize>, Vec<usize>, Vec<bool>) {
    (
        vec![1, 1, 1, 1, 0, 0, 2, 2, 0, 2],
        vec![1, 0, 1, 2, 0, 1, 2, 0, 0, 2],
        vec![true, true, false, false, false, true, false, false, false, true],
    )
}

#[test]
fn counts_match_the_hand_table() {
    let (y, b, e) = example();
    let c = Counts::tally(1, &y, &b, &e);
    assert_eq!(
        c,
        Counts {
            n: 10,
            k: 4,
            tp_ee: 2,
            fp_ee: 2,
            tn_ee: 4,
            fn_ee: 2,
            tp_b: 4, // samples 2, 4, 6, 8
            tp_k_b: 1,
            fn_k_b: 1,
        }
    );
}

#[test]
fn baseline_beta_eta_zeta_by_hand() {
    let (y, b, _) = example();
    let base = Baseline::of(1, &y, &b);
    // V−k: samples 4..=9, B right on 4, 6, 8, 9 → 4/6.
    assert!((base.beta - 4.0 / 6.0).abs() < 1e-12);
    // k: samples 0..=3, B right on 0, 2 → 2/4.
    assert!((base.eta - 0.5).abs() < 1e-12);
    // B calls 1 on samples 0, 2, 5 → 2 of 3 are 1.
    assert!((base.zeta - 2.0 / 3.0).abs() < 1e-12);
    assert!((base.accuracy - 0.6).abs() < 1e-12);
}

#[test]
fn equations_4_to_7_by_hand() {
    let (y, b, e) = example();
    let c = Counts::tally(1, &y, &b, &e);
    let base = Baseline::of(1, &y, &b);
    let a = Assessment::of(&c, &base);
    // Eq. 5: (4 − 1) / (10 − 4 − 2) = 3/4.
    assert!((a.acc_b_other - 0.75).abs() < 1e-12);
    // Eq. 6: (tp + tn) / |V| = (2 + 4) / 10.
    assert!((a.acc_ee - 0.6).abs() < 1e-12);
    // Eq. 7: (2 + 1) / (2 + 1 + 1) = 3/4.
    assert!((a.acc_global - 0.75).abs() < 1e-12);
    assert!((a.precision - 0.5).abs() < 1e-12);
    // 0.75 ≥ β = 0.667, 0.6 ≥ η = 0.5, 0.75 ≥ 0.5: all hold, γ = (2 + 2) / 4.
    assert_eq!(a.holds, [true, true, true]);
    assert!((a.gamma - 1.0).abs() < 1e-12);
    // Right: tp_EE 2 + right at B 4 = 6 of 10.
    assert!((a.accuracy_all - 0.6).abs() < 1e-12);
}

#[test]
fn gamma_is_zero_when_one_criterion_fails() {
    let (y, b, mut e) = example();
    // Sample 4 (class 0, right at B) now leaves as a false positive: eq. 5 becomes
    // (3 − 1) / (10 − 5 − 2) = 2/3, still ≥ β; eq. 6 becomes 5/10 ≥ 0.5. Then sample 6 too:
    // eq. 5 = (2 − 1) / (10 − 6 − 2) = 1/2 < β = 2/3 and eq. 6 = (2 + 2) / 10 < η = 1/2.
    e[4] = true;
    let base = Baseline::of(1, &y, &b);
    let a = Assessment::of(&Counts::tally(1, &y, &b, &e), &base);
    assert!(a.keeps_accuracy(), "{a:?}");
    assert!((a.gamma - 5.0 / 4.0).abs() < 1e-12);
    e[6] = true;
    let a = Assessment::of(&Counts::tally(1, &y, &b, &e), &base);
    assert_eq!(a.holds, [false, false, true]);
    assert!((a.acc_b_other - 0.5).abs() < 1e-12);
    assert_eq!(a.gamma, 0.0);
    assert!((a.rate - 6.0 / 4.0).abs() < 1e-12);
}

#[test]
fn eq6_counts_true_negatives_over_the_whole_split() {
    // k = 1, B right on everything, η = 1. Nothing leaves: eq. 6 is the share of true
    // negatives, 2/4 < η, so even "no exit" fails eq. 6 for a class B knows perfectly.
    let y = vec![1, 1, 0, 0];
    let b = vec![1, 1, 0, 0];
    let base = Baseline::of(1, &y, &b);
    let a = Assessment::of(&Counts::tally(1, &y, &b, &[false; 4]), &base);
    assert_eq!(a.holds, [true, false, true]);
    assert!((a.acc_ee - 0.5).abs() < 1e-12);
    // Both 1s leave: eq. 6 = 4/4, γ = 2/2.
    let a = Assessment::of(&Counts::tally(1, &y, &b, &[true, true, false, false]), &base);
    assert!(a.keeps_accuracy());
    assert_eq!(a.gamma, 1.0);
    // Plus a false positive on a sample B gets right: eq. 5 keeps 1/1 and eq. 7 2/2, but
    // eq. 6 drops to (2 + 1) / 4 < η.
    let a = Assessment::of(&Counts::tally(1, &y, &b, &[true, true, true, false]), &base);
    assert_eq!(a.holds, [true, false, true]);
    assert!((a.acc_ee - 0.75).abs() < 1e-12);
    assert_eq!(a.gamma, 0.0);
}

#[test]
fn eq12_subtracts_the_first_exits_samples() {
    assert!((gamma_second(100, 60, 20) - 0.5).abs() < 1e-12);
    assert_eq!(gamma_second(100, 100, 5), 0.0);
}

// ---- time ----
#[test]
fn eq1_to_3_by_hand() {
    // t = 10 ms, the exit after 3 ms of B costs 1 ms.
    let (t, d, e) = (10.0, 3.0, 1.0);
    assert_eq!(t_max(t, e), 11.0);
    // Nobody leaves: t'' = t' (eq. 3 with γ = 0 is eq. 2 = eq. 1).
    assert_eq!(t_mean(t, d, e, 0.0), 11.0);
    // Everybody leaves: δ + e.
    assert_eq!(t_mean(t, d, e, 1.0), 4.0);
    // 80 % leave: 0.2 · 7 + 3 + 1 = 5.4 → gain 10 / 5.4, loss 11 / 10.
    assert!((t_mean(t, d, e, 0.8) - 5.4).abs() < 1e-12);
    assert!((gain(t, t_mean(t, d, e, 0.8)) - 10.0 / 5.4).abs() < 1e-12);
    assert!((loss(t, t_max(t, e)) - 1.1).abs() < 1e-12);
}

#[test]
fn eq11_by_hand_and_reduces_to_eq3() {
    // t = 10, first exit at δ_i = 2 (e_i = 0.5), half leave; second exit 3 later (δ_j = 3,
    // e_j = 0.5), half of the rest leave:
    // 0.5 · (0.5 · (8 − 3) + 3 + 0.5) + 2 + 0.5 = 0.5 · 6 + 2.5 = 5.5.
    assert!((t_mean_two(10.0, 2.0, 0.5, 0.5, 3.0, 0.5, 0.5) - 5.5).abs() < 1e-12);
    // A second exit that costs nothing and takes nobody changes nothing.
    let one = t_mean(10.0, 2.0, 0.5, 0.3);
    assert!((t_mean_two(10.0, 2.0, 0.5, 0.3, 4.0, 0.0, 0.0) - one).abs() < 1e-12);
}

#[test]
fn measured_prefixes_grow_and_stay_below_the_whole() {
    let d = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "none".parse().unwrap());
    let device = Device::flex();
    let arch = d.resolve().unwrap();
    let net = arch.init_seeded(&device, 1);
    let model = earlyexit::infer::MultiExitModel { arch, net: net.clone() };
    let specs = [(0, Kp::Off), (1, Kp::On)];
    let times = measure(&model, &specs, 3, 2, earlyexit::ExecChoice::Auto, &device).unwrap();
    assert_eq!(times.delta.len(), net.backbone.blocks.len() - 1);
    assert!(times.t > 0.0 && times.delta.iter().all(|&d| d > 0.0));
    assert!(times.e(1, Kp::On).is_some() && times.e(1, Kp::Off).is_none());
    assert_eq!(times.branch.len(), 2);
    // The same figures on either code that runs B.
    for path in [earlyexit::ExecChoice::Burn, earlyexit::ExecChoice::Compiled] {
        let times = measure(&model, &specs, 1, 2, path, &device).unwrap();
        assert_eq!(times.delta.len(), net.backbone.blocks.len() - 1);
        assert!(times.t > 0.0 && times.delta.iter().all(|&d| d > 0.0));
    }
}

// ---- search ----
#[test]
fn alpha_grid_parses_and_lists_its_values() {
    let g: AlphaGrid = "0.95:1.0:0.01".parse().unwrap();
    let v = g.values();
    assert_eq!(v.len(), 6);
    assert_eq!(v[0], 0.95);
    assert_eq!(v[5], 1.0);
    for bad in ["0.9:0.8:0.01", "0.9:1.1:0.1", "0.9:1.0:0", "x:1:0.1", "0.9:1.0"] {
        let e = bad.parse::<AlphaGrid>().unwrap_err().to_string();
        assert!(e.contains("alpha"), "{bad}: {e}");
    }
}

fn cand(gain: f64, loss: f64, viable: bool, cut: usize) -> Candidate {
    let counts = Counts::default();
    let base = Baseline {
        beta: 0.0,
        eta: 0.0,
        zeta: 0.0,
        accuracy: 0.0,
    };
    let mut c = candidate(
        cut,
        "b",
        Kp::On,
        1.0,
        counts,
        Assessment::of(&counts, &base),
        1.0,
        0.5,
        0.0,
    );
    c.gain = gain;
    c.loss = loss;
    c.viable = viable;
    c
}

#[test]
fn pareto_front_and_pick_by_gain_over_loss() {
    let mut c = vec![
        cand(2.0, 1.10, true, 0),  // front
        cand(1.8, 1.20, true, 1),  // dominated by 0
        cand(3.0, 1.50, true, 2),  // front (largest gain), ratio 2.0
        cand(9.0, 1.00, false, 3), // not viable: ignored
        cand(1.5, 1.05, true, 4),  // front (smallest loss), ratio 1.43
    ];
    let pick = pareto_pick(&mut c);
    assert_eq!(
        c.iter().map(|x| x.pareto).collect::<Vec<_>>(),
        [true, false, true, false, true]
    );
    // Ratios: 1.818, 1.5, 2.0, -, 1.43 → candidate 2.
    assert_eq!(pick, Some(2));
    let mut none = vec![cand(2.0, 1.0, false, 0)];
    assert_eq!(pareto_pick(&mut none), None);
}

#[test]
fn candidate_time_model_from_counts() {
    // |V| = 100, |k| = 10, 8 of k leave (tp), 2 others leave (fp).
    let counts = Counts {
        n: 100,
        k: 10,
        tp_ee: 8,
        fp_ee: 2,
        tn_ee: 88,
        fn_ee: 2,
        tp_b: 85,
        tp_k_b: 2,
        fn_k_b: 0,
    };
    let base = Baseline {
        beta: 0.9,
        eta: 0.9,
        zeta: 0.9,
        accuracy: 0.9,
    };
    let a = Assessment::of(&counts, &base);
    // t = 10, δ = 2, e = 0.5.
    let c = candidate(1, "b", Kp::Off, 0.97, counts, a, 10.0, 2.0, 0.5);
    // t''_k = 0.2 · 8 + 2.5 = 4.1; gain = 10 / 4.1; loss = 10.5 / 10.
    assert!((c.rate_k - 0.8).abs() < 1e-12);
    assert!((c.gain - 10.0 / 4.1).abs() < 1e-12);
    assert!((c.loss - 1.05).abs() < 1e-12);
    // γ (eq. 4) = 10 / 10 = 1 → t'' = 2.5 → 4.0×.
    assert!((c.gain_eq4 - 4.0).abs() < 1e-12);
    // V−k: 2 of 90 leave: (88/90 · 8 + 2.5) / 10.
    assert!((c.loss_mean - (88.0 / 90.0 * 8.0 + 2.5) / 10.0).abs() < 1e-12);
    // eq. 5: (85 − 2) / (100 − 10 − 2) = 83/88 ≥ 0.9; eq. 6: 96/100; eq. 7: 10/10.
    assert!(c.viable, "{:?}", c.assessment);
}

#[test]
fn best_alpha_maximises_gamma_under_the_criteria() {
    // k = 1; six samples. B is right on everything; the branch is sure about the two 1s
    // (0.99, 0.97) and fairly sure about one 0 (0.96).
    let labels = [1, 1, 0, 0, 2, 2];
    let b_pred = labels;
    let split = Split {
        labels: &labels,
        b_pred: &b_pred,
    };
    let base = Baseline::of(1, &labels, &b_pred);
    let p = [0.99f32, 0.97, 0.96, 0.1, 0.2, 0.0];
    let grid: AlphaGrid = "0.95:1.0:0.01".parse().unwrap();
    let (alpha, c, a) = best_alpha(1, &p, &split, &base, &grid);
    // At 0.95 the 0 leaves as a false positive: eq. 6 = 5/6 < η = 1 → γ = 0. At 0.96
    // (0.96f32 < 0.96) and 0.97 both 1s leave and nothing else: γ = 2/2, the larger α wins
    // the tie; 0.98 and up take fewer.
    assert_eq!(alpha, 0.97);
    assert_eq!((c.tp_ee, c.fp_ee), (2, 0));
    assert_eq!(a.gamma, 1.0);
}

#[test]
fn second_exit_takes_what_the_first_left() {
    // k = 0, four samples of 0 and four of 1, B right on all. Exit 1 (cut 0) is sure about
    // two 0s, exit 2 (cut 2) about the other two.
    let labels = [0, 0, 0, 0, 1, 1, 1, 1];
    let split = Split {
        labels: &labels,
        b_pred: &labels,
    };
    let base = Baseline::of(0, &labels, &labels);
    let p1 = [0.99f32, 0.99, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0];
    let p2 = [0.5f32, 0.5, 0.99, 0.99, 0.0, 0.0, 0.0, 0.0];
    let first = Scored {
        cut: 0,
        block: "a",
        kp: Kp::On,
        p: &p1,
        delta: 2.0,
        e: 0.5,
    };
    let later = [Scored {
        cut: 2,
        block: "c",
        kp: Kp::On,
        p: &p2,
        delta: 5.0,
        e: 0.5,
    }];
    let grid = AlphaGrid::default();
    let s = second_exit(0, &first, 0.95, &later, &split, &base, &grid, 10.0).unwrap();
    // Eq. 12: 2 / (4 − 2) = 1; the rest of k all leave at j.
    assert_eq!(s.gamma_j, 1.0);
    assert_eq!(s.rate_j, 1.0);
    assert_eq!(s.delta_j, 3.0);
    // Eq. 11: 0.5 · (0 · (8 − 3) + 3 + 0.5) + 2.5 = 4.25; gain 10/4.25; loss 11/10.
    assert!((s.gain - 10.0 / 4.25).abs() < 1e-12);
    assert!((s.loss - 1.1).abs() < 1e-12);
    // One exit alone: 0.5 · 8 + 2.5 = 6.5 → 1.538 / 1.05 = 1.465 < 2.353 / 1.1.
    assert!(s.improves);
}

// ---- branch ----
fn features(n: usize, seed: u64) -> Features {
    // Two cut points of widths 2 and 3; class 1 is separable on cut 1's first feature,
    // class 0 on nothing (noise only).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut f = Features {
        dims: vec![2, 3],
        pooled: vec![Vec::new(), Vec::new()],
        labels: Vec::new(),
        b_pred: Vec::new(),
    };
    for i in 0..n {
        let y = i % 3;
        f.labels.push(y);
        f.b_pred.push(y);
        f.pooled[0].extend([rng.random::<f32>(), rng.random::<f32>()]);
        let signal = if y == 1 { 5.0 } else { 0.0 };
        f.pooled[1].extend([
            signal + rng.random::<f32>(),
            rng.random::<f32>(),
            10.0 + rng.random::<f32>(),
        ]);
    }
    f
}

#[test]
fn kp_on_concatenates_earlier_cut_points() {
    let f = features(4, 1);
    assert_eq!(f.width(1, Kp::Off), 3);
    assert_eq!(f.width(1, Kp::On), 5);
    let on = f.input(1, Kp::On);
    assert_eq!(&on[5..7], &f.pooled[0][2..4]);
    assert_eq!(&on[7..10], &f.pooled[1][3..6]);
    assert_eq!(f.input(1, Kp::Off), f.pooled[1]);
}

#[test]
fn branch_learns_a_separable_class_and_stops_on_patience() {
    let (train, val) = (features(300, 1), features(150, 2));
    let s = TrainSettings {
        patience: 3,
        max_epochs: 50,
        batch: 32,
        lr: 0.05,
        seed: 1,
    };
    let b = train_branch(1, Kp::Off, &train, &val, &[1], &s).unwrap();
    assert_eq!(b.val_accuracy, vec![1.0]);
    // Perfect from some epoch on, never improved upon: stops `patience` epochs later.
    assert_eq!(b.epochs, b.best_epoch[0] + 3);
    // The folded weights work on the raw features.
    let p = b.probabilities(&val.input(1, Kp::Off));
    for (pi, &y) in p.iter().zip(&val.labels) {
        assert_eq!(*pi > 0.5, y == 1, "p = {pi}, y = {y}");
    }
    // Same seed, same branch.
    assert_eq!(b, train_branch(1, Kp::Off, &train, &val, &[1], &s).unwrap());
}

#[test]
fn bad_settings_name_the_field() {
    let f = features(10, 1);
    let s = TrainSettings {
        lr: 0.0,
        ..TrainSettings::default()
    };
    let e = train_branch(0, Kp::On, &f, &f, &[0], &s).unwrap_err().to_string();
    assert!(e.contains("lr"), "{e}");
}

//! Re-batching the survivors of several batches (a queue per stage) must give every sample the
//! same answer as the plain engine on the same inputs.

mod common;

use burn::tensor::{Device, Tensor};
use earlyexit::ExecChoice;
use earlyexit::infer::{Executor, Implementation, MultiExitModel, Policy, Rebatcher};
use earlyexit::model::{HeadKind, Shape};

fn model(backbone: &str, head: HeadKind, exits: &str, seed: u64) -> MultiExitModel {
    common::model(backbone, Shape::new(1, 28, 28), exits, head, seed)
}

fn check(m: &MultiExitModel, sizes: &[usize], batch: usize) {
    let total: usize = sizes.iter().sum();
    let all = common::input(total, Shape::new(1, 28, 28), 7);
    let mut chunks = Vec::new();
    let mut at = 0;
    for &s in sizes {
        chunks.push(all.clone().narrow(0, at, s));
        at += s;
    }
    let mut policies = vec![
        common::median_thresholds(m, all.clone()),
        Policy::Patience(1),
        Policy::Patience(2),
        Policy::Never,
    ];
    if m.net.heads.iter().all(|h| h.has_confidence()) {
        policies.push(Policy::Ensemble);
    }
    for policy in &policies {
        let want = m.infer(all.clone(), policy).unwrap();
        let mut r = Rebatcher::new(m, policy, batch).unwrap();
        for c in &chunks {
            r.push(c.clone()).unwrap();
        }
        assert_eq!(r.pushed(), total);
        let (got, runs) = r.finish_with_runs();
        assert_eq!(got.len(), total);
        assert_eq!(got.exit, want.exit, "{policy}: exits");
        assert_eq!(got.class, want.class, "{policy}: classes");
        assert_eq!(got.macs, want.macs, "{policy}: MACs");
        for (i, (a, b)) in got.probs.iter().zip(&want.probs).enumerate() {
            assert!((a - b).abs() < 1e-5, "{policy}: prob {i}: {a} vs {b}");
        }
        for (i, (a, b)) in got.confidence.iter().zip(&want.confidence).enumerate() {
            assert!((a - b).abs() < 1e-5, "{policy}: confidence {i}: {a} vs {b}");
        }
        if matches!(policy, Policy::MaxProb(_)) {
            assert!(want.exit.contains(&0) && want.exit.contains(&m.net.num_exits()));
            // Every stage ran on full batches except, at most, once at the flush.
            for k in 0..m.net.num_stages() {
                let reach = want.exit.iter().filter(|&&e| e >= k).count();
                assert_eq!(runs.samples[k], reach, "stage {k} samples");
                assert_eq!(runs.runs[k], reach.div_ceil(batch), "stage {k} runs");
            }
        }
        // The streaming shorthand is the same.
        let s = m.infer_stream(chunks.iter().cloned(), policy, batch).unwrap();
        assert_eq!(s, got);
        // On the compiled CPU path too: the executor's queues answer as its engine does.
        let exec = Executor::new(m.clone(), &Device::flex(), ExecChoice::Auto).unwrap();
        assert_eq!(exec.implementation(), Implementation::Compiled);
        let want = exec.infer(all.clone(), policy).unwrap();
        let mut r = exec.rebatcher(policy, batch).unwrap();
        for c in &chunks {
            r.push(c.clone()).unwrap();
        }
        let (fast, fast_runs) = r.finish_with_runs();
        assert_eq!(
            (&fast.exit, &fast.class, &fast.macs),
            (&want.exit, &want.class, &want.macs),
            "{policy}: compiled"
        );
        for (i, (a, b)) in fast.probs.iter().zip(&want.probs).enumerate() {
            assert!((a - b).abs() < 1e-4, "{policy}: compiled prob {i}: {a} vs {b}");
        }
        if matches!(policy, Policy::MaxProb(_)) {
            assert_eq!(fast_runs, runs, "{policy}: the same stage runs on either path");
        }
        assert_eq!(exec.infer_stream(chunks.iter().cloned(), policy, batch).unwrap(), fast);
    }
}

#[test]
fn rebatching_gives_the_engines_answers() {
    let m = model("eenet8", HeadKind::Pool, "cuts:1,2", 1);
    check(&m, &[5, 13, 1, 8, 21, 8, 3], 8);
    check(&m, &[4, 4, 4], 16);
    check(&m, &[30], 1);
}

#[test]
fn rebatching_carries_dense_heads_and_confidence() {
    check(&model("lenet5", HeadKind::Dense, "every", 2), &[6, 9, 17, 2], 8);
    check(&model("eenet8", HeadKind::Bnpool, "cuts:0,1,2", 3), &[11, 11, 11], 10);
}

#[test]
fn rebatching_size_zero_and_wrong_shapes_are_errors() {
    let m = model("eenet8", HeadKind::Pool, "cuts:1,2", 1);
    let e = Rebatcher::new(&m, &Policy::Patience(1), 0).err().unwrap().to_string();
    assert!(e.contains("batch"), "{e}");
    let mut r = Rebatcher::new(&m, &Policy::Patience(1), 4).unwrap();
    let x = Tensor::<4>::zeros([2, 3, 28, 28], &Device::flex());
    assert!(r.push(x).is_err());
    assert_eq!(r.finish().len(), 0);
}

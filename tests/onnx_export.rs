//! ONNX out: every exported graph, run in a pure-Rust ONNX runtime (tract), equals our engine —
//! each stage's features and each exit's logits within 1e-4 — and the cascade run from the
//! manifest gives the engine's answers (same exit, same class) sample by sample.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use earlyexit::infer::{MultiExitModel, Policy, Thresholds};
use earlyexit::interop::{MANIFEST_FILE, Manifest, export_onnx};
use earlyexit::model::{HeadKind, Shape, StageState};
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, IntoTensor, Tensor as TractTensor, tvec};

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("earlyexit-onnx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `model` after a few train-mode passes, so that folding BatchNorm is not the identity.
fn with_statistics(m: MultiExitModel, input: Shape) -> MultiExitModel {
    use burn::module::Module;
    let train_dev = Device::flex().autodiff();
    let mut net = m.net.fork(&train_dev);
    for s in 0..2 {
        let x = common::input_on(8, input, 100 + s, &train_dev) * 1.5 + 0.3;
        let _ = net.forward_all(x);
        net = net.clone();
    }
    MultiExitModel {
        arch: m.arch,
        net: net.valid(),
    }
}

/// Runs one exported graph on `x`; returns every output as `(dims, values)`.
fn run_graph(path: &std::path::Path, x: &Tensor<4>) -> Vec<(Vec<usize>, Vec<f32>)> {
    let dims = x.dims();
    let values = x.clone().into_data().try_to_vec::<f32>().unwrap();
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .into_optimized()
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .into_runnable()
        .unwrap();
    let input: TractTensor = tract_onnx::prelude::tract_ndarray::Array4::from_shape_vec(dims, values)
        .unwrap()
        .into_tensor();
    plan.run(tvec!(input.into()))
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .iter()
        .map(|t| {
            let v = t.to_plain_array_view::<f32>().unwrap();
            (v.shape().to_vec(), v.iter().copied().collect())
        })
        .collect()
}

fn values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    (t.dims().to_vec(), t.into_data().try_to_vec::<f32>().unwrap())
}

fn assert_close(what: &str, ours: &(Vec<usize>, Vec<f32>), onnx: &(Vec<usize>, Vec<f32>)) {
    assert_eq!(ours.0, onnx.0, "{what}: shapes");
    let scale = ours.1.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (a, b) in ours.1.iter().zip(&onnx.1) {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{what}: ours {a} vs ONNX {b} (scale {scale})"
        );
    }
}

fn tensor(dims: &[usize], v: Vec<f32>) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(v, [dims[0], dims[1], dims[2], dims[3]]),
        &Device::flex(),
    )
}

/// The cascade from the manifest alone, one sample at a time, with a `maxprob` policy.
fn cascade(dir: &std::path::Path, m: &Manifest, x: &Tensor<4>, thresholds: &[f32]) -> Vec<(usize, usize)> {
    let n = x.dims()[0];
    (0..n)
        .map(|i| {
            let mut feats = {
                let s = x.clone().narrow(0, i, 1);
                values(s)
            };
            for (k, stage) in m.stages.iter().enumerate() {
                feats = run_graph(&dir.join(&stage.file), &tensor(&feats.0, feats.1.clone())).remove(0);
                let exit = &m.exits[k];
                let logits = run_graph(&dir.join(&exit.file), &tensor(&feats.0, feats.1.clone()))
                    .remove(0)
                    .1;
                let max = logits.iter().fold(f32::MIN, |a, &b| a.max(b));
                let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                let class = logits
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, &v)| if v > logits[b] { j } else { b });
                if k == m.stages.len() - 1 || 1.0 / z >= thresholds[k] {
                    return (k, class);
                }
            }
            unreachable!("the last stage always answers")
        })
        .collect()
}

#[test]
fn every_stage_and_exit_graph_equals_the_engine_and_the_cascade_gives_its_answers() {
    let small = Shape::new(3, 32, 32);
    for (backbone, input, head, exits, opts) in [
        ("resnet20", small, HeadKind::Branchy, "pareto:3", ""),
        ("eenet8", Shape::new(1, 28, 28), HeadKind::Bnpool, "cuts:1,2", ""),
        ("resnet20_a", small, HeadKind::Pool, "linear:3", ""),
        ("resnet50", Shape::new(3, 16, 16), HeadKind::Pool, "linear:2", ""),
        ("mobilenet_v2", small, HeadKind::Plain, "cuts:3,8", ""),
        ("densenet121", small, HeadKind::Pool, "linear:2", ""),
        ("inception_v3", Shape::new(3, 75, 75), HeadKind::Pool, "linear:2", ""),
        // 2×2 features into VGG's 7×7 adaptive pool: overlapping windows folded into fc1.
        ("vgg11_bn_imagenet", Shape::new(3, 64, 64), HeadKind::Pool, "cuts:2", ""),
        ("lenet5", Shape::new(1, 28, 28), HeadKind::Plain, "cuts:1", ""),
        ("resnet20", Shape::new(1, 16, 16), HeadKind::Relupool, "cuts:2,5", ""),
        (
            "resnet20_a",
            Shape::new(1, 28, 28),
            HeadKind::Relupool,
            "cuts:1,5",
            "grid:3",
        ),
        (
            "resnet8",
            Shape::new(1, 16, 16),
            HeadKind::Mlp(16, 8),
            "cuts:0,2",
            "gate",
        ),
    ] {
        let m = with_statistics(common::model_opts(backbone, input, exits, head, opts, 7), input);
        let x = common::input(5, input, 9);
        let policy = common::median_thresholds(&m, x.clone());
        let dir = scratch(backbone);
        let manifest = export_onnx(&m, &policy, None, &dir).unwrap_or_else(|e| panic!("{backbone}: {e}"));
        let mut on_disk: Manifest =
            serde_json::from_str(&std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
        // One threshold reads back as a shared one: the same policy.
        assert_eq!(on_disk.policy.to_string(), manifest.policy.to_string());
        on_disk.policy = manifest.policy.clone();
        assert_eq!(on_disk, manifest);
        assert_eq!(manifest.stages.len(), m.arch.num_exits() + 1);

        // Stage by stage, exit by exit, against the engine's own slices.
        let mut state = StageState::new(x.clone());
        for (k, stage) in manifest.stages.iter().enumerate() {
            let input_values = values(state.x.clone());
            state = m.net.run_stage(k, state);
            let onnx = run_graph(&dir.join(&stage.file), &tensor(&input_values.0, input_values.1));
            assert_close(
                &format!("{backbone} {}", stage.file),
                &values(state.x.clone()),
                &onnx[0],
            );
            let exit = &manifest.exits[k];
            let onnx = run_graph(&dir.join(&exit.file), &state.x);
            if k < m.net.num_exits() {
                let ours = m.net.exit(k, &state);
                assert_close(&format!("{backbone} {}", exit.file), &values(ours.logits), &onnx[0]);
                match ours.confidence {
                    Some(c) => assert_close(&format!("{backbone} {} confidence", exit.file), &values(c), &onnx[1]),
                    None => assert_eq!(onnx.len(), 1),
                }
            } else {
                let ours = m.net.forward_backbone(x.clone());
                assert_close(&format!("{backbone} classifier"), &values(ours), &onnx[0]);
            }
        }

        // The cascade from the manifest: the engine's exits and classes.
        let t = match &on_disk.policy {
            Policy::MaxProb(Thresholds::PerExit(t)) => t.clone(),
            Policy::MaxProb(Thresholds::Shared(t)) => vec![*t; m.net.num_exits()],
            other => panic!("median thresholds are maxprob, not {other}"),
        };
        let ours = m.infer(x.clone(), &on_disk.policy).unwrap();
        let onnx = cascade(&dir, &on_disk, &x, &t);
        for (i, (exit, class)) in onnx.iter().enumerate() {
            assert_eq!((*exit, *class), (ours.exit[i], ours.class[i]), "{backbone} sample {i}");
        }
    }
}

#[test]
fn dense_heads_and_existing_folders_are_refused_and_leave_nothing() {
    let input = Shape::new(1, 28, 28);
    let m = common::model("lenet5", input, "every", HeadKind::Dense, 1);
    let dir = scratch("dense");
    let e = export_onnx(&m, &Policy::default(), None, &dir).unwrap_err().to_string();
    assert!(e.contains("dense"), "{e}");
    assert!(!dir.exists());
    let m = common::model("lenet5", input, "cuts:1", HeadKind::Pool, 1);
    std::fs::create_dir_all(&dir).unwrap();
    let e = export_onnx(&m, &Policy::default(), None, &dir).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    // A policy that does not fit the exits is refused before anything is written.
    let other = scratch("policy");
    let e = export_onnx(&m, &"maxprob:0.9,0.8,0.7".parse().unwrap(), None, &other)
        .unwrap_err()
        .to_string();
    assert!(e.contains("policy"), "{e}");
    assert!(!other.exists());
}

//! PyTorch checkpoints in: every zoo network with a PyTorch layout imports under PyTorch's own
//! names and gives PyTorch's logits (fixtures from `scripts/make-torch-fixtures.py`; no Python
//! needed here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use earlyexit::interop::{ImportSpec, import_torch};
use earlyexit::model::Shape;
use serde::Deserialize;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("earlyexit-torch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// --- the fixture script's formula -----------------------------------------------------------

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

/// `n` values in `[-1, 1)`: splitmix64 of `fnv1a(name) + (i + 1)·golden`.
fn uniform(name: &str, n: usize) -> Vec<f64> {
    let seed = fnv1a(name);
    (0..n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn formula(name: &str, shape: &[usize], bn_gain: f64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let u = uniform(name, n);
    let leaf = name.rsplit('.').next().unwrap();
    let f = |v: f64| v as f32;
    match leaf {
        "running_var" => u.iter().map(|u| f(1.0 + 0.25 * u)).collect(),
        "running_mean" => u.iter().map(|u| f(0.1 * u)).collect(),
        "weight" if shape.len() == 1 => u.iter().map(|u| f(bn_gain * (1.0 + 0.1 * u))).collect(),
        "bias" => u.iter().map(|u| f(0.1 * u)).collect(),
        "weight" => {
            let fan_in = n / shape[0];
            let s = (3.0 / fan_in as f64).sqrt();
            u.iter().map(|u| f(u * s)).collect()
        }
        other => panic!("no formula for `{other}`"),
    }
}

/// A state dict in safetensors terms: name → shape, little-endian bytes, dtype.
type StateDict = BTreeMap<String, (Vec<usize>, Vec<u8>, safetensors::Dtype)>;

#[derive(Deserialize)]
struct FormulaCase {
    name: String,
    input: String,
    classes: usize,
    width: Option<usize>,
    /// Scale of every BatchNorm's gamma (large: activations past ReLU6's cap).
    bn_gain: f64,
    /// `[name, shape, dtype]` of every entry of PyTorch's state dict.
    keys: Vec<(String, Vec<usize>, String)>,
    logits: Vec<Vec<f32>>,
}

/// Writes `tensors` (name → shape, little-endian bytes, safetensors dtype) as safetensors.
fn write_safetensors(path: &Path, tensors: &StateDict) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, bytes, dtype))| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

/// PyTorch's state dict of `case` with the formula's values.
fn formula_state_dict(case: &FormulaCase) -> StateDict {
    case.keys
        .iter()
        .map(|(k, shape, dtype)| {
            let entry = match dtype.as_str() {
                // BatchNorm's counter: a scalar int64 that inference ignores.
                "int64" => (shape.clone(), 7i64.to_le_bytes().to_vec(), safetensors::Dtype::I64),
                "float32" => (
                    shape.clone(),
                    formula(k, shape, case.bn_gain)
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                    safetensors::Dtype::F32,
                ),
                other => panic!("{k}: dtype {other}"),
            };
            (k.clone(), entry)
        })
        .collect()
}

fn assert_close(name: &str, ours: &[Vec<f32>], torch: &[Vec<f32>]) {
    assert_eq!(ours.len(), torch.len(), "{name}");
    let scale = torch.iter().flatten().fold(1f32, |m, v| m.max(v.abs()));
    for (a, b) in ours.iter().zip(torch) {
        assert_eq!(a.len(), b.len(), "{name}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4 * scale,
                "{name}: logit {x} vs PyTorch's {y} (scale {scale})"
            );
        }
    }
}

fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [n, k] = t.dims();
    let v = t.into_data().try_to_vec::<f32>().unwrap();
    (0..n).map(|i| v[i * k..(i + 1) * k].to_vec()).collect()
}

#[test]
fn every_zoo_network_imports_under_pytorch_names_and_gives_its_logits() {
    let cases: Vec<FormulaCase> =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/formula.json")).unwrap()).unwrap();
    assert!(cases.len() >= 19, "{} cases", cases.len());
    let dir = scratch("formula");
    let device = Device::flex();
    for (i, case) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.safetensors"));
        write_safetensors(&path, &formula_state_dict(case));
        let input: Shape = case.input.parse().unwrap();
        let mut spec = ImportSpec::new(&case.name, input, case.classes);
        spec.width = case.width;
        let imported = import_torch(&path, &spec, &device).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let x = uniform("input", 2 * input.numel())
            .iter()
            .map(|v| *v as f32)
            .collect::<Vec<_>>();
        let x = Tensor::<4>::from_data(TensorData::new(x, [2, input.c, input.h, input.w]), &device);
        let logits = rows(imported.model.net.forward_backbone(x));
        assert_close(
            &format!("{} ({})", case.name, imported.description.backbone),
            &logits,
            &case.logits,
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[derive(Deserialize)]
struct CheckpointCase {
    arch: String,
    input: String,
    classes: usize,
    #[serde(default)]
    width: Option<usize>,
    logits: Vec<Vec<f32>>,
}

fn case(name: &str) -> CheckpointCase {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/{name}.json")).unwrap()).unwrap()
}

fn formula_input(n: usize, s: Shape, device: &Device) -> Tensor<4> {
    let x = uniform("input", n * s.numel())
        .iter()
        .map(|v| *v as f32)
        .collect::<Vec<_>>();
    Tensor::from_data(TensorData::new(x, [n, s.c, s.h, s.w]), device)
}

#[test]
fn real_checkpoints_in_both_formats_give_pytorchs_logits() {
    let device = Device::flex();
    // A torchvision MobileNetV2 at width 0.25 saved with torch.save (a zip pickle), and a CIFAR
    // ResNet-20 with projection shortcuts named `downsample`/`fc`, saved as safetensors; both
    // with BatchNorm statistics from train-mode passes.
    for (file, fixture) in [
        ("mobilenet_v2_w25.pt", "mobilenet_v2_w25"),
        ("resnet20_b.safetensors", "resnet20_b"),
    ] {
        let c = case(fixture);
        let input: Shape = c.input.parse().unwrap();
        let mut spec = ImportSpec::new(&c.arch, input, c.classes);
        spec.width = c.width;
        let imported = import_torch(&Path::new(FIXTURES).join(file), &spec, &device).unwrap();
        let logits = rows(imported.model.net.forward_backbone(formula_input(4, input, &device)));
        assert_close(file, &logits, &c.logits);
        // `num_batches_tracked` is read and left out, not silently dropped.
        assert!(imported.ignored.iter().all(|k| k.ends_with("num_batches_tracked")));
        assert!(!imported.ignored.is_empty());
    }
}

/// The first `n` MNIST test images, normalised as training normalises them.
fn mnist_test_images(n: usize) -> Vec<f32> {
    use std::io::Read;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist/t10k-images-idx3-ubyte.gz");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes[16..16 + n * 784]
        .iter()
        .map(|&p| (p as f32 / 255.0 - 0.1307) / 0.3081)
        .collect()
}

#[test]
fn an_option_a_resnet_trained_on_mnist_imports_with_exits_and_keeps_its_answers() {
    let device = Device::flex();
    let c = case("cifar_resnet20_a_mnist");
    let input: Shape = c.input.parse().unwrap();
    let mut spec = ImportSpec::new(&c.arch, input, c.classes);
    spec.exits = "cuts:3,5,7".parse().unwrap();
    spec.seed = 3;
    let weights = Path::new(FIXTURES).join("cifar_resnet20_a_mnist.pt");
    let imported = import_torch(&weights, &spec, &device).unwrap();
    // No shortcut weights in the file: option A, read off the checkpoint.
    assert_eq!(imported.description.backbone, "resnet20_a");
    assert_eq!(imported.model.arch.num_exits(), 3);
    let x = Tensor::<4>::from_data(TensorData::new(mnist_test_images(8), [8, 1, 28, 28]), &device);
    let ours = rows(imported.model.net.forward_backbone(x.clone()));
    assert_close("resnet20_a (MNIST)", &ours, &c.logits);

    // Saved and reopened as a model folder, it is the same network; a second save refuses to
    // overwrite it.
    let dir = scratch("mnist");
    let out = dir.join("imported");
    imported.save(&out).unwrap();
    let reopened = earlyexit::infer::MultiExitModel::load(&out, &device).unwrap();
    assert_eq!(rows(reopened.net.forward_backbone(x.clone())), ours);
    let e = imported.save(&out).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");

    // With its dataset it is a run folder that the run commands open.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let run_dir = dir.join("run");
    imported.save_run(&run_dir, "mnist", &data).unwrap();
    let run = earlyexit::run::Run::open(&run_dir).unwrap();
    assert_eq!(run.description, imported.description);
    assert_eq!(run.normalize().unwrap().mean, vec![0.1307]);
    let x = Tensor::<4>::from_data(TensorData::new(mnist_test_images(8), [8, 1, 28, 28]), &device);
    assert_eq!(rows(run.load_model(&device).unwrap().net.forward_backbone(x)), ours);
    // A dataset that does not fit the network is refused before anything is written.
    let e = imported
        .save_run(&dir.join("cifar"), "cifar100", &data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--data") && e.contains("3x32x32") && e.contains("1x28x28"),
        "{e}"
    );
    assert!(!dir.join("cifar").exists());
}

#[test]
fn import_then_train_the_exits_calibrate_and_evaluate() {
    use earlyexit::infer::{EvalOptions, Goal, ScoreKind, SplitKind, calibrate_split, evaluate};
    use earlyexit::run::Run;
    use earlyexit::train::{TrainConfig, TrainOptions, train};

    let device = Device::flex();
    let dir = scratch("workflow");
    let imported_dir = dir.join("imported");
    let spec = ImportSpec::new("cifar:resnet20", Shape::new(1, 28, 28), 10);
    import_torch(&Path::new(FIXTURES).join("cifar_resnet20_a_mnist.pt"), &spec, &device)
        .unwrap()
        .save(&imported_dir)
        .unwrap();

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = TrainConfig::from_file(
        &root.join("configs/resnet20a-mnist-imported-heads.toml"),
        &[
            format!("init=\"{}\"", imported_dir.display()),
            format!("data.dir=\"{}\"", root.join("data").display()),
            "data.train_limit=2048".into(),
            "data.val_limit=1000".into(),
            "checkpoint.every_secs=0".into(),
        ],
    )
    .unwrap();
    let run_dir = dir.join("run");
    train(&cfg, &run_dir, &TrainOptions::default()).unwrap();
    let run = Run::open(&run_dir).unwrap();
    let model = run.load_model(&device).unwrap();

    // The frozen backbone still answers exactly as the imported one.
    let imported = earlyexit::infer::MultiExitModel::load(&imported_dir, &device).unwrap();
    let x = Tensor::<4>::from_data(TensorData::new(mnist_test_images(8), [8, 1, 28, 28]), &device);
    assert_eq!(
        rows(model.net.forward_backbone(x.clone())),
        rows(imported.net.forward_backbone(x))
    );

    let val = run.split(SplitKind::Val).unwrap();
    let exec = earlyexit::infer::Executor::new(model.clone(), &device, earlyexit::ExecChoice::Auto).unwrap();
    let (cal, _) = calibrate_split(&exec, &val, Goal::MaxAccuracyDrop(0.01), ScoreKind::MaxProb, false, 256).unwrap();
    run.write_calibration(&cal).unwrap();
    let policy = run.policy().unwrap();
    let mut test = run.split(SplitKind::Test).unwrap();
    test.labels.truncate(2000);
    test.images.truncate(2000 * 784);
    let opts = EvalOptions {
        timing_samples: 16,
        large_batch: 64,
        large_batch_samples: 64,
        repeats: 1,
        ..EvalOptions::default()
    };
    let report = evaluate(&model, &test, &policy, &opts, &device).unwrap();
    // Real exits on held-out data: the calibrated policy stays close to the full network and
    // sends some samples out early.
    assert!(report.full_accuracy > 0.9, "{}", report.full_accuracy);
    assert!(
        report.accuracy > report.full_accuracy - 0.03,
        "{} vs {}",
        report.accuracy,
        report.full_accuracy
    );
    assert!(report.relative_cost < 1.0, "{}", report.relative_cost);
}

#[test]
fn a_checkpoint_that_does_not_fit_is_refused_with_every_offender_named() {
    let device = Device::flex();
    let cases: Vec<FormulaCase> =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/formula.json")).unwrap()).unwrap();
    let c = cases.iter().find(|c| c.name == "cifar:resnet20").unwrap();
    let dir = scratch("refused");
    let spec = ImportSpec::new(&c.name, c.input.parse().unwrap(), c.classes);
    let attempt = |edit: &dyn Fn(&mut StateDict)| {
        let mut sd = formula_state_dict(c);
        edit(&mut sd);
        let path = dir.join("edited.safetensors");
        write_safetensors(&path, &sd);
        import_torch(&path, &spec, &device).unwrap_err().to_string()
    };
    // A missing tensor, with the shape it should have.
    let e = attempt(&|sd| {
        sd.remove("layer2.1.bn1.running_var");
    });
    assert!(
        e.contains("missing") && e.contains("layer2.1.bn1.running_var [32]"),
        "{e}"
    );
    // A tensor with no place (a checkpoint of another network).
    let e = attempt(&|sd| {
        let extra = sd["linear.bias"].clone();
        sd.insert("linear2.bias".into(), extra);
    });
    assert!(e.contains("no place") && e.contains("linear2.bias"), "{e}");
    // A wrong shape (a classifier for 100 classes), both ends named.
    let e = attempt(&|sd| {
        sd.insert("linear.bias".into(), (vec![100], vec![0; 400], safetensors::Dtype::F32));
    });
    assert!(e.contains("linear.bias: [100], expected [10]"), "{e}");
    // Integers where floats belong.
    let e = attempt(&|sd| {
        sd.insert(
            "conv1.weight".into(),
            (vec![16, 3, 3, 3], vec![0; 432 * 8], safetensors::Dtype::I64),
        );
    });
    assert!(e.contains("conv1.weight") && e.contains("expected a float"), "{e}");
    // A NaN in a weight (a diverged training), and an f64 too large for f32: refused by name and
    // element instead of a model that answers NaN.
    let e = attempt(&|sd| {
        let (shape, mut bytes, dtype) = sd["layer1.0.conv2.weight"].clone();
        bytes[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
        sd.insert("layer1.0.conv2.weight".into(), (shape, bytes, dtype));
    });
    assert!(
        e.contains("layer1.0.conv2.weight") && e.contains("non-finite") && e.contains("element 5"),
        "{e}"
    );
    let e = attempt(&|sd| {
        let n = sd["linear.bias"].0[0];
        let mut bytes: Vec<u8> = (0..n).flat_map(|_| 0.5f64.to_le_bytes()).collect();
        bytes[8..16].copy_from_slice(&1e300f64.to_le_bytes());
        sd.insert("linear.bias".into(), (vec![n], bytes, safetensors::Dtype::F64));
    });
    assert!(e.contains("linear.bias") && e.contains("element 1"), "{e}");
    // Another network altogether, and an unknown name.
    let e = import_torch(
        &dir.join("edited.safetensors"),
        &ImportSpec::new("torchvision:resnet18", Shape::new(3, 32, 32), 10),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("layer2.0.downsample.0.weight [128, 64, 1, 1]")
            && e.contains("conv1.weight: [16, 3, 3, 3], expected [64, 3, 7, 7]"),
        "{e}"
    );
    let e = import_torch(
        &dir.join("edited.safetensors"),
        &ImportSpec::new("torchvision:resnet19", Shape::new(3, 32, 32), 10),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("resnet19"), "{e}");
    let e = import_torch(&dir.join("missing.pt"), &spec, &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.pt"), "{e}");
}

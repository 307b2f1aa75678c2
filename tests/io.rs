//! Save / load: round trip, and clear errors for bad descriptions and mismatched weights.

use burn::tensor::{Device, Distribution, Tensor};
use earlyexit::Error;
use earlyexit::infer::{MultiExitModel, Policy};
use earlyexit::model::{ModelDescription, Shape, io};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("earlyexit-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn desc(exits: &str) -> ModelDescription {
    ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, exits.parse().unwrap())
}

#[test]
fn round_trip_gives_identical_answers() {
    let device = Device::flex();
    device.seed(7);
    let arch = desc("cuts:1,2").resolve().unwrap();
    let model = MultiExitModel::new(arch, &device);
    let dir = tmp("roundtrip");
    io::save_model(&dir, &model.arch.description, &model.net).unwrap();
    let (arch2, net2) = io::load_model(&dir, &device).unwrap();
    let loaded = MultiExitModel { arch: arch2, net: net2 };
    let x = Tensor::<4>::random([5, 1, 28, 28], Distribution::Default, &device);
    let p = Policy::default();
    assert_eq!(model.infer(x.clone(), &p).unwrap(), loaded.infer(x, &p).unwrap());
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn mismatched_weights_name_the_tensor_and_both_shapes() {
    let device = Device::flex();
    let dir = tmp("mismatch");
    let wide = ModelDescription {
        width: Some(8),
        ..desc("cuts:1,2")
    };
    let net = wide.resolve().unwrap().init(&device);
    io::save_weights(&net, &dir.join(io::WEIGHTS_FILE)).unwrap();
    let narrow = desc("cuts:1,2").resolve().unwrap().init(&device);
    match io::load_weights(narrow, &dir.join(io::WEIGHTS_FILE)) {
        Err(Error::WeightShape {
            tensor,
            expected,
            found,
            file,
        }) => {
            assert!(!tensor.is_empty());
            assert_ne!(expected, found);
            assert!(file.ends_with(io::WEIGHTS_FILE));
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn weights_of_another_placement_are_refused() {
    let device = Device::flex();
    let dir = tmp("placement");
    let net = desc("cuts:1,2").resolve().unwrap().init(&device);
    io::save_weights(&net, &dir.join(io::WEIGHTS_FILE)).unwrap();
    let one_exit = desc("cuts:1").resolve().unwrap().init(&device);
    let e = io::load_weights(one_exit, &dir.join(io::WEIGHTS_FILE))
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no place in the description"), "{e}");
}

#[test]
fn corrupt_or_missing_weight_files_are_errors() {
    let device = Device::flex();
    let dir = tmp("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let net = desc("cuts:1").resolve().unwrap().init(&device);
    let e = io::load_weights(net, &path).unwrap_err().to_string();
    assert!(e.contains("w.safetensors"), "{e}");
    let net = desc("cuts:1").resolve().unwrap().init(&device);
    let e = io::load_weights(net, &dir.join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
}

#[test]
fn bad_descriptions_name_the_field() {
    let dir = tmp("desc");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "unknown-field.toml",
            "backbone = \"resnet20\"\ninput = \"3x32x32\"\nclasses = 10\nexits = \"none\"\nfoo = 1\n",
            "foo",
        ),
        (
            "bad-shape.toml",
            "backbone = \"resnet20\"\ninput = \"3x32\"\nclasses = 10\nexits = \"none\"\n",
            "CxHxW",
        ),
        (
            "bad-exits.json",
            r#"{"backbone":"resnet20","input":"3x32x32","classes":10,"exits":"pareto"}"#,
            "number of exits",
        ),
        (
            "missing.json",
            r#"{"backbone":"resnet20","input":"3x32x32","exits":"none"}"#,
            "classes",
        ),
    ];
    for (name, text, needle) in cases {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let e = io::read_description(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
    }
    // Parses, but cannot be built.
    let p = dir.join("impossible.toml");
    std::fs::write(
        &p,
        "backbone = \"eenet8\"\ninput = \"1x28x28\"\nclasses = 10\nexits = \"cuts:1,1\"\n",
    )
    .unwrap();
    let e = io::read_description(&p).unwrap().resolve().unwrap_err().to_string();
    assert!(e.contains("both land on cut 1"), "{e}");
    let e = ModelDescription::new("resnet20", Shape::new(3, 32, 32), 1, "none".parse().unwrap())
        .resolve()
        .unwrap_err();
    assert!(e.to_string().contains("classes"), "{e}");
}

/// Weights with a NaN in them are refused at load, naming the tensor (they answered NaN for
/// every input, and evaluation reported chance accuracy without a word).
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let device = Device::flex();
    let dir = tmp("nan");
    let net = desc("cuts:1,2").resolve().unwrap().init(&device);
    let path = dir.join(io::WEIGHTS_FILE);
    io::save_weights(&net, &path).unwrap();
    let fresh = || desc("cuts:1,2").resolve().unwrap().init(&device);
    assert!(io::load_weights(fresh(), &path).is_ok());
    // The last four bytes are the last value of the last tensor's data.
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = io::load_weights(fresh(), &path).unwrap_err().to_string();
    assert!(
        e.contains("non-finite") && e.contains("tensor `") && e.contains(io::WEIGHTS_FILE),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A folder records the cuts its rule chose, so it loads onto the same blocks whatever the rules
/// come to mean; a `model.json` from before `golden:N` followed EENets' tables is refused with
/// the cuts its weights were trained on, never loaded onto other blocks.
#[test]
fn folders_record_cuts_and_old_golden_descriptions_are_refused_with_their_cuts() {
    let device = Device::flex();
    let d = ModelDescription::new("resnet20", Shape::new(3, 32, 32), 10, "golden:3".parse().unwrap());
    let arch = d.resolve().unwrap();
    assert_eq!(
        arch.cuts,
        vec![2, 4, 6],
        "24, 45, 68 % of ResNet-20's MACs (EENets' Table 9)"
    );
    let model = MultiExitModel::new(arch, &device);
    let dir = tmp("golden");
    io::save_model(&dir, &model.arch.description, &model.net).unwrap();
    let json = std::fs::read_to_string(dir.join(io::DESCRIPTION_FILE)).unwrap();
    assert!(json.contains("\"exits\": \"cuts:2,4,6\""), "{json}");
    let (loaded, _) = io::load_model(&dir, &device).unwrap();
    assert_eq!(loaded.cuts, vec![2, 4, 6]);
    // The same folder as an older version wrote it: the rule, not the cuts.
    std::fs::write(dir.join(io::DESCRIPTION_FILE), json.replace("cuts:2,4,6", "golden:3")).unwrap();
    let e = io::load_model(&dir, &device).err().unwrap().to_string();
    assert!(
        e.contains("model.json") && e.contains("\"exits\": \"cuts:4,6,7\""),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

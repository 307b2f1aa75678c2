//! Writes the seed inputs of the fuzz targets in `fuzz/` (`fuzz/seeds/<target>/`): valid
//! `Classify` and `Forward` requests for the fuzzed model (in every wire format), its
//! `model.json` and `weights.safetensors`, and `policy.json` files of every form. The fuzzers
//! start from these and mutate them.
//!
//! ```sh
//! cargo run --release --example fuzz_seeds
//! ```
//!
//! The model must be the one `fuzz/src/lib.rs` builds: EENet-8 on 1×28×28, exits after blocks
//! 1 and 2, `dense` heads.

use std::path::Path;

use burn::tensor::Device;
use earlyexit::infer::{MultiExitModel, Policy};
use earlyexit::model::{HeadKind, ModelDescription, Shape, io};
use earlyexit::serve::client::tensor_image;
use earlyexit::serve::codec::{WireCompression, WireDType, WireFormat, encode};
use earlyexit::serve::proto::{self, ClassifyRequest, ForwardRequest};
use earlyexit::serve::server::RequestRules;
use earlyexit::serve::tier::{StageRange, TierOptions};
use prost::Message;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "cuts:1,2".parse()?);
    desc.head = HeadKind::Dense;
    let device = Device::flex();
    device.seed(1);
    let model = MultiExitModel::new(desc.resolve()?, &device);
    let formats = [
        (WireDType::F32, WireCompression::None),
        (WireDType::F16, WireCompression::Lz4),
        (WireDType::F32, WireCompression::Zstd(3)),
    ];

    // Classify: tensors in each format, a PNG and a JPEG.
    let dir = root.join("classify_request");
    let pixels: Vec<f32> = (0..784).map(|i| ((i * 7) % 256) as f32 / 255.0).collect();
    for (k, &(dtype, compression)) in formats.iter().enumerate() {
        let img = tensor_image(&pixels, [1, 28, 28], WireFormat { dtype, compression });
        let req = ClassifyRequest {
            images: vec![img.clone(), img],
        };
        write(&dir, &format!("tensor-{k}.pb"), &req.encode_to_vec())?;
    }
    let gray = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 5) % 256) as u8]));
    for (name, format) in [("png", image::ImageFormat::Png), ("jpeg", image::ImageFormat::Jpeg)] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        gray.write_to(&mut bytes, format)?;
        let req = ClassifyRequest {
            images: vec![proto::Image {
                input: Some(proto::image::Input::Encoded(bytes.into_inner())),
            }],
        };
        write(&dir, &format!("{name}.pb"), &req.encode_to_vec())?;
    }

    // Forward to stage 1: the activations after stage 0, the pooled history the dense heads
    // need, a best-so-far answer and patience state per sample.
    let dir = root.join("forward_request");
    let arch = &model.arch;
    let last = model.net.stage_blocks(0).end - 1;
    let x = arch.backbone.blocks[last].output;
    let widths: Vec<usize> = arch.backbone.blocks[..=last].iter().map(|b| b.output.c).collect();
    let n = 2;
    for (k, &(dtype, compression)) in formats.iter().enumerate() {
        let fmt = WireFormat { dtype, compression };
        let values: Vec<f32> = (0..n * x.c * x.h * x.w).map(|i| (i % 13) as f32 * 0.1).collect();
        let req = ForwardRequest {
            ids: (0..n as u64).collect(),
            stage: 1,
            x: Some(encode(&values, &[n, x.c, x.h, x.w], fmt)),
            pooled: widths
                .iter()
                .map(|&d| encode(&vec![0.25; n * d], &[n, d], fmt))
                .collect(),
            best: (0..n)
                .map(|_| proto::BestSoFar {
                    exit: 0,
                    confidence: 0.5,
                    probs: vec![0.1; 10],
                })
                .collect(),
            prev_class: vec![3, 7],
            streak: vec![1, 1],
            model_id: "model-a".into(),
        };
        write(&dir, &format!("forward-{k}.pb"), &req.encode_to_vec())?;
    }

    // model.json: this model's and a few others'.
    let dir = root.join("model_json");
    write(
        &dir,
        "eenet8-dense.json",
        serde_json::to_string_pretty(&desc)?.as_bytes(),
    )?;
    for (i, (zoo, input, exits)) in [
        ("resnet20", Shape::new(3, 32, 32), "cuts:3,6"),
        ("mlp", Shape::new(1, 28, 28), "cuts:1"),
        ("vgg13", Shape::new(3, 32, 32), "cuts:1,3"),
    ]
    .into_iter()
    .enumerate()
    {
        let d = ModelDescription::new(zoo, input, 10, exits.parse()?);
        write(&dir, &format!("zoo-{i}.json"), serde_json::to_string(&d)?.as_bytes())?;
    }

    // weights.safetensors of the fuzzed model.
    write(
        &root.join("safetensors"),
        "weights.safetensors",
        &io::weights_to_bytes(&model.net)?,
    )?;

    // policy.json: a bare string, a hand-written object, a calibration.
    let dir = root.join("policy_json");
    write(&dir, "string.json", br#""maxprob:0.9,off""#)?;
    write(
        &dir,
        "object.json",
        br#"{"policy": "entropy:0.3,0.2", "note": "by hand"}"#,
    )?;
    write(&dir, "patience.json", br#"{"policy": "patience:2"}"#)?;
    let calibration = r#"{"policy": "maxprob:0.2284536,off,0.5", "goal": {"max-accuracy-drop": 0.01},
  "kind": "maxprob", "per_exit": true, "split": "val", "samples": 1000, "full_accuracy": 0.964,
  "validation": {"accuracy": 0.964, "relative_cost": 0.96, "coverage": [0.0, 0.0, 0.179, 0.821],
  "exit_accuracy": [null, null, 1.0, 0.956]}}"#;
    write(&dir, "calibration.json", calibration.as_bytes())?;
    // The request seeds pass the tier's checks: the fuzzers start from inputs that reach every
    // check, not from ones refused at the first.
    let whole = RequestRules::new(&model, "model-a", &TierOptions::whole("maxprob:0.9,0.8".parse()?))?;
    let mut tier = TierOptions::whole(Policy::Patience(2));
    tier.stages = StageRange { start: 1, end: None };
    let tier = RequestRules::new(&model, "model-a", &tier)?;
    for entry in std::fs::read_dir(root.join("classify_request"))? {
        let path = entry?.path();
        whole
            .check_classify(ClassifyRequest::decode(&*std::fs::read(&path)?)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    for entry in std::fs::read_dir(root.join("forward_request"))? {
        let path = entry?.path();
        tier.check_forward(ForwardRequest::decode(&*std::fs::read(&path)?)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    println!("seeds written under {}", root.display());
    Ok(())
}

//! A minimal joint trainer (every exit's cross-entropy, equal weights, Adam) that writes a run
//! folder `calibrate`, `eval`, `report` and `prune-exits` can read: `model.json`,
//! `weights.safetensors`, `data.json`, `metrics.jsonl`.
//!
//! A stopgap for the calibration experiments until the training branch's trainer lands; it
//! implements no paper objective beyond joint training (survey eq. 6–7 with all weights 1).
//!
//! ```text
//! cargo run --release --example quick_train -- --data /work/shared/data/mnist \
//!     --backbone eenet8 --exits cuts:1,2 --epochs 3 --out runs/eenet8-mnist-joint
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Parser;
use earlyexit::infer::{ExitTable, LabelledData, MultiExitModel, SplitKind};
use earlyexit::interim::RunData;
use earlyexit::model::{ModelDescription, Shape, io};
use rand::SeedableRng;
use rand::seq::SliceRandom;

#[derive(Parser, Debug)]
struct Args {
    /// Folder with the MNIST-format IDX files.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "eenet8")]
    backbone: String,
    #[arg(long)]
    width: Option<usize>,
    #[arg(long, default_value = "cuts:1,2")]
    exits: String,
    #[arg(long, default_value = "pool")]
    head: String,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Validation samples from the end of the training set.
    #[arg(long, default_value_t = 5000)]
    val: usize,
    /// Use only the first N training samples per epoch (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let data = RunData {
        dir: a.data.clone(),
        val: a.val,
    };
    let train = data.train()?;
    let val = data.split(SplitKind::Val)?;
    let [c, h, w] = train.shape;
    let mut desc = ModelDescription::new(&a.backbone, Shape::new(c, h, w), 10, a.exits.parse()?);
    desc.head = a.head.parse()?;
    desc.width = a.width;
    let arch = desc.resolve()?;
    let plain = Device::flex();
    plain.seed(a.seed);
    let device = plain.clone().autodiff();
    let mut net = arch.init(&device);
    let mut optim = AdamConfig::new().init();
    let ce = CrossEntropyLossConfig::new().init(&device);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    std::fs::create_dir_all(&a.out)?;
    data.write(&a.out)?;
    let mut log = std::fs::File::create(a.out.join("metrics.jsonl")).context("metrics.jsonl")?;
    let n = if a.limit > 0 {
        a.limit.min(train.len())
    } else {
        train.len()
    };
    for epoch in 1..=a.epochs {
        let start = Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        order.truncate(n);
        let (mut sum, mut batches) = (0.0f64, 0usize);
        for chunk in order.chunks(a.batch) {
            let (x, y) = train.batch(chunk, &device)?;
            let y = Tensor::<1, Int>::from_data(
                TensorData::new(y.iter().map(|&v| v as i64).collect::<Vec<_>>(), [y.len()]),
                &device,
            );
            let outs = net.forward_all(x);
            let mut loss = ce.forward(outs[0].logits.clone(), y.clone());
            for o in &outs[1..] {
                loss = loss + ce.forward(o.logits.clone(), y.clone());
            }
            sum += loss.clone().into_scalar::<f32>() as f64;
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(a.lr, net, grads);
        }
        let model = MultiExitModel {
            arch: arch.clone(),
            net: net.valid(),
        };
        let table = ExitTable::collect(&model, &val, 500, &plain)?;
        let accs: Vec<f64> = (0..table.exits.len()).map(|k| table.exit_accuracy_all(k)).collect();
        let line = serde_json::json!({
            "epoch": epoch,
            "train_loss": sum / batches.max(1) as f64,
            "val_accuracy_exit": accs,
            "seconds": start.elapsed().as_secs_f64(),
        });
        writeln!(log, "{line}")?;
        log.flush()?;
        eprintln!("{line}");
        io::save_model(&a.out, &desc, &model.net)?;
    }
    Ok(())
}

//! A minimal trainer (Adam) that writes a run folder `calibrate`, `eval`, `report` and
//! `prune-exits` can read: `model.json`, `weights.safetensors`, `data.json`, `metrics.jsonl`.
//!
//! A stopgap for the calibration experiments until the training branch's trainer lands.
//! Objectives (`--objective`):
//! - `joint`: the sum of every exit's cross-entropy (survey eq. 6–7, all weights 1);
//! - `eenet-v2`: EENets eq. 9, `Σ_i CE(y, Ŷ_i) + λ C_i` with the soft outputs `Ŷ_i` (eq. 6) and
//!   soft costs `C_i` (eq. 7), `c_i` = honest relative cost of exit `i`;
//! - `soft-conditional`: differentiable branching, cross-entropy on the outermost soft output
//!   `Ŷ_0` only (plus `λ C_0` when `--lambda` > 0, their eq. 2).
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
use burn::tensor::activation::{sigmoid, softmax};
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
    /// joint, eenet-v2 or soft-conditional.
    #[arg(long, default_value = "joint")]
    objective: String,
    /// Cost weight λ of eenet-v2 / soft-conditional.
    #[arg(long, default_value_t = 0.0)]
    lambda: f64,
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
    let rel = arch.cost.relative(earlyexit::model::MacConvention::All);
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
            let y_host = y.clone();
            let y = Tensor::<1, Int>::from_data(
                TensorData::new(y.iter().map(|&v| v as i64).collect::<Vec<_>>(), [y.len()]),
                &device,
            );
            let outs = net.forward_all(x);
            let loss = match a.objective.as_str() {
                "joint" => {
                    let mut loss = ce.forward(outs[0].logits.clone(), y.clone());
                    for o in &outs[1..] {
                        loss = loss + ce.forward(o.logits.clone(), y.clone());
                    }
                    loss
                }
                "eenet-v2" | "soft-conditional" => {
                    let onehot = one_hot(&y_host, 10, &device);
                    let last = outs.len() - 1;
                    let mut yhat = softmax(outs[last].logits.clone(), 1);
                    let mut cost = Tensor::<2>::ones([y_host.len(), 1], &device).mul_scalar(rel[last]);
                    let nll = |p: &Tensor<2>| {
                        (p.clone() * onehot.clone())
                            .sum_dim(1)
                            .clamp_min(1e-7)
                            .log()
                            .neg()
                            .mean()
                    };
                    let mut loss = nll(&yhat) + cost.clone().mean().mul_scalar(a.lambda);
                    let v2 = a.objective == "eenet-v2";
                    for k in (0..last).rev() {
                        let h = sigmoid(outs[k].confidence.clone().context("eenet-v2 needs confidence heads")?);
                        let keep = h.clone().neg().add_scalar(1.0);
                        yhat = softmax(outs[k].logits.clone(), 1) * h.clone() + yhat * keep.clone();
                        cost = h.mul_scalar(rel[k]) + cost * keep;
                        if v2 || k == 0 {
                            let term = nll(&yhat) + cost.clone().mean().mul_scalar(a.lambda);
                            loss = if v2 { loss + term } else { term };
                        }
                    }
                    loss
                }
                other => anyhow::bail!("--objective `{other}`: expected joint, eenet-v2 or soft-conditional"),
            };
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

fn one_hot(y: &[usize], k: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; y.len() * k];
    for (i, &c) in y.iter().enumerate() {
        v[i * k + c] = 1.0;
    }
    Tensor::<2>::from_data(TensorData::new(v, [y.len(), k]), device)
}

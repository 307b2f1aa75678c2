//! Writes what the serving benchmarks and demos need when no trained run is at hand: a freshly
//! initialised model folder, a `maxprob` policy whose per-exit thresholds make given shares of
//! the images leave at each early exit, and the images as PNG files.
//!
//! `cargo run --release --example serve_fixture -- OUT [--model eenet8] [--input 1x28x28]
//!  [--exits cuts:1,2] [--shares 0.4,0.3] [--images 64] [--seed 0]`
//!
//! Writes `OUT/model/` (model.json, weights.safetensors), `OUT/policy.txt`, `OUT/rates.txt`
//! (share of the images leaving at each exit, final last, as the served model decides) and
//! `OUT/images/NNNN.png`.
//!
//! With `--from-run runs/NAME` it writes instead the first `--images` images of the run's test
//! split (raw pixels, as a client would send them) to `OUT/images/` and their labels to
//! `OUT/labels.txt`; the run itself is served as it is.
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use clap::Parser;
use earlyexit::bench::forced_thresholds;
use earlyexit::model::{ModelDescription, Placement, Shape, io};
use earlyexit::serve::server::load_for_serving;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    out: PathBuf,
    #[arg(long, default_value = "eenet8")]
    model: String,
    #[arg(long, default_value = "1x28x28")]
    input: Shape,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    #[arg(long, default_value = "cuts:1,2")]
    exits: Placement,
    #[arg(long, value_delimiter = ',', default_value = "0.4,0.3")]
    shares: Vec<f64>,
    #[arg(long, default_value_t = 64)]
    images: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Export test images of this training run instead of making a model.
    #[arg(long)]
    from_run: Option<PathBuf>,
}

fn export_run_images(a: &Args, run_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let run = earlyexit::run::Run::open(run_dir)?;
    let data = run.data()?;
    let img_dir = a.out.join("images");
    std::fs::create_dir_all(&img_dir)?;
    let [c, h, w] = data.test_set.shape();
    let mut labels = Vec::new();
    for (k, &i) in data.splits.test.iter().take(a.images).enumerate() {
        let px = data.test_set.image(i);
        // CHW bytes → HWC for the PNG encoder.
        let hwc: Vec<u8> = (0..h * w)
            .flat_map(|p| (0..c).map(move |ch| ch * h * w + p))
            .map(|j| px[j])
            .collect();
        let path = img_dir.join(format!("{k:04}.png"));
        match c {
            1 => image::GrayImage::from_raw(w as u32, h as u32, hwc)
                .expect("size")
                .save(&path)?,
            3 => image::RgbImage::from_raw(w as u32, h as u32, hwc)
                .expect("size")
                .save(&path)?,
            _ => return Err("only 1 or 3 channels can be written as PNG".into()),
        }
        labels.push(data.test_set.label(i).to_string());
    }
    std::fs::write(a.out.join("labels.txt"), labels.join("\n") + "\n")?;
    println!(
        "{} test images of {} in {}",
        labels.len(),
        run_dir.display(),
        img_dir.display()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    if let Some(run) = &a.from_run {
        return export_run_images(&a, run);
    }
    let device = Device::flex();
    device.seed(a.seed);
    let desc = ModelDescription::new(&a.model, a.input, a.classes, a.exits.clone());
    let arch = desc.resolve()?;
    let net = arch.init_seeded(&device, a.seed);
    let model_dir = a.out.join("model");
    io::save_model(&model_dir, &arch.description, &net)?;
    let (served, _) = load_for_serving(&model_dir, &device)?;

    let (c, h, w) = (a.input.c, a.input.h, a.input.w);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let img_dir = a.out.join("images");
    std::fs::create_dir_all(&img_dir)?;
    let mut values = Vec::with_capacity(a.images * c * h * w);
    for i in 0..a.images {
        let px: Vec<u8> = (0..c * h * w).map(|_| rng.random::<u8>()).collect();
        let path = img_dir.join(format!("{i:04}.png"));
        match c {
            1 => image::GrayImage::from_raw(w as u32, h as u32, px.clone())
                .expect("size")
                .save(&path)?,
            3 => image::RgbImage::from_raw(w as u32, h as u32, px.clone())
                .expect("size")
                .save(&path)?,
            _ => return Err("only 1 or 3 channels can be written as PNG".into()),
        }
        // HWC bytes → CHW values in [0, 1], as the server decodes them.
        for ch in 0..c {
            for p in 0..h * w {
                values.push(px[p * c + ch] as f32 / 255.0);
            }
        }
    }
    let x = Tensor::<4>::from_data(TensorData::new(values, [a.images, c, h, w]), &device);
    let policy = forced_thresholds(&served, x.clone(), &a.shares)?;
    let answers = served.infer(x, &policy)?;
    let mut counts = vec![0usize; served.net.num_stages()];
    for &e in &answers.exit {
        counts[e] += 1;
    }
    let rates: Vec<String> = counts
        .iter()
        .map(|&n| format!("{}", n as f64 / a.images as f64))
        .collect();
    std::fs::write(a.out.join("policy.txt"), policy.to_string())?;
    std::fs::write(a.out.join("rates.txt"), rates.join(","))?;
    println!(
        "model {} ({} stages), policy {policy}, exit rates {}",
        model_dir.display(),
        served.net.num_stages(),
        rates.join(",")
    );
    Ok(())
}

//! Loading and augmentation throughput on CIFAR-shaped data, against the ResNet-20 training step.
//!
//! `cargo run --release -p earlyexit-data --example loader_bench -- [--workers 2] [--step-ms 1400] [--steps 8]`
//!
//! 1. Writes a synthetic CIFAR-10 set in the official binary layout (5 x 10,000 train records) to a
//!    temporary folder and times `load` on it (the real reader).
//! 2. Times an epoch of batches of 128 with random crop (pad 4) + flip + normalisation: with the
//!    consumer doing nothing (pure loader throughput) for 0 workers (inline: the CPU cost of a batch)
//!    and for the configured workers.
//! 3. Simulates training: a consumer that computes for `--step-ms` per batch (ResNet-20 in Burn on
//!    this 2-core machine: about 1.4 s per batch of 128), and reports the time it waited for data
//!    as a share of the step time (the target is under 10 %).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use earlyexit_data::*;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn busy(d: Duration) {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < d {
        for i in 0..1000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
}

fn main() -> Result<()> {
    let workers = arg("--workers", 2) as usize;
    let step_ms = arg("--step-ms", 1400);
    let steps = arg("--steps", 8) as usize;
    let batch = 128;
    println!(
        "loader_bench: CIFAR-shaped 3x32x32, batch {batch}, crop(pad 4) + flip + normalise, {} CPU(s)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // 1. Load through the real CIFAR-10 binary reader.
    let dir = std::env::temp_dir().join(format!("earlyexit-loader-bench-{}", std::process::id()));
    let bin = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin).map_err(|e| Error::Config(e.to_string()))?;
    let mut state = 0x9e3779b97f4a7c15u64;
    for b in 1..=5 {
        let mut f = Vec::with_capacity(10_000 * 3073);
        for i in 0..10_000 {
            f.push(((b * 10_000 + i) % 10) as u8);
            for _ in 0..3072 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                f.push((state >> 56) as u8);
            }
        }
        std::fs::File::create(bin.join(format!("data_batch_{b}.bin")))
            .and_then(|mut h| h.write_all(&f))
            .map_err(|e| Error::Config(e.to_string()))?;
    }
    let t0 = Instant::now();
    let train = Arc::new(load(DatasetKind::Cifar10, &dir, Split::Train)?);
    let load_s = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "load: {} images from 5 binary batches (153.6 MB) in {:.3} s = {:.0} images/s",
        train.len(),
        load_s,
        train.len() as f64 / load_s
    );

    let splits = Splits::paper(DatasetKind::Cifar10, train.len(), 0, 0)?;
    let norm = Normalize::for_kind(DatasetKind::Cifar10).unwrap_or_else(|| Normalize::identity(3));
    let make = |w: usize| {
        let cfg = LoaderConfig {
            workers: w,
            prefetch: 2 * w.max(1),
            ..LoaderConfig::train(batch, norm.clone(), Augment::cifar(), 1)
        };
        Loader::new(train.clone(), splits.train.clone(), cfg)
    };

    // 2. Pure loader throughput.
    let mut inline_ms = 0.0;
    for w in [0, workers] {
        let loader = make(w)?;
        let t = Instant::now();
        let mut n = 0;
        for b in loader.epoch(0) {
            n += b.n;
            std::hint::black_box(&b.images);
        }
        let s = t.elapsed().as_secs_f64();
        let per_batch = s * 1000.0 / loader.batches_per_epoch() as f64;
        if w == 0 {
            inline_ms = per_batch;
        }
        println!(
            "augment+normalise, {w} worker(s): {n} images in {s:.2} s = {:.0} images/s, {per_batch:.2} ms per batch of {batch}",
            n as f64 / s
        );
    }
    let step = step_ms as f64;
    println!(
        "CPU cost of one batch (inline) {inline_ms:.2} ms = {:.2} % of a {step_ms} ms ResNet-20 step (target < 10 %, i.e. < {:.0} ms)",
        100.0 * inline_ms / step,
        step / 10.0
    );

    // 3. Simulated training: the consumer computes for step_ms per batch on one core.
    let loader = make(workers)?;
    let mut epoch = loader.epoch(1);
    let t = Instant::now();
    let mut done = 0;
    for b in epoch.by_ref().take(steps) {
        std::hint::black_box(&b.images);
        busy(Duration::from_millis(step_ms));
        done += 1;
    }
    let total = t.elapsed().as_secs_f64() * 1000.0;
    let wait = epoch.wait_time().as_secs_f64() * 1000.0;
    println!(
        "simulated training, {workers} worker(s), {done} steps of {step_ms} ms: data wait {wait:.1} ms in total \
         ({:.2} ms per step, first batch included) = {:.3} % of step time",
        wait / done.max(1) as f64,
        100.0 * wait / (total - wait).max(1.0)
    );
    Ok(())
}

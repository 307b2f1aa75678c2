//! `earlyexit bench`: the engine's measured speed-up next to the MAC model's prediction.

use anyhow::Context;
use earlyexit::bench::{EngineBench, RebatchBench, run_engine_bench, run_rebatch_bench, time_forward, time_train_step};
use earlyexit::infer::{Executor, MultiExitModel};
use earlyexit::model::{HeadKind, ModelDescription, Placement, Shape};

use super::common::{DeviceArg, PathArg};

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backbone name.
    #[arg(long, default_value = "resnet56")]
    model: String,
    /// Width of the backbone where it has one (EENet-8's base channels, MobileNetV2's multiplier
    /// in %)
    #[arg(long)]
    width: Option<usize>,
    /// Input shape CxHxW.
    #[arg(long, default_value = "3x32x32")]
    input: Shape,
    /// Number of classes.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Exit placement.
    #[arg(long, default_value = "pareto:4")]
    exits: Placement,
    /// Exit head kind.
    #[arg(long, default_value = "pool")]
    head: HeadKind,
    /// Share of samples forced to leave at each early exit, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.2,0.15,0.1")]
    shares: Vec<f64>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,256")]
    batch: Vec<usize>,
    /// Samples in the input pool.
    #[arg(long, default_value_t = 256)]
    pool: usize,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Compare the engine with shrinking batches against per-stage re-batching of the
    /// survivors of several batches (a queue per stage), on a stream of --stream batches.
    #[arg(long, conflicts_with_all = ["forward", "train_step"])]
    rebatch: bool,
    /// Batches in the --rebatch stream, per batch size.
    #[arg(long, default_value_t = 8)]
    stream: usize,
    /// Time only the plain backbone's forward pass at each --batch.
    #[arg(long, conflicts_with = "train_step")]
    forward: bool,
    /// Time a training step (forward through every exit, backward, SGD) at each --batch.
    #[arg(long)]
    train_step: bool,
    /// Untimed passes (steps) before --forward / --train-step timing.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    path: PathArg,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut desc = ModelDescription::new(&a.model, a.input, a.classes, a.exits.clone());
    desc.width = a.width;
    desc.head = a.head;
    let arch = desc.resolve().context("cannot build this model")?;
    let device = a.device.device()?;
    device.seed(a.seed);
    if a.train_step {
        let mut rows = Vec::new();
        for &b in &a.batch {
            rows.push(time_train_step(&arch, b, a.warmup, a.reps.max(1), &device)?);
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!("{} {} training step on {}", a.model, a.input, a.device.device);
            for r in &rows {
                println!(
                    "train-step batch {:>5}: {:>9.4} s/step {:>10.0} img/s ({} steps)",
                    r.batch, r.seconds_per_step, r.images_per_second, r.steps
                );
            }
        }
        return Ok(());
    }
    let model = MultiExitModel::new(arch, &device);
    let exec = Executor::new(model, &device, a.path.path)?;
    eprintln!("timing on: {}", exec.describe());
    if a.rebatch {
        return rebatch(&a, &exec);
    }
    if a.forward {
        let rows = time_forward(&exec, &a.batch, a.warmup, a.reps)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!("{} {} plain forward on {}", a.model, a.input, a.device.device);
            for r in &rows {
                println!(
                    "forward batch {:>5}: {:>10.3} ms/batch {:>10.0} img/s",
                    r.batch, r.ms_per_batch, r.images_per_second
                );
            }
        }
        return Ok(());
    }
    let cfg = EngineBench {
        shares: a.shares.clone(),
        batches: a.batch.clone(),
        pool: a.pool,
        reps: a.reps,
        seed: a.seed,
    };
    let rows = run_engine_bench(&exec, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} {} with {} {} exits at cuts {:?}; forced shares {:?}",
        a.model,
        a.input,
        exec.model().net.num_exits(),
        a.head,
        exec.model().net.cuts(),
        cfg.shares
    );
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>9}  exit shares",
        "batch", "plain ms/s", "engine ms/s", "never ms/s", "MAC pred", "time pred", "measured", "meas/MAC", "never/pl"
    );
    for r in &rows {
        let shares: Vec<String> = r.exit_shares.iter().map(|s| format!("{s:.2}")).collect();
        println!(
            "{:>6} {:>12.3} {:>12.3} {:>12.3} {:>9.2}x {:>9.2}x {:>9.2}x {:>10.2} {:>9.3}  {}",
            r.batch,
            r.plain_ms_per_sample,
            r.engine_ms_per_sample,
            r.never_ms_per_sample,
            r.predicted_speedup,
            r.time_model_speedup,
            r.measured_speedup,
            r.efficiency,
            r.never_overhead,
            shares.join(" ")
        );
    }
    for r in &rows {
        let f = |v: &[f64]| v.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(" ");
        println!(
            "batch {}: stage shares of MACs [{}] vs of wall-clock time [{}]",
            r.batch,
            f(&r.stage_mac_shares),
            f(&r.stage_time_shares)
        );
    }
    Ok(())
}

fn rebatch(a: &Args, exec: &Executor) -> anyhow::Result<()> {
    let cfg = RebatchBench {
        shares: a.shares.clone(),
        batches: a.batch.clone(),
        stream: a.stream,
        fit: a.pool,
        reps: a.reps,
        seed: a.seed,
    };
    let rows = run_rebatch_bench(exec, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} {} on {}: {} batches per stream; forced shares {:?}",
        a.model, a.input, a.device.device, a.stream, cfg.shares
    );
    println!(
        "{:>6} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9} {:>6}",
        "batch", "plain ms/s", "shrink ms/s", "rebatch ms/s", "MAC pred", "shrink", "rebatch", "same"
    );
    for r in &rows {
        println!(
            "{:>6} {:>12.3} {:>12.3} {:>12.3} {:>8.2}x {:>8.2}x {:>8.2}x {:>6}",
            r.batch,
            r.plain_ms_per_sample,
            r.shrink_ms_per_sample,
            r.rebatch_ms_per_sample,
            r.predicted_speedup,
            r.shrink_speedup,
            r.rebatch_speedup,
            r.same_answers
        );
    }
    let f = |v: &[f64]| v.iter().map(|s| format!("{s:.0}")).collect::<Vec<_>>().join(" ");
    for r in &rows {
        println!(
            "batch {}: mean batch per stage, shrinking [{}], re-batched [{}]; exit shares [{}]",
            r.batch,
            f(&r.shrink_stage_batch),
            f(&r.rebatch_stage_batch),
            r.exit_shares
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

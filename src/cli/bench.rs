//! `earlyexit bench`: the engine's measured speed-up next to the MAC model's prediction.

use anyhow::Context;
use burn::tensor::Device;
use earlyexit::bench::{EngineBench, run_engine_bench};
use earlyexit::infer::MultiExitModel;
use earlyexit::model::{HeadKind, ModelDescription, Placement, Shape};

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backbone name.
    #[arg(long, default_value = "resnet56")]
    model: String,
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
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut desc = ModelDescription::new(&a.model, a.input, a.classes, a.exits);
    desc.head = a.head;
    let arch = desc.resolve().context("cannot build this model")?;
    let device = Device::flex();
    device.seed(a.seed);
    let model = MultiExitModel::new(arch, &device);
    let cfg = EngineBench {
        shares: a.shares,
        batches: a.batch,
        pool: a.pool,
        reps: a.reps,
        seed: a.seed,
    };
    let rows = run_engine_bench(&model, &cfg, &device)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} {} with {} {} exits at cuts {:?}; forced shares {:?}",
        a.model,
        a.input,
        model.net.num_exits(),
        a.head,
        model.net.cuts(),
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

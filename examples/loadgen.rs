//! A bounded load generator for `earlyexit serve` / `earlyexit tier`: sends PNG images from a
//! folder, at most `--requests` requests and at most `--max-time-s` seconds, and prints
//! requests per second, latency percentiles, exits, tiers, degraded answers and errors.
//!
//! `cargo run --release --example loadgen -- --server 127.0.0.1:7070 --images DIR
//!  [--requests 2000] [--concurrency 16] [--per-request 1] [--max-time-s 20] [--json]
//!  [--rate R] [--abandon-after-ms MS]`
//!
//! `--rate R` sends open loop, R requests per second whatever the answers (overload and
//! sustained-rate runs); `--abandon-after-ms` drops each call after that long (a client that
//! disconnects mid-request).
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use earlyexit::serve::client::{ConnectOptions, LoadConfig, TierClient, image_file, run_load};
use earlyexit::serve::metrics::scrape;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7070")]
    server: String,
    #[arg(long)]
    images: PathBuf,
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 1)]
    per_request: usize,
    #[arg(long, default_value_t = 20.0)]
    max_time_s: f64,
    #[arg(long, default_value_t = 10_000)]
    deadline_ms: u64,
    /// Requests sent (and not counted) before measuring.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    #[arg(long, env = "EARLYEXIT_TOKEN")]
    token: Option<String>,
    #[arg(long)]
    json: bool,
    /// Open loop: this many requests per second (else closed loop at --concurrency).
    #[arg(long)]
    rate: Option<f64>,
    /// Abandon each call after this many milliseconds (counted as `Abandoned`).
    #[arg(long)]
    abandon_after_ms: Option<u64>,
    /// Print one table row: concurrency, req/s, images/s, p50, p90, p99 ms, errors, degraded,
    /// mean batch (from the server's metrics).
    #[arg(long)]
    row: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.images)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg" || e == "jpeg"));
    files.sort();
    let inputs = files.iter().map(|p| image_file(p)).collect::<Result<Vec<_>, _>>()?;
    let client = TierClient::connect(
        &a.server,
        &ConnectOptions {
            token: a.token.clone(),
            ..Default::default()
        },
    )?;
    client.wait_ready(Duration::from_secs(30)).await?;
    let mut cfg = LoadConfig {
        requests: a.warmup,
        concurrency: a.concurrency.min(a.warmup.max(1)),
        images_per_request: a.per_request,
        max_time: Duration::from_secs(10),
        deadline: Duration::from_millis(a.deadline_ms),
        ..Default::default()
    };
    if a.warmup > 0 {
        run_load(&client, &inputs, &cfg).await;
    }
    cfg.requests = a.requests;
    cfg.concurrency = a.concurrency;
    cfg.max_time = Duration::from_secs_f64(a.max_time_s);
    cfg.rate = a.rate;
    cfg.abandon_after = a.abandon_after_ms.map(Duration::from_millis);
    let before = client.metrics().await.unwrap_or_default();
    let r = run_load(&client, &inputs, &cfg).await;
    let after = client.metrics().await.unwrap_or_default();
    let d = |name: &str| scrape(&after, name, &[]) - scrape(&before, name, &[]);
    let mean_batch = d("earlyexit_batch_samples_sum") / d("earlyexit_batch_samples_count").max(1.0);
    let errors: usize = r.errors.values().sum();
    if a.row {
        println!(
            "{:>11} {:>9.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>8} {:>10.2}",
            a.concurrency,
            r.requests_per_s,
            r.samples_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            errors,
            r.degraded,
            mean_batch
        );
    } else if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} requests ({} ok) in {:.2} s: {:.1} req/s, {:.1} images/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; degraded {}; errors {:?}; exits {:?}; tiers {:?}",
            r.requests,
            r.ok,
            r.seconds,
            r.requests_per_s,
            r.samples_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.degraded,
            r.errors,
            r.exits,
            r.tiers
        );
    }
    Ok(())
}

//! Subcommands. Each file holds one command's `clap` arguments and its `run`, which calls the
//! library; nothing here computes anything the library cannot.

use clap::{Parser, Subcommand};

mod bench;
mod calibrate;
mod class_exit;
#[cfg(feature = "serve")]
mod classify;
mod common;
mod data;
mod eval;
mod export;
mod import;
mod inspect;
mod perf;
#[cfg(feature = "serve")]
mod plan_tiers;
mod progress;
mod prune_exits;
mod quickstart;
mod report;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "serve")]
mod serving;
mod sweep;
#[cfg(feature = "serve")]
mod tier;
mod train;

/// Early-exit neural networks: build, train, calibrate, measure, serve.
#[derive(Parser, Debug)]
#[command(name = "earlyexit", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a model's blocks, exits and honest MAC costs.
    Inspect(inspect::Args),
    /// Import a trained PyTorch network (torchvision, CIFAR zoos) into a model folder, with fresh exits.
    Import(import::Args),
    /// Export a model with its exits: ONNX graphs per stage and per exit, and a manifest.
    Export(export::Args),
    /// Time the early-exit engine against the plain backbone, next to the MAC model's prediction.
    Bench(bench::Args),
    /// Time one standard figure (matched by scripts/torch_perf.py; see scripts/bench-vs-torch).
    Perf(perf::Args),
    /// Serve the whole model over gRPC with dynamic batching and per-sample exits.
    #[cfg(feature = "serve")]
    Serve(serve::Args),
    /// Serve a slice of stages as one tier; forward the samples that do not exit to the next tier.
    #[cfg(feature = "serve")]
    Tier(tier::Args),
    /// Classify image files with a server: one line per file (file, class, exit, tier, confidence).
    #[cfg(feature = "serve")]
    Classify(classify::Args),
    /// Choose tier split points that minimise expected latency (or bytes) per sample.
    #[cfg(feature = "serve")]
    PlanTiers(plan_tiers::Args),
    /// Check datasets in a folder, or fetch one.
    Data(data::Args),
    /// Train a network from a TOML configuration into a run folder.
    Train(train::Args),
    /// Train a small early-exit CNN on the bundled MNIST and measure what the exits buy.
    Quickstart(quickstart::Args),
    /// Accuracy, per-exit coverage, honest cost, ECE, over-thinking and measured speed-up on a split.
    Eval(eval::Args),
    /// Choose exit thresholds on the validation split for an accuracy or cost goal.
    Calibrate(calibrate::Args),
    /// Accuracy against relative cost over a grid of shared thresholds.
    Sweep(sweep::Args),
    /// Write report.md with PNG and SVG plots for a run.
    Report(report::Args),
    /// Check which exits pay for themselves (survey eq. 4, eq. 5) and optionally drop the others.
    PruneExits(prune_exits::Args),
    /// Class-specific early exits on a frozen baseline: where an exit for class k saves most time
    /// while B keeps its accuracy for every class.
    ClassExit(class_exit::Args),
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Without RUST_LOG: warnings, and what a serving process says about its tiers (what answers,
    // a next tier that does not fit, the circuit breaker opening and closing).
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => tracing_subscriber::EnvFilter::from_default_env(),
        _ => tracing_subscriber::EnvFilter::new("warn,earlyexit::serve=info"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal, not in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Import(a) => import::run(a),
        Command::Export(a) => export::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Perf(a) => perf::run(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => serve::run(a),
        #[cfg(feature = "serve")]
        Command::Tier(a) => tier::run(a),
        #[cfg(feature = "serve")]
        Command::Classify(a) => classify::run(a),
        #[cfg(feature = "serve")]
        Command::PlanTiers(a) => plan_tiers::run(a),
        Command::Data(a) => data::run(a),
        Command::Train(a) => train::run(a),
        Command::Quickstart(a) => quickstart::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Report(a) => report::run(a),
        Command::PruneExits(a) => prune_exits::run(a),
        Command::ClassExit(a) => class_exit::run(a),
    }
}

//! Subcommands. Each file holds one command's `clap` arguments and its `run`, which calls the
//! library; nothing here computes anything the library cannot.

use clap::{Parser, Subcommand};

mod bench;
#[cfg(feature = "serve")]
mod classify;
#[cfg(feature = "serve")]
mod serving;
mod inspect;
#[cfg(feature = "serve")]
mod plan_tiers;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "serve")]
mod tier;

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
    /// Time the early-exit engine against the plain backbone, next to the MAC model's prediction.
    Bench(bench::Args),
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
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => serve::run(a),
        #[cfg(feature = "serve")]
        Command::Tier(a) => tier::run(a),
        #[cfg(feature = "serve")]
        Command::Classify(a) => classify::run(a),
        #[cfg(feature = "serve")]
        Command::PlanTiers(a) => plan_tiers::run(a),
    }
}

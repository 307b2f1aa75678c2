//! Subcommands. Each file holds one command's `clap` arguments and its `run`, which calls the
//! library; nothing here computes anything the library cannot.

use clap::{Parser, Subcommand};

mod bench;
mod data;
mod inspect;
mod quickstart;
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
    /// Time the early-exit engine against the plain backbone, next to the MAC model's prediction.
    Bench(bench::Args),
    /// Check datasets in a folder, or fetch one.
    Data(data::Args),
    /// Train a network from a TOML configuration into a run folder.
    Train(train::Args),
    /// Train a small early-exit CNN on the bundled MNIST and measure what the exits buy.
    Quickstart(quickstart::Args),
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Data(a) => data::run(a),
        Command::Train(a) => train::run(a),
        Command::Quickstart(a) => quickstart::run(a),
    }
}

//! Subcommands. Each file holds one command's `clap` arguments and its `run`, which calls the
//! library; nothing here computes anything the library cannot.

use clap::{Parser, Subcommand};

mod bench;
mod inspect;

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
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

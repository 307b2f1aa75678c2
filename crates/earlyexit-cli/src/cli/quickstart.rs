//! `earlyexit quickstart`: train a small early-exit ResNet on the bundled MNIST and show what the
//! exits buy: accuracy, exit distribution, relative MAC cost and the measured speed-up.

use std::path::PathBuf;

use earlyexit::quickstart::{QuickstartOptions, quickstart};

use super::common::{DeviceArg, PathArg};
use super::progress::training_observer;

/// Arguments of `quickstart`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder holding MNIST (default: ./data, then the repository's data/).
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Run folder (replaced if it exists).
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    /// Epochs (default: the configuration's, 2).
    #[arg(long)]
    epochs: Option<usize>,
    /// No progress bar or epoch lines.
    #[arg(long, short)]
    quiet: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    path: PathArg,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    eprintln!(
        "quickstart: ResNet-14 with 3 early exits on MNIST (configs/quickstart.toml) into {}",
        a.out.display()
    );
    let report = quickstart(&QuickstartOptions {
        data_dir: a.data,
        out: a.out,
        epochs: a.epochs,
        observer: training_observer(a.quiet),
        device: a.device.device()?,
        path: a.path.path,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

//! `earlyexit data`: check the datasets in a folder, or fetch one where a network exists.

use std::path::PathBuf;

use anyhow::bail;
use earlyexit::data::{DatasetKind, FetchOptions};

/// Arguments of `data`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Recognise the datasets in a folder (or its subfolders) and check counts and checksums.
    Verify {
        /// The folder to check.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Download a dataset's official archives and check their checksums (needs a network).
    Fetch {
        /// Dataset: mnist, fashion-mnist, cifar10, cifar100, svhn, tiny-imagenet, …
        name: DatasetKind,
        /// Where to put it (a subfolder per dataset).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.action {
        Action::Verify { data_dir } => {
            let report = earlyexit::data::verify(&data_dir)?;
            print!("{report}");
            if !report.ok() {
                bail!("some checks failed in {}", data_dir.display());
            }
            if report.datasets.is_empty() {
                bail!("no dataset recognised in {}", data_dir.display());
            }
            Ok(())
        }
        Action::Fetch { name, data_dir } => {
            let path = earlyexit::data::fetch(name, &data_dir, &FetchOptions::default())?;
            println!("{}", path.display());
            Ok(())
        }
    }
}

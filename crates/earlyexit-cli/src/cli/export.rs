//! `earlyexit export`: a trained model out with its exits: ONNX graphs per stage and per exit,
//! and the manifest that says how to run them.

use std::path::PathBuf;

use anyhow::bail;
use burn::tensor::Device;
use earlyexit::infer::Policy;
use earlyexit::interop::{TORCH_MODULE_FILE, export_onnx, export_torch};
use earlyexit::run::{Deployable, open_deployable};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// One ONNX graph per stage slice and per exit head, and `manifest.json`.
    Onnx,
    /// PyTorch-named safetensors, `architecture.json` and `earlyexit_model.py`, a self-contained
    /// PyTorch module that rebuilds the network with its exits and policy.
    Torch,
}

/// Arguments of `export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder: its best model, its calibrated policy (else its eval policy) and its input normalisation.
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    run: Option<PathBuf>,
    /// A bare model folder (`model.json` + `weights.safetensors`, e.g. from `import`); give --policy unless it has a policy.json.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Exit policy to write into the manifest; default: the run's.
    #[arg(long)]
    policy: Option<Policy>,
    /// Output format.
    #[arg(long, value_enum, default_value = "onnx")]
    format: Format,
    /// The folder to create (must not exist yet).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = match (&a.run, &a.model) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => bail!("give --run runs/NAME or --model DIR"),
    };
    let Deployable {
        model,
        policy,
        normalize,
        ..
    } = open_deployable(dir, a.run.is_some(), a.policy.as_ref(), &Device::flex())?;
    match a.format {
        Format::Onnx => {
            let m = export_onnx(&model, &policy, normalize.as_ref(), &a.out)?;
            println!(
                "wrote {} stage graphs, {} exit graphs and the classifier, with {} (policy {}), to {}",
                m.stages.len(),
                m.exits.len() - 1,
                earlyexit::interop::MANIFEST_FILE,
                m.policy,
                a.out.display()
            );
        }
        Format::Torch => {
            export_torch(&model, &policy, normalize.as_ref(), &a.out)?;
            println!(
                "wrote the network with {} exits (policy {policy}) for PyTorch to {}: `import earlyexit_model; \
                 net = earlyexit_model.load(\"{}\")` ({TORCH_MODULE_FILE} needs torch and safetensors)",
                model.arch.num_exits(),
                a.out.display(),
                a.out.display()
            );
        }
    }
    Ok(())
}

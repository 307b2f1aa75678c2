//! `earlyexit import`: a trained PyTorch network into a model folder, with fresh exits.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::Device;
use earlyexit::interop::{ImportSpec, import_torch};
use earlyexit::model::Shape;

use super::common::ExitArgs;

/// Arguments of `import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The checkpoint: a state dict in `.pt`/`.pth` (also nested under `state_dict`) or `.safetensors`.
    #[arg(long)]
    weights: PathBuf,
    /// The network: torchvision:resnet18 … resnet152, torchvision:vgg11/13/16[_bn],
    /// torchvision:mobilenet_v2, torchvision:densenet121, torchvision:inception_v3,
    /// cifar:resnet20/32/44/56/110 (option A or B read off the file), or a zoo name.
    #[arg(long)]
    arch: String,
    /// Input shape CxHxW the network will see.
    #[arg(long)]
    input: Shape,
    /// Classes of the checkpoint's classifier.
    #[arg(long)]
    classes: usize,
    /// Width option (mobilenet_v2: width multiplier in percent, e.g. 25).
    #[arg(long)]
    width: Option<usize>,
    #[command(flatten)]
    exits: ExitArgs,
    /// Seed of the fresh heads' weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The dataset the network was trained for (mnist, fashion-mnist, cifar10, …): the folder
    /// becomes a run folder that calibrate, eval, serve --run and class-exit open.
    #[arg(long, requires = "data_dir")]
    data: Option<String>,
    /// Folder holding the dataset's files (with --data).
    #[arg(long, requires = "data")]
    data_dir: Option<PathBuf>,
    /// The model folder to create (must not exist yet).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut spec = ImportSpec::new(&a.arch, a.input, a.classes);
    spec.width = a.width;
    spec.exits = a.exits.exits;
    spec.head = a.exits.head;
    spec.confidence = !a.exits.no_confidence;
    spec.seed = a.seed;
    let imported = import_torch(&a.weights, &spec, &Device::flex())?;
    match (&a.data, &a.data_dir) {
        (Some(data), Some(dir)) => imported.save_run(&a.out, data, dir),
        _ => imported.save(&a.out),
    }
    .with_context(|| format!("cannot write the folder {}", a.out.display()))?;
    let arch = &imported.model.arch;
    println!(
        "imported {} as `{}` ({} tensors, {} params{}) with {} fresh exits at cuts {:?} into {}",
        a.weights.display(),
        imported.description.backbone,
        imported.applied,
        arch.backbone.total_cost().params,
        if imported.ignored.is_empty() {
            String::new()
        } else {
            format!("; left out {} unused at inference", imported.ignored.len())
        },
        arch.num_exits(),
        arch.cuts,
        a.out.display()
    );
    println!(
        "next: train the exits with `objective.kind = \"heads-only\"` and `init = \"{}\"` in a training configuration",
        a.out.display()
    );
    Ok(())
}

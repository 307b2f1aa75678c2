//! `earlyexit inspect`: the per-block table and the exits with cumulative MACs and relative cost.

use anyhow::Context;
use earlyexit::model::{MacConvention, ModelDescription, Shape, io};

use super::common::ExitArgs;

/// Arguments of `inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backbone name (resnet20, resnet56_a, resnet18, resnet50_imagenet, vgg16_bn_imagenet, mobilenet_v2, densenet121, inception_v3, eenet8, lenet5, …).
    #[arg(long, required_unless_present = "description")]
    model: Option<String>,
    /// Input shape CxHxW.
    #[arg(long, default_value = "3x32x32")]
    input: Shape,
    /// Number of classes.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    #[command(flatten)]
    exits: ExitArgs,
    /// Starting width for backbones that have one (eenet8, mlp; mobilenet_v2: width multiplier in percent).
    #[arg(long)]
    width: Option<usize>,
    /// MAC convention: all (ptflops, as the EENets tables) or conv-linear.
    #[arg(long, default_value = "all")]
    macs: MacConvention,
    /// Read the model description from a JSON or TOML file (or a run/model folder) instead.
    #[arg(long, conflicts_with = "model")]
    description: Option<std::path::PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let desc = match &a.description {
        Some(p) => {
            let file = if p.is_dir() {
                p.join(io::DESCRIPTION_FILE)
            } else {
                p.clone()
            };
            io::read_description(&file)?
        }
        None => {
            let mut d = ModelDescription::new(
                a.model.as_deref().unwrap_or_default(),
                a.input,
                a.classes,
                a.exits.exits,
            );
            d.head = a.exits.head;
            d.confidence = !a.exits.no_confidence;
            d.width = a.width;
            d.placement_macs = a.macs;
            d
        }
    };
    let arch = desc.resolve().context("cannot build this model")?;
    let summary = arch.summary(a.macs);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{summary}");
    }
    Ok(())
}

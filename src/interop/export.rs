//! A trained model out, with its exits: `earlyexit export`.
//!
//! `--format onnx` writes the cascade as ONNX graphs ([`super::onnx`]) and `manifest.json`, the
//! description with which any runtime runs it: the stage order, the cut points, every exit's
//! head and honest cost, the policy with its thresholds, and the input normalisation.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::onnx::{OPSET, onnx_graphs};
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::infer::MultiExitModel;
use crate::model::io::write_atomic;
use crate::model::{HeadKind, MacConvention, Shape};
use crate::policy::Policy;

/// The manifest's format name and version.
pub const MANIFEST_FORMAT: &str = "earlyexit-cascade/1";
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One stage slice of the backbone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageEntry {
    /// The graph (`stage_K.onnx`): input `x`, output `features`.
    pub file: String,
    /// The backbone blocks it runs, `[start, end)`.
    pub blocks: [usize; 2],
    /// Per-sample input shape.
    pub input: Shape,
    /// Per-sample output shape.
    pub output: Shape,
}

/// One exit (or the final classifier).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitEntry {
    /// The graph: input `features` (the output of stage `after_stage`), outputs `logits` and,
    /// with a confidence branch, `confidence` (a logit: the gate is its sigmoid).
    pub file: String,
    /// The stage whose features it reads.
    pub after_stage: usize,
    /// The block it sits after; `None` for the final classifier.
    pub cut: Option<usize>,
    /// Head kind (`None` for the final classifier).
    pub head: Option<HeadKind>,
    /// Whether it has a `confidence` output.
    pub confidence: bool,
    /// MACs of a sample that leaves here, every earlier head included (ptflops convention).
    pub macs: u64,
    /// `macs` over the plain backbone's.
    pub relative_cost: f64,
}

/// Input normalisation: pixels scaled to `[0, 1]`, then `(v − mean) / std` per channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalizeEntry {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

/// Everything a runtime needs to run the exported cascade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// ONNX opset of every graph.
    pub opset: i64,
    /// The zoo backbone.
    pub backbone: String,
    /// Per-sample input shape `CxHxW` (the batch axis is dynamic).
    pub input: Shape,
    /// Classes.
    pub classes: usize,
    /// Input normalisation, when the model was trained with one.
    pub normalize: Option<NormalizeEntry>,
    /// Stages in running order.
    pub stages: Vec<StageEntry>,
    /// Exits in order; the last is the final classifier.
    pub exits: Vec<ExitEntry>,
    /// The exit policy (`maxprob:0.9,0.8`, `confidence:0.5`, …).
    pub policy: Policy,
    /// How to apply it, in words.
    pub rule: String,
}

/// How `policy` decides, for the manifest's reader.
fn rule_of(policy: &Policy) -> String {
    let how = match policy {
        Policy::MaxProb(_) => "the largest softmax probability of the exit's logits is at least the threshold",
        Policy::Entropy(_) => {
            "the normalised entropy H(softmax)/ln(classes) of the exit's logits is at most the threshold"
        }
        Policy::Confidence(_) => "sigmoid(confidence) of the exit is at least the threshold",
        Policy::Patience(_) => "its argmax has been the same at the last `patience` exits in a row (exit 0 counts one)",
        Policy::Never => "never (every sample runs the whole network)",
        Policy::Ensemble => "never; the answer mixes every exit by its gate",
        Policy::Class(_) => {
            "its argmax c is one of the exit's classes (`class:C@A+…`, one group per exit) and sigmoid(logit c) is at least that class's A"
        }
    };
    format!(
        "Run stage 0 on the (normalised) input, then for k = 0, 1, …: run exit k on the features of \
         stage k; a sample leaves with exit k's argmax when {how} (thresholds per exit in order, or \
         one shared; `off`: no sample leaves there); the others go on to stage k + 1. Samples that reach the last stage take the \
         final classifier's answer."
    )
}

/// Writes the cascade of `model` as ONNX graphs and a manifest into the new folder `out`
/// (written beside it under a temporary name, then renamed: a failure leaves nothing).
///
/// ```no_run
/// use burn::tensor::Device;
/// use earlyexit::infer::MultiExitModel;
/// use earlyexit::interop::export_onnx;
///
/// let model = MultiExitModel::load("runs/resnet20a-heads".as_ref(), &Device::flex())?;
/// let manifest = export_onnx(&model, &"maxprob:0.9".parse()?, None, "exported".as_ref())?;
/// assert_eq!(manifest.stages.len(), model.arch.num_exits() + 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_onnx(
    model: &MultiExitModel,
    policy: &Policy,
    normalize: Option<&Normalize>,
    out: &Path,
) -> Result<Manifest> {
    policy
        .check(model.arch.num_exits(), model.arch.heads.iter().all(|h| h.confidence))
        .map_err(|e| Error::invalid("policy", e.to_string()))?;
    let graphs = onnx_graphs(model)?;
    let arch = &model.arch;
    let macs = arch.cost.exit_macs(MacConvention::All);
    let relative = arch.cost.relative(MacConvention::All);
    let stages = (0..model.net.num_stages())
        .map(|k| {
            let r = model.net.stage_blocks(k);
            StageEntry {
                file: format!("stage_{k}.onnx"),
                blocks: [r.start, r.end],
                input: arch.backbone.blocks[r.start].input,
                output: arch.backbone.blocks[r.end - 1].output,
            }
        })
        .collect();
    let mut exits: Vec<ExitEntry> = (0..arch.num_exits())
        .map(|k| ExitEntry {
            file: format!("exit_{k}.onnx"),
            after_stage: k,
            cut: Some(arch.cuts[k]),
            head: Some(arch.heads[k].kind),
            confidence: arch.heads[k].confidence,
            macs: macs[k],
            relative_cost: relative[k],
        })
        .collect();
    let last = arch.num_exits();
    exits.push(ExitEntry {
        file: "classifier.onnx".into(),
        after_stage: last,
        cut: None,
        head: None,
        confidence: false,
        macs: macs[last],
        relative_cost: relative[last],
    });
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        opset: OPSET,
        backbone: arch.description.backbone.clone(),
        input: arch.description.input,
        classes: arch.description.classes,
        normalize: normalize.map(|n| NormalizeEntry {
            mean: n.mean.clone(),
            std: n.std.clone(),
        }),
        stages,
        exits,
        policy: policy.clone(),
        rule: rule_of(policy),
    };
    write_folder(out, |tmp| {
        for (name, bytes) in &graphs {
            write_atomic(&tmp.join(name), bytes)?;
        }
        let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialise");
        write_atomic(&tmp.join(MANIFEST_FILE), &json)
    })?;
    Ok(manifest)
}

/// Creates the folder `dir` by filling a temporary sibling with `fill` and renaming it; `dir`
/// must not exist, and a failure removes the temporary folder.
pub(crate) fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if dir.exists() {
        return Err(Error::invalid(
            "out",
            format!("{} already exists; choose a new folder or remove it", dir.display()),
        ));
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let written = fill(&tmp).and_then(|()| std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e)));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

//! A multi-exit network: its description (plain data), its resolved architecture and cost, and
//! the Burn module that runs it stage by stage.

use std::ops::Range;

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::backbones::{Backbone, BackboneSpec, global_avg_pool};
use super::cost::{Cost, MacConvention, Shape};
use super::heads::{ExitHead, ExitOutput, HeadKind, HeadSpec};
use super::placement::Placement;
use crate::error::{Error, Result};

fn yes() -> bool {
    true
}

/// What a user writes to describe a multi-exit network (TOML or JSON).
///
/// ```
/// use earlyexit::model::ModelDescription;
/// let d: ModelDescription = toml::from_str(r#"
///     backbone = "resnet20"
///     input = "3x32x32"
///     classes = 10
///     head = "pool"
///     exits = "pareto:4"
/// "#).unwrap();
/// let arch = d.resolve().unwrap();
/// assert_eq!(arch.cuts.len(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDescription {
    /// Backbone name from the zoo ([`crate::model::BACKBONES`]).
    pub backbone: String,
    /// Starting width override for backbones that have one (`eenet8`, `mlp`; `mobilenet_v2`: the
    /// width multiplier in percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// Input shape per sample.
    pub input: Shape,
    /// Number of classes.
    pub classes: usize,
    /// Exit head kind, for every exit.
    #[serde(default)]
    pub head: HeadKind,
    /// One head kind per exit, in exit order, where exits differ (a class-specific design whose
    /// branches read one cut point at one exit and every earlier one at another); overrides
    /// `head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_heads: Option<Vec<HeadKind>>,
    /// `relupool` heads average each feature map to a `G×G` grid before their dense layer
    /// (default 1: global pooling; the class-specific method's `--grid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_grid: Option<usize>,
    /// The heads' confidence / gate branch reads their own class probabilities,
    /// `g(softmax(c_i(x)))`, instead of their features (the survey §6).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gate_on_prediction: bool,
    /// Whether heads carry a confidence / gate branch.
    #[serde(default = "yes")]
    pub confidence: bool,
    /// Exit placement.
    pub exits: Placement,
    /// MAC convention used by MAC-fraction placement rules.
    #[serde(default)]
    pub placement_macs: MacConvention,
}

impl ModelDescription {
    /// A description with default head (`pool`, with confidence) and MAC convention.
    pub fn new(backbone: &str, input: Shape, classes: usize, exits: Placement) -> Self {
        Self {
            backbone: backbone.into(),
            width: None,
            input,
            classes,
            head: HeadKind::Pool,
            exit_heads: None,
            head_grid: None,
            gate_on_prediction: false,
            confidence: true,
            exits,
            placement_macs: MacConvention::All,
        }
    }

    /// Largest input side (height, width or channels).
    pub const MAX_INPUT_SIDE: usize = 1 << 16;
    /// Largest input, values per sample (`C·H·W`): 64 Mi, e.g. 3×4096×4096.
    pub const MAX_INPUT_VALUES: usize = 1 << 26;
    /// Largest `width` override.
    pub const MAX_WIDTH: usize = 1024;
    /// Most classes.
    pub const MAX_CLASSES: usize = 1 << 20;

    /// Refuses sizes beyond what any network is built for, before shapes and MAC counts are
    /// worked out: a `model.json` with an input of 3×37777777757772×32 would overflow the cost
    /// arithmetic (found by the `model_json` fuzz target).
    fn check_sizes(&self) -> Result<()> {
        let Shape { c, h, w } = self.input;
        let values = c.checked_mul(h).and_then(|v| v.checked_mul(w));
        if [c, h, w].iter().any(|&d| d > Self::MAX_INPUT_SIDE) || values.is_none_or(|v| v > Self::MAX_INPUT_VALUES) {
            return Err(Error::invalid(
                "input",
                format!(
                    "{} is too large: at most {} per side and {} values per sample",
                    self.input,
                    Self::MAX_INPUT_SIDE,
                    Self::MAX_INPUT_VALUES
                ),
            ));
        }
        if let Some(width) = self.width.filter(|&w| w == 0 || w > Self::MAX_WIDTH) {
            return Err(Error::invalid(
                "width",
                format!("{width} is outside 1 to {}", Self::MAX_WIDTH),
            ));
        }
        if self.classes > Self::MAX_CLASSES {
            return Err(Error::invalid(
                "classes",
                format!("{} is more than {}", self.classes, Self::MAX_CLASSES),
            ));
        }
        Ok(())
    }

    /// Checks everything and works out shapes, cut points and costs.
    pub fn resolve(&self) -> Result<Architecture> {
        self.check_sizes()?;
        let backbone = BackboneSpec::new(&self.backbone, self.input, self.classes, self.width)?;
        let cuts = self.exits.resolve(&backbone, self.placement_macs)?;
        if let Some(kinds) = &self.exit_heads
            && kinds.len() != cuts.len()
        {
            return Err(Error::invalid(
                "exit_heads",
                format!(
                    "{} head kinds for {} exits (placement `{}`): give one per exit",
                    kinds.len(),
                    cuts.len(),
                    self.exits
                ),
            ));
        }
        let grid = self.head_grid.unwrap_or(1);
        let kind_of = |k: usize| self.exit_heads.as_ref().map_or(self.head, |v| v[k]);
        if !(1..=8).contains(&grid) {
            return Err(Error::invalid("head_grid", format!("must be 1 to 8, got {grid}")));
        }
        if grid > 1 && (0..cuts.len()).any(|k| kind_of(k) != HeadKind::Relupool) {
            return Err(Error::invalid(
                "head_grid",
                "a pooling grid applies to `relupool` heads only; every exit must be one",
            ));
        }
        let heads: Vec<HeadSpec> = cuts
            .iter()
            .enumerate()
            .map(|(k, &c)| HeadSpec {
                kind: kind_of(k),
                confidence: self.confidence,
                classes: self.classes,
                input: backbone.blocks[c].output,
                history: backbone.blocks[..=c].iter().map(|b| b.output).collect(),
                grid,
                gate_on_prediction: self.gate_on_prediction && self.confidence,
            })
            .collect();
        let cost = NetworkCost::new(&backbone, &cuts, &heads)?;
        Ok(Architecture {
            description: self.clone(),
            backbone,
            cuts,
            heads,
            cost,
        })
    }
}

/// The cost of one exit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitCost {
    /// Exit index (the backbone's final classifier is the last).
    pub exit: usize,
    /// Cut point (block index) the exit sits after; `None` for the final classifier.
    pub cut: Option<usize>,
    /// This head alone.
    pub head: Cost,
    /// Everything evaluated by a sample that leaves here: the backbone up to the cut plus
    /// **every head on the way, earlier heads included**.
    pub cumulative: Cost,
}

/// Honest costs of a multi-exit network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkCost {
    /// The plain backbone, no heads.
    pub backbone: Cost,
    /// Per exit, in order, then the final classifier.
    pub exits: Vec<ExitCost>,
}

impl NetworkCost {
    fn new(backbone: &BackboneSpec, cuts: &[usize], heads: &[HeadSpec]) -> Result<Self> {
        let mut exits = Vec::with_capacity(cuts.len() + 1);
        let mut heads_so_far = Cost::default();
        let mut pooled = 0; // cut points already pooled by an earlier dense head
        let prefix = |end: usize| backbone.blocks[..end].iter().map(|b| b.cost).sum::<Cost>();
        for (k, (&cut, h)) in cuts.iter().zip(heads).enumerate() {
            let head = h.cost(pooled)?;
            if h.kind == HeadKind::Dense {
                pooled = cut + 1;
            }
            heads_so_far += head;
            exits.push(ExitCost {
                exit: k,
                cut: Some(cut),
                head,
                cumulative: prefix(cut + 1) + heads_so_far,
            });
        }
        let total = backbone.total_cost();
        exits.push(ExitCost {
            exit: cuts.len(),
            cut: None,
            head: backbone.classifier_cost,
            cumulative: total + heads_so_far,
        });
        Ok(Self { backbone: total, exits })
    }

    /// MACs spent by a sample leaving at each exit (final last).
    pub fn exit_macs(&self, convention: MacConvention) -> Vec<u64> {
        self.exits.iter().map(|e| e.cumulative.macs(convention)).collect()
    }

    /// [`Self::exit_macs`] divided by the plain backbone's MACs.
    pub fn relative(&self, convention: MacConvention) -> Vec<f64> {
        let b = self.backbone.macs(convention) as f64;
        self.exits
            .iter()
            .map(|e| e.cumulative.macs(convention) as f64 / b)
            .collect()
    }

    /// Parameters of the whole multi-exit network.
    pub fn params(&self) -> u64 {
        self.backbone.params
            + self.exits[..self.exits.len() - 1]
                .iter()
                .map(|e| e.head.params)
                .sum::<u64>()
    }
}

/// A resolved description: backbone shapes and costs, cut points, head specs and exit costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// What the user asked for.
    pub description: ModelDescription,
    /// The backbone, block by block.
    pub backbone: BackboneSpec,
    /// Cut point of each exit, increasing.
    pub cuts: Vec<usize>,
    /// Each exit's head.
    pub heads: Vec<HeadSpec>,
    /// Honest costs.
    pub cost: NetworkCost,
}

impl Architecture {
    /// Number of early exits (the final classifier not counted).
    pub fn num_exits(&self) -> usize {
        self.cuts.len()
    }

    /// Builds the network with weights to be drawn from the device's global generator at first
    /// use (Burn's default). Prefer [`Architecture::init_seeded`] wherever results must repeat.
    pub fn init(&self, device: &Device) -> EarlyExitNet {
        EarlyExitNet {
            backbone: self.backbone.init(device),
            heads: self.heads.iter().map(|h| h.init(device)).collect(),
            cuts: self.cuts.clone(),
            pools_history: self.heads.iter().any(|h| h.kind == HeadKind::Dense),
        }
    }

    /// Builds the network with weights drawn from a generator of its own seeded with `seed`
    /// ([`crate::model::init`]): the same weights for the same seed, whatever else runs.
    pub fn init_seeded(&self, device: &Device, seed: u64) -> EarlyExitNet {
        super::init::reinit(self.init(device), seed)
    }
}

impl Architecture {
    /// The same network with only the early exits at positions `keep` (increasing indices into
    /// the current exits): a description with explicit cuts, resolved again (costs included).
    pub fn retain_exits(&self, keep: &[usize]) -> Result<Architecture> {
        check_keep(keep, self.num_exits())?;
        let mut d = self.description.clone();
        d.exits = Placement::Cuts(keep.iter().map(|&k| self.cuts[k]).collect());
        d.exit_heads = d.exit_heads.map(|v| keep.iter().map(|&k| v[k]).collect());
        d.resolve()
    }
}

fn check_keep(keep: &[usize], n: usize) -> Result<()> {
    for (j, &k) in keep.iter().enumerate() {
        if k >= n || (j > 0 && keep[j - 1] >= k) {
            return Err(Error::invalid(
                "exits to keep",
                format!("{keep:?}: expected increasing exit indices below {n}"),
            ));
        }
    }
    Ok(())
}

/// The multi-exit network module.
///
/// Stage `k < num_exits` runs the blocks up to exit `k`'s cut; the last stage runs the rest of
/// the backbone. Stages can run apart (on different tiers) because each needs only the
/// activations of the previous one (and, with `dense` heads, the pooled history).
#[derive(Module, Debug)]
pub struct EarlyExitNet {
    /// The backbone.
    pub backbone: Backbone,
    /// One head per early exit.
    pub heads: Vec<ExitHead>,
    #[module(skip)]
    cuts: Vec<usize>,
    pools_history: bool,
}

/// Everything in flight between stages for a batch of samples.
#[derive(Clone, Debug)]
pub struct StageState {
    /// Activations at the last cut, `[N, C, H, W]`.
    pub x: Tensor<4>,
    /// `pool(relu(features))` at every cut point so far (kept only with `dense` heads).
    pub pooled: Vec<Tensor<2>>,
}

impl StageState {
    /// Starts from an input batch.
    pub fn new(x: Tensor<4>) -> Self {
        Self { x, pooled: Vec::new() }
    }

    /// Keeps only the samples at `rows` (compaction on the device).
    pub fn select(self, rows: Tensor<1, burn::tensor::Int>) -> Self {
        Self {
            x: self.x.select(0, rows.clone()),
            pooled: self.pooled.into_iter().map(|p| p.select(0, rows.clone())).collect(),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.dims()[0]
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples of several states (all at the same cut) one after the other, on the device.
    ///
    /// # Panics
    /// If `parts` is empty.
    pub fn cat(parts: Vec<StageState>) -> Self {
        assert!(!parts.is_empty(), "StageState::cat of no parts");
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one part");
        }
        let pooled_n = parts[0].pooled.len();
        let mut xs = Vec::with_capacity(parts.len());
        let mut pooled: Vec<Vec<Tensor<2>>> = vec![Vec::with_capacity(parts.len()); pooled_n];
        for p in parts {
            xs.push(p.x);
            for (acc, t) in pooled.iter_mut().zip(p.pooled) {
                acc.push(t);
            }
        }
        Self {
            x: Tensor::cat(xs, 0),
            pooled: pooled.into_iter().map(|v| Tensor::cat(v, 0)).collect(),
        }
    }
}

impl EarlyExitNet {
    /// Number of early exits.
    pub fn num_exits(&self) -> usize {
        self.heads.len()
    }

    /// An inference copy with every BatchNorm that follows a convolution folded into it: the
    /// same answers (within float rounding) for fewer passes over the activations. Do not train
    /// the result.
    pub fn fold_bn(self) -> Self {
        Self {
            backbone: self.backbone.fold_bn(),
            heads: self.heads.into_iter().map(ExitHead::fold_bn).collect(),
            cuts: self.cuts,
            pools_history: self.pools_history,
        }
    }

    /// Cut points of the exits.
    pub fn cuts(&self) -> &[usize] {
        &self.cuts
    }

    /// Whether a head reads the pooled history (`global_avg_pool(relu(x))` after every block:
    /// `dense` heads), which [`EarlyExitNet::run_stage`] then keeps in [`StageState::pooled`].
    pub fn pools_history(&self) -> bool {
        self.pools_history
    }

    /// Number of stages: one per early exit plus the final one.
    pub fn num_stages(&self) -> usize {
        self.heads.len() + 1
    }

    /// The blocks stage `k` runs.
    pub fn stage_blocks(&self, k: usize) -> Range<usize> {
        let start = if k == 0 { 0 } else { self.cuts[k - 1] + 1 };
        let end = if k < self.cuts.len() {
            self.cuts[k] + 1
        } else {
            self.backbone.blocks.len()
        };
        start..end
    }

    /// Runs the blocks of stage `k`.
    pub fn run_stage(&self, k: usize, state: StageState) -> StageState {
        let StageState { mut x, mut pooled } = state;
        for b in &self.backbone.blocks[self.stage_blocks(k)] {
            x = b.forward(x);
            if self.pools_history {
                pooled.push(global_avg_pool(relu(x.clone())));
            }
        }
        StageState { x, pooled }
    }

    /// Exit `k`'s head on the state after stage `k`; for `k == num_exits()`, the final
    /// classifier (no confidence).
    pub fn exit(&self, k: usize, state: &StageState) -> ExitOutput {
        if k < self.heads.len() {
            self.heads[k].forward(state.x.clone(), &state.pooled)
        } else {
            ExitOutput {
                logits: self.backbone.classifier.forward(state.x.clone()),
                confidence: None,
            }
        }
    }

    /// Every exit's output for every sample, final classifier last; for training and analysis.
    ///
    /// # Shapes
    /// `x`: `[N, C, H, W]` → `num_exits() + 1` outputs of `[N, classes]` (and `[N, 1]`)
    pub fn forward_all(&self, x: Tensor<4>) -> Vec<ExitOutput> {
        let mut state = StageState::new(x);
        let mut outs = Vec::with_capacity(self.num_stages());
        for k in 0..self.num_stages() {
            state = self.run_stage(k, state);
            outs.push(self.exit(k, &state));
        }
        outs
    }

    /// The same module with only the early exits at positions `keep` (increasing); every
    /// remaining weight is unchanged. Pair it with [`Architecture::retain_exits`].
    pub fn retain_exits(self, keep: &[usize]) -> Result<Self> {
        check_keep(keep, self.heads.len())?;
        let mut heads: Vec<Option<ExitHead>> = self.heads.into_iter().map(Some).collect();
        Ok(Self {
            backbone: self.backbone,
            heads: keep.iter().map(|&k| heads[k].take().expect("increasing")).collect(),
            cuts: keep.iter().map(|&k| self.cuts[k]).collect(),
            pools_history: self.pools_history && !keep.is_empty(),
        })
    }

    /// The plain backbone's logits (no head evaluated).
    pub fn forward_backbone(&self, x: Tensor<4>) -> Tensor<2> {
        self.backbone.forward(x)
    }
}

/// Checks a model input batch against the expected per-sample shape.
pub fn check_input(x: &Tensor<4>, expected: Shape) -> Result<()> {
    let [_, c, h, w] = x.dims();
    if [c, h, w] != expected.dims() {
        return Err(Error::invalid(
            "input",
            format!("batch has samples of {c}x{h}x{w}, the model expects {expected}"),
        ));
    }
    Ok(())
}

/// One row of [`Summary::blocks`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockRow {
    /// Block index (= cut point index).
    pub index: usize,
    /// Block name.
    pub name: String,
    /// Output shape.
    pub output: Shape,
    /// MACs of this block.
    pub macs: u64,
    /// Cumulative backbone MACs up to and including this block.
    pub cumulative_macs: u64,
    /// `cumulative_macs` / backbone MACs.
    pub fraction: f64,
    /// Parameters of this block.
    pub params: u64,
}

/// One row of [`Summary::exits`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitRow {
    /// Exit index (the final classifier is last).
    pub exit: usize,
    /// Cut point, `None` for the final classifier.
    pub cut: Option<usize>,
    /// Name of the block the exit follows.
    pub after: String,
    /// MACs of this head alone.
    pub head_macs: u64,
    /// MACs spent by a sample leaving here, earlier heads included.
    pub macs: u64,
    /// `macs` / plain backbone MACs.
    pub relative_cost: f64,
}

/// The `inspect` view of an architecture: per-block table and exits with honest costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Backbone name.
    pub backbone: String,
    /// Input shape.
    pub input: Shape,
    /// Number of classes.
    pub classes: usize,
    /// Head kind.
    pub head: HeadKind,
    /// MAC convention of every figure.
    pub convention: MacConvention,
    /// Plain backbone MACs.
    pub backbone_macs: u64,
    /// Parameters of the plain backbone.
    pub backbone_params: u64,
    /// Parameters of the whole multi-exit network.
    pub params: u64,
    /// Every block (candidate cut point).
    pub blocks: Vec<BlockRow>,
    /// Every exit, the final classifier last.
    pub exits: Vec<ExitRow>,
}

impl Architecture {
    /// The per-block and per-exit cost table under `convention`.
    pub fn summary(&self, convention: MacConvention) -> Summary {
        let total = self.cost.backbone.macs(convention);
        let mut cum = 0;
        let blocks = self
            .backbone
            .blocks
            .iter()
            .enumerate()
            .map(|(index, b)| {
                cum += b.cost.macs(convention);
                BlockRow {
                    index,
                    name: b.name.clone(),
                    output: b.output,
                    macs: b.cost.macs(convention),
                    cumulative_macs: cum,
                    fraction: cum as f64 / total as f64,
                    params: b.cost.params,
                }
            })
            .collect();
        let exits = self
            .cost
            .exits
            .iter()
            .map(|e| ExitRow {
                exit: e.exit,
                cut: e.cut,
                after: match e.cut {
                    Some(c) => self.backbone.blocks[c].name.clone(),
                    None => "classifier".into(),
                },
                head_macs: e.head.macs(convention),
                macs: e.cumulative.macs(convention),
                relative_cost: e.cumulative.macs(convention) as f64 / total as f64,
            })
            .collect();
        Summary {
            backbone: self.backbone.name.clone(),
            input: self.backbone.input,
            classes: self.description.classes,
            head: self.description.head,
            convention,
            backbone_macs: total,
            backbone_params: self.cost.backbone.params,
            params: self.cost.params(),
            blocks,
            exits,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::cost::human;
        writeln!(
            f,
            "{} on {} inputs, {} classes: {} MACs ({}), {} parameters ({} with exits)",
            self.backbone,
            self.input,
            self.classes,
            human(self.backbone_macs),
            self.convention,
            self.backbone_params,
            self.params
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>4}  {:<16} {:>12} {:>12} {:>12} {:>8}",
            "cut", "block", "output", "MACs", "cumulative", "share"
        )?;
        for b in &self.blocks {
            writeln!(
                f,
                "{:>4}  {:<16} {:>12} {:>12} {:>12} {:>7.2}%",
                b.index,
                b.name,
                b.output.to_string(),
                human(b.macs),
                human(b.cumulative_macs),
                100.0 * b.fraction
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:>4}  {:>4}  {:<16} {:>12} {:>12} {:>13}",
            "exit", "cut", "after", "head MACs", "MACs", "relative cost"
        )?;
        for e in &self.exits {
            writeln!(
                f,
                "{:>4}  {:>4}  {:<16} {:>12} {:>12} {:>13.4}",
                e.exit,
                e.cut.map_or("-".into(), |c| c.to_string()),
                e.after,
                human(e.head_macs),
                human(e.macs),
                e.relative_cost
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes beyond any network are refused by name before the cost arithmetic could overflow.
    #[test]
    fn oversized_descriptions_are_refused_before_costs_are_counted() {
        let d = |input: Shape| ModelDescription::new("vgg13", input, 10, "cuts:1,3".parse().unwrap());
        assert!(d(Shape::new(3, 32, 32)).resolve().is_ok());
        let e = d(Shape::new(3, 37777777757772, 32)).resolve().unwrap_err().to_string();
        assert!(e.contains("input") && e.contains("too large"), "{e}");
        let e = d(Shape::new(3, 8192, 8192)).resolve().unwrap_err().to_string();
        assert!(e.contains("values per sample"), "{e}");
        let mut w = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "cuts:1,2".parse().unwrap());
        w.width = Some(1 << 40);
        assert!(w.resolve().unwrap_err().to_string().contains("width"));
        w.width = None;
        w.classes = usize::MAX;
        assert!(w.resolve().unwrap_err().to_string().contains("classes"));
    }
}

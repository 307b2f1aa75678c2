//! The early-exit inference engine: real per-sample exits on batches.
//!
//! After each stage the samples whose exit fires are answered and only the rest go on: the
//! survivors are gathered (`select`), so later stages really run on fewer samples. The only host
//! transfer per stage is the exit's logits (`N × classes` floats, [`ExitLogits`]): the policy
//! scores and decides on the host, and the leaving samples' answers are made there. The loop
//! ([`exit_loop`]) is written once, over [`StageSlices`]: the Burn module and the compiled CPU
//! network both run it, and the [`Rebatcher`] runs its steps.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Int, Tensor, TensorData};

use crate::cpu::host;
use crate::error::Result;
use crate::model::{Architecture, EarlyExitNet, MacConvention, StageState, check_input};
use crate::policy::{ExitLogits, Policy, PolicyState, argmax};

/// Per-sample answers of [`MultiExitModel::infer`], in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct Answers {
    /// Number of classes.
    pub classes: usize,
    /// Predicted class per sample.
    pub class: Vec<usize>,
    /// Class probabilities, row-major `N × classes`.
    pub probs: Vec<f32>,
    /// Exit that answered (the final classifier is `num_exits`).
    pub exit: Vec<usize>,
    /// The policy's confidence score at the answering exit.
    pub confidence: Vec<f32>,
    /// MACs spent on each sample (convention `all`), earlier heads included.
    pub macs: Vec<u64>,
}

impl Answers {
    /// `n` samples of `classes` classes, none answered yet (every field zero), to be filled in.
    pub(crate) fn unanswered(n: usize, classes: usize) -> Self {
        Answers {
            classes,
            class: vec![0; n],
            probs: vec![0.0; n * classes],
            exit: vec![0; n],
            confidence: vec![0.0; n],
            macs: vec![0; n],
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.class.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.class.is_empty()
    }

    /// Probabilities of sample `i`.
    pub fn probs_of(&self, i: usize) -> &[f32] {
        &self.probs[i * self.classes..(i + 1) * self.classes]
    }
}

/// A network together with its resolved architecture: what inference, calibration and serving
/// work with.
#[derive(Clone, Debug)]
pub struct MultiExitModel {
    /// Shapes, cut points and costs.
    pub arch: Architecture,
    /// The module.
    pub net: EarlyExitNet,
}

/// The samples that left at one exit: their input rows, probabilities (`[rows, classes]`) and
/// scores.
pub(crate) struct Answered {
    pub rows: Vec<usize>,
    pub exit: usize,
    pub probs: Vec<f32>,
    pub score: Vec<f32>,
}

/// The most confident exit a sample has passed without leaving: what a tier answers (flagged
/// degraded) when the next tier cannot.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BestSoFar {
    pub exit: usize,
    pub confidence: f32,
    pub probs: Vec<f32>,
}

/// Samples between stages on the host, in the wire's layout: activations `[N, C, H, W]`
/// (row-major) and, with `dense` heads, the pooled history (`[N, D]` values and `D` each).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HostState {
    pub x: Vec<f32>,
    pub dims: [usize; 4],
    pub pooled: Vec<(Vec<f32>, usize)>,
}

impl MultiExitModel {
    /// Loads a model folder (`model.json` + `weights.safetensors`, as
    /// [`crate::model::io::save_model`] writes it) on `device`, ready to run; errors name the file.
    pub fn load(dir: &std::path::Path, device: &burn::tensor::Device) -> Result<Self> {
        let (arch, net) = crate::model::io::load_model(dir, device)?;
        Ok(Self { arch, net })
    }

    /// Builds a freshly initialised model from its architecture.
    pub fn new(arch: Architecture, device: &burn::tensor::Device) -> Self {
        let net = arch.init(device);
        Self { arch, net }
    }

    /// The same model with BatchNorm folded into its convolutions, for faster inference (same
    /// answers within float rounding). Do not train the result.
    pub fn fold_bn(self) -> Self {
        Self {
            arch: self.arch,
            net: self.net.fold_bn(),
        }
    }

    /// MACs spent by a sample that leaves at each exit (final last), convention `all`.
    pub fn exit_macs(&self) -> Vec<u64> {
        self.arch.cost.exit_macs(MacConvention::All)
    }

    /// Real per-sample early exit on a batch.
    ///
    /// Returns, in input order, each sample's class, probabilities, exit, confidence and MACs.
    ///
    /// # Shapes
    /// `x`: `[N, C, H, W]` with `C×H×W` the model's input shape.
    pub fn infer(&self, x: Tensor<4>, policy: &Policy) -> Result<Answers> {
        check_input(&x, self.arch.description.input)?;
        let has_conf = self.net.heads.iter().all(|h| h.has_confidence());
        let num_exits = self.net.num_exits();
        policy.check(num_exits, has_conf)?;
        policy.check_classes(self.arch.description.classes)?;
        let [n, ..] = x.dims();
        let classes = self.arch.description.classes;
        let exit_macs = self.exit_macs();

        if let Policy::Ensemble = policy {
            {
                let outs = self.net.forward_all(x);
                let mut mix = softmax(outs[num_exits].logits.clone(), 1);
                for o in outs[..num_exits].iter().rev() {
                    let g = sigmoid(o.confidence.clone().expect("checked: confidence heads"));
                    mix = softmax(o.logits.clone(), 1) * g.clone() + mix * g.neg().add_scalar(1.0);
                }
                let probs = crate::cpu::host(mix);
                let score = probs
                    .chunks(classes)
                    .map(|p| p.iter().copied().fold(0.0, f32::max))
                    .collect();
                let answered = vec![Answered {
                    rows: (0..n).collect(),
                    exit: num_exits,
                    probs,
                    score,
                }];
                return Ok(assemble(n, classes, answered, |e| exit_macs[e]));
            }
        }
        let backbone_macs = self.arch.cost.backbone.macs(MacConvention::All);
        Ok(exit_loop(
            &self.net,
            StageState::new(x),
            n,
            classes,
            policy,
            (&exit_macs, backbone_macs),
        ))
    }

    /// Per-sample early exit over a stream of batches, re-batching the survivors: each stage
    /// has a queue that collects the samples of several incoming batches that reach it, and
    /// runs only when `batch` samples are waiting (or at the end of the stream). Later stages
    /// thus run on full batches instead of ever smaller ones. Same answers as [`Self::infer`]
    /// on the concatenated inputs (within float rounding), in input order.
    ///
    /// # Errors
    /// As [`Self::infer`]; `batch` of 0.
    pub fn infer_stream(
        &self,
        batches: impl IntoIterator<Item = Tensor<4>>,
        policy: &Policy,
        batch: usize,
    ) -> Result<Answers> {
        Rebatcher::new(self, policy, batch)?.run(batches)
    }
}

/// Stage slices: what the per-sample exit loop ([`exit_loop`]) needs from the code that runs a
/// network. The Burn module ([`EarlyExitNet`], state: [`StageState`] on its device) and the
/// compiled CPU network ([`super::CompiledNet`], state: channels-last host buffers) implement it,
/// so both answer with the one loop.
pub(crate) trait StageSlices {
    /// The samples' activations at a cut.
    type State: Clone;
    /// Early exits (the final classifier is exit `num_exits`).
    fn num_exits(&self) -> usize;
    /// The state of an input batch before stage 0.
    ///
    /// # Errors
    /// `x` does not have the model's input shape (the compiled path checks it; callers of the
    /// Burn module check it with [`check_input`]).
    fn start(&self, x: Tensor<4>) -> Result<Self::State>;
    /// Waits until `state` is computed (a device may run asynchronously): for timing.
    fn sync(&self, _state: &Self::State) {}
    /// Runs stage `k` (the blocks up to cut `k`; the last stage ends the backbone).
    fn run_stage(&self, k: usize, state: Self::State) -> Self::State;
    /// Exit `k`'s output on the state after stage `k` (`k == num_exits`: the final classifier),
    /// on the host.
    fn exit(&self, k: usize, state: &Self::State) -> ExitLogits;
    /// The samples at `rows`.
    fn select(&self, state: Self::State, rows: &[usize]) -> Self::State;
    /// Several states after the same cut, one after the other.
    fn cat(&self, states: Vec<Self::State>) -> Self::State;
    /// The state of samples that arrive between stages (from another tier), on `device` where
    /// the implementation has one.
    fn state_from_host(&self, state: HostState, device: &burn::tensor::Device) -> Self::State;
    /// The state on the host, to send to another tier.
    fn state_to_host(&self, state: Self::State) -> HostState;
}

impl StageSlices for EarlyExitNet {
    type State = StageState;

    fn num_exits(&self) -> usize {
        EarlyExitNet::num_exits(self)
    }

    fn start(&self, x: Tensor<4>) -> Result<StageState> {
        Ok(StageState::new(x))
    }

    fn sync(&self, state: &StageState) {
        let _ = state.x.clone().sum().into_scalar::<f32>();
    }

    fn run_stage(&self, k: usize, state: StageState) -> StageState {
        EarlyExitNet::run_stage(self, k, state)
    }

    fn exit(&self, k: usize, state: &StageState) -> ExitLogits {
        ExitLogits::from_output(&EarlyExitNet::exit(self, k, state))
    }

    fn select(&self, state: StageState, rows: &[usize]) -> StageState {
        let index = index_tensor(rows, &state.x.device());
        state.select(index)
    }

    fn cat(&self, states: Vec<StageState>) -> StageState {
        StageState::cat(states)
    }

    fn state_from_host(&self, state: HostState, device: &burn::tensor::Device) -> StageState {
        let n = state.dims[0];
        StageState {
            x: Tensor::from_data(TensorData::new(state.x, state.dims), device),
            pooled: state
                .pooled
                .into_iter()
                .map(|(v, d)| Tensor::from_data(TensorData::new(v, [n, d]), device))
                .collect(),
        }
    }

    fn state_to_host(&self, state: StageState) -> HostState {
        HostState {
            dims: state.x.dims(),
            x: host(state.x),
            pooled: state
                .pooled
                .into_iter()
                .map(|p| {
                    let d = p.dims()[1];
                    (host(p), d)
                })
                .collect(),
        }
    }
}

/// The per-sample exit loop, for every implementation ([`StageSlices`]): after each stage the
/// policy decides which samples leave, they are answered, and only the rest go on. With
/// [`Policy::Never`] every sample runs the backbone and is charged its MACs only.
///
/// `macs` is (MACs per exit, earlier heads included; the backbone's MACs).
pub(crate) fn exit_loop<N: StageSlices>(
    net: &N,
    state: N::State,
    n: usize,
    classes: usize,
    policy: &Policy,
    macs: (&[u64], u64),
) -> Answers {
    let num_exits = net.num_exits();
    let never = matches!(policy, Policy::Never);
    let mut answered = Vec::with_capacity(num_exits + 1);
    let mut part = Part::new(state, n);
    let mut first = 0;
    if never {
        // No exit is evaluated: straight to the final stage.
        for k in 0..num_exits {
            part.state = net.run_stage(k, part.state);
        }
        first = num_exits;
    }
    run_slice(net, part, first..num_exits + 1, policy, &mut answered);
    let (exit_macs, backbone_macs) = macs;
    assemble(
        n,
        classes,
        answered,
        |e| if never { backbone_macs } else { exit_macs[e] },
    )
}

/// Stages `stages` of the loop on `part` (which enters at `stages.start`): the samples that leave
/// go to `answered`; the survivors after the last stage of the range are returned (none when the
/// range ends with the final classifier). A tier runs its slice of the stages with this.
pub(crate) fn run_slice<N: StageSlices>(
    net: &N,
    part: Part<N::State>,
    stages: std::ops::Range<usize>,
    policy: &Policy,
    answered: &mut Vec<Answered>,
) -> Option<Part<N::State>> {
    let mut part = Some(part);
    for k in stages {
        part = step(net, k, part?, policy, answered);
    }
    part
}

/// Runs stage `k` and its exit on `part`: the samples that leave go to `answered`, the
/// survivors (compacted where they live) are returned. The final stage answers everyone.
fn step<N: StageSlices>(
    net: &N,
    k: usize,
    part: Part<N::State>,
    policy: &Policy,
    answered: &mut Vec<Answered>,
) -> Option<Part<N::State>> {
    let Part {
        state,
        mut pstate,
        rows,
        mut best,
    } = part;
    let state = net.run_stage(k, state);
    let out = net.exit(k, &state);
    if k == net.num_exits() {
        answered.push(Answered {
            score: out.max_prob(),
            probs: out.probs(0..rows.len()),
            rows,
            exit: k,
        });
        return None;
    }
    let score = policy.score(&out);
    let mask = policy.decide(k, &out, &score, &mut pstate);
    let (leave, stay): (Vec<usize>, Vec<usize>) = (0..rows.len()).partition(|&i| mask[i]);
    if let Some(best) = best.as_mut() {
        let classes = out.classes;
        let probs = out.probs(stay.iter().copied());
        for (j, &i) in stay.iter().enumerate() {
            if best[i].as_ref().is_none_or(|b| score[i] > b.confidence) {
                best[i] = Some(BestSoFar {
                    exit: k,
                    confidence: score[i],
                    probs: probs[j * classes..(j + 1) * classes].to_vec(),
                });
            }
        }
    }
    if leave.is_empty() {
        return Some(Part {
            state,
            pstate,
            rows,
            best,
        });
    }
    answered.push(Answered {
        rows: leave.iter().map(|&i| rows[i]).collect(),
        exit: k,
        probs: out.probs(leave.iter().copied()),
        score: leave.iter().map(|&i| score[i]).collect(),
    });
    if stay.is_empty() {
        return None;
    }
    Some(Part {
        state: net.select(state, &stay),
        pstate: pstate.select(&stay),
        rows: stay.iter().map(|&i| rows[i]).collect(),
        best: best.map(|b| stay.iter().map(|&i| b[i].clone()).collect()),
    })
}

/// Samples in flight: their state at a cut, the policy's state, their input rows and, when a
/// tier tracks it, each one's [`BestSoFar`].
pub(crate) struct Part<S> {
    pub state: S,
    pub pstate: PolicyState,
    pub rows: Vec<usize>,
    pub best: Option<Vec<Option<BestSoFar>>>,
}

impl<S: Clone> Part<S> {
    /// `n` fresh samples (rows `0..n`), nothing tracked.
    pub(crate) fn new(state: S, n: usize) -> Self {
        Part {
            state,
            pstate: PolicyState::new(),
            rows: (0..n).collect(),
            best: None,
        }
    }

    /// Several parts after the same cut, one after the other.
    fn cat<N: StageSlices<State = S>>(net: &N, parts: Vec<Self>) -> Self {
        let mut states = Vec::with_capacity(parts.len());
        let mut pstates = Vec::with_capacity(parts.len());
        let mut rows = Vec::new();
        let mut best = Some(Vec::new());
        for p in parts {
            states.push(p.state);
            pstates.push(p.pstate);
            rows.extend(p.rows);
            best = best.zip(p.best).map(|(mut all, b)| {
                all.extend(b);
                all
            });
        }
        Part {
            state: net.cat(states),
            pstate: PolicyState::cat(pstates),
            rows,
            best,
        }
    }

    /// The first `m` samples and the rest.
    fn split<N: StageSlices<State = S>>(self, net: &N, m: usize) -> (Self, Self) {
        let n = self.rows.len();
        let head: Vec<usize> = (0..m).collect();
        let tail: Vec<usize> = (m..n).collect();
        let mut rows = self.rows;
        let rest = rows.split_off(m);
        let (best, best_rest) = match self.best {
            Some(mut b) => {
                let tail = b.split_off(m);
                (Some(b), Some(tail))
            }
            None => (None, None),
        };
        (
            Part {
                state: net.select(self.state.clone(), &head),
                pstate: self.pstate.clone().select(&head),
                rows,
                best,
            },
            Part {
                state: net.select(self.state, &tail),
                pstate: self.pstate.select(&tail),
                rows: rest,
                best: best_rest,
            },
        )
    }
}

/// How many times each stage ran and on how many samples, in a [`Rebatcher`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageRuns {
    /// Runs per stage (final last).
    pub runs: Vec<usize>,
    /// Samples per stage over all runs.
    pub samples: Vec<usize>,
}

impl StageRuns {
    /// Mean batch size each stage ran on (0 for a stage that never ran).
    pub fn mean_batch(&self) -> Vec<f64> {
        self.runs
            .iter()
            .zip(&self.samples)
            .map(|(&r, &s)| if r == 0 { 0.0 } else { s as f64 / r as f64 })
            .collect()
    }
}

/// The per-stage queues behind [`MultiExitModel::infer_stream`] and
/// [`super::Executor::infer_stream`]: push batches, then [`Self::finish`] for the answers of
/// every sample pushed, in push order.
///
/// A stage runs as soon as `batch` samples wait in front of it, on exactly `batch` samples;
/// [`Self::finish`] flushes the queues stage by stage. With the `never` and `ensemble`
/// policies (no per-sample exit) each batch simply runs whole. The stages run on the Burn module
/// ([`Rebatcher::new`]) or on the code an executor runs ([`super::Executor::rebatcher`]: the
/// compiled CPU path where it runs the model).
pub struct Rebatcher<'m> {
    queues: Box<dyn Queues + 'm>,
}

/// A [`Rebatcher`]'s queues over one implementation's stage slices.
trait Queues {
    fn push(&mut self, x: Tensor<4>) -> Result<()>;
    fn pushed(&self) -> usize;
    fn queued(&self) -> &[usize];
    fn stats(&self) -> &StageRuns;
    fn finish(self: Box<Self>) -> (Answers, StageRuns);
}

impl<'m> Rebatcher<'m> {
    /// Queues in front of every stage of `model` (the Burn module), each released `batch`
    /// samples at a time.
    ///
    /// # Errors
    /// A policy that does not fit the model; `batch` of 0.
    pub fn new(model: &'m MultiExitModel, policy: &Policy, batch: usize) -> Result<Self> {
        Self::over(model, &model.net, policy, batch)
    }

    /// Queues over `net`'s stage slices (`model`'s weights, run by `net`).
    pub(crate) fn over<N: StageSlices + 'm>(
        model: &'m MultiExitModel,
        net: &'m N,
        policy: &Policy,
        batch: usize,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(crate::error::Error::invalid(
                "batch",
                "the re-batching size must be at least 1",
            ));
        }
        let has_conf = model.net.heads.iter().all(|h| h.has_confidence());
        let stages = net.num_exits() + 1;
        policy.check(net.num_exits(), has_conf)?;
        policy.check_classes(model.arch.description.classes)?;
        Ok(Self {
            queues: Box::new(StageQueues {
                model,
                net,
                exit_macs: model.exit_macs(),
                backbone_macs: model.arch.cost.backbone.macs(MacConvention::All),
                policy: policy.clone(),
                batch,
                queues: (0..stages).map(|_| Vec::new()).collect(),
                queued: vec![0; stages],
                answered: Vec::new(),
                whole: Vec::new(),
                pushed: 0,
                stats: StageRuns {
                    runs: vec![0; stages],
                    samples: vec![0; stages],
                },
            }),
        })
    }

    /// Samples pushed so far.
    pub fn pushed(&self) -> usize {
        self.queues.pushed()
    }

    /// Samples waiting in front of each stage.
    pub fn queued(&self) -> &[usize] {
        self.queues.queued()
    }

    /// Stage runs so far.
    pub fn stats(&self) -> &StageRuns {
        self.queues.stats()
    }

    /// Adds a batch `[N, C, H, W]`, and runs every stage that has a full batch waiting.
    pub fn push(&mut self, x: Tensor<4>) -> Result<()> {
        self.queues.push(x)
    }

    /// Pushes every batch of `batches`, then [`Self::finish`].
    ///
    /// # Errors
    /// As [`Self::push`].
    pub fn run(mut self, batches: impl IntoIterator<Item = Tensor<4>>) -> Result<Answers> {
        for x in batches {
            self.push(x)?;
        }
        Ok(self.finish())
    }

    /// Flushes every queue and returns the answers of all samples pushed, in push order.
    pub fn finish(self) -> Answers {
        self.finish_with_runs().0
    }

    /// [`Self::finish`], with how often each stage ran and on how many samples.
    pub fn finish_with_runs(self) -> (Answers, StageRuns) {
        self.queues.finish()
    }
}

/// The queues of a [`Rebatcher`] over the stage slices `net`.
struct StageQueues<'m, N: StageSlices> {
    model: &'m MultiExitModel,
    net: &'m N,
    /// MACs per exit (earlier heads included) and of the plain backbone.
    exit_macs: Vec<u64>,
    backbone_macs: u64,
    policy: Policy,
    batch: usize,
    queues: Vec<Vec<Part<N::State>>>,
    queued: Vec<usize>,
    answered: Vec<Answered>,
    whole: Vec<(usize, Answers)>,
    pushed: usize,
    stats: StageRuns,
}

impl<N: StageSlices> StageQueues<'_, N> {
    /// Runs the stages whose queue holds a full batch (all queued samples when `flush`), in
    /// stage order so that survivors move on in the same pass.
    fn drain(&mut self, flush: bool) {
        for k in 0..self.queues.len() {
            while self.queued[k] >= self.batch || (flush && self.queued[k] > 0) {
                let mut part = Part::cat(self.net, std::mem::take(&mut self.queues[k]));
                let m = self.batch.min(self.queued[k]);
                if part.rows.len() > m {
                    let (head, rest) = part.split(self.net, m);
                    self.queues[k].push(rest);
                    part = head;
                }
                self.queued[k] -= m;
                self.stats.runs[k] += 1;
                self.stats.samples[k] += m;
                if let Some(s) = step(self.net, k, part, &self.policy, &mut self.answered) {
                    self.queued[k + 1] += s.rows.len();
                    self.queues[k + 1].push(s);
                }
            }
        }
    }
}

impl<N: StageSlices> Queues for StageQueues<'_, N> {
    fn push(&mut self, x: Tensor<4>) -> Result<()> {
        check_input(&x, self.model.arch.description.input)?;
        let [n, ..] = x.dims();
        if n == 0 {
            return Ok(());
        }
        if matches!(self.policy, Policy::Never | Policy::Ensemble) {
            // No per-sample exit: the batch runs whole (`ensemble` mixes every exit: the Burn
            // module's).
            let a = match self.policy {
                Policy::Never => {
                    let classes = self.model.arch.description.classes;
                    let state = self.net.start(x)?;
                    let macs = (&self.exit_macs[..], self.backbone_macs);
                    exit_loop(self.net, state, n, classes, &Policy::Never, macs)
                }
                _ => self.model.infer(x, &self.policy)?,
            };
            self.whole.push((self.pushed, a));
            self.pushed += n;
            return Ok(());
        }
        self.queues[0].push(Part {
            state: self.net.start(x)?,
            pstate: PolicyState::new(),
            rows: (self.pushed..self.pushed + n).collect(),
            best: None,
        });
        self.queued[0] += n;
        self.pushed += n;
        self.drain(false);
        Ok(())
    }

    fn pushed(&self) -> usize {
        self.pushed
    }

    fn queued(&self) -> &[usize] {
        &self.queued
    }

    fn stats(&self) -> &StageRuns {
        &self.stats
    }

    fn finish(mut self: Box<Self>) -> (Answers, StageRuns) {
        self.drain(true);
        let classes = self.model.arch.description.classes;
        let answered = std::mem::take(&mut self.answered);
        let mut out = assemble(self.pushed, classes, answered, |e| self.exit_macs[e]);
        for (start, a) in std::mem::take(&mut self.whole) {
            for i in 0..a.len() {
                let r = start + i;
                out.class[r] = a.class[i];
                out.probs[r * classes..(r + 1) * classes].copy_from_slice(a.probs_of(i));
                out.exit[r] = a.exit[i];
                out.confidence[r] = a.confidence[i];
                out.macs[r] = a.macs[i];
            }
        }
        (out, std::mem::take(&mut self.stats))
    }
}

fn index_tensor(idx: &[usize], device: &burn::tensor::Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(v, [idx.len()]), device)
}

/// Every exit's answers placed in input order.
fn assemble(n: usize, classes: usize, answered: Vec<Answered>, macs_of: impl Fn(usize) -> u64) -> Answers {
    let mut out = Answers::unanswered(n, classes);
    for a in &answered {
        for (j, &r) in a.rows.iter().enumerate() {
            let p = &a.probs[j * classes..(j + 1) * classes];
            out.probs[r * classes..(r + 1) * classes].copy_from_slice(p);
            out.class[r] = argmax(p);
            out.exit[r] = a.exit;
            out.confidence[r] = a.score[j];
            out.macs[r] = macs_of(a.exit);
        }
    }
    out
}

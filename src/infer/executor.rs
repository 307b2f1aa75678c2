//! The executor: one model and the code that runs it, chosen in one place ([`Executor::new`]).
//!
//! Why: the compiled CPU path is several times faster than the Burn module on the CPU (see
//! `earlyexit perf`), so a deployment on the CPU runs it and measured speed-ups must be measured
//! on it; but it runs only the blocks and heads it knows, and only on the host. Every command
//! that runs a model (`eval`, `bench`, `quickstart`, `serve`, …) builds an [`Executor`] from the
//! user's [`ExecChoice`] and reports [`Executor::implementation`] (and, when `auto` fell back,
//! [`Executor::fallback`]) with its figures.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use earlyexit::ExecChoice;
//! use earlyexit::infer::{Executor, Implementation, MultiExitModel};
//! use earlyexit::model::{ModelDescription, Shape};
//!
//! let device = Device::flex();
//! let desc = ModelDescription::new("resnet20", Shape::new(3, 32, 32), 10, "pareto:2".parse()?);
//! let model = MultiExitModel::new(desc.resolve()?, &device);
//! let exec = Executor::new(model, &device, ExecChoice::Auto)?;
//! assert_eq!(exec.implementation(), Implementation::Compiled);
//! let x = Tensor::<4>::random([3, 3, 32, 32], Distribution::Default, &device);
//! assert_eq!(exec.infer(x, &"maxprob:0.9".parse()?)?.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::Range;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::compiled::CompiledNet;
use super::engine::{Answered, Answers, BestSoFar, HostState, MultiExitModel, Part, Rebatcher, StageSlices, run_slice};
use crate::choice::ExecChoice;
use crate::error::{Error, Result};
use crate::policy::{ExitLogits, Policy, PolicyState};
use earlyexit_kernels::ConvKernel;

/// The code that runs a model, as reports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Implementation {
    /// [`CompiledNet`] with the direct convolution kernels where the CPU has them.
    Compiled,
    /// [`CompiledNet`] with im2col + GEMM for every convolution.
    CompiledGemm,
    /// The Burn module (on the device the report names).
    Burn,
}

impl std::fmt::Display for Implementation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Compiled => "compiled",
            Self::CompiledGemm => "compiled-gemm",
            Self::Burn => "burn",
        })
    }
}

/// A model with the code that runs it.
#[derive(Debug)]
pub struct Executor {
    model: MultiExitModel,
    device: Device,
    compiled: Option<Box<CompiledNet>>,
    implementation: Implementation,
    fallback: Option<String>,
}

impl Executor {
    /// Chooses the implementation for `model` (which lives on `device`):
    ///
    /// - `auto`: the compiled path when `device` is the CPU (`flex`) and [`CompiledNet::compile`]
    ///   accepts the model, the Burn module otherwise (the reason in [`Executor::fallback`]);
    /// - `compiled`, `compiled-gemm`: the compiled path, or an error naming what it cannot run;
    /// - `burn` (and `libtorch`, whose device is [`ExecChoice::device`]): the Burn module.
    pub fn new(model: MultiExitModel, device: &Device, choice: ExecChoice) -> Result<Self> {
        let on_cpu = *device == Device::flex();
        let compile = |kernel| -> Result<CompiledNet> {
            if !on_cpu {
                return Err(Error::invalid(
                    "path",
                    format!("the compiled path runs on the CPU; the model lives on {device:?}"),
                ));
            }
            CompiledNet::compile_with(&model, kernel)
        };
        let (compiled, implementation, fallback) = match choice {
            ExecChoice::Auto => match compile(ConvKernel::Auto) {
                Ok(c) => (Some(c), Implementation::Compiled, None),
                Err(e) => (None, Implementation::Burn, Some(e.to_string())),
            },
            ExecChoice::Compiled => (Some(compile(ConvKernel::Auto)?), Implementation::Compiled, None),
            ExecChoice::CompiledGemm => (Some(compile(ConvKernel::Gemm)?), Implementation::CompiledGemm, None),
            ExecChoice::Burn => (None, Implementation::Burn, None),
            #[cfg(feature = "tch")]
            ExecChoice::Libtorch => {
                if *device != Device::libtorch() {
                    return Err(Error::invalid(
                        "path",
                        "`libtorch` runs a model loaded on the LibTorch device (ExecChoice::device)",
                    ));
                }
                (None, Implementation::Burn, None)
            }
        };
        Ok(Self {
            model,
            device: device.clone(),
            compiled: compiled.map(Box::new),
            implementation,
            fallback,
        })
    }

    /// The code that runs the model.
    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// Why `auto` did not pick the compiled path, if it did not.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// `compiled (ISA kernels)`, `compiled-gemm` or `burn (DEVICE)`, with the fallback reason:
    /// for reports. The ISA is the one the kernels use here (`EARLYEXIT_CPU` narrows it).
    pub fn describe(&self) -> String {
        let mut s = match self.implementation {
            Implementation::Burn if self.device == Device::flex() => "burn (CPU, flex)".to_string(),
            Implementation::Burn => format!("burn ({:?})", self.device),
            Implementation::Compiled => format!("compiled ({} kernels)", earlyexit_kernels::Isa::selected().name()),
            i => i.to_string(),
        };
        if let Some(why) = &self.fallback {
            s += &format!("; the compiled path does not run it: {why}");
        }
        s
    }

    /// The model (the Burn module: descriptions, costs, stage slices).
    pub fn model(&self) -> &MultiExitModel {
        &self.model
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Gives the model back.
    pub fn into_model(self) -> MultiExitModel {
        self.model
    }

    /// Real per-sample early exit on a batch (see [`MultiExitModel::infer`]).
    ///
    /// # Shapes
    /// - `x`: `[N, C, H, W]`, the model's input shape; the answers hold `N` rows.
    pub fn infer(&self, x: Tensor<4>, policy: &Policy) -> Result<Answers> {
        match self.compiled_for(policy) {
            Some(c) => c.infer(x, policy),
            None => self.model.infer(x, policy),
        }
    }

    /// Per-stage re-batching queues ([`Rebatcher`]) on the code this executor runs.
    ///
    /// # Errors
    /// A policy that does not fit the model; `batch` of 0.
    pub fn rebatcher(&self, policy: &Policy, batch: usize) -> Result<Rebatcher<'_>> {
        match self.compiled_for(policy) {
            Some(c) => Rebatcher::over(&self.model, c, policy, batch),
            None => Rebatcher::over(&self.model, &self.model.net, policy, batch),
        }
    }

    /// Per-sample early exit over a stream of batches with the survivors re-batched per stage
    /// (see [`MultiExitModel::infer_stream`]), on the code this executor runs.
    ///
    /// # Errors
    /// As [`Self::infer`]; `batch` of 0.
    pub fn infer_stream(
        &self,
        batches: impl IntoIterator<Item = Tensor<4>>,
        policy: &Policy,
        batch: usize,
    ) -> Result<Answers> {
        self.rebatcher(policy, batch)?.run(batches)
    }

    /// The compiled network when it answers `policy`: `ensemble` runs every head on every
    /// sample, a mixture the compiled per-sample loop does not compute, so the Burn module
    /// answers it.
    fn compiled_for(&self, policy: &Policy) -> Option<&CompiledNet> {
        self.compiled.as_deref().filter(|_| !matches!(policy, Policy::Ensemble))
    }

    /// `f` on the stage slices of the code this executor runs (stage-by-stage work that has no
    /// policy: timing).
    pub(crate) fn with_stages<F: OnStages>(&self, f: F) -> F::Output {
        match &self.compiled {
            Some(c) => f.on(&**c),
            None => f.on(&self.model.net),
        }
    }

    /// Every exit's output on every sample (final classifier last), on the host: what score
    /// tables and calibration read, computed by the code that will answer in deployment.
    ///
    /// # Shapes
    /// - `x`: `[N, C, H, W]`, the model's input shape; `num_exits + 1` outputs of `N` rows.
    pub fn exit_outputs(&self, x: Tensor<4>) -> Result<Vec<ExitLogits>> {
        crate::model::check_input(&x, self.model.arch.description.input)?;
        self.with_stages(EveryExit { x })
    }

    /// Stages `stages` of the per-sample exit loop on samples that enter at `stages.start` from
    /// the host (a tier's slice; `pstate` and `best` come with them from the previous tier): the
    /// samples that leave, and the survivors after the slice's last stage, back on the host.
    pub(crate) fn run_slice(
        &self,
        input: HostState,
        stages: Range<usize>,
        policy: &Policy,
        pstate: PolicyState,
        best: Vec<Option<BestSoFar>>,
    ) -> SliceOutcome {
        self.with_stages(Slice {
            input,
            stages,
            policy,
            pstate,
            best,
            device: &self.device,
        })
    }

    /// The plain network (no exit evaluated): class probabilities, row-major `[N, classes]`, on
    /// the host — the work a network without exits does per batch.
    ///
    /// # Shapes
    /// - `x`: `[N, C, H, W]`.
    pub fn forward_plain(&self, x: Tensor<4>) -> Result<Vec<f32>> {
        match &self.compiled {
            Some(c) => {
                let mut logits = c.forward_backbone(x)?;
                softmax_rows(&mut logits, self.model.arch.description.classes);
                Ok(logits)
            }
            None => {
                crate::model::check_input(&x, self.model.arch.description.input)?;
                softmax(self.model.net.forward_backbone(x), 1)
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| Error::invalid("tensor", format!("{e:?}")))
            }
        }
    }
}

/// Work generic over the code that runs a model's stages ([`Executor::with_stages`]).
pub(crate) trait OnStages {
    /// What the work returns.
    type Output;
    /// The work on `net`'s stage slices.
    fn on<N: StageSlices>(self, net: &N) -> Self::Output;
}

/// [`Executor::exit_outputs`] on one implementation's stage slices.
struct EveryExit {
    x: Tensor<4>,
}

impl OnStages for EveryExit {
    type Output = Result<Vec<ExitLogits>>;
    fn on<N: StageSlices>(self, net: &N) -> Self::Output {
        let mut state = net.start(self.x)?;
        let mut outs = Vec::with_capacity(net.num_exits() + 1);
        for k in 0..=net.num_exits() {
            state = net.run_stage(k, state);
            outs.push(net.exit(k, &state));
        }
        Ok(outs)
    }
}

/// What a slice of stages ([`Executor::run_slice`]) made of the samples that entered it.
pub(crate) struct SliceOutcome {
    /// The samples that left at the slice's exits (rows index the input).
    pub answered: Vec<Answered>,
    /// The samples that went through every exit of the slice, if any.
    pub survivors: Option<Survivors>,
}

/// Samples that leave a slice of stages without an answer, ready to travel on.
pub(crate) struct Survivors {
    /// Their rows in the slice's input.
    pub rows: Vec<usize>,
    pub state: HostState,
    pub pstate: PolicyState,
    pub best: Vec<Option<BestSoFar>>,
}

/// [`Executor::run_slice`] on one implementation's stage slices.
struct Slice<'a> {
    input: HostState,
    stages: Range<usize>,
    policy: &'a Policy,
    pstate: PolicyState,
    best: Vec<Option<BestSoFar>>,
    device: &'a Device,
}

impl OnStages for Slice<'_> {
    type Output = SliceOutcome;
    fn on<N: StageSlices>(self, net: &N) -> SliceOutcome {
        let n = self.input.dims[0];
        let mut part = Part::new(net.state_from_host(self.input, self.device), n);
        part.pstate = self.pstate;
        part.best = Some(self.best);
        let mut answered = Vec::new();
        let survivors = run_slice(net, part, self.stages, self.policy, &mut answered).map(|p| Survivors {
            rows: p.rows,
            state: net.state_to_host(p.state),
            pstate: p.pstate,
            best: p.best.unwrap_or_default(),
        });
        SliceOutcome { answered, survivors }
    }
}

/// Softmax of every `classes`-wide row of `v`, in place.
fn softmax_rows(v: &mut [f32], classes: usize) {
    for row in v.chunks_mut(classes.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for p in row.iter_mut() {
            *p = (*p - max).exp();
            sum += *p;
        }
        for p in row.iter_mut() {
            *p /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelDescription, Shape};
    use burn::tensor::{Distribution, TensorData};

    fn model(name: &str, exits: &str) -> MultiExitModel {
        let input = if name == "eenet8" {
            Shape::new(1, 28, 28)
        } else {
            Shape::new(3, 32, 32)
        };
        let desc = ModelDescription::new(name, input, 10, exits.parse().unwrap());
        MultiExitModel::new(desc.resolve().unwrap(), &Device::flex())
    }

    #[test]
    fn auto_compiles_what_it_can_and_says_why_not() {
        let cpu = Device::flex();
        let e = Executor::new(model("resnet20", "pareto:2"), &cpu, ExecChoice::Auto).unwrap();
        assert_eq!((e.implementation(), e.fallback()), (Implementation::Compiled, None));
        let b = Executor::new(model("resnet20", "pareto:2"), &cpu, ExecChoice::Burn).unwrap();
        assert_eq!(b.implementation(), Implementation::Burn);
        // Every zoo model runs compiled, EENet-8's pre-activation blocks too.
        let pre = Executor::new(model("eenet8", "cuts:1"), &cpu, ExecChoice::Auto).unwrap();
        assert_eq!((pre.implementation(), pre.fallback()), (Implementation::Compiled, None));
        // A dilated convolution (as an imported model might have) has no kernel: auto falls
        // back to the Burn module with the reason, and insisting on the compiled path is an error.
        let mut dilated = model("resnet20", "pareto:2");
        if let crate::model::layers::Block::Conv(stem) = &mut dilated.net.backbone.blocks[0] {
            stem.layers[0].conv.dilation = [2, 2];
        }
        let fell_back = Executor::new(dilated.clone(), &cpu, ExecChoice::Auto).unwrap();
        assert_eq!(fell_back.implementation(), Implementation::Burn);
        assert!(
            fell_back
                .fallback()
                .is_some_and(|w| w.contains("block 0") && w.contains("dilated")),
            "{fell_back:?}"
        );
        assert!(
            fell_back.describe().contains("does not run it"),
            "{}",
            fell_back.describe()
        );
        let forced = Executor::new(dilated, &cpu, ExecChoice::Compiled);
        assert!(forced.is_err());
    }

    const SEED: u64 = 7;

    /// `n` inputs of `shape`, uniform in [0, 1), from `seed`.
    fn seeded_input(n: usize, shape: Shape, seed: u64, device: &Device) -> Tensor<4> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..n * shape.c * shape.h * shape.w).map(|_| rng.random()).collect();
        Tensor::from_data(TensorData::new(v, [n, shape.c, shape.h, shape.w]), device)
    }

    /// Runs `exec`'s stages as consecutive slices (as a chain of tiers does), passing the
    /// survivors on through the host; returns each sample's (class, exit).
    fn chained(exec: &Executor, x: Tensor<4>, policy: &Policy, slices: &[Range<usize>]) -> Vec<(usize, usize)> {
        let [n, c, h, w] = x.dims();
        let mut input = HostState {
            x: crate::cpu::host(x),
            dims: [n, c, h, w],
            pooled: Vec::new(),
        };
        let (mut rows, mut pstate, mut best): (Vec<usize>, _, _) =
            ((0..n).collect(), PolicyState::new(), vec![None; n]);
        let mut out = vec![(usize::MAX, usize::MAX); n];
        for range in slices {
            let o = exec.run_slice(input, range.clone(), policy, pstate, best);
            for a in &o.answered {
                let classes = exec.model().arch.description.classes;
                for (i, &r) in a.rows.iter().enumerate() {
                    out[rows[r]] = (crate::policy::argmax(&a.probs[i * classes..(i + 1) * classes]), a.exit);
                }
            }
            let Some(s) = o.survivors else { break };
            assert!(s.best.iter().all(Option::is_some), "a survivor has passed an exit");
            rows = s.rows.iter().map(|&r| rows[r]).collect();
            (input, pstate, best) = (s.state, s.pstate, s.best);
        }
        out
    }

    #[test]
    fn stage_slices_chained_through_the_host_answer_as_the_whole_loop() {
        let cpu = Device::flex();
        let input = Shape::new(1, 28, 28);
        // `dense` heads carry the pooled history between slices; patience carries its streaks.
        let mut desc = ModelDescription::new("lenet5", input, 10, "every".parse().unwrap());
        desc.head = crate::model::HeadKind::Dense;
        let arch = desc.resolve().unwrap();
        let mut net = arch.init_seeded(&cpu, SEED);
        // Exits 0 and 1 lean to class 0, so patience:2 sends samples out at exit 1, right after
        // the first slice boundary (random heads otherwise each predict their own class).
        for head in &mut net.heads[..2] {
            let b = head.classifier.bias.take().expect("a biased classifier");
            let lean = Tensor::<1>::from_data(TensorData::new(vec![3.0f32], [1]), &cpu).pad([(0, 9)], 0.0);
            head.classifier.bias = Some(b.map(|b| b + lean));
        }
        let m = MultiExitModel { arch, net };
        let stages = m.net.num_stages();
        assert!(stages >= 4, "{stages}");
        let x = seeded_input(40, input, SEED, &cpu);
        let fitted = crate::bench::forced_thresholds(&m, x.clone(), &vec![0.2; stages - 1]).unwrap();
        for choice in [ExecChoice::Burn, ExecChoice::Compiled] {
            let e = Executor::new(m.clone(), &cpu, choice).unwrap();
            for policy in [fitted.clone(), "patience:2".parse().unwrap()] {
                let whole = e.infer(x.clone(), &policy).unwrap();
                let expected: Vec<(usize, usize)> =
                    whole.class.iter().copied().zip(whole.exit.iter().copied()).collect();
                let got = chained(&e, x.clone(), &policy, &[0..1, 1..3, 3..stages]);
                assert_eq!(got, expected, "{choice:?}, {policy}");
                // Samples leave right after a slice boundary, so what is carried across
                // (patience's streaks, the pooled history) decides them.
                let exits: std::collections::BTreeSet<usize> = whole.exit.iter().copied().collect();
                assert!(exits.contains(&1), "{policy}: exits {exits:?}");
            }
        }
    }

    #[test]
    fn implementations_agree_on_answers_and_plain_probabilities() {
        let cpu = Device::flex();
        let x = Tensor::<4>::random([5, 3, 32, 32], Distribution::Normal(0.0, 1.0), &cpu);
        let m = model("resnet20", "pareto:2");
        let policy: Policy = "maxprob:0.2".parse().unwrap();
        let mut answers = Vec::new();
        let mut plain = Vec::new();
        for choice in [ExecChoice::Burn, ExecChoice::Compiled, ExecChoice::CompiledGemm] {
            let e = Executor::new(m.clone(), &cpu, choice).unwrap();
            answers.push(e.infer(x.clone(), &policy).unwrap());
            plain.push(e.forward_plain(x.clone()).unwrap());
            // `ensemble` has no compiled loop: the executor answers it on the Burn module.
            assert_eq!(e.infer(x.clone(), &Policy::Ensemble).unwrap().len(), 5);
        }
        for (a, p) in answers.iter().zip(&plain).skip(1) {
            assert_eq!(a.exit, answers[0].exit);
            assert_eq!(a.class, answers[0].class);
            for (u, v) in p.iter().zip(&plain[0]) {
                assert!((u - v).abs() < 1e-4, "{u} vs {v}");
            }
        }
        let sums: Vec<f32> = plain[1].chunks(10).map(|r| r.iter().sum()).collect();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        let wrong = Tensor::<4>::from_data(TensorData::new(vec![0.0f32; 28 * 28], [1, 1, 28, 28]), &cpu);
        let e = Executor::new(m, &cpu, ExecChoice::Burn).unwrap();
        assert!(e.forward_plain(wrong).is_err());
    }
}

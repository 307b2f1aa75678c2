//! A tier: a slice of stages with their exits, run on batches by one worker thread, and the
//! forwarding of samples that no exit of the slice takes to the next tier.
//!
//! The worker never waits on the network. After a batch it answers every request whose samples
//! all left at this tier's exits; the survivors of the batch go, as one `Forward` call, to the
//! next tier from an async task, which retries with exponential backoff while the deadline
//! allows. When the next tier is unreachable, refuses, or is past the deadline, each survivor is
//! answered with the most confident exit reached so far, flagged `degraded`. Every request gets
//! exactly one reply.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor, TensorData};
use prost::Message;
use tokio::sync::oneshot;

use super::batcher::{BatchConfig, Batchable, Gatherer};
use super::breaker::{Breaker, BreakerConfig};
use super::client::{ConnectOptions, TierClient};
use super::codec::{WireFormat, encode};
use super::error::{ServeError, ServeResult};
use super::metrics::Metrics;
use super::proto;
use crate::choice::ExecChoice;
use crate::infer::engine::{BestSoFar, HostState};
use crate::infer::executor::{SliceOutcome, Survivors};
use crate::infer::{Executor, MultiExitModel, Policy, PolicyState, argmax};
use crate::model::{HeadKind, Shape};

/// A half-open range of stages: `A..B`, or `A..` to the last stage.
///
/// ```
/// use earlyexit::serve::tier::StageRange;
/// let r: StageRange = "1..".parse()?;
/// assert_eq!(r.resolve(3)?, 1..3);
/// assert_eq!("0..2".parse::<StageRange>()?.to_string(), "0..2");
/// assert!("2..2".parse::<StageRange>().is_err());
/// assert!("0..4".parse::<StageRange>()?.resolve(3).is_err());
/// # Ok::<(), earlyexit::serve::ServeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageRange {
    /// First stage.
    pub start: usize,
    /// One past the last stage; `None`: to the end.
    pub end: Option<usize>,
}

impl StageRange {
    /// Every stage.
    pub const ALL: StageRange = StageRange { start: 0, end: None };

    /// The concrete range for a network of `num_stages` stages.
    pub fn resolve(&self, num_stages: usize) -> ServeResult<Range<usize>> {
        let end = self.end.unwrap_or(num_stages);
        if self.start >= end || end > num_stages {
            return Err(ServeError::invalid(format!(
                "stages {self} do not fit a network of {num_stages} stages (0..{num_stages})"
            )));
        }
        Ok(self.start..end)
    }
}

impl FromStr for StageRange {
    type Err = ServeError;
    fn from_str(s: &str) -> ServeResult<Self> {
        let bad = || ServeError::invalid(format!("stages `{s}`: expected A..B (half-open) or A.."));
        let (a, b) = s.split_once("..").ok_or_else(bad)?;
        let start: usize = a.trim().parse().map_err(|_| bad())?;
        let end = match b.trim() {
            "" => None,
            b => Some(b.parse::<usize>().map_err(|_| bad())?),
        };
        if end.is_some_and(|e| e <= start) {
            return Err(ServeError::invalid(format!("stages `{s}` are empty")));
        }
        Ok(StageRange { start, end })
    }
}

impl fmt::Display for StageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(e) => write!(f, "{}..{e}", self.start),
            None => write!(f, "{}..", self.start),
        }
    }
}

/// Size limits on what a request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded request, bytes (larger ones: `INVALID_ARGUMENT`).
    pub max_request_bytes: usize,
    /// Most samples in one request.
    pub max_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_samples: 1024,
        }
    }
}

/// Where and how to forward survivors.
#[derive(Clone, Debug)]
pub struct NextTier {
    /// Address (`HOST:PORT`) of the next tier.
    pub addr: String,
    /// TLS and token for the connection.
    pub connect: ConnectOptions,
    /// How activations travel.
    pub wire: WireFormat,
    /// Retries after the first attempt (unavailable or overloaded next tier).
    pub retries: u32,
    /// First backoff; doubled after each retry.
    pub backoff: Duration,
    /// When to stop trying a next tier that keeps failing, and how to probe it.
    pub breaker: BreakerConfig,
}

impl NextTier {
    /// Defaults: f32, no compression, 3 retries from 20 ms, the default circuit breaker.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            connect: ConnectOptions::default(),
            wire: WireFormat::default(),
            retries: 3,
            backoff: Duration::from_millis(20),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Everything a tier (or a whole-model server) is configured with.
#[derive(Clone, Debug)]
pub struct TierOptions {
    /// Name reported in answers and metrics.
    pub name: String,
    /// The model's name in the Open Inference Protocol (`/v2/models/{name}`, `model_name`):
    /// letters, digits, `.`, `_` and `-`.
    pub model_name: String,
    /// Stages this tier runs.
    pub stages: StageRange,
    /// Exit policy.
    pub policy: Policy,
    /// Dynamic batching.
    pub batch: BatchConfig,
    /// Request limits.
    pub limits: Limits,
    /// The next tier, if any; without one the tier must hold the last stage.
    pub next: Option<NextTier>,
    /// Deadline of requests that carry none.
    pub default_deadline: Duration,
    /// Per-channel normalisation applied to decoded PNG/JPEG images after scaling to `[0, 1]`
    /// (the training run's); tensors are taken as they come.
    pub normalize: Option<crate::data::Normalize>,
    /// Which code answers ([`ExecChoice::Auto`]: the compiled CPU path where it runs the model,
    /// whole or a slice of its stages).
    pub path: ExecChoice,
}

impl TierOptions {
    /// Checks what can be checked without the model (before it is loaded): a batch, a request
    /// size and a sample count of 0 would start a server that refuses everything.
    pub fn check(&self) -> ServeResult<()> {
        if self.batch.max_batch == 0 {
            return Err(ServeError::invalid("--max-batch must be at least 1"));
        }
        if self.limits.max_samples == 0 {
            return Err(ServeError::invalid("--max-samples must be at least 1"));
        }
        if self.limits.max_request_bytes == 0 {
            return Err(ServeError::invalid("--max-request-bytes must be at least 1"));
        }
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.model_name.is_empty() || self.model_name.len() > 128 || !self.model_name.chars().all(name_ok) {
            return Err(ServeError::invalid(format!(
                "model name `{}`: 1 to 128 letters, digits, `.`, `_` or `-` (it is part of the /v2/models/NAME URLs)",
                self.model_name
            )));
        }
        Ok(())
    }

    /// A whole-model server named `serve` (its model named `model`) with default batching and
    /// limits.
    pub fn whole(policy: Policy) -> Self {
        Self {
            name: "serve".into(),
            model_name: "model".into(),
            stages: StageRange::ALL,
            policy,
            batch: BatchConfig::default(),
            limits: Limits::default(),
            next: None,
            default_deadline: Duration::from_secs(30),
            normalize: None,
            path: ExecChoice::Auto,
        }
    }
}

/// The samples of one request, on the host, ready for the worker.
#[derive(Debug)]
pub(crate) struct JobInput {
    /// Stage to run first.
    pub start: usize,
    /// `[N, C, H, W]` values.
    pub x: Vec<f32>,
    pub x_dims: [usize; 4],
    /// Pooled history, each `[N, D]`: values and `D`.
    pub pooled: Vec<(Vec<f32>, usize)>,
    pub best: Vec<Option<BestSoFar>>,
    /// Patience state from the previous tier.
    pub policy_state: Option<(Vec<i64>, Vec<i64>)>,
    pub ids: Vec<u64>,
}

impl JobInput {
    pub fn len(&self) -> usize {
        self.x_dims[0]
    }
}

/// A request waiting for the worker.
pub(crate) struct Job {
    pub input: JobInput,
    pub deadline: Instant,
    pub queued: Instant,
    pub reply: oneshot::Sender<ServeResult<Vec<proto::Answer>>>,
}

impl Batchable for Job {
    fn samples(&self) -> usize {
        self.input.len()
    }
    fn queued_at(&self) -> Instant {
        self.queued
    }
}

/// Survivors of a batch on their way to the next tier.
pub(crate) struct PendingForward {
    /// `(job, sample)` of each survivor, in request order.
    pub rows: Vec<(usize, usize)>,
    pub request: proto::ForwardRequest,
    pub best: Vec<BestSoFar>,
    /// The last exit the survivors went through.
    pub reached_exit: usize,
}

/// What the worker made of a batch.
pub(crate) struct Outcome {
    /// Per job, per sample: the answer if this tier gave one.
    pub slots: Vec<Vec<Option<proto::Answer>>>,
    pub forward: Vec<PendingForward>,
}

/// The model slice a worker runs.
pub(crate) struct Engine {
    /// The model and the code that runs it.
    pub exec: Executor,
    pub range: Range<usize>,
    pub policy: Policy,
    pub name: String,
    pub exit_macs: Vec<u64>,
    pub device: Device,
    pub wire: WireFormat,
    pub model_id: String,
    /// Holds every stage and forwards nothing: the executor's `infer` answers Classify.
    pub whole: bool,
}

impl Engine {
    /// A sample's answer. One whose probabilities or confidence are not finite (an input value
    /// finite but too large for the network, which overflows) is flagged degraded with the
    /// reason, never answered as a plain OK.
    fn answer(&self, id: u64, exit: usize, probs: Vec<f32>, confidence: f32) -> proto::Answer {
        let finite = confidence.is_finite() && probs.iter().all(|p| p.is_finite());
        proto::Answer {
            id,
            class: argmax(&probs) as u32,
            probs,
            exit: exit as u32,
            tier: self.name.clone(),
            confidence,
            macs: self.exit_macs[exit],
            degraded: !finite,
            reason: if finite {
                String::new()
            } else {
                format!("the network's output at exit {exit} is not finite: an input value overflows it")
            },
        }
    }

    /// Runs a batch of jobs (grouped by their first stage).
    pub fn run(&self, jobs: &[&JobInput]) -> ServeResult<Outcome> {
        let mut slots: Vec<Vec<Option<proto::Answer>>> = jobs.iter().map(|j| vec![None; j.len()]).collect();
        let mut forward = Vec::new();
        let mut starts: Vec<usize> = jobs.iter().map(|j| j.start).collect();
        starts.sort_unstable();
        starts.dedup();
        for start in starts {
            let members: Vec<usize> = (0..jobs.len()).filter(|&j| jobs[j].start == start).collect();
            if let Some(f) = self.run_group(jobs, &members, &mut slots)? {
                forward.push(f);
            }
        }
        Ok(Outcome { slots, forward })
    }

    fn run_group(
        &self,
        jobs: &[&JobInput],
        members: &[usize],
        slots: &mut [Vec<Option<proto::Answer>>],
    ) -> ServeResult<Option<PendingForward>> {
        let first = jobs[members[0]];
        let start = first.start;
        let [_, c, h, w] = first.x_dims;
        let n: usize = members.iter().map(|&j| jobs[j].len()).sum();
        let mut rows: Vec<(usize, usize)> = Vec::with_capacity(n);
        let mut x = Vec::with_capacity(n * c * h * w);
        let mut ids = Vec::with_capacity(n);
        let mut best: Vec<Option<BestSoFar>> = Vec::with_capacity(n);
        for &j in members {
            let job = jobs[j];
            rows.extend((0..job.len()).map(|s| (j, s)));
            x.extend_from_slice(&job.x);
            ids.extend_from_slice(&job.ids);
            best.extend(job.best.iter().cloned());
        }
        if self.whole && start == 0 {
            let x = Tensor::<4>::from_data(TensorData::new(x, [n, c, h, w]), &self.device);
            let a = self.exec.infer(x, &self.policy)?;
            for (i, &(j, s)) in rows.iter().enumerate() {
                let mut ans = self.answer(ids[i], a.exit[i], a.probs_of(i).to_vec(), a.confidence[i]);
                ans.class = a.class[i] as u32;
                ans.macs = a.macs[i];
                slots[j][s] = Some(ans);
            }
            return Ok(None);
        }

        let pooled: Vec<(Vec<f32>, usize)> = (0..first.pooled.len())
            .map(|p| {
                let d = first.pooled[p].1;
                let mut v = Vec::with_capacity(n * d);
                for &j in members {
                    v.extend_from_slice(&jobs[j].pooled[p].0);
                }
                (v, d)
            })
            .collect();
        let pstate = if members.iter().all(|&j| jobs[j].policy_state.is_some()) && start > 0 {
            let (mut prev, mut streak) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for &j in members {
                let (p, s) = jobs[j].policy_state.as_ref().expect("checked");
                prev.extend_from_slice(p);
                streak.extend_from_slice(s);
            }
            PolicyState::from_parts(prev, streak)?
        } else {
            PolicyState::new()
        };
        let input = HostState {
            x,
            dims: [n, c, h, w],
            pooled,
        };
        let SliceOutcome { answered, survivors } =
            self.exec
                .run_slice(input, self.range.clone(), &self.policy, pstate, best);
        let classes = self.exec.model().arch.description.classes;
        for a in answered {
            for (i, &r) in a.rows.iter().enumerate() {
                let (j, s) = rows[r];
                let probs = a.probs[i * classes..(i + 1) * classes].to_vec();
                slots[j][s] = Some(self.answer(ids[r], a.exit, probs, a.score[i]));
            }
        }
        let Some(Survivors {
            rows: alive,
            state,
            pstate,
            best,
        }) = survivors
        else {
            return Ok(None);
        };
        // Survivors: to the next tier.
        let m = alive.len();
        let pooled = state
            .pooled
            .iter()
            .map(|(v, d)| encode(v, &[m, *d], self.wire))
            .collect();
        let (prev_class, streak) = match pstate.parts() {
            Some((p, s)) => (p.to_vec(), s.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        let best: Vec<BestSoFar> = best
            .into_iter()
            .map(|b| b.expect("every tier has an exit, so survivors have a best answer"))
            .collect();
        let request = proto::ForwardRequest {
            ids: alive.iter().map(|&r| ids[r]).collect(),
            stage: self.range.end as u32,
            x: Some(encode(&state.x, &state.dims, self.wire)),
            pooled,
            best: best
                .iter()
                .map(|b| proto::BestSoFar {
                    exit: b.exit as u32,
                    confidence: b.confidence,
                    probs: b.probs.clone(),
                })
                .collect(),
            prev_class,
            streak,
            model_id: self.model_id.clone(),
        };
        Ok(Some(PendingForward {
            rows: alive.iter().map(|&r| rows[r]).collect(),
            request,
            best,
            reached_exit: self.range.end - 1,
        }))
    }
}

/// What the async side needs to forward and reply.
pub(crate) struct Forwarding {
    pub next: Option<(TierClient, NextTier)>,
    pub metrics: Arc<Metrics>,
    pub name: String,
    pub exit_macs: Vec<u64>,
    /// Failures in a row of the next tier: while any, calls try once without backoff; after
    /// [`BreakerConfig::failures`] survivors are answered degraded at once until a background
    /// probe finds the tier answering again.
    pub breaker: Arc<Breaker>,
}

fn reserve(remaining: Duration) -> Duration {
    (remaining / 10).clamp(Duration::from_millis(2), Duration::from_millis(50))
}

impl Forwarding {
    /// Sends one batch of survivors, retrying while the deadline allows. `Err` carries why the
    /// answers must be degraded.
    pub async fn send(&self, req: proto::ForwardRequest, deadline: Instant) -> Result<Vec<proto::Answer>, String> {
        let Some((client, cfg)) = &self.next else {
            return Err("no next tier configured".into());
        };
        if let Err(why) = self.breaker.admit() {
            self.metrics.forward_attempt("circuit_open");
            return Err(format!("{}: {why}", cfg.addr));
        }
        let bytes = req.encoded_len();
        let retries = if self.breaker.failing() { 0 } else { cfg.retries };
        let mut attempt = 0u32;
        loop {
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            let budget = remaining.saturating_sub(reserve(remaining));
            if budget.is_zero() {
                self.metrics.forward_attempt("no_time");
                return Err("deadline reached before the next tier answered".into());
            }
            let started = Instant::now();
            let result = tokio::time::timeout(budget, client.forward(req.clone(), budget)).await;
            // A deadline the next tier had time to meet and missed is its failure; a client's
            // too-short deadline is not.
            let missed = |why: String| {
                if budget >= cfg.breaker.min_budget {
                    self.failed(&why);
                }
                Err(why)
            };
            let status = match result {
                Err(_) => {
                    self.metrics.forward_attempt("deadline");
                    return missed(format!("next tier {} past the deadline", cfg.addr));
                }
                Ok(Ok(resp)) => {
                    if resp.answers.len() != req.ids.len()
                        || resp.answers.iter().zip(&req.ids).any(|(a, id)| a.id != *id)
                    {
                        self.metrics.forward_attempt("bad_answer");
                        return Err(format!("next tier {} answered other samples than asked", cfg.addr));
                    }
                    self.metrics.forward_attempt("ok");
                    self.breaker.success();
                    self.metrics.set_next_tier_down(false);
                    self.metrics
                        .forwarded(req.ids.len(), bytes, resp.encoded_len(), started.elapsed());
                    return Ok(resp.answers);
                }
                Ok(Err(status)) => status,
            };
            use tonic::Code;
            // The transport's own timeout (from the `grpc-timeout` we set) reads CANCELLED.
            if status.code() == Code::DeadlineExceeded
                || (status.code() == Code::Cancelled && status.message() == "Timeout expired")
            {
                self.metrics.forward_attempt("deadline");
                return missed(format!("next tier {} past the deadline", cfg.addr));
            }
            let retry = matches!(
                status.code(),
                Code::Unavailable | Code::ResourceExhausted | Code::Unknown | Code::Aborted | Code::Cancelled
            );
            self.metrics.forward_attempt(match status.code() {
                Code::Unavailable => "unavailable",
                Code::ResourceExhausted => "resource_exhausted",
                Code::DeadlineExceeded => "deadline",
                _ => "error",
            });
            let why = format!("next tier {}: {:?}: {}", cfg.addr, status.code(), status.message());
            if !retry || attempt >= retries {
                if matches!(status.code(), Code::Unavailable | Code::Unauthenticated) {
                    self.failed(&why);
                }
                return Err(why);
            }
            let wait = cfg.backoff * 2u32.saturating_pow(attempt);
            if Instant::now() + wait + reserve(remaining) >= deadline {
                return Err(why);
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Counts a failure of the next tier; the one that opens the circuit starts the probe.
    fn failed(&self, why: &str) {
        if !self.breaker.failure(why) {
            return;
        }
        let Some((client, cfg)) = &self.next else { return };
        tracing::warn!(
            "{}: next tier {} failed {} times in a row ({why}): answering degraded at once, probing it every {} ms",
            self.name,
            cfg.addr,
            cfg.breaker.failures,
            cfg.breaker.probe_every.as_millis()
        );
        self.metrics.set_next_tier_down(true);
        // The probe holds the breaker weakly, so that it does not outlive the server.
        let (client, breaker, metrics) = (client.clone(), Arc::downgrade(&self.breaker), self.metrics.clone());
        let (name, addr, c) = (self.name.clone(), cfg.addr.clone(), cfg.breaker);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(c.probe_every).await;
                let answered = matches!(tokio::time::timeout(c.probe_timeout, client.info()).await, Ok(Ok(_)));
                // Ends with the server, or once a forwarded call closed the circuit.
                let Some(breaker) = breaker.upgrade().filter(|b| b.is_open()) else {
                    return;
                };
                if answered {
                    breaker.probe_answered();
                    metrics.set_next_tier_down(false);
                    tracing::info!("{name}: next tier {addr} answers again: forwarding to it");
                    return;
                }
            }
        });
    }

    /// The degraded answer for a survivor whose next tier failed.
    pub fn degraded(&self, id: u64, best: &BestSoFar, reached_exit: usize, why: &str) -> proto::Answer {
        proto::Answer {
            id,
            class: argmax(&best.probs) as u32,
            probs: best.probs.clone(),
            exit: best.exit as u32,
            tier: self.name.clone(),
            confidence: best.confidence,
            macs: self.exit_macs[reached_exit],
            degraded: true,
            reason: why.to_string(),
        }
    }
}

/// Per-stage input expectations, for validating `Forward` requests.
#[derive(Clone, Debug)]
pub(crate) struct StageInput {
    /// Activation shape per sample.
    pub x: Shape,
    /// Pooled history widths (empty without `dense` heads).
    pub pooled: Vec<usize>,
}

/// What enters each stage: the input for stage 0, the last block of stage `k − 1` otherwise.
pub(crate) fn stage_inputs(model: &MultiExitModel) -> Vec<StageInput> {
    let arch = &model.arch;
    let dense = arch.heads.iter().any(|h| h.kind == HeadKind::Dense);
    (0..model.net.num_stages())
        .map(|k| {
            if k == 0 {
                return StageInput {
                    x: arch.description.input,
                    pooled: Vec::new(),
                };
            }
            let last = model.net.stage_blocks(k - 1).end - 1;
            StageInput {
                x: arch.backbone.blocks[last].output,
                pooled: if dense {
                    arch.backbone.blocks[..=last].iter().map(|b| b.output.c).collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
}

/// The worker loop: gathers batches, runs them, replies or hands survivors to the runtime.
pub(crate) fn worker_loop(
    engine: Engine,
    mut gatherer: Gatherer<Job>,
    fwd: Arc<Forwarding>,
    rt: tokio::runtime::Handle,
) {
    while let Some(batch) = gatherer.next_batch() {
        fwd.metrics.set_queue_depth(gatherer.depth());
        let now = Instant::now();
        let (live, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
        for j in late {
            let _ = j.reply.send(Err(ServeError::DeadlineExceeded(
                "the deadline passed while the request was queued".into(),
            )));
        }
        if live.is_empty() {
            continue;
        }
        fwd.metrics.batch(live.iter().map(|j| j.input.len()).sum());
        let inputs: Vec<&JobInput> = live.iter().map(|j| &j.input).collect();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.run(&inputs)));
        let outcome = match outcome {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let msg = e.to_string();
                let code = e.code();
                for j in live {
                    let _ = j.reply.send(Err(match code {
                        tonic::Code::InvalidArgument => ServeError::invalid(msg.clone()),
                        _ => ServeError::Internal(msg.clone()),
                    }));
                }
                continue;
            }
            Err(_) => {
                for j in live {
                    let _ = j
                        .reply
                        .send(Err(ServeError::Internal("the model panicked on this batch".into())));
                }
                continue;
            }
        };
        finish(live, outcome, fwd.clone(), &rt);
    }
}

fn finish(jobs: Vec<Job>, outcome: Outcome, fwd: Arc<Forwarding>, rt: &tokio::runtime::Handle) {
    let Outcome { mut slots, forward } = outcome;
    let waiting: std::collections::BTreeSet<usize> =
        forward.iter().flat_map(|f| f.rows.iter().map(|&(j, _)| j)).collect();
    let mut held = Vec::new();
    for (j, job) in jobs.into_iter().enumerate() {
        if waiting.contains(&j) {
            held.push((j, job));
        } else {
            let answers: Vec<proto::Answer> = std::mem::take(&mut slots[j])
                .into_iter()
                .map(|a| a.expect("answered"))
                .collect();
            for a in &answers {
                fwd.metrics.answer(a.exit as usize, &a.tier, a.degraded);
            }
            let _ = job.reply.send(Ok(answers));
        }
    }
    if held.is_empty() {
        return;
    }
    rt.spawn(async move {
        let deadline = held.iter().map(|(_, j)| j.deadline).min().expect("non-empty");
        for f in forward {
            let ids = f.request.ids.clone();
            let answers = fwd.send(f.request, deadline).await;
            for (i, &(j, s)) in f.rows.iter().enumerate() {
                let a = match &answers {
                    Ok(a) => a[i].clone(),
                    Err(why) => fwd.degraded(ids[i], &f.best[i], f.reached_exit, why),
                };
                slots[j][s] = Some(a);
            }
        }
        for (j, job) in held {
            let answers: Vec<proto::Answer> = std::mem::take(&mut slots[j])
                .into_iter()
                .map(|a| a.expect("answered or degraded"))
                .collect();
            for a in &answers {
                fwd.metrics.answer(a.exit as usize, &a.tier, a.degraded);
            }
            let _ = job.reply.send(Ok(answers));
        }
    });
}

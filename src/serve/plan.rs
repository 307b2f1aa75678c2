//! Where to split a multi-exit network across tiers (device → edge → cloud).
//!
//! The expected cost per sample is the survey's cascaded cost (eq. 12),
//! `C = Σ_j P(reach stage j) · ε_j`, where a stage's increment `ε_j` is its compute time on the
//! tier that holds it plus, for the first stage of a tier, the communication it takes to get
//! there: for every link crossed, twice its one-way latency (request and answer) plus the bytes
//! sent (activations, pooled history, best answer so far) and the answer returned, over the
//! link's bandwidth. Samples that leave at an exit stop paying. A tier given no stage only
//! relays: its links are still crossed. The client sits at the first tier.
//!
//! Everything here except [`measure_stage_seconds`] and [`estimate_rates`] is arithmetic.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use super::codec::WireDType;
use crate::error::{Error, Result};
use crate::infer::engine::StageSlices;
use crate::infer::executor::OnStages;
use crate::infer::{Executor, Policy};
use crate::model::{Architecture, HeadKind, MacConvention};

/// How fast a tier computes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum TierSpeed {
    /// Multiply-accumulates per second (e.g. `20G`).
    MacsPerSecond(f64),
    /// This machine's measured per-stage times, multiplied by a slowdown factor (`here`,
    /// `here/4` for four times slower, `here*2` for twice as fast).
    Here(f64),
}

/// One tier: a name and a speed, written `NAME:SPEED`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierSpec {
    /// Name (used in answers and the plan).
    pub name: String,
    /// Speed.
    pub speed: TierSpeed,
}

/// A link between two consecutive tiers, written `LATENCY:BANDWIDTH` (`5ms:50Mbit`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LinkSpec {
    /// One-way latency, seconds.
    pub latency_s: f64,
    /// Bandwidth, bits per second.
    pub bits_per_s: f64,
}

fn bad(field: &str, reason: String) -> Error {
    Error::invalid(field, reason)
}

fn scaled(s: &str, units: &[(&str, f64)], field: &str) -> Result<f64> {
    let lower = s.trim().to_ascii_lowercase();
    let (num, mult) = units
        .iter()
        .filter(|(u, _)| lower.ends_with(u))
        .max_by_key(|(u, _)| u.len())
        .map(|(u, m)| (&lower[..lower.len() - u.len()], *m))
        .unwrap_or((lower.as_str(), 1.0));
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * mult)
        .ok_or_else(|| bad(field, format!("`{s}` is not a number with a known unit")))
}

impl FromStr for TierSpeed {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("here") {
            let factor = match rest.chars().next() {
                None => 1.0,
                Some(op @ ('/' | '*')) => {
                    let f: f64 = rest[1..]
                        .parse()
                        .ok()
                        .filter(|f: &f64| f.is_finite() && *f > 0.0)
                        .ok_or_else(|| bad("tier speed", format!("`{s}`: expected here, here/F or here*F")))?;
                    if op == '/' { f } else { 1.0 / f }
                }
                _ => return Err(bad("tier speed", format!("`{s}`: expected here, here/F or here*F"))),
            };
            return Ok(TierSpeed::Here(factor));
        }
        let v = scaled(
            s.trim_end_matches("MAC/s").trim_end_matches("mac/s"),
            &[("k", 1e3), ("m", 1e6), ("g", 1e9), ("t", 1e12)],
            "tier speed",
        )?;
        if v <= 0.0 {
            return Err(bad("tier speed", format!("`{s}` must be positive")));
        }
        Ok(TierSpeed::MacsPerSecond(v))
    }
}

impl FromStr for TierSpec {
    type Err = Error;
    /// `NAME:SPEED`, SPEED in MAC/s with an optional k/M/G/T suffix, or `here[/F|*F]`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, speed) = s.split_once(':').ok_or_else(|| {
            bad(
                "tier",
                format!("`{s}`: expected NAME:SPEED, e.g. edge:20G or device:here/8"),
            )
        })?;
        if name.is_empty() {
            return Err(bad("tier", format!("`{s}` has no name")));
        }
        Ok(TierSpec {
            name: name.into(),
            speed: speed.parse()?,
        })
    }
}

impl FromStr for LinkSpec {
    type Err = Error;
    /// `LATENCY:BANDWIDTH`: latency in `us`, `ms` or `s` (bare numbers are ms), bandwidth in
    /// `bit`, `kbit`, `Mbit`, `Gbit` per second (bare numbers are bit/s).
    fn from_str(s: &str) -> Result<Self> {
        let (lat, bw) = s
            .split_once(':')
            .ok_or_else(|| bad("link", format!("`{s}`: expected LATENCY:BANDWIDTH, e.g. 5ms:50Mbit")))?;
        let latency_s = scaled(
            lat,
            &[("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("", 1e-3)],
            "link latency",
        )?;
        let bits_per_s = scaled(
            bw.trim_end_matches("/s").trim_end_matches("ps"),
            &[
                ("bit", 1.0),
                ("kbit", 1e3),
                ("mbit", 1e6),
                ("gbit", 1e9),
                ("k", 1e3),
                ("m", 1e6),
                ("g", 1e9),
            ],
            "link bandwidth",
        )?;
        if bits_per_s <= 0.0 {
            return Err(bad("link", format!("`{s}`: bandwidth must be positive")));
        }
        Ok(LinkSpec { latency_s, bits_per_s })
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms:{}Mbit", self.latency_s * 1e3, self.bits_per_s / 1e6)
    }
}

/// Per-stage facts the planner needs, independent of the tiers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageCosts {
    /// MACs of each stage (its blocks and its exit head; the classifier for the last).
    pub macs: Vec<u64>,
    /// Bytes per sample sent to the tier that runs stage `b` when it is not the tier that ran
    /// stage `b − 1`; index 0 is the raw input. One entry per stage.
    pub send_bytes: Vec<u64>,
    /// Bytes per sample of an answer coming back.
    pub answer_bytes: u64,
    /// Share of samples that reach stage `b` (1 for stage 0).
    pub reach: Vec<f64>,
}

/// Turns exit rates (share of samples leaving at each exit, final last) into the share that
/// reaches each stage.
///
/// ```
/// let reach = earlyexit::serve::plan::reach_from_rates(&[0.5, 0.3, 0.2]);
/// assert_eq!(reach, vec![1.0, 0.5, 0.2]);
/// ```
pub fn reach_from_rates(rates: &[f64]) -> Vec<f64> {
    let mut left = 1.0f64;
    rates
        .iter()
        .map(|r| {
            let q = left.clamp(0.0, 1.0);
            left -= r;
            // Round away float dust so that plans compare cleanly.
            (q * 1e12).round() / 1e12
        })
        .collect()
}

impl StageCosts {
    /// Stage costs of `arch` given exit rates (one per exit, final last) and the dtype
    /// activations travel in.
    pub fn new(arch: &Architecture, rates: &[f64], dtype: WireDType) -> Result<Self> {
        let stages = arch.num_exits() + 1;
        if rates.len() != stages {
            return Err(bad(
                "rates",
                format!(
                    "{} exit rates given, the model has {stages} exits (final included)",
                    rates.len()
                ),
            ));
        }
        if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || (rates.iter().sum::<f64>() - 1.0).abs() > 1e-3 {
            return Err(bad("rates", format!("{rates:?}: each in [0, 1], summing to 1")));
        }
        let cum = arch.cost.exit_macs(MacConvention::All);
        let macs = (0..stages)
            .map(|k| cum[k] - if k == 0 { 0 } else { cum[k - 1] })
            .collect();
        let classes = arch.description.classes as u64;
        let dense = arch.heads.iter().any(|h| h.kind == HeadKind::Dense);
        let input = arch.description.input;
        // Fixed per-sample framing: id, stage, tags, and the best-so-far message.
        let best = classes * 4 + 16;
        let mut send_bytes = vec![(input.c * input.h * input.w) as u64 * 4 + 8];
        for b in 1..stages {
            let last_block = arch.cuts[b - 1];
            let out = arch.backbone.blocks[last_block].output;
            let mut values = (out.c * out.h * out.w) as u64;
            if dense {
                values += arch.backbone.blocks[..=last_block]
                    .iter()
                    .map(|blk| blk.output.c as u64)
                    .sum::<u64>();
            }
            send_bytes.push(values * dtype.size() as u64 + best + 8);
        }
        Ok(Self {
            macs,
            send_bytes,
            answer_bytes: classes * 4 + 24,
            reach: reach_from_rates(rates),
        })
    }

    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.macs.len()
    }
}

/// A planning problem: stages, per-tier stage times and links.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// Per-stage facts.
    pub costs: StageCosts,
    /// Tier names, first (where the client is) to last.
    pub tiers: Vec<String>,
    /// `stage_seconds[t][k]`: seconds tier `t` takes for stage `k` on one sample.
    pub stage_seconds: Vec<Vec<f64>>,
    /// `links[t]` joins tier `t` and tier `t + 1`.
    pub links: Vec<LinkSpec>,
}

/// What a plan minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub enum Objective {
    /// Expected end-to-end latency per sample.
    #[default]
    Latency,
    /// Expected bytes per sample over all links (ties broken by latency).
    Bytes,
}

impl crate::Choice for Objective {
    const WHAT: &'static str = "objective";
    const NAMES: &'static [(&'static str, Self)] = &[("latency", Self::Latency), ("bytes", Self::Bytes)];
}

/// One tier's share of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierPlan {
    /// Tier name.
    pub name: String,
    /// Stages it holds (empty: it only relays).
    pub stages: Range<usize>,
    /// Share of samples that reach it (0 for an empty tier).
    pub reach: f64,
    /// Expected compute seconds per sample (over all samples).
    pub compute_s: f64,
}

/// One link's share of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkPlan {
    /// Expected bytes per sample across the link, both directions.
    pub bytes: f64,
    /// Expected seconds per sample spent on the link.
    pub seconds: f64,
}

/// A split and its predicted cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Boundaries: tier `t` holds stages `splits[t]..splits[t + 1]`.
    pub splits: Vec<usize>,
    /// Per tier.
    pub tiers: Vec<TierPlan>,
    /// Per link.
    pub links: Vec<LinkPlan>,
    /// Expected end-to-end seconds per sample.
    pub latency_s: f64,
    /// Of which compute.
    pub compute_s: f64,
    /// Of which network.
    pub network_s: f64,
    /// Expected bytes per sample over all links.
    pub bytes_per_sample: f64,
}

impl Problem {
    /// A problem from tier specs: stage times are `macs / speed`, or the measured `here`
    /// seconds per stage times the tier's factor (`here` must then be given).
    ///
    /// ```
    /// use earlyexit::serve::plan::{Problem, StageCosts};
    /// let costs = StageCosts { macs: vec![2_000, 6_000], send_bytes: vec![400, 800], answer_bytes: 64, reach: vec![1.0, 0.5] };
    /// let tiers = ["device:here/2".parse()?, "cloud:1M".parse()?];
    /// let p = Problem::from_specs(costs, &tiers, vec!["1ms:1Mbit".parse()?], Some(&[0.001, 0.003]))?;
    /// assert_eq!(p.stage_seconds, vec![vec![0.002, 0.006], vec![0.002, 0.006]]);
    /// # Ok::<(), earlyexit::Error>(())
    /// ```
    pub fn from_specs(
        costs: StageCosts,
        tiers: &[TierSpec],
        links: Vec<LinkSpec>,
        here: Option<&[f64]>,
    ) -> Result<Self> {
        let stage_seconds = tiers
            .iter()
            .map(|t| match t.speed {
                TierSpeed::MacsPerSecond(v) => Ok(costs.macs.iter().map(|&m| m as f64 / v).collect()),
                TierSpeed::Here(f) => here.map(|h| h.iter().map(|s| s * f).collect()).ok_or_else(|| {
                    bad(
                        "tier speed",
                        format!("tier `{}` is `here` but nothing was measured", t.name),
                    )
                }),
            })
            .collect::<Result<Vec<Vec<f64>>>>()?;
        let p = Problem {
            costs,
            tiers: tiers.iter().map(|t| t.name.clone()).collect(),
            stage_seconds,
            links,
        };
        p.check()?;
        Ok(p)
    }

    /// Checks sizes.
    pub fn check(&self) -> Result<()> {
        let s = self.costs.stages();
        if self.tiers.is_empty() {
            return Err(bad("tiers", "at least one tier is needed".into()));
        }
        if self.links.len() + 1 != self.tiers.len() {
            return Err(bad(
                "links",
                format!(
                    "{} tiers need {} links, {} given",
                    self.tiers.len(),
                    self.tiers.len() - 1,
                    self.links.len()
                ),
            ));
        }
        if self.stage_seconds.len() != self.tiers.len() || self.stage_seconds.iter().any(|t| t.len() != s) {
            return Err(bad(
                "stage times",
                format!("need {} tiers × {s} stages", self.tiers.len()),
            ));
        }
        if self.costs.send_bytes.len() != s || self.costs.reach.len() != s {
            return Err(bad("stage costs", "inconsistent stage counts".into()));
        }
        Ok(())
    }

    /// The cost of one split (`splits`: `0 = s_0 ≤ s_1 ≤ … ≤ s_T = stages`).
    pub fn evaluate(&self, splits: &[usize]) -> Plan {
        let t_count = self.tiers.len();
        assert_eq!(splits.len(), t_count + 1, "one boundary more than tiers");
        let c = &self.costs;
        let mut tiers = Vec::with_capacity(t_count);
        let mut links = vec![
            LinkPlan {
                bytes: 0.0,
                seconds: 0.0
            };
            self.links.len()
        ];
        let (mut compute, mut network, mut bytes) = (0.0, 0.0, 0.0);
        let mut at = 0; // the tier the sample is at (the client is at the first)
        for t in 0..t_count {
            let stages = splits[t]..splits[t + 1];
            if stages.is_empty() {
                tiers.push(TierPlan {
                    name: self.tiers[t].clone(),
                    stages,
                    reach: 0.0,
                    compute_s: 0.0,
                });
                continue;
            }
            let q = c.reach[stages.start];
            if t > at {
                let per = (c.send_bytes[stages.start] + c.answer_bytes) as f64;
                for (l, link) in self.links[at..t].iter().enumerate() {
                    let secs = q * (2.0 * link.latency_s + per * 8.0 / link.bits_per_s);
                    links[at + l].seconds += secs;
                    links[at + l].bytes += q * per;
                    network += secs;
                    bytes += q * per;
                }
                at = t;
            }
            let tier_compute: f64 = stages.clone().map(|k| c.reach[k] * self.stage_seconds[t][k]).sum();
            compute += tier_compute;
            tiers.push(TierPlan {
                name: self.tiers[t].clone(),
                stages,
                reach: q,
                compute_s: tier_compute,
            });
        }
        Plan {
            splits: splits.to_vec(),
            tiers,
            links,
            latency_s: compute + network,
            compute_s: compute,
            network_s: network,
            bytes_per_sample: bytes,
        }
    }

    /// Every split, in lexicographic order of boundaries.
    pub fn all_plans(&self) -> Vec<Plan> {
        let s = self.costs.stages();
        let t = self.tiers.len();
        let mut out = Vec::new();
        let mut splits = vec![0; t + 1];
        splits[t] = s;
        fn rec(p: &Problem, i: usize, splits: &mut Vec<usize>, out: &mut Vec<Plan>) {
            let t = splits.len() - 1;
            if i == t {
                out.push(p.evaluate(splits));
                return;
            }
            for b in splits[i - 1]..=splits[t] {
                splits[i] = b;
                rec(p, i + 1, splits, out);
            }
        }
        if t == 1 {
            out.push(self.evaluate(&splits));
        } else {
            rec(self, 1, &mut splits, &mut out);
        }
        out
    }

    /// The best split for `objective` (ties: the other measure, then earlier boundaries).
    ///
    /// ```
    /// use earlyexit::serve::plan::{LinkSpec, Objective, Problem, StageCosts, reach_from_rates};
    /// // Three stages; 60 % leave at exit 0, 20 % at exit 1.
    /// let costs = StageCosts {
    ///     macs: vec![1_000_000, 4_000_000, 16_000_000],
    ///     send_bytes: vec![3072, 8192, 4096],
    ///     answer_bytes: 64,
    ///     reach: reach_from_rates(&[0.6, 0.2, 0.2]),
    /// };
    /// // A device, an edge server four times faster, a fast cloud (MAC/s).
    /// let speeds = [1e9, 4e9, 1e11];
    /// let p = Problem {
    ///     stage_seconds: speeds.iter().map(|v| costs.macs.iter().map(|&m| m as f64 / v).collect()).collect(),
    ///     costs,
    ///     tiers: vec!["device".into(), "edge".into(), "cloud".into()],
    ///     links: vec!["5ms:50Mbit".parse()?, "30ms:200Mbit".parse()?],
    /// };
    /// let best = p.best(Objective::Latency)?;
    /// assert_eq!(best.splits, vec![0, 2, 3, 3]); // exits 0 and 1 on the device, the rest at the edge
    /// assert!(best.latency_s < p.evaluate(&[0, 0, 0, 3]).latency_s); // beats sending all to the cloud
    /// # Ok::<(), earlyexit::Error>(())
    /// ```
    pub fn best(&self, objective: Objective) -> Result<Plan> {
        self.check()?;
        let key = |p: &Plan| match objective {
            Objective::Latency => (p.latency_s, p.bytes_per_sample),
            Objective::Bytes => (p.bytes_per_sample, p.latency_s),
        };
        let mut best: Option<Plan> = None;
        for p in self.all_plans() {
            let better = match &best {
                None => true,
                Some(b) => {
                    let (a1, a2) = key(&p);
                    let (b1, b2) = key(b);
                    a1 < b1 * (1.0 - 1e-9) || ((a1 - b1).abs() <= b1.abs() * 1e-9 && a2 < b2 * (1.0 - 1e-9))
                }
            };
            if better {
                best = Some(p);
            }
        }
        Ok(best.expect("at least one plan"))
    }

    /// Every stage on the last tier: the input crosses every link (the baseline).
    pub fn all_on_last(&self) -> Plan {
        let mut splits = vec![0; self.tiers.len() + 1];
        *splits.last_mut().expect("non-empty") = self.costs.stages();
        self.evaluate(&splits)
    }
}

impl Plan {
    /// The `--stages` argument of each tier that holds stages: `(name, "A..B")`, the last one
    /// written `A..`.
    pub fn stage_args(&self) -> Vec<(String, String)> {
        let end = *self.splits.last().expect("non-empty");
        self.tiers
            .iter()
            .filter(|t| !t.stages.is_empty())
            .map(|t| {
                let arg = if t.stages.end == end {
                    format!("{}..", t.stages.start)
                } else {
                    format!("{}..{}", t.stages.start, t.stages.end)
                };
                (t.name.clone(), arg)
            })
            .collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .tiers
            .iter()
            .map(|t| {
                if t.stages.is_empty() {
                    format!("{} (relay)", t.name)
                } else {
                    format!("{} {}..{}", t.name, t.stages.start, t.stages.end)
                }
            })
            .collect();
        write!(
            f,
            "{}: {:.3} ms/sample (compute {:.3}, network {:.3}), {:.0} bytes/sample",
            parts.join(" | "),
            self.latency_s * 1e3,
            self.compute_s * 1e3,
            self.network_s * 1e3,
            self.bytes_per_sample
        )
    }
}

/// Measured seconds per stage (blocks and exit head) for one sample on this machine: the
/// median of `reps` runs after a warm-up, on the code `exec` runs (what a tier of the same
/// `--path` runs).
pub fn measure_stage_seconds(exec: &Executor, reps: usize) -> Result<Vec<f64>> {
    let shape = exec.model().arch.description.input;
    let x = Tensor::<4>::random(
        [1, shape.c, shape.h, shape.w],
        Distribution::Normal(0.0, 1.0),
        exec.device(),
    );
    exec.with_stages(StageSeconds { x, reps })
}

/// [`measure_stage_seconds`] on one implementation's stage slices.
struct StageSeconds {
    x: Tensor<4>,
    reps: usize,
}

impl OnStages for StageSeconds {
    type Output = Result<Vec<f64>>;
    fn on<N: StageSlices>(self, net: &N) -> Result<Vec<f64>> {
        let mut times = vec![Vec::with_capacity(self.reps); net.num_exits() + 1];
        for rep in 0..self.reps.max(1) + 1 {
            let mut state = net.start(self.x.clone())?;
            for (k, t) in times.iter_mut().enumerate() {
                let start = Instant::now();
                state = net.run_stage(k, state);
                std::hint::black_box(net.exit(k, &state));
                if rep > 0 {
                    t.push(start.elapsed().as_secs_f64());
                }
            }
        }
        Ok(times.into_iter().map(crate::bench::median).collect())
    }
}

/// Share of samples leaving at each exit (final last) under `policy`, over `batches`.
pub fn exit_rates(exec: &Executor, policy: &Policy, batches: impl IntoIterator<Item = Tensor<4>>) -> Result<Vec<f64>> {
    let mut counts = vec![0usize; exec.model().net.num_stages()];
    for x in batches {
        for &e in &exec.infer(x, policy)?.exit {
            counts[e] += 1;
        }
    }
    let n: usize = counts.iter().sum();
    if n == 0 {
        return Err(bad("rates", "no samples to measure exit rates on".into()));
    }
    Ok(counts.iter().map(|&c| c as f64 / n as f64).collect())
}

/// Exit rates of `policy` on `samples` standard-normal inputs: only a stand-in when neither
/// calibrated rates nor data are at hand.
pub fn estimate_rates(exec: &Executor, policy: &Policy, samples: usize, seed: u64) -> Result<Vec<f64>> {
    let (shape, device) = (exec.model().arch.description.input, exec.device());
    device.seed(seed);
    let x = Tensor::<4>::random(
        [samples.max(1), shape.c, shape.h, shape.w],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    exit_rates(exec, policy, [x])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(speeds: &[f64], links: &[&str]) -> Problem {
        let costs = StageCosts {
            macs: vec![10_000_000, 10_000_000, 10_000_000],
            send_bytes: vec![12_000, 40_000, 20_000],
            answer_bytes: 64,
            reach: reach_from_rates(&[0.5, 0.25, 0.25]),
        };
        Problem {
            stage_seconds: speeds
                .iter()
                .map(|v| costs.macs.iter().map(|&m| m as f64 / v).collect())
                .collect(),
            costs,
            tiers: (0..speeds.len()).map(|i| format!("t{i}")).collect(),
            links: links.iter().map(|l| l.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn parses_specs() {
        let l: LinkSpec = "5ms:50Mbit".parse().unwrap();
        assert!((l.latency_s - 0.005).abs() < 1e-12 && (l.bits_per_s - 5e7).abs() < 1e-3);
        let l: LinkSpec = "250us:1Gbit".parse().unwrap();
        assert!((l.latency_s - 0.00025).abs() < 1e-12 && (l.bits_per_s - 1e9).abs() < 1e-3);
        assert!("5ms".parse::<LinkSpec>().is_err());
        assert!("5ms:0Mbit".parse::<LinkSpec>().is_err());
        let t: TierSpec = "edge:20G".parse().unwrap();
        assert_eq!(t.speed, TierSpeed::MacsPerSecond(2e10));
        let t: TierSpec = "device:here/8".parse().unwrap();
        assert_eq!(t.speed, TierSpeed::Here(8.0));
        assert_eq!("c:here*2".parse::<TierSpec>().unwrap().speed, TierSpeed::Here(0.5));
        assert!("nospeed".parse::<TierSpec>().is_err());
        assert!("x:fast".parse::<TierSpec>().is_err());
    }

    #[test]
    fn hand_computed_cost() {
        // Two tiers, 1 GMAC/s each, link 10 ms / 8 Mbit (1 byte per µs).
        let p = problem(&[1e9, 1e9], &["10ms:8Mbit"]);
        let plan = p.evaluate(&[0, 1, 3]);
        // Compute: 10 ms + 0.5 · 10 ms + 0.25 · 10 ms = 17.5 ms.
        assert!((plan.compute_s - 0.0175).abs() < 1e-12, "{plan:?}");
        // Network: half the samples cross: 0.5 · (20 ms + (40000 + 64) B · 1 µs/B).
        let net = 0.5 * (0.020 + 40_064e-6);
        assert!((plan.network_s - net).abs() < 1e-12, "{plan:?}");
        assert!((plan.bytes_per_sample - 0.5 * 40_064.0).abs() < 1e-9);
        // All on the second tier: every input crosses.
        let cloud = p.all_on_last();
        assert_eq!(cloud.splits, vec![0, 0, 3]);
        assert!((cloud.bytes_per_sample - 12_064.0).abs() < 1e-9);
        assert_eq!(cloud.stage_args(), vec![("t1".to_string(), "0..".to_string())]);
    }

    #[test]
    fn relays_cross_every_link_and_search_is_exhaustive() {
        let p = problem(&[1e7, 1e8, 1e11], &["5ms:50Mbit", "30ms:200Mbit"]);
        let plans = p.all_plans();
        // Boundaries 0 ≤ a ≤ b ≤ 3: C(5, 2) = 10 plans.
        assert_eq!(plans.len(), 10);
        let relay = p.evaluate(&[0, 0, 0, 3]);
        assert!((relay.links[0].bytes - 12_064.0).abs() < 1e-9);
        assert!((relay.links[1].bytes - 12_064.0).abs() < 1e-9);
        let best = p.best(Objective::Latency).unwrap();
        assert!(plans.iter().all(|q| q.latency_s >= best.latency_s - 1e-15));
        let fewest = p.best(Objective::Bytes).unwrap();
        assert_eq!(fewest.bytes_per_sample, 0.0);
        assert_eq!(fewest.splits, vec![0, 3, 3, 3]);
        assert_eq!(fewest.stage_args(), vec![("t0".to_string(), "0..".to_string())]);
    }

    #[test]
    fn fast_network_and_slow_device_send_everything_away() {
        let p = problem(&[1e6, 1e12], &["0.01ms:100Gbit"]);
        assert_eq!(p.best(Objective::Latency).unwrap().splits, vec![0, 0, 3]);
        let p = problem(&[1e12, 1e12], &["100ms:1Mbit"]);
        assert_eq!(p.best(Objective::Latency).unwrap().splits, vec![0, 3, 3]);
    }
}

//! Learning-rate schedules: constant, step, multi-step, cosine (PyTorch's `StepLR`,
//! `MultiStepLR`, `CosineAnnealingLR`, stepped once per epoch), one-cycle (PyTorch's
//! `OneCycleLR`, per iteration: the schedule of short runs) and freezeout (survey eq. 10, per
//! stage, per iteration).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// The base learning rate throughout.
    #[default]
    Constant,
    /// `lr · γ^⌊epoch / step_size⌋`.
    Step,
    /// `lr · γ^(number of milestones ≤ epoch)`.
    Multistep,
    /// `min_lr + (lr − min_lr)(1 + cos(π epoch / epochs)) / 2`.
    Cosine,
    /// One cycle per run, stepped every iteration (Smith & Topin, "Super-convergence"; PyTorch's
    /// `OneCycleLR` with cosine annealing): from `lr / 25` up to `lr` over the first `pct_start`
    /// of the iterations, then down to `lr / 25 / 10⁴`. Reaches a good model in few epochs.
    OneCycle,
    /// Freezeout (survey eq. 10): stage `i` anneals as `0.5 lr (1 + cos(π t / t_i))` until its
    /// freezing point `t_i`, then stays frozen at 0; `t` counts iterations.
    Freezeout,
}

fn gamma() -> f64 {
    0.1
}

/// The `[schedule]` table of a training configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Which schedule.
    #[serde(default)]
    pub kind: ScheduleKind,
    /// `step`: epochs between decays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<usize>,
    /// `multistep`: epochs at which the rate is multiplied by `gamma`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestones: Option<Vec<usize>>,
    /// `step`/`multistep`: decay factor (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// `cosine`: final learning rate (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    /// `one-cycle`: share of the iterations spent warming up (default 0.3, as PyTorch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pct_start: Option<f64>,
    /// `freezeout`: the first stage's freezing point as a fraction of training; the others are
    /// spread evenly up to 1. Default `1/L` for `L` stages: points equispaced in `[0, T]`, as in
    /// the survey (`t_i = i T / L`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t0: Option<f64>,
}

/// Where training stands, for the schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Epoch, 0-based.
    pub epoch: usize,
    /// Total epochs.
    pub epochs: usize,
    /// Iteration since the start of training, 0-based.
    pub iteration: u64,
    /// Total iterations.
    pub iterations: u64,
}

impl ScheduleConfig {
    /// A schedule of `kind` with default options.
    pub fn new(kind: ScheduleKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// Checks that the options fit the kind; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, r: &str| Err(Error::invalid(format!("schedule.{f}"), r));
        let only = |present: bool, f: &str, k: &str| -> Result<()> {
            if present {
                return Err(Error::invalid(
                    format!("schedule.{f}"),
                    format!("only the `{k}` schedule takes it, not `{:?}`", self.kind).to_lowercase(),
                ));
            }
            Ok(())
        };
        use ScheduleKind::*;
        only(self.step_size.is_some() && self.kind != Step, "step_size", "step")?;
        only(
            self.milestones.is_some() && self.kind != Multistep,
            "milestones",
            "multistep",
        )?;
        only(
            self.gamma.is_some() && !matches!(self.kind, Step | Multistep),
            "gamma",
            "step or multistep",
        )?;
        only(self.min_lr.is_some() && self.kind != Cosine, "min_lr", "cosine")?;
        only(self.t0.is_some() && self.kind != Freezeout, "t0", "freezeout")?;
        only(
            self.pct_start.is_some() && self.kind != OneCycle,
            "pct_start",
            "one-cycle",
        )?;
        match self.kind {
            Step if self.step_size.unwrap_or(0) == 0 => bad("step_size", "the step schedule needs step_size ≥ 1"),
            Multistep => match &self.milestones {
                Some(m) if !m.is_empty() && m.windows(2).all(|w| w[0] < w[1]) => Ok(()),
                _ => bad("milestones", "needs a non-empty, strictly increasing list of epochs"),
            },
            _ if self.gamma.is_some_and(|g| !(g > 0.0 && g <= 1.0)) => bad("gamma", "must be in (0, 1]"),
            _ if self.min_lr.is_some_and(|m| m.is_nan() || m < 0.0) => bad("min_lr", "must be ≥ 0"),
            _ if self.t0.is_some_and(|t| !(t > 0.0 && t <= 1.0)) => bad("t0", "must be in (0, 1]"),
            _ if self.pct_start.is_some_and(|p| !(p > 0.0 && p < 1.0)) => bad("pct_start", "must be in (0, 1)"),
            _ => Ok(()),
        }
    }

    /// Whether the rate changes within an epoch (the trainer then asks every iteration).
    pub fn per_iteration(&self) -> bool {
        matches!(self.kind, ScheduleKind::OneCycle)
    }

    /// The base learning rate at `pos` (before any per-stage factor).
    pub fn lr(&self, base: f64, pos: Position) -> f64 {
        let e = pos.epoch;
        let g = self.gamma.unwrap_or_else(gamma);
        match self.kind {
            ScheduleKind::Constant | ScheduleKind::Freezeout => base,
            ScheduleKind::Step => base * g.powi((e / self.step_size.unwrap_or(1).max(1)) as i32),
            ScheduleKind::Multistep => {
                let passed = self
                    .milestones
                    .as_deref()
                    .unwrap_or(&[])
                    .iter()
                    .filter(|&&m| m <= e)
                    .count();
                base * g.powi(passed as i32)
            }
            ScheduleKind::Cosine => {
                let min = self.min_lr.unwrap_or(0.0);
                let t = e as f64 / pos.epochs.max(1) as f64;
                min + (base - min) * (1.0 + (PI * t).cos()) / 2.0
            }
            ScheduleKind::OneCycle => {
                let (start, end) = (base / 25.0, base / 25.0 / 1e4);
                let warm = self.pct_start.unwrap_or(0.3) * pos.iterations as f64;
                let t = pos.iteration as f64;
                // Cosine from `a` to `b` as `f` goes from 0 to 1.
                let anneal = |a: f64, b: f64, f: f64| b + (a - b) * (1.0 + (PI * f.clamp(0.0, 1.0)).cos()) / 2.0;
                if t < warm {
                    anneal(start, base, t / warm)
                } else {
                    anneal(base, end, (t - warm) / (pos.iterations as f64 - warm).max(1.0))
                }
            }
        }
    }

    /// Freezeout: the iteration at which stage `i` of `stages` freezes, out of `iterations`.
    pub fn freeze_point(&self, stage: usize, stages: usize, iterations: u64) -> f64 {
        let t0 = self.t0.unwrap_or(1.0 / stages as f64);
        let frac = if stages <= 1 {
            1.0
        } else {
            t0 + (1.0 - t0) * stage as f64 / (stages - 1) as f64
        };
        frac * iterations as f64
    }

    /// The factor applied to stage `stage`'s learning rate (of `stages`); 1 except for freezeout.
    pub fn stage_factor(&self, stage: usize, stages: usize, pos: Position) -> f64 {
        if self.kind != ScheduleKind::Freezeout {
            return 1.0;
        }
        let ti = self.freeze_point(stage, stages, pos.iterations);
        let t = pos.iteration as f64;
        if t >= ti {
            0.0
        } else {
            0.5 * (1.0 + (PI * t / ti).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: usize) -> Position {
        Position {
            epoch,
            epochs: 10,
            iteration: 0,
            iterations: 100,
        }
    }

    #[test]
    fn one_cycle_warms_up_then_anneals_per_iteration() {
        let s = ScheduleConfig::new(ScheduleKind::OneCycle);
        s.validate().unwrap();
        let pos = |iteration| Position {
            epoch: 0,
            epochs: 2,
            iteration,
            iterations: 1000,
        };
        // PyTorch's OneCycleLR(max_lr=0.1, total_steps=1000, anneal_strategy="cos"): 0.004 at
        // the start, 0.1 at step 300, halfway between 0.1 and 4e-7 at step 650, 4e-7 at the end.
        assert!((s.lr(0.1, pos(0)) - 0.004).abs() < 1e-12);
        assert!((s.lr(0.1, pos(300)) - 0.1).abs() < 1e-12);
        assert!((s.lr(0.1, pos(650)) - (0.1 + 4e-7) / 2.0).abs() < 1e-9);
        assert!((s.lr(0.1, pos(1000)) - 4e-7).abs() < 1e-12);
        let lrs: Vec<f64> = (0..=1000).map(|i| s.lr(0.1, pos(i))).collect();
        assert!(lrs[..=300].windows(2).all(|w| w[0] <= w[1]) && lrs[300..].windows(2).all(|w| w[0] >= w[1]));
        assert!(s.per_iteration() && !ScheduleConfig::new(ScheduleKind::Cosine).per_iteration());
        let bad = ScheduleConfig {
            pct_start: Some(1.0),
            ..ScheduleConfig::new(ScheduleKind::OneCycle)
        };
        assert!(bad.validate().unwrap_err().to_string().contains("pct_start"));
        let wrong = ScheduleConfig {
            pct_start: Some(0.2),
            ..ScheduleConfig::new(ScheduleKind::Cosine)
        };
        assert!(wrong.validate().is_err());
    }

    #[test]
    fn step_multistep_cosine_values() {
        let s = ScheduleConfig {
            step_size: Some(3),
            ..ScheduleConfig::new(ScheduleKind::Step)
        };
        s.validate().unwrap();
        let got: Vec<f64> = (0..7).map(|e| s.lr(0.1, at(e))).collect();
        let want = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        let m = ScheduleConfig {
            milestones: Some(vec![2, 5]),
            gamma: Some(0.5),
            ..ScheduleConfig::new(ScheduleKind::Multistep)
        };
        m.validate().unwrap();
        let got: Vec<f64> = (0..7).map(|e| m.lr(1.0, at(e))).collect();
        assert_eq!(got, vec![1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]);
        let c = ScheduleConfig {
            min_lr: Some(0.01),
            ..ScheduleConfig::new(ScheduleKind::Cosine)
        };
        assert!((c.lr(0.11, at(0)) - 0.11).abs() < 1e-12);
        assert!((c.lr(0.11, at(5)) - 0.06).abs() < 1e-12);
        // epoch 2 of 10: 0.01 + 0.1 (1 + cos 0.2π)/2
        let want = 0.01 + 0.1 * (1.0 + (0.2 * PI).cos()) / 2.0;
        assert!((c.lr(0.11, at(2)) - want).abs() < 1e-12);
        assert_eq!(ScheduleConfig::default().lr(0.3, at(9)), 0.3);
    }

    #[test]
    fn freezeout_follows_eq_10() {
        // Survey Fig. 4: L = 3 stages, T = 150, η(0) = 0.1 → t_i = 50, 100, 150.
        let f = ScheduleConfig::new(ScheduleKind::Freezeout);
        f.validate().unwrap();
        let pos = |t: u64| Position {
            epoch: 0,
            epochs: 1,
            iteration: t,
            iterations: 150,
        };
        for (i, want) in [50.0, 100.0, 150.0].into_iter().enumerate() {
            assert!((f.freeze_point(i, 3, 150) - want).abs() < 1e-9);
        }
        let eta = |i: usize, t: u64| 0.1 * f.stage_factor(i, 3, pos(t));
        assert!((eta(0, 0) - 0.1).abs() < 1e-12);
        assert!((eta(0, 25) - 0.05).abs() < 1e-12); // 0.5·0.1·(1 + cos(π/2))
        assert_eq!(eta(0, 51), 0.0);
        assert_eq!(eta(0, 120), 0.0);
        let want = 0.05 * (1.0 + (PI * 60.0 / 100.0).cos());
        assert!((eta(1, 60) - want).abs() < 1e-12);
        assert!(eta(2, 149) > 0.0);
        // t0 moves the first freezing point; the last stays at T.
        let g = ScheduleConfig {
            t0: Some(0.5),
            ..ScheduleConfig::new(ScheduleKind::Freezeout)
        };
        for (i, want) in [50.0, 75.0, 100.0].into_iter().enumerate() {
            assert!((g.freeze_point(i, 3, 100) - want).abs() < 1e-9);
        }
        assert_eq!(ScheduleConfig::default().stage_factor(0, 3, pos(10)), 1.0);
    }

    #[test]
    fn validation_names_the_field() {
        let e = ScheduleConfig::new(ScheduleKind::Step).validate().unwrap_err();
        assert!(e.to_string().contains("schedule.step_size"));
        let e = ScheduleConfig {
            milestones: Some(vec![5, 2]),
            ..ScheduleConfig::new(ScheduleKind::Multistep)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("schedule.milestones"));
        let e = ScheduleConfig {
            step_size: Some(2),
            ..ScheduleConfig::new(ScheduleKind::Cosine)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("schedule.step_size"));
    }
}

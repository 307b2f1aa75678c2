//! Which exits a training step runs and which parameters it trains: the one place the training
//! schemes (joint, layer-wise, heads-only) become a step, for Burn's pass and the native one.

use burn::module::Module;
use burn::tensor::Tensor;

use super::objectives::{Objective, ObjectiveKind};
use crate::model::{EarlyExitNet, ExitOutput, StageState};

/// Which exits a step runs and which parameters it trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every exit, every parameter.
    All,
    /// Stages before `p` frozen (inference mode), stage `p` and exit `p` trained; later stages
    /// are not run.
    Layerwise(usize),
    /// Backbone frozen (inference mode), the early exits' heads trained.
    HeadsOnly,
}

impl Plan {
    /// The plan of `objective`'s scheme at `epoch`.
    pub fn of(objective: &Objective, epoch: usize) -> Self {
        match objective.kind {
            ObjectiveKind::Layerwise => Plan::Layerwise(objective.phase(epoch).expect("layerwise phase")),
            ObjectiveKind::HeadsOnly => Plan::HeadsOnly,
            _ => Plan::All,
        }
    }

    /// Whether the parameter at `path` (a module path, see [`stage_of`]) is trained.
    pub fn trains(self, path: &str, cuts: &[usize]) -> bool {
        match self {
            Plan::All => true,
            Plan::Layerwise(p) => stage_of(path, cuts) == p,
            Plan::HeadsOnly => path.starts_with("heads."),
        }
    }

    /// Whether exit `k`'s head (the final classifier for `k == num_exits`) is trained.
    pub fn trains_exit(self, k: usize, num_exits: usize) -> bool {
        match self {
            Plan::All => true,
            Plan::Layerwise(p) => k == p,
            Plan::HeadsOnly => k < num_exits,
        }
    }

    /// The exits a step computes: every one, or up to the stage being trained.
    pub fn exits_run(self, num_exits: usize) -> usize {
        match self {
            Plan::Layerwise(p) => p + 1,
            _ => num_exits + 1,
        }
    }

    /// The first stage whose blocks are trained (in training mode, with gradients); the stages
    /// before it run in inference mode. `num_exits + 1` when no block is.
    pub fn first_trained_stage(self, num_exits: usize) -> usize {
        match self {
            Plan::All => 0,
            Plan::Layerwise(p) => p,
            Plan::HeadsOnly => num_exits + 1,
        }
    }

    /// The exits' outputs for one training step on Burn's autodiff: frozen parts run as the
    /// inference module (`valid()`), their outputs without gradients.
    ///
    /// # Shapes
    /// `x`: `[N, C, H, W]` → [`Plan::exits_run`] outputs of `[N, classes]` (and `[N, 1]`)
    pub fn forward(self, net: &EarlyExitNet, x: Tensor<4>) -> Vec<ExitOutput> {
        match self {
            Plan::All => net.forward_all(x),
            Plan::Layerwise(p) => {
                let frozen = net.valid();
                let mut state = StageState::new(x.inner());
                let mut outs = Vec::with_capacity(p + 1);
                for k in 0..p {
                    state = frozen.run_stage(k, state);
                    outs.push(frozen.exit(k, &state));
                }
                let state = net.run_stage(p, lift(state));
                outs.push(net.exit(p, &state));
                outs
            }
            Plan::HeadsOnly => {
                let frozen = net.valid();
                let n = net.num_exits();
                let mut state = StageState::new(x.inner());
                let mut outs = Vec::with_capacity(n + 1);
                for k in 0..n {
                    state = frozen.run_stage(k, state);
                    outs.push(net.exit(k, &lift(state.clone())));
                }
                state = frozen.run_stage(n, state);
                outs.push(lift_output(frozen.exit(n, &state)));
                outs
            }
        }
    }
}

/// A frozen stage's state as an input of the autodiff graph (no gradient flows back into it).
fn lift(state: StageState) -> StageState {
    StageState {
        x: state.x.autodiff(),
        pooled: state.pooled.into_iter().map(|p| p.autodiff()).collect(),
    }
}

/// A frozen exit's output on the autodiff device, without gradients.
pub(crate) fn lift_output(out: ExitOutput) -> ExitOutput {
    ExitOutput {
        logits: out.logits.autodiff(),
        confidence: out.confidence.map(|c| c.autodiff()),
    }
}

/// The stage (0-based; the final classifier's stage is `num_exits`) a parameter belongs to, from
/// its path: `backbone.blocks.{i}.…` by block, `heads.{k}.…` by exit, `backbone.classifier.…` last.
pub fn stage_of(path: &str, cuts: &[usize]) -> usize {
    let mut parts = path.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("heads"), Some(k), _) => k.parse().unwrap_or(cuts.len()),
        (Some("backbone"), Some("blocks"), Some(i)) => {
            let i: usize = i.parse().unwrap_or(usize::MAX);
            cuts.iter().position(|&c| i <= c).unwrap_or(cuts.len())
        }
        _ => cuts.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_map_to_their_stage() {
        // eenet8 with cuts 1, 2: stage 0 = blocks 0..=1, stage 1 = block 2, stage 2 = block 3 + classifier.
        let cuts = [1, 2];
        assert_eq!(stage_of("backbone.blocks.0.Conv.layers.0.conv.weight", &cuts), 0);
        assert_eq!(stage_of("backbone.blocks.1.PreAct.conv1.conv.weight", &cuts), 0);
        assert_eq!(stage_of("backbone.blocks.2.PreAct.pre.gamma", &cuts), 1);
        assert_eq!(stage_of("backbone.blocks.3.PreAct.conv2.bias", &cuts), 2);
        assert_eq!(stage_of("backbone.classifier.linear.weight", &cuts), 2);
        assert_eq!(stage_of("heads.0.classifier.weight", &cuts), 0);
        assert_eq!(stage_of("heads.1.confidence.bias", &cuts), 1);
        assert!(Plan::HeadsOnly.trains("heads.1.confidence.bias", &cuts));
        assert!(!Plan::HeadsOnly.trains("backbone.classifier.linear.weight", &cuts));
        assert!(Plan::Layerwise(1).trains("backbone.blocks.2.PreAct.pre.gamma", &cuts));
        assert!(!Plan::Layerwise(1).trains("heads.0.classifier.weight", &cuts));
    }

    #[test]
    fn plans_say_which_exits_run_and_train() {
        assert_eq!(Plan::Layerwise(1).exits_run(3), 2);
        assert_eq!(Plan::HeadsOnly.exits_run(3), 4);
        assert!(Plan::HeadsOnly.trains_exit(2, 3) && !Plan::HeadsOnly.trains_exit(3, 3));
        assert!(Plan::Layerwise(1).trains_exit(1, 3) && !Plan::Layerwise(1).trains_exit(0, 3));
        assert_eq!(Plan::HeadsOnly.first_trained_stage(3), 4);
        assert_eq!(Plan::Layerwise(2).first_trained_stage(3), 2);
    }
}

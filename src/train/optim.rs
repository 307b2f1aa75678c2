//! Optimisers with PyTorch semantics, written on [`GradientsParams`].
//!
//! Burn's own SGD defaults to a dampening of 0.1 and keys its state by random [`ParamId`]s,
//! which do not survive a reload from safetensors. These optimisers follow `torch.optim`
//! exactly (SGD with dampening 0 by default, weight decay, Nesterov; Adam with L2 weight decay;
//! AdamW with decoupled weight decay), keep their state by **parameter path**
//! (`backbone.blocks.1.PreAct.conv1.conv.weight`, the same names as the safetensors weights), and
//! take a learning rate per parameter so that freezeout and layer-wise freezing are one
//! mechanism: a parameter whose learning rate is 0 is left untouched, state included.
//!
//! [`ParamId`]: burn::module::ParamId

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// `torch.optim.SGD`.
    Sgd,
    /// `torch.optim.Adam` (weight decay as an L2 term added to the gradient).
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    Adamw,
}

fn betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn eps() -> f64 {
    1e-8
}
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// The `[optimizer]` table of a training configuration (PyTorch names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// Base learning rate (before the schedule).
    pub lr: f64,
    /// SGD momentum.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub momentum: f64,
    /// SGD dampening (PyTorch default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dampening: f64,
    /// SGD Nesterov momentum.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nesterov: bool,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_decay: f64,
    /// Adam `(β1, β2)`.
    #[serde(default = "betas")]
    pub betas: [f64; 2],
    /// Adam `ε`.
    #[serde(default = "eps")]
    pub eps: f64,
}

impl OptimizerConfig {
    /// SGD with learning rate `lr` and every option at PyTorch's default.
    pub fn sgd(lr: f64) -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            betas: betas(),
            eps: eps(),
        }
    }

    /// Adam with learning rate `lr` and PyTorch's defaults.
    pub fn adam(lr: f64) -> Self {
        Self {
            kind: OptimizerKind::Adam,
            ..Self::sgd(lr)
        }
    }

    /// Checks ranges (PyTorch's own checks); errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, r: String| Err(Error::invalid(format!("optimizer.{f}"), r));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("must be > 0, got {}", self.lr));
        }
        if !(self.momentum >= 0.0 && self.momentum < 1.0) {
            return bad("momentum", format!("must be in [0, 1), got {}", self.momentum));
        }
        if !(0.0..=1.0).contains(&self.dampening) {
            return bad("dampening", format!("must be in [0, 1], got {}", self.dampening));
        }
        if self.weight_decay < 0.0 || !self.weight_decay.is_finite() {
            return bad("weight_decay", format!("must be ≥ 0, got {}", self.weight_decay));
        }
        if self.kind == OptimizerKind::Sgd {
            if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
                return bad(
                    "nesterov",
                    "Nesterov momentum needs momentum > 0 and dampening = 0".into(),
                );
            }
        } else {
            if self.momentum != 0.0 || self.nesterov || self.dampening != 0.0 {
                return bad(
                    "momentum",
                    format!("momentum, dampening and nesterov are SGD options, not {:?}", self.kind),
                );
            }
            if !self.betas.iter().all(|b| (0.0..1.0).contains(b)) {
                return bad("betas", format!("must be in [0, 1), got {:?}", self.betas));
            }
            if self.eps.is_nan() || self.eps <= 0.0 {
                return bad("eps", format!("must be > 0, got {}", self.eps));
            }
        }
        Ok(())
    }
}

/// One parameter's optimiser state.
#[derive(Clone, Debug)]
pub struct ParamState {
    /// Updates applied so far.
    pub step: u64,
    /// SGD: `[momentum buffer]` (empty without momentum); Adam/AdamW: `[m, v]`. Flattened.
    pub slots: Vec<Tensor<1>>,
}

/// A serialisable copy of the optimiser state: per parameter path, its step count and slots.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerRecord {
    /// Path → (step, flattened slots).
    pub params: BTreeMap<String, (u64, Vec<Vec<f32>>)>,
}

/// An optimiser: its configuration and the state of every parameter it has updated.
#[derive(Clone, Debug)]
pub struct Optimizer {
    /// The configuration.
    pub config: OptimizerConfig,
    states: BTreeMap<String, ParamState>,
}

impl Optimizer {
    /// A fresh optimiser (no state).
    pub fn new(config: OptimizerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            states: BTreeMap::new(),
        })
    }

    /// The state of the parameter at `path`, if it has been updated.
    pub fn state(&self, path: &str) -> Option<&ParamState> {
        self.states.get(path)
    }

    /// Applies one update to every parameter of `module` that has a gradient in `grads` and a
    /// learning rate `lr(path) > 0`; the others (and their state) are left as they are.
    pub fn step<M: Module>(&mut self, module: M, mut grads: GradientsParams, lr: impl Fn(&str) -> f64) -> M {
        let mut mapper = StepMapper {
            path: Vec::new(),
            grads: &mut grads,
            opt: self,
            lr: &lr,
        };
        module.map(&mut mapper)
    }

    /// Copies the state to host memory.
    pub fn to_record(&self) -> OptimizerRecord {
        OptimizerRecord {
            params: self
                .states
                .iter()
                .map(|(k, s)| {
                    let slots = s
                        .slots
                        .iter()
                        .map(|t| {
                            t.clone()
                                .into_data()
                                .convert::<f32>()
                                .try_to_vec::<f32>()
                                .expect("f32 state")
                        })
                        .collect();
                    (k.clone(), (s.step, slots))
                })
                .collect(),
        }
    }

    /// Restores a state saved with [`Self::to_record`]; tensors go to `device`.
    pub fn load_record(&mut self, record: &OptimizerRecord, device: &burn::tensor::Device) {
        self.states = record
            .params
            .iter()
            .map(|(k, (step, slots))| {
                let slots = slots
                    .iter()
                    .map(|v| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), device))
                    .collect();
                (k.clone(), ParamState { step: *step, slots })
            })
            .collect();
    }

    /// The new value of a flattened parameter `p` with gradient `g` at learning rate `lr`.
    fn update(&mut self, path: &str, p: Tensor<1>, g: Tensor<1>, lr: f64) -> Tensor<1> {
        let c = &self.config;
        let state = self.states.entry(path.to_string()).or_insert_with(|| ParamState {
            step: 0,
            slots: Vec::new(),
        });
        let wd = c.weight_decay;
        let new = match c.kind {
            OptimizerKind::Sgd => {
                let g = if wd > 0.0 { g + p.clone().mul_scalar(wd) } else { g };
                let d = if c.momentum > 0.0 {
                    let buf = match state.slots.pop() {
                        Some(buf) if state.step > 0 => {
                            buf.mul_scalar(c.momentum) + g.clone().mul_scalar(1.0 - c.dampening)
                        }
                        _ => g.clone(),
                    };
                    state.slots = vec![buf.clone()];
                    if c.nesterov {
                        g + buf.mul_scalar(c.momentum)
                    } else {
                        buf
                    }
                } else {
                    g
                };
                p - d.mul_scalar(lr)
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let [b1, b2] = c.betas;
                let (p, g) = match (c.kind, wd > 0.0) {
                    (OptimizerKind::Adam, true) => {
                        let g = g + p.clone().mul_scalar(wd);
                        (p, g)
                    }
                    (OptimizerKind::Adamw, true) => (p.mul_scalar(1.0 - lr * wd), g),
                    _ => (p, g),
                };
                let (m, v) = if state.slots.len() == 2 {
                    let v = state.slots.pop().expect("v");
                    let m = state.slots.pop().expect("m");
                    (m, v)
                } else {
                    (g.zeros_like(), g.zeros_like())
                };
                let m = m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
                let v = v.mul_scalar(b2) + (g.clone() * g).mul_scalar(1.0 - b2);
                let t = (state.step + 1) as i32;
                let bc1 = 1.0 - b1.powi(t);
                let bc2 = 1.0 - b2.powi(t);
                let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(c.eps);
                let new = p - (m.clone() / denom).mul_scalar(lr / bc1);
                state.slots = vec![m, v];
                new
            }
        };
        state.step += 1;
        new
    }
}

struct StepMapper<'a, F: Fn(&str) -> f64> {
    path: Vec<String>,
    grads: &'a mut GradientsParams,
    opt: &'a mut Optimizer,
    lr: &'a F,
}

impl<F: Fn(&str) -> f64> ModuleMapper for StepMapper<'_, F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let path = self.path.join(".");
        let lr = (self.lr)(&path);
        if lr <= 0.0 {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let autodiff = tensor.is_autodiff();
        let require_grad = tensor.is_require_grad();
        let strategy = tensor.gradient_checkpointing_strategy();
        let dims = tensor.dims();
        let numel: usize = dims.iter().product();
        let p = tensor.inner().reshape([numel]);
        let g = grad.inner().reshape([numel]).to_device(&p.device());
        let new = self.opt.update(&path, p, g, lr).reshape(dims);
        let mut new = if autodiff { Tensor::from_inner(new) } else { new };
        if let Some(s) = strategy {
            new = new.with_gradient_checkpointing_strategy(s);
        }
        if require_grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Net {
        lin: Linear,
    }

    /// A 1→1 linear layer `y = w x + b` with w = 2, b = 0.5; loss = (w x + b)² / 2 at x = 1.5,
    /// so ∂/∂w = (w x + b) x and ∂/∂b = w x + b.
    fn net(device: &Device) -> Net {
        let mut lin = LinearConfig::new(1, 1).init(device);
        lin.weight = Param::from_tensor(Tensor::<2>::from_data(TensorData::new(vec![2.0f32], [1, 1]), device));
        lin.bias = Some(Param::from_tensor(Tensor::<1>::from_data(
            TensorData::new(vec![0.5f32], [1]),
            device,
        )));
        Net { lin }
    }

    fn grads(n: &Net, device: &Device) -> GradientsParams {
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.5f32], [1, 1]), device);
        let y = n.lin.forward(x);
        let loss = (y.clone() * y).sum().mul_scalar(0.5);
        GradientsParams::from_grads(loss.backward(), n)
    }

    fn wb(n: &Net) -> (f64, f64) {
        let w = n.lin.weight.val().into_data().try_to_vec::<f32>().unwrap()[0] as f64;
        let b = n
            .lin
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()[0] as f64;
        (w, b)
    }

    fn run(cfg: OptimizerConfig, steps: usize) -> (f64, f64) {
        let device = Device::flex().autodiff();
        let mut n = net(&device);
        let mut opt = Optimizer::new(cfg).unwrap();
        for _ in 0..steps {
            let g = grads(&n, &device);
            n = opt.step(n, g, |_| 0.1);
        }
        wb(&n)
    }

    /// The same two steps computed by hand (the PyTorch formulas, in f64).
    fn reference(cfg: &OptimizerConfig, steps: usize) -> (f64, f64) {
        let x = 1.5;
        let (mut w, mut b) = (2.0f64, 0.5f64);
        let lr = 0.1;
        let mut buf = [0.0f64; 2];
        let mut m = [0.0f64; 2];
        let mut v = [0.0f64; 2];
        for t in 1..=steps {
            let r = w * x + b;
            let mut g = [r * x, r];
            let mut p = [w, b];
            match cfg.kind {
                OptimizerKind::Sgd => {
                    for i in 0..2 {
                        g[i] += cfg.weight_decay * p[i];
                        let d = if cfg.momentum > 0.0 {
                            buf[i] = if t == 1 {
                                g[i]
                            } else {
                                cfg.momentum * buf[i] + (1.0 - cfg.dampening) * g[i]
                            };
                            if cfg.nesterov {
                                g[i] + cfg.momentum * buf[i]
                            } else {
                                buf[i]
                            }
                        } else {
                            g[i]
                        };
                        p[i] -= lr * d;
                    }
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let [b1, b2] = cfg.betas;
                    for i in 0..2 {
                        if cfg.kind == OptimizerKind::Adam {
                            g[i] += cfg.weight_decay * p[i];
                        } else {
                            p[i] *= 1.0 - lr * cfg.weight_decay;
                        }
                        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                        let mh = m[i] / (1.0 - b1.powi(t as i32));
                        let vh = v[i] / (1.0 - b2.powi(t as i32));
                        p[i] -= lr * mh / (vh.sqrt() + cfg.eps);
                    }
                }
            }
            (w, b) = (p[0], p[1]);
        }
        (w, b)
    }

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 1e-5 && (a.1 - b.1).abs() < 1e-5
    }

    #[test]
    fn sgd_two_steps_by_hand() {
        // Plain SGD, step 1: r = 3.5, g = (5.25, 3.5) → w = 1.475, b = 0.15.
        let cfg = OptimizerConfig::sgd(0.1);
        assert!(close(run(cfg.clone(), 1), (1.475, 0.15)));
        // Momentum 0.9 with PyTorch's dampening 0: step 2, r = 2.3625, g = (3.54375, 2.3625),
        // buf = 0.9 (5.25, 3.5) + g = (8.26875, 5.5125) → w = 0.648125, b = −0.40125.
        let mom = OptimizerConfig {
            momentum: 0.9,
            ..OptimizerConfig::sgd(0.1)
        };
        let got = run(mom.clone(), 2);
        assert!(close(got, (0.648125, -0.40125)), "{got:?}");
        assert!(close(got, reference(&mom, 2)));
        for cfg in [
            OptimizerConfig {
                weight_decay: 1e-2,
                ..mom.clone()
            },
            OptimizerConfig {
                nesterov: true,
                weight_decay: 1e-4,
                ..mom.clone()
            },
            OptimizerConfig {
                dampening: 0.5,
                ..mom.clone()
            },
        ] {
            let got = run(cfg.clone(), 3);
            assert!(
                close(got, reference(&cfg, 3)),
                "{cfg:?}: {got:?} vs {:?}",
                reference(&cfg, 3)
            );
        }
    }

    #[test]
    fn adam_and_adamw_by_hand() {
        // Adam's first step moves every parameter by lr (m̂/√v̂ = ±1): (1.9, 0.4).
        let adam = OptimizerConfig::adam(0.1);
        let got = run(adam.clone(), 1);
        assert!(close(got, (1.9, 0.4)), "{got:?}");
        for cfg in [
            adam.clone(),
            OptimizerConfig {
                weight_decay: 0.1,
                ..adam.clone()
            },
            OptimizerConfig {
                kind: OptimizerKind::Adamw,
                weight_decay: 0.1,
                ..adam.clone()
            },
        ] {
            let got = run(cfg.clone(), 2);
            assert!(
                close(got, reference(&cfg, 2)),
                "{cfg:?}: {got:?} vs {:?}",
                reference(&cfg, 2)
            );
        }
    }

    #[test]
    fn zero_learning_rate_freezes_parameter_and_state() {
        let device = Device::flex().autodiff();
        let mut n = net(&device);
        let mut opt = Optimizer::new(OptimizerConfig::adam(0.1)).unwrap();
        let g = grads(&n, &device);
        n = opt.step(n, g, |p| if p.ends_with("bias") { 0.0 } else { 0.1 });
        let (w, b) = wb(&n);
        assert!((w - 1.9).abs() < 1e-6 && b == 0.5);
        assert!(opt.state("lin.bias").is_none());
        assert_eq!(opt.state("lin.weight").unwrap().step, 1);
        // Still trainable afterwards.
        assert!(n.lin.weight.val().is_require_grad());
    }

    #[test]
    fn record_round_trip_continues_identically() {
        let device = Device::flex().autodiff();
        let cfg = OptimizerConfig {
            momentum: 0.9,
            nesterov: true,
            ..OptimizerConfig::sgd(0.1)
        };
        let mut n = net(&device);
        let mut opt = Optimizer::new(cfg.clone()).unwrap();
        let g = grads(&n, &device);
        n = opt.step(n, g, |_| 0.1);
        let mut restored = Optimizer::new(cfg).unwrap();
        restored.load_record(&opt.to_record(), &device);
        assert_eq!(restored.to_record(), opt.to_record());
        let n2 = n.clone();
        let g = grads(&n, &device);
        let a = wb(&opt.step(n, g, |_| 0.1));
        let g2 = grads(&n2, &device);
        let b = wb(&restored.step(n2, g2, |_| 0.1));
        assert_eq!(a, b);
    }

    #[test]
    fn validation_names_the_field() {
        let e = OptimizerConfig {
            nesterov: true,
            ..OptimizerConfig::sgd(0.1)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("optimizer.nesterov"));
        assert!(
            OptimizerConfig::sgd(0.0)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("optimizer.lr")
        );
        let e = OptimizerConfig {
            momentum: 0.9,
            ..OptimizerConfig::adam(1e-3)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("optimizer.momentum"));
    }
}

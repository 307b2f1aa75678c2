//! Multiply-accumulate (MAC) and parameter counting from shapes alone.
//!
//! Pure arithmetic: no tensors, no device. Every block and head describes its own layers to a
//! [`Counter`], so the cost of a network is derived from the same specification that builds it
//! and can never drift from it by a typed-in number.
//!
//! Two conventions are supported ([`MacConvention`]):
//! - `conv-linear`: convolutions and linear layers only (one MAC per weight use);
//! - `all`: also BatchNorm (2 per element when affine), ReLU (1 per element) and pooling
//!   (1 per *input* element), exactly as the `ptflops` counter used by the EENets paper counts
//!   them. Residual additions are not counted, as in `ptflops`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Per-sample feature-map shape `C×H×W`. Flattened (dense) features use `H = W = 1`.
///
/// Serialised as the string `"CxHxW"`, the form users type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde_with::SerializeDisplay, serde_with::DeserializeFromStr)]
pub struct Shape {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape {
    /// A `c×h×w` shape.
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }

    /// Number of elements per sample.
    pub const fn numel(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The shape as `[c, h, w]`.
    pub const fn dims(&self) -> [usize; 3] {
        [self.c, self.h, self.w]
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

impl FromStr for Shape {
    type Err = String;

    /// Parses `CxHxW` (for example `3x32x32`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(['x', 'X', '×']).collect();
        let bad = || format!("bad input shape `{s}`: expected CxHxW with positive integers, e.g. 3x32x32");
        if parts.len() != 3 {
            return Err(bad());
        }
        let mut v = [0usize; 3];
        for (slot, p) in v.iter_mut().zip(parts) {
            *slot = p.trim().parse().map_err(|_| bad())?;
            if *slot == 0 {
                return Err(bad());
            }
        }
        Ok(Shape::new(v[0], v[1], v[2]))
    }
}

/// Which operations count as MACs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MacConvention {
    /// Convolutions and linear layers only.
    ConvLinear,
    /// Also BatchNorm, ReLU and pooling, as `ptflops` counts them (the EENets paper's tables).
    #[default]
    All,
}

impl FromStr for MacConvention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "conv-linear" | "conv_linear" => Ok(Self::ConvLinear),
            _ => Err(format!("unknown MAC convention `{s}`: expected `all` or `conv-linear`")),
        }
    }
}

impl fmt::Display for MacConvention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::ConvLinear => "conv-linear",
        })
    }
}

/// MACs split by convention, plus parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// MACs of convolutions and linear layers.
    pub conv_linear: u64,
    /// MACs of everything else `ptflops` counts (BatchNorm, ReLU, pooling).
    pub other: u64,
    /// Learnable parameters (BatchNorm running statistics excluded, as PyTorch counts them).
    pub params: u64,
}

impl Cost {
    /// MACs under the given convention.
    pub fn macs(&self, convention: MacConvention) -> u64 {
        match convention {
            MacConvention::ConvLinear => self.conv_linear,
            MacConvention::All => self.conv_linear + self.other,
        }
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            conv_linear: self.conv_linear + o.conv_linear,
            other: self.other + o.other,
            params: self.params + o.params,
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

/// Output size of a convolution or pooling window along one axis (floor mode).
pub fn out_size(input: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
    let padded = input + 2 * pad;
    if padded < kernel || stride == 0 {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

/// Walks a sequence of layers, tracking the current shape and accumulating their cost.
///
/// A shape that becomes impossible (a kernel larger than the padded input) is recorded as an
/// error instead of panicking, so that bad input shapes give a clear message.
#[derive(Clone, Debug)]
pub struct Counter {
    shape: Shape,
    cost: Cost,
    error: Option<String>,
}

impl Counter {
    /// Starts at `input` with zero cost.
    pub fn new(input: Shape) -> Self {
        Self {
            shape: input,
            cost: Cost::default(),
            error: None,
        }
    }

    /// The current shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The accumulated cost.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// The shape and cost, or the first shape error met.
    pub fn finish(self) -> Result<(Shape, Cost), String> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.shape, self.cost)),
        }
    }

    fn fail(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(msg);
        }
        // Keep a valid 1x1 shape so that counting can go on without underflow.
        self.shape = Shape::new(self.shape.c.max(1), 1, 1);
    }

    /// A `k×k` convolution to `cout` channels.
    pub fn conv(&mut self, cout: usize, k: usize, stride: usize, pad: usize, bias: bool) -> &mut Self {
        self.conv_grouped(cout, [k, k], stride, [pad, pad], 1, bias)
    }

    /// A `kh×kw` convolution to `cout` channels with `[pad_h, pad_w]` zero padding, its channels
    /// split into `groups` (`groups == cin`: depthwise). Each output uses `cin / groups` inputs.
    pub fn conv_grouped(
        &mut self,
        cout: usize,
        [kh, kw]: [usize; 2],
        stride: usize,
        [ph, pw]: [usize; 2],
        groups: usize,
        bias: bool,
    ) -> &mut Self {
        let s = self.shape;
        if groups == 0 || !s.c.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
            self.fail(format!(
                "a convolution with {groups} groups needs input ({}) and output ({cout}) channels divisible by it",
                s.c
            ));
            return self;
        }
        match (out_size(s.h, kh, stride, ph), out_size(s.w, kw, stride, pw)) {
            (Some(h), Some(w)) => {
                let out = Shape::new(cout, h, w);
                let taps = kh * kw * (s.c / groups);
                self.cost.conv_linear += (out.numel() * taps) as u64;
                self.cost.params += (cout * taps) as u64;
                if bias {
                    self.cost.conv_linear += out.numel() as u64;
                    self.cost.params += cout as u64;
                }
                self.shape = out;
            }
            _ => self.fail(format!(
                "a {kh}x{kw} convolution (stride {stride}, padding {ph}x{pw}) does not fit a {s} feature map"
            )),
        }
        self
    }

    /// BatchNorm (affine): 2 MACs per element under `all`.
    pub fn bn(&mut self) -> &mut Self {
        self.cost.other += 2 * self.shape.numel() as u64;
        self.cost.params += 2 * self.shape.c as u64;
        self
    }

    /// ReLU: 1 MAC per element under `all`.
    pub fn relu(&mut self) -> &mut Self {
        self.cost.other += self.shape.numel() as u64;
        self
    }

    /// Max or average pooling with a `k×k` window: 1 MAC per input element under `all`.
    pub fn pool(&mut self, k: usize, stride: usize, pad: usize) -> &mut Self {
        let s = self.shape;
        match (out_size(s.h, k, stride, pad), out_size(s.w, k, stride, pad)) {
            (Some(h), Some(w)) => {
                self.cost.other += s.numel() as u64;
                self.shape = Shape::new(s.c, h, w);
            }
            _ => self.fail(format!(
                "a {k}x{k} pooling window (stride {stride}) does not fit a {s} feature map"
            )),
        }
        self
    }

    /// Global average pooling to `C×1×1`: 1 MAC per input element under `all`.
    pub fn global_pool(&mut self) -> &mut Self {
        self.cost.other += self.shape.numel() as u64;
        self.shape = Shape::new(self.shape.c, 1, 1);
        self
    }

    /// Adaptive average pooling to `C×h×w` (torchvision's VGG before its dense layers): 1 MAC
    /// per input element under `all`, as `ptflops` counts it.
    pub fn adaptive_pool(&mut self, h: usize, w: usize) -> &mut Self {
        self.cost.other += self.shape.numel() as u64;
        self.shape = Shape::new(self.shape.c, h, w);
        self
    }

    /// Joins parallel branches that all start from this counter's shape by concatenating their
    /// channels (Inception modules, DenseNet layers): the branches' costs add up and their
    /// spatial sizes must agree.
    pub fn concat(&mut self, branches: Vec<Counter>) -> &mut Self {
        let mut out: Option<Shape> = None;
        for b in branches {
            if let Some(e) = b.error {
                self.fail(e);
                return self;
            }
            self.cost += b.cost;
            out = Some(match out {
                None => b.shape,
                Some(o) if (o.h, o.w) == (b.shape.h, b.shape.w) => Shape::new(o.c + b.shape.c, o.h, o.w),
                Some(o) => {
                    self.fail(format!(
                        "concatenated branches disagree on the spatial size: {o} and {}",
                        b.shape
                    ));
                    return self;
                }
            });
        }
        if let Some(o) = out {
            self.shape = o;
        }
        self
    }

    /// Flattens to `(C·H·W)×1×1`; free.
    pub fn flatten(&mut self) -> &mut Self {
        self.shape = Shape::new(self.shape.numel(), 1, 1);
        self
    }

    /// A linear layer on the flattened features.
    pub fn linear(&mut self, dout: usize, bias: bool) -> &mut Self {
        let din = self.shape.numel();
        self.cost.conv_linear += (din * dout) as u64;
        self.cost.params += (din * dout) as u64;
        if bias {
            self.cost.conv_linear += dout as u64;
            self.cost.params += dout as u64;
        }
        self.shape = Shape::new(dout, 1, 1);
        self
    }

    /// Adds the cost of a parallel branch (a shortcut) that starts from the same input; the
    /// branch's output shape must equal this counter's.
    pub fn merge_branch(&mut self, branch: Counter) -> &mut Self {
        if let Some(e) = branch.error {
            self.fail(e);
            return self;
        }
        if branch.shape != self.shape && self.error.is_none() {
            self.fail(format!(
                "residual branch shape {} differs from main path {}",
                branch.shape, self.shape
            ));
        }
        self.cost += branch.cost;
        self
    }
}

/// Formats a MAC count the way papers print it (`41.41 M`).
pub fn human(macs: u64) -> String {
    let m = macs as f64;
    if m >= 1e9 {
        format!("{:.2} G", m / 1e9)
    } else if m >= 1e6 {
        format!("{:.2} M", m / 1e6)
    } else if m >= 1e3 {
        format!("{:.2} K", m / 1e3)
    } else {
        format!("{macs}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_counts_macs_and_params() {
        let mut c = Counter::new(Shape::new(3, 32, 32));
        c.conv(16, 3, 1, 1, false);
        let (s, cost) = c.finish().unwrap();
        assert_eq!(s, Shape::new(16, 32, 32));
        assert_eq!(cost.conv_linear, 16 * 32 * 32 * 27);
        assert_eq!(cost.params, 16 * 27);
    }

    #[test]
    fn ptflops_conventions_for_bn_relu_pool_linear() {
        let mut c = Counter::new(Shape::new(4, 8, 8));
        c.bn().relu().global_pool().linear(10, true);
        let (_, cost) = c.finish().unwrap();
        assert_eq!(cost.other, 2 * 256 + 256 + 256);
        assert_eq!(cost.conv_linear, 4 * 10 + 10);
        assert_eq!(cost.macs(MacConvention::All), 2 * 256 + 256 + 256 + 50);
    }

    #[test]
    fn impossible_shapes_are_errors() {
        let mut c = Counter::new(Shape::new(1, 2, 2));
        c.conv(4, 5, 1, 0, false);
        assert!(c.finish().unwrap_err().contains("does not fit"));
    }

    #[test]
    fn shape_parses() {
        assert_eq!("3x32x32".parse::<Shape>().unwrap(), Shape::new(3, 32, 32));
        assert!("3x32".parse::<Shape>().is_err());
        assert!("0x3x3".parse::<Shape>().is_err());
    }
}

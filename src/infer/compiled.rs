//! A compiled CPU path for inference: the network's weights laid out once for fast kernels.
//!
//! Why: on the CPU, Burn's generic `flex` convolution converts every activation to channels-last
//! and back, builds its im2col buffer element by element, and runs BatchNorm, ReLU and the
//! residual add as separate passes; the profile of a ResNet-20 forward pass showed about three
//! quarters of the time outside the matrix products. [`CompiledNet`] keeps activations
//! channels-last (NHWC) from input to classifier, folds every BatchNorm into its convolution and
//! applies bias, residual and ReLU before the output is stored. Convolutions with a multiple of 16
//! output channels run a direct AVX-512 kernel where the CPU has it (`direct_conv`: no im2col
//! buffer, 16 channels per register); the others, and every convolution with
//! [`ConvKernel::Gemm`], copy whole channel runs into an im2col tile for the `gemm` crate (the
//! GEMM flex uses) and apply the epilogue in one pass over its output.
//!
//! The engine on top ([`CompiledNet::infer`]) is the one of [`MultiExitModel::infer`]: real
//! per-sample exits, the same policies (scored by the same code), compaction by copying the
//! survivors' contiguous NHWC rows. Answers equal the Burn path within float rounding (tested to
//! 1e-4).
//!
//! Supported: ResNet basic and bottleneck blocks, convolution stacks without pooling, `plain`,
//! `pool` and `bnpool` heads, a global-pool classifier (every ResNet of the zoo). Anything else is
//! refused with an error naming the block; use the Burn path for it.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use earlyexit::infer::{CompiledNet, MultiExitModel};
//! use earlyexit::model::{ModelDescription, Shape};
//!
//! let arch = ModelDescription::new("resnet20", Shape::new(3, 32, 32), 10, "pareto:2".parse()?).resolve()?;
//! let model = MultiExitModel::new(arch, &Device::flex());
//! let fast = CompiledNet::compile(&model)?;
//! let x = Tensor::<4>::random([4, 3, 32, 32], Distribution::Default, &Device::flex());
//! let answers = fast.infer(x, &"maxprob:0.9".parse()?)?;
//! assert_eq!(answers.len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;

use super::direct_conv;
use super::engine::{Answers, MultiExitModel, argmax};
use super::matmul::{MatRef, matmul};
use super::policy::{Policy, PolicyState, max_prob};
use crate::error::{Error, Result};
use crate::model::layers::{Block, ConvBnAct};
use crate::model::{ExitHead, ExitOutput, HeadKind, MacConvention, Shape};

/// Output rows (positions × samples) per GEMM task: large enough to amortise packing, small
/// enough that the im2col tile stays in cache and both cores get work at batch 1.
const MAX_TILE_ROWS: usize = 256;
const MIN_TILE_ROWS: usize = 32;

pub(crate) fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 tensor")
}

pub(crate) fn host_param<const D: usize>(p: &Param<Tensor<D>>) -> Vec<f32> {
    p.val()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor")
}

/// Channels-last activations of a batch: `data[((s·h + y)·w + x)·c + ch]`.
#[derive(Clone, Debug)]
pub(crate) struct Act {
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
    pub(crate) data: Vec<f32>,
}

impl Act {
    pub(crate) fn sample_len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// Keeps the samples at `rows` (in that order).
    fn select(&self, rows: &[usize]) -> Act {
        let len = self.sample_len();
        let mut data = Vec::with_capacity(rows.len() * len);
        for &r in rows {
            data.extend_from_slice(&self.data[r * len..(r + 1) * len]);
        }
        Act {
            n: rows.len(),
            data,
            ..*self
        }
    }

    /// Global average pool: `[n, c]`.
    fn pool(&self) -> Vec<f32> {
        let (hw, c) = (self.h * self.w, self.c);
        let mut out = vec![0.0f32; self.n * c];
        for (s, o) in out.chunks_mut(c).enumerate() {
            for p in self.data[s * hw * c..(s + 1) * hw * c].chunks(c) {
                for (a, v) in o.iter_mut().zip(p) {
                    *a += v;
                }
            }
            let inv = 1.0 / hw as f32;
            o.iter_mut().for_each(|a| *a *= inv);
        }
        out
    }
}

/// A convolution with its BatchNorm folded in; weights `[(kh·k + kw)·cin + ci][cout]`.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) w: Vec<f32>,
    pub(crate) b: Vec<f32>,
    pub(crate) relu: bool,
    /// `w` repacked for the direct AVX-512 kernel, where it runs this convolution.
    packed: Option<Vec<f32>>,
}

/// Which kernel runs the compiled path's convolutions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvKernel {
    /// The direct AVX-512 kernel wherever the CPU has AVX-512F and a convolution has a multiple
    /// of 16 output channels; im2col + GEMM for the others.
    #[default]
    Auto,
    /// im2col + GEMM everywhere (portable; the reference the direct kernel is tested against).
    Gemm,
}

/// BatchNorm in eval mode as `x·scale + shift`.
fn bn_affine(bn: &BatchNorm) -> (Vec<f32>, Vec<f32>) {
    let gamma = host_param(&bn.gamma);
    let beta = host_param(&bn.beta);
    let mean = host(bn.running_mean.value());
    let var = host(bn.running_var.value());
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + bn.epsilon as f32).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

impl Conv {
    fn from_burn(conv: &Conv2d, bn: Option<&BatchNorm>, relu: bool, what: &str, kernel: ConvKernel) -> Result<Self> {
        let [cout, cin, kh, kw] = conv.weight.val().dims();
        let unsupported =
            |why: &str| Error::invalid("model", format!("{what}: {why}; the compiled CPU path cannot run it"));
        if kh != kw || conv.stride[0] != conv.stride[1] || conv.groups != 1 || conv.dilation != [1, 1] {
            return Err(unsupported("not a square, ungrouped, undilated convolution"));
        }
        let pad = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
            PaddingConfig2d::Valid => 0,
            _ => return Err(unsupported("asymmetric or `same` padding")),
        };
        let raw = host_param(&conv.weight); // [cout, cin, k, k]
        let mut b = match &conv.bias {
            Some(b) => host_param(b),
            None => vec![0.0; cout],
        };
        let mut scale = vec![1.0f32; cout];
        if let Some(bn) = bn {
            let (s, shift) = bn_affine(bn);
            for o in 0..cout {
                b[o] = b[o] * s[o] + shift[o];
            }
            scale = s;
        }
        let k = kh;
        let mut w = vec![0.0f32; k * k * cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                for y in 0..k {
                    for x in 0..k {
                        w[((y * k + x) * cin + i) * cout + o] = raw[((o * cin + i) * k + y) * k + x] * scale[o];
                    }
                }
            }
        }
        Ok(Self::from_host(cin, cout, k, conv.stride[0], pad, w, b, relu, kernel))
    }

    /// A convolution from host weights `w` (`[(kh·k + kw)·cin + ci][cout]`) and bias `b`.
    #[allow(clippy::too_many_arguments)] // the full geometry of a convolution
    pub(crate) fn from_host(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        w: Vec<f32>,
        b: Vec<f32>,
        relu: bool,
        kernel: ConvKernel,
    ) -> Self {
        debug_assert_eq!(w.len(), k * k * cin * cout);
        debug_assert_eq!(b.len(), cout);
        let packed =
            (kernel == ConvKernel::Auto && cout.is_multiple_of(direct_conv::LANES) && direct_conv::available())
                .then(|| direct_conv::pack(&w, k, cin, cout));
        Self {
            cin,
            cout,
            k,
            stride,
            pad,
            w,
            b,
            relu,
            packed,
        }
    }

    fn from_layer(l: &ConvBnAct, what: &str, kernel: ConvKernel) -> Result<Self> {
        Self::from_burn(&l.conv, l.bn.as_ref(), l.relu, what, kernel)
    }

    pub(crate) fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.pad - self.k) / self.stride + 1,
            (w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }

    /// `conv(x) + b + residual`, then ReLU if `relu`; `residual` has the output's shape.
    pub(crate) fn forward(&self, x: &Act, residual: Option<&Act>, relu: bool) -> Act {
        self.forward_into(x, residual, relu, Vec::new())
    }

    /// [`Self::forward`] writing into `out` (resized; its old values are all overwritten), so
    /// that a caller can recycle its buffers.
    pub(crate) fn forward_into(&self, x: &Act, residual: Option<&Act>, relu: bool, mut out: Vec<f32>) -> Act {
        debug_assert_eq!(x.c, self.cin);
        let (oh, ow) = self.out_hw(x.h, x.w);
        out.resize(x.n * oh * ow * self.cout, 0.0);
        if let Some(packed) = &self.packed {
            return self.forward_direct(packed, x, residual, relu, out);
        }
        let per_sample = oh * ow;
        let rows = x.n * per_sample;
        let (cin, cout, k, kk) = (self.cin, self.cout, self.k, self.k * self.k * self.cin);
        let threads = rayon::current_num_threads().max(1);
        let tile = rows.div_ceil(threads * 2).clamp(MIN_TILE_ROWS, MAX_TILE_ROWS);
        let direct = k == 1 && self.stride == 1 && self.pad == 0;
        // Few tasks (small batches, late stages): let the GEMM split its own work instead.
        let tasks = rows.div_ceil(tile);
        let par = if tasks < threads {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let run_tile = |(t, dst): (usize, &mut [f32])| {
            let r0 = t * tile;
            let m = dst.len() / cout;
            let mut col = Vec::new();
            let lhs: &[f32] = if direct {
                &x.data[r0 * cin..(r0 + m) * cin]
            } else {
                col.resize(m * kk, 0.0);
                self.im2col(x, oh, ow, r0, &mut col);
                &col
            };
            matmul(
                dst,
                m,
                cout,
                kk,
                false,
                MatRef::row_major(lhs, kk),
                MatRef::row_major(&self.w, cout),
                par,
            );
            // One pass over the GEMM's output: bias, residual, ReLU (branches hoisted out of the
            // loops so that they vectorise).
            let b = &self.b[..];
            match residual.map(|r| &r.data[r0 * cout..(r0 + m) * cout]) {
                Some(res) => {
                    for (row, rr) in dst.chunks_mut(cout).zip(res.chunks(cout)) {
                        for ((v, bb), r) in row.iter_mut().zip(b).zip(rr) {
                            *v += bb + r;
                        }
                        if relu {
                            row.iter_mut().for_each(|v| *v = v.max(0.0));
                        }
                    }
                }
                None => {
                    for row in dst.chunks_mut(cout) {
                        for (v, bb) in row.iter_mut().zip(b) {
                            *v += bb;
                        }
                        if relu {
                            row.iter_mut().for_each(|v| *v = v.max(0.0));
                        }
                    }
                }
            }
        };
        if tasks < threads {
            out.chunks_mut(tile * cout).enumerate().for_each(run_tile);
        } else {
            out.par_chunks_mut(tile * cout).enumerate().for_each(run_tile);
        }
        Act {
            n: x.n,
            h: oh,
            w: ow,
            c: cout,
            data: out,
        }
    }

    /// [`Conv::forward`] with the direct AVX-512 kernel: output rows (sample, y) split between
    /// the threads.
    fn forward_direct(&self, packed: &[f32], x: &Act, residual: Option<&Act>, relu: bool, mut out: Vec<f32>) -> Act {
        let (oh, ow) = self.out_hw(x.h, x.w);
        let g = direct_conv::Geometry {
            cin: self.cin,
            cout: self.cout,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            h: x.h,
            w: x.w,
            ow,
        };
        let row_len = ow * self.cout;
        let rows = x.n * oh;
        debug_assert_eq!(out.len(), rows * row_len);
        let threads = rayon::current_num_threads().max(1);
        // About four tasks per thread: enough to balance, few enough to amortise the hand-off.
        let per_task = rows.div_ceil(threads * 4).max(1);
        let sample_len = x.sample_len();
        out.par_chunks_mut(per_task * row_len).enumerate().for_each(|(t, dst)| {
            for (i, out_row) in dst.chunks_mut(row_len).enumerate() {
                let r = t * per_task + i;
                let (sample, oy) = (r / oh, r % oh);
                let img = &x.data[sample * sample_len..(sample + 1) * sample_len];
                let res = residual.map(|a| &a.data[r * row_len..(r + 1) * row_len]);
                direct_conv::conv_row(&g, img, oy, packed, &self.b, res, relu, out_row);
            }
        });
        Act {
            n: x.n,
            h: oh,
            w: ow,
            c: self.cout,
            data: out,
        }
    }

    /// Rows `r0..` of the im2col matrix (one row per output position of the batch, columns in
    /// `(kh, kw, ci)` order) into `col`; out-of-image taps stay zero.
    pub(crate) fn im2col(&self, x: &Act, oh: usize, ow: usize, r0: usize, col: &mut [f32]) {
        let (cin, k, s, p) = (self.cin, self.k, self.stride, self.pad as isize);
        let kk = k * k * cin;
        let per_sample = oh * ow;
        let sample_len = x.sample_len();
        for (i, row) in col.chunks_mut(kk).enumerate() {
            let r = r0 + i;
            let (sample, pos) = (r / per_sample, r % per_sample);
            let (y, xo) = ((pos / ow) as isize, (pos % ow) as isize);
            let img = &x.data[sample * sample_len..(sample + 1) * sample_len];
            for ky in 0..k {
                let iy = y * s as isize + ky as isize - p;
                let dst = &mut row[ky * k * cin..(ky + 1) * k * cin];
                if iy < 0 || iy >= x.h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let ix0 = xo * s as isize - p;
                if s == 1 && ix0 >= 0 && ix0 + k as isize <= x.w as isize {
                    // The k taps of this kernel row are adjacent in NHWC: one copy.
                    let start = (iy as usize * x.w + ix0 as usize) * cin;
                    dst.copy_from_slice(&img[start..start + k * cin]);
                    continue;
                }
                for kx in 0..k {
                    let ix = ix0 + kx as isize;
                    let d = &mut dst[kx * cin..(kx + 1) * cin];
                    if ix < 0 || ix >= x.w as isize {
                        d.fill(0.0);
                    } else {
                        let start = (iy as usize * x.w + ix as usize) * cin;
                        d.copy_from_slice(&img[start..start + cin]);
                    }
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum CBlock {
    Convs(Vec<Conv>),
    Residual { convs: Vec<Conv>, shortcut: Option<Conv> },
}

impl CBlock {
    fn from_burn(b: &Block, index: usize, kernel: ConvKernel) -> Result<Self> {
        let what = format!("block {index}");
        let convs = |ls: &[&ConvBnAct]| {
            ls.iter()
                .map(|l| Conv::from_layer(l, &what, kernel))
                .collect::<Result<Vec<_>>>()
        };
        let short = |s: &Option<ConvBnAct>| s.as_ref().map(|l| Conv::from_layer(l, &what, kernel)).transpose();
        Ok(match b {
            Block::Conv(s) if s.pool.is_none() => CBlock::Convs(convs(&s.layers.iter().collect::<Vec<_>>())?),
            Block::Basic(b) => CBlock::Residual {
                convs: convs(&[&b.conv1, &b.conv2])?,
                shortcut: short(&b.shortcut)?,
            },
            Block::Bottleneck(b) => CBlock::Residual {
                convs: convs(&[&b.conv1, &b.conv2, &b.conv3])?,
                shortcut: short(&b.shortcut)?,
            },
            _ => {
                return Err(Error::invalid(
                    "model",
                    format!(
                        "{what} (pooled convolution stack, pre-activation or dense block) is not supported by the \
                         compiled CPU path; run this model on the Burn path"
                    ),
                ));
            }
        })
    }

    fn forward(&self, x: Act) -> Act {
        match self {
            CBlock::Convs(cs) => cs.iter().fold(x, |a, c| c.forward(&a, None, c.relu)),
            CBlock::Residual { convs, shortcut } => {
                let short = shortcut.as_ref().map(|s| s.forward(&x, None, s.relu));
                let (last, first) = convs.split_last().expect("residual blocks have convolutions");
                let y = first.iter().fold(None::<Act>, |a, c| {
                    Some(c.forward(a.as_ref().unwrap_or(&x), None, c.relu))
                });
                // The block's ReLU comes after the addition (its last convolution has none of its
                // own): fused into that convolution's epilogue.
                last.forward(y.as_ref().unwrap_or(&x), Some(short.as_ref().unwrap_or(&x)), true)
            }
        }
    }
}

/// `y = z·W + b` with Burn's `[d_in, d_out]` weight layout.
#[derive(Clone, Debug)]
struct Dense {
    din: usize,
    dout: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Dense {
    fn from_burn(l: &Linear) -> Self {
        let [din, dout] = l.weight.val().dims();
        Self {
            din,
            dout,
            w: host_param(&l.weight),
            b: l.bias.as_ref().map_or_else(|| vec![0.0; dout], host_param),
        }
    }

    /// A layer that Burn feeds with NCHW-flattened `input` features, with its input rows
    /// reordered for the NHWC flattening of the compiled path.
    fn from_burn_nchw(l: &Linear, input: Shape) -> Self {
        let mut d = Self::from_burn(l);
        let (c, hw) = (input.c, input.h * input.w);
        debug_assert_eq!(d.din, c * hw);
        let mut w = vec![0.0f32; d.w.len()];
        for ch in 0..c {
            for p in 0..hw {
                let (src, dst) = ((ch * hw + p) * d.dout, (p * c + ch) * d.dout);
                w[dst..dst + d.dout].copy_from_slice(&d.w[src..src + d.dout]);
            }
        }
        d.w = w;
        d
    }

    fn forward(&self, z: &[f32]) -> Vec<f32> {
        let n = z.len() / self.din;
        let mut out = Vec::with_capacity(n * self.dout);
        for _ in 0..n {
            out.extend_from_slice(&self.b);
        }
        // `out` starts as the bias: the product accumulates onto it.
        matmul(
            &mut out,
            n,
            self.dout,
            self.din,
            true,
            MatRef::row_major(z, self.din),
            MatRef::row_major(&self.w, self.dout),
            gemm::Parallelism::None,
        );
        out
    }
}

/// An exit head (or the final classifier): optional BN + ReLU, global pool (or, for `plain`
/// heads, the flattened features), linear.
#[derive(Clone, Debug)]
struct Head {
    flatten: bool,
    bn: Option<(Vec<f32>, Vec<f32>)>,
    classifier: Dense,
    confidence: Option<Dense>,
}

impl Head {
    /// `input`: the shape of the features at the head's cut point.
    fn from_exit(h: &ExitHead, k: usize, input: Shape) -> Result<Self> {
        if h.kind == HeadKind::Plain {
            return Ok(Self {
                flatten: true,
                bn: None,
                classifier: Dense::from_burn_nchw(&h.classifier, input),
                confidence: h.confidence.as_ref().map(|c| Dense::from_burn_nchw(c, input)),
            });
        }
        let bn = match h.kind {
            HeadKind::Pool => None,
            HeadKind::Bnpool => Some(bn_affine(h.bn.as_ref().expect("bnpool heads have a BatchNorm"))),
            other => {
                return Err(Error::invalid(
                    "model",
                    format!(
                        "exit {k} has a `{other}` head; the compiled CPU path runs `plain`, `pool` and `bnpool` heads"
                    ),
                ));
            }
        };
        Ok(Self {
            flatten: false,
            bn,
            classifier: Dense::from_burn(&h.classifier),
            confidence: h.confidence.as_ref().map(Dense::from_burn),
        })
    }

    /// Logits `[n, classes]` and confidence logits `[n]`.
    fn forward(&self, x: &Act) -> (Vec<f32>, Option<Vec<f32>>) {
        if self.flatten {
            return (
                self.classifier.forward(&x.data),
                self.confidence.as_ref().map(|c| c.forward(&x.data)),
            );
        }
        let z = match &self.bn {
            None => x.pool(),
            Some((scale, shift)) => {
                let mut y = x.clone();
                for p in y.data.chunks_mut(x.c) {
                    for ((v, s), b) in p.iter_mut().zip(scale).zip(shift) {
                        *v = (*v * s + b).max(0.0);
                    }
                }
                y.pool()
            }
        };
        (
            self.classifier.forward(&z),
            self.confidence.as_ref().map(|c| c.forward(&z)),
        )
    }
}

/// An inference-only, channels-last, BatchNorm-folded copy of a [`MultiExitModel`] for the CPU.
#[derive(Clone, Debug)]
pub struct CompiledNet {
    input: Shape,
    classes: usize,
    blocks: Vec<CBlock>,
    cuts: Vec<usize>,
    heads: Vec<Head>,
    classifier: Head,
    exit_macs: Vec<u64>,
    backbone_macs: u64,
}

impl CompiledNet {
    /// Lays out `model`'s weights for the compiled path (the model is not changed). Errors name
    /// the block or head it cannot run.
    pub fn compile(model: &MultiExitModel) -> Result<Self> {
        Self::compile_with(model, ConvKernel::Auto)
    }

    /// [`CompiledNet::compile`] with a choice of convolution kernel.
    pub fn compile_with(model: &MultiExitModel, kernel: ConvKernel) -> Result<Self> {
        let net = &model.net;
        let blocks = net
            .backbone
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| CBlock::from_burn(b, i, kernel))
            .collect::<Result<Vec<_>>>()?;
        let heads = net
            .heads
            .iter()
            .enumerate()
            .zip(&model.arch.heads)
            .map(|((k, h), spec)| Head::from_exit(h, k, spec.input))
            .collect::<Result<Vec<_>>>()?;
        let c = &net.backbone.classifier;
        if !c.global_pool {
            return Err(Error::invalid(
                "model",
                "the final classifier flattens its input; the compiled CPU path runs global-pool classifiers",
            ));
        }
        Ok(Self {
            input: model.arch.description.input,
            classes: model.arch.description.classes,
            blocks,
            cuts: net.cuts().to_vec(),
            heads,
            classifier: Head {
                flatten: false,
                bn: c.bn.as_ref().map(bn_affine),
                classifier: Dense::from_burn(&c.linear),
                confidence: None,
            },
            exit_macs: model.exit_macs(),
            backbone_macs: model.arch.cost.backbone.macs(MacConvention::All),
        })
    }

    fn to_act(&self, x: Tensor<4>) -> Result<Act> {
        crate::model::check_input(&x, self.input)?;
        let [n, c, h, w] = x.dims();
        let nchw: Vec<f32> = x.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 input");
        let mut data = vec![0.0f32; nchw.len()];
        for s in 0..n {
            for ch in 0..c {
                for p in 0..h * w {
                    data[(s * h * w + p) * c + ch] = nchw[(s * c + ch) * h * w + p];
                }
            }
        }
        Ok(Act { n, h, w, c, data })
    }

    fn stage_blocks(&self, k: usize) -> std::ops::Range<usize> {
        let start = if k == 0 { 0 } else { self.cuts[k - 1] + 1 };
        let end = self.cuts.get(k).map_or(self.blocks.len(), |c| c + 1);
        start..end
    }

    fn run_stage(&self, k: usize, x: Act) -> Act {
        self.blocks[self.stage_blocks(k)].iter().fold(x, |a, b| b.forward(a))
    }

    /// The plain backbone's logits, row-major `[N, classes]` (no head evaluated).
    pub fn forward_backbone(&self, x: Tensor<4>) -> Result<Vec<f32>> {
        let a = self.blocks.iter().fold(self.to_act(x)?, |a, b| b.forward(a));
        Ok(self.classifier.forward(&a).0)
    }

    /// Every exit's logits (final classifier last), each row-major `[N, classes]`.
    pub fn forward_all(&self, x: Tensor<4>) -> Result<Vec<Vec<f32>>> {
        let mut a = self.to_act(x)?;
        let mut outs = Vec::with_capacity(self.heads.len() + 1);
        for k in 0..=self.heads.len() {
            a = self.run_stage(k, a);
            let head = self.heads.get(k).unwrap_or(&self.classifier);
            outs.push(head.forward(&a).0);
        }
        Ok(outs)
    }

    /// Real per-sample early exit on a batch, as [`MultiExitModel::infer`] (same policies, same
    /// answers within float rounding).
    pub fn infer(&self, x: Tensor<4>, policy: &Policy) -> Result<Answers> {
        let device = x.device();
        let num_exits = self.heads.len();
        policy.check(num_exits, self.heads.iter().all(|h| h.confidence.is_some()))?;
        if matches!(policy, Policy::Ensemble) {
            return Err(Error::invalid(
                "policy",
                "`ensemble` runs every head on every sample; use the Burn path (MultiExitModel::infer)",
            ));
        }
        let mut a = self.to_act(x)?;
        let n = a.n;
        let classes = self.classes;
        let mut out = Answers::unanswered(n, classes);
        let mut rows: Vec<usize> = (0..n).collect();
        let mut pstate = PolicyState::new();
        let stages = if matches!(policy, Policy::Never) { 0 } else { num_exits };
        for k in 0..stages {
            a = self.run_stage(k, a);
            let (logits, conf) = self.heads[k].forward(&a);
            let m = rows.len();
            let exit_out = ExitOutput {
                logits: Tensor::<2>::from_data(TensorData::new(logits.clone(), [m, classes]), &device),
                confidence: conf.map(|c| Tensor::<2>::from_data(TensorData::new(c, [m, 1]), &device)),
            };
            let score = policy.score(&exit_out);
            let mask = policy.decide(k, &exit_out, &score, &mut pstate);
            let mask = super::engine::host_mask(mask);
            if !mask.iter().any(|&b| b) {
                continue;
            }
            let score = host(score);
            let mut stay = Vec::with_capacity(m);
            for i in 0..m {
                if mask[i] {
                    self.answer(&mut out, rows[i], k, &logits[i * classes..(i + 1) * classes], score[i]);
                } else {
                    stay.push(i);
                }
            }
            if stay.is_empty() {
                return Ok(out);
            }
            a = a.select(&stay);
            let idx: Vec<i64> = stay.iter().map(|&i| i as i64).collect();
            pstate = pstate.select(Tensor::<1, Int>::from_data(TensorData::new(idx, [stay.len()]), &device));
            rows = stay.iter().map(|&i| rows[i]).collect();
        }
        a = (stages..=num_exits).fold(a, |a, k| self.run_stage(k, a));
        let logits = self.classifier.forward(&a).0;
        let m = rows.len();
        let scores = host(max_prob(&Tensor::<2>::from_data(
            TensorData::new(logits.clone(), [m, classes]),
            &device,
        )));
        for (i, &r) in rows.iter().enumerate() {
            self.answer(
                &mut out,
                r,
                num_exits,
                &logits[i * classes..(i + 1) * classes],
                scores[i],
            );
        }
        if matches!(policy, Policy::Never) {
            out.macs.iter_mut().for_each(|m| *m = self.backbone_macs);
        }
        Ok(out)
    }

    fn answer(&self, out: &mut Answers, r: usize, exit: usize, logits: &[f32], score: f32) {
        let c = self.classes;
        let p = &mut out.probs[r * c..(r + 1) * c];
        let mx = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0.0;
        for (d, &l) in p.iter_mut().zip(logits) {
            *d = (l - mx).exp();
            sum += *d;
        }
        p.iter_mut().for_each(|v| *v /= sum);
        out.class[r] = argmax(p);
        out.exit[r] = exit;
        out.confidence[r] = score;
        out.macs[r] = self.exit_macs[exit];
    }
}

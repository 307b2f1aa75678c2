//! A native CPU forward and backward pass of the backbone for training, around Burn's heads,
//! objectives and optimiser.
//!
//! Why: a training step of a ResNet on Burn's `flex` backend spends most of its time outside the
//! arithmetic (layout conversions of every activation, im2col copies, BatchNorm and ReLU as
//! separate passes, the transposed convolution of the input gradient); measured side by side it
//! was 4.8× slower than PyTorch on this machine. Here the backbone runs channels-last (NHWC) on
//! host buffers: convolutions on the direct AVX-512 kernel of the compiled inference path (or
//! im2col + GEMM), BatchNorm statistics in one pass per chunk, normalisation fused with ReLU and
//! the residual add, and a backward pass written out by hand: the input gradient of a stride-1
//! convolution is the same direct kernel on flipped weights (strided ones: a GEMM and col2im),
//! weight gradients a direct AVX-512 kernel (im2col + GEMM where it cannot run), and the backward
//! pass of BatchNorm with its ReLU two fused passes. Buffers are recycled from step to step. Measured
//! (ResNet-20, batch 128, 2 threads): 0.98 s per step on `flex`, 0.20 s here, PyTorch 0.21 s.
//!
//! Only the backbone is native. The features at every cut point (and the end) become Burn
//! autodiff leaves, so the heads, the final classifier and every objective of
//! [`crate::train::objectives`] run unchanged on Burn; their gradients with respect to those
//! leaves come back here, and the backbone's parameter gradients are registered in the same
//! [`GradientsParams`] that the optimiser reads. Running BatchNorm statistics are updated in the
//! module as Burn's BatchNorm does (biased batch variance, momentum from the module).
//!
//! Supported: convolution stacks without pooling, ResNet basic and bottleneck blocks, heads
//! without pooled history (every kind but `dense`). [`NativeBackbone::check`] says why a network
//! is not supported; the trainer then stays on Burn.
//!
//! ```
//! use burn::optim::GradientsParams;
//! use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
//! use earlyexit::model::{ModelDescription, Shape};
//! use earlyexit::train::native::NativeBackbone;
//! use earlyexit::train::objectives::cross_entropy;
//!
//! let device = Device::flex().autodiff();
//! let arch = ModelDescription::new("resnet20", Shape::new(3, 32, 32), 10, "pareto:2".parse()?).resolve()?;
//! let net = arch.init(&device);
//! let x = Tensor::<4>::random([4, 3, 32, 32], Distribution::Default, &device);
//! let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device);
//! let (outs, pending) = NativeBackbone::check(&net)?.forward(&net, x)?;
//! let loss = outs.iter().map(|o| cross_entropy(o.logits.clone(), y.clone()).mean()).reduce(|a, b| a + b).unwrap();
//! let grads: GradientsParams = pending.backward(loss.backward())?;
//! assert!(grads.len() > 60); // every backbone weight and every head's
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::{Arc, Mutex};

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::infer::compiled::{Act, Conv, ConvKernel, host, host_param};
use crate::infer::direct_conv;
use crate::infer::matmul::{MatRef, matmul};
use crate::infer::simd::wide;
use crate::model::layers::{Block, ConvBnAct};
use crate::model::{EarlyExitNet, ExitOutput, HeadKind, StageState};

/// Pixels per task of the elementwise and reduction passes: a chunk of 64 channels is 64 KiB.
const CHUNK_PIXELS: usize = 256;

/// Activation buffers recycled from one step to the next.
///
/// Why: a step allocates and frees tens of megabyte-sized buffers; fresh ones cost a zeroing
/// pass (and, from the kernel, page faults), recycled ones are overwritten by their next user.
#[derive(Debug, Default)]
struct Pool(Mutex<Vec<Vec<f32>>>);

impl Pool {
    /// A buffer of `len` values whose contents are unspecified (every user overwrites them).
    fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.0.lock().expect("pool lock");
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let mut v = match best {
            Some(i) => free.swap_remove(i),
            None => Vec::new(),
        };
        drop(free);
        v.resize(len, 0.0);
        v
    }

    fn give(&self, v: Vec<f32>) {
        if v.capacity() >= 1 << 12 {
            self.0.lock().expect("pool lock").push(v);
        }
    }

    fn give_act(&self, a: Option<Act>) {
        if let Some(a) = a {
            self.give(a.data);
        }
    }
}

/// The backbone layout of a network the native path can train: per block, which of its layers
/// are which, and the activation buffers it recycles. Holds no weights: they are read from the
/// module at every step, so that the optimiser may update it freely.
#[derive(Clone, Debug)]
pub struct NativeBackbone {
    blocks: Vec<BlockKind>,
    cuts: Vec<usize>,
    pool: Arc<Pool>,
}

#[derive(Clone, Copy, Debug)]
enum BlockKind {
    /// Convolutions one after the other.
    Stack,
    /// Convolutions, a shortcut (a convolution, the last layer, or the identity), the sum, ReLU.
    Residual { shortcut: bool },
}

/// A block's kind and its convolutions in order (a residual block's shortcut last); `None` for
/// the blocks the native pass cannot run.
fn block_parts(b: &Block) -> Option<(BlockKind, Vec<&ConvBnAct>)> {
    Some(match b {
        Block::Conv(s) if s.pool.is_none() => (BlockKind::Stack, s.layers.iter().collect()),
        Block::Basic(b) => (
            BlockKind::Residual {
                shortcut: b.shortcut.is_some(),
            },
            [&b.conv1, &b.conv2].into_iter().chain(&b.shortcut).collect(),
        ),
        Block::Bottleneck(b) => (
            BlockKind::Residual {
                shortcut: b.shortcut.is_some(),
            },
            [&b.conv1, &b.conv2, &b.conv3].into_iter().chain(&b.shortcut).collect(),
        ),
        _ => return None,
    })
}

/// One convolution with its optional BatchNorm and ReLU, weights read from the module.
struct Layer<'a> {
    src: &'a ConvBnAct,
    conv: Conv,
    has_bias: bool,
    bn: Option<HostBn>,
    relu: bool,
}

struct HostBn {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

/// What a layer's backward pass needs from its forward pass.
struct LayerTape {
    /// The convolution's output before BatchNorm (kept only with BatchNorm).
    c: Option<Act>,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    /// The layer's output (for ReLU masks); `None` for the last layer of a residual block, whose
    /// output is fused with the shortcut.
    y: Option<Act>,
}

struct BlockTape {
    layers: Vec<LayerTape>,
    shortcut: Option<LayerTape>,
    out: Act,
}

/// The forward pass of a step on `net`, waiting for the gradients of its outputs.
pub struct PendingBackward<'a> {
    net: &'a EarlyExitNet,
    backbone: NativeBackbone,
    input: Act,
    /// Per block, the weights the forward pass read (the backward pass uses the same).
    weights: Vec<Vec<Layer<'a>>>,
    tapes: Vec<BlockTape>,
    /// The autodiff leaves the heads read, per stage (cut points, then the backbone's end).
    leaves: Vec<Tensor<4>>,
    device: Device,
}

fn unsupported(why: String) -> Error {
    Error::invalid("model", format!("{why}; the native CPU training path cannot run it"))
}

fn unsupported_block(i: usize) -> Error {
    unsupported(format!(
        "block {i} (a pooled convolution stack, pre-activation or dense block)"
    ))
}

impl NativeBackbone {
    /// The native layout of `net`'s backbone, or an error naming what it cannot run.
    pub fn check(net: &EarlyExitNet) -> Result<Self> {
        if net.heads.iter().any(|h| h.kind() == HeadKind::Dense) {
            return Err(unsupported(
                "`dense` heads read the pooled history of every block".into(),
            ));
        }
        let mut blocks = Vec::with_capacity(net.backbone.blocks.len());
        for (i, b) in net.backbone.blocks.iter().enumerate() {
            let (kind, _) = block_parts(b).ok_or_else(|| unsupported_block(i))?;
            // Reads every weight once, so that an unsupported convolution is refused now.
            block_layers(b, i)?;
            blocks.push(kind);
        }
        Ok(Self {
            blocks,
            cuts: net.cuts().to_vec(),
            pool: Arc::default(),
        })
    }

    /// The last block of every stage: the cut points, then the backbone's end.
    fn stage_ends(&self) -> Vec<usize> {
        self.cuts
            .iter()
            .copied()
            .chain(std::iter::once(self.blocks.len() - 1))
            .collect()
    }

    /// The training forward pass of `net` on `x` (`[N, C, H, W]`, on an autodiff device): the
    /// backbone runs here, in training mode (batch statistics; the module's running statistics
    /// are updated), every head and the final classifier on Burn. Returns every exit's output,
    /// final classifier last (as [`EarlyExitNet::forward_all`]), and the pass waiting for the
    /// loss's gradients.
    pub fn forward<'a>(&self, net: &'a EarlyExitNet, x: Tensor<4>) -> Result<(Vec<ExitOutput>, PendingBackward<'a>)> {
        if net.backbone.blocks.len() != self.blocks.len() || net.cuts() != self.cuts {
            return Err(Error::invalid(
                "model",
                "not the network this native pass was checked for (blocks or cut points differ)",
            ));
        }
        let [n, c, h, w] = x.dims();
        let weights = net
            .backbone
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| block_layers(b, i))
            .collect::<Result<Vec<_>>>()?;
        if let Some(first) = weights.first().and_then(|ls| ls.first())
            && first.conv.cin != c
        {
            return Err(Error::invalid(
                "input",
                format!("{c} channels, but the first convolution expects {}", first.conv.cin),
            ));
        }
        let device = x.device();
        let input = to_nhwc(
            &x.inner()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(data_err)?,
            n,
            c,
            h,
            w,
        );
        let mut tapes: Vec<BlockTape> = Vec::with_capacity(self.blocks.len());
        for (kind, layers) in self.blocks.iter().zip(&weights) {
            let x = tapes.last().map_or(&input, |t| &t.out);
            tapes.push(match *kind {
                BlockKind::Stack => forward_stack(layers, x, &self.pool),
                BlockKind::Residual { shortcut } => forward_residual(layers, shortcut, x, &self.pool),
            });
        }
        let stage_ends = self.stage_ends();
        let mut outs = Vec::with_capacity(stage_ends.len());
        let mut leaves = Vec::with_capacity(stage_ends.len());
        for (k, &b) in stage_ends.iter().enumerate() {
            let leaf = to_nchw_tensor(&tapes[b].out, &device).require_grad();
            outs.push(net.exit(
                k,
                &StageState {
                    x: leaf.clone(),
                    pooled: Vec::new(),
                },
            ));
            leaves.push(leaf);
        }
        Ok((
            outs,
            PendingBackward {
                net,
                backbone: self.clone(),
                input,
                weights,
                tapes,
                leaves,
                device,
            },
        ))
    }
}

impl PendingBackward<'_> {
    /// The gradients of every parameter of the network that the loss depends on: those of the
    /// heads and the classifier from Burn's `grads`, those of the backbone from the native
    /// backward pass.
    pub fn backward(self, mut grads: Gradients) -> Result<GradientsParams> {
        let net = self.net;
        let leaf_grads: Vec<Option<Vec<f32>>> = self
            .leaves
            .iter()
            .map(|l| {
                l.grad_remove(&mut grads)
                    .map(|g| g.into_data().convert::<f32>().try_to_vec::<f32>().map_err(data_err))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let mut params = GradientsParams::from_grads(grads, net);
        let inner = self.device.clone().inner();
        let stage_ends = self.backbone.stage_ends();
        let mut d_out: Option<Act> = None;
        for i in (0..self.backbone.blocks.len()).rev() {
            let tape = &self.tapes[i];
            // The gradient reaching this block's output: from the next block and from a head.
            if let Some(k) = stage_ends.iter().position(|&e| e == i)
                && let Some(g) = &leaf_grads[k]
            {
                let o = &tape.out;
                let g = to_nhwc(g, o.n, o.c, o.h, o.w);
                d_out = Some(match d_out {
                    Some(mut d) => {
                        d.data.iter_mut().zip(&g.data).for_each(|(a, b)| *a += b);
                        d
                    }
                    None => g,
                });
            }
            let Some(dy) = d_out.take() else { continue };
            let x = if i == 0 { &self.input } else { &self.tapes[i - 1].out };
            let layers = &self.weights[i];
            let need_dx = i > 0;
            let mut sink = Sink {
                params: &mut params,
                device: &inner,
                pool: &self.backbone.pool,
            };
            d_out = match self.backbone.blocks[i] {
                BlockKind::Stack => backward_stack(layers, tape, x, dy, need_dx, &mut sink),
                BlockKind::Residual { shortcut } => {
                    backward_residual(layers, shortcut, tape, x, dy, need_dx, &mut sink)
                }
            };
        }
        // The activations go back to the pool for the next step.
        let pool = &self.backbone.pool;
        for t in self.tapes {
            for l in t.layers.into_iter().chain(t.shortcut) {
                pool.give_act(l.c);
                pool.give_act(l.y);
            }
            pool.give(t.out.data);
        }
        pool.give(self.input.data);
        Ok(params)
    }
}

fn data_err(e: impl std::fmt::Debug) -> Error {
    Error::invalid("tensor", format!("not readable as f32: {e:?}"))
}

/// The block's layers with their current weights; a residual block's shortcut comes last.
fn block_layers(b: &Block, i: usize) -> Result<Vec<Layer<'_>>> {
    let (_, srcs) = block_parts(b).ok_or_else(|| unsupported_block(i))?;
    srcs.into_iter().map(|l| Layer::read(l, i)).collect()
}

impl<'a> Layer<'a> {
    fn read(l: &'a ConvBnAct, block: usize) -> Result<Self> {
        let conv = &l.conv;
        let [cout, cin, kh, kw] = conv.weight.val().dims();
        let what = format!("block {block}");
        if kh != kw || conv.stride[0] != conv.stride[1] || conv.groups != 1 || conv.dilation != [1, 1] {
            return Err(unsupported(format!(
                "{what}: not a square, ungrouped, undilated convolution"
            )));
        }
        let pad = match conv.padding {
            burn::nn::PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
            burn::nn::PaddingConfig2d::Valid => 0,
            _ => return Err(unsupported(format!("{what}: asymmetric or `same` padding"))),
        };
        let k = kh;
        let w = to_taps(&host_param(&conv.weight), cout, cin, k);
        let b = conv.bias.as_ref().map_or_else(|| vec![0.0; cout], host_param);
        // With BatchNorm the ReLU comes after it, not in the convolution's epilogue.
        let fused_relu = l.relu && l.bn.is_none();
        Ok(Self {
            src: l,
            conv: Conv::from_host(cin, cout, k, conv.stride[0], pad, w, b, fused_relu, ConvKernel::Auto),
            has_bias: conv.bias.is_some(),
            bn: l.bn.as_ref().map(|bn| HostBn {
                gamma: host_param(&bn.gamma),
                beta: host_param(&bn.beta),
                eps: bn.epsilon as f32,
            }),
            relu: l.relu,
        })
    }
}

/// `[cout][cin][k][k]` → `[(ky·k + kx)·cin + ci][cout]`.
fn to_taps(raw: &[f32], cout: usize, cin: usize, k: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; raw.len()];
    for o in 0..cout {
        for i in 0..cin {
            for t in 0..k * k {
                w[(t * cin + i) * cout + o] = raw[(o * cin + i) * k * k + t];
            }
        }
    }
    w
}

/// The inverse of [`to_taps`].
fn from_taps(w: &[f32], cout: usize, cin: usize, k: usize) -> Vec<f32> {
    let mut raw = vec![0.0f32; w.len()];
    for o in 0..cout {
        for i in 0..cin {
            for t in 0..k * k {
                raw[(o * cin + i) * k * k + t] = w[(t * cin + i) * cout + o];
            }
        }
    }
    raw
}

fn to_nhwc(v: &[f32], n: usize, c: usize, h: usize, w: usize) -> Act {
    let mut data = vec![0.0f32; v.len()];
    let hw = h * w;
    data.par_chunks_mut(hw * c).enumerate().for_each(|(s, dst)| {
        let src = &v[s * c * hw..(s + 1) * c * hw];
        for ch in 0..c {
            for p in 0..hw {
                dst[p * c + ch] = src[ch * hw + p];
            }
        }
    });
    Act { n, h, w, c, data }
}

fn to_nchw_tensor(a: &Act, device: &Device) -> Tensor<4> {
    let (hw, c) = (a.h * a.w, a.c);
    let mut v = vec![0.0f32; a.data.len()];
    v.par_chunks_mut(hw * c).enumerate().for_each(|(s, dst)| {
        let src = &a.data[s * c * hw..(s + 1) * c * hw];
        for p in 0..hw {
            for ch in 0..c {
                dst[ch * hw + p] = src[p * c + ch];
            }
        }
    });
    Tensor::from_data(TensorData::new(v, [a.n, c, a.h, a.w]), device)
}

// ----- forward -----

/// Batch mean and biased variance per channel (Chan's parallel merge of per-chunk moments, so
/// large means do not cancel the variance away).
fn channel_moments(a: &Act) -> (Vec<f32>, Vec<f32>) {
    let c = a.c;
    let parts: Vec<(f64, Vec<f64>, Vec<f64>)> = a
        .data
        .par_chunks(CHUNK_PIXELS * c)
        .map(|chunk| {
            wide(
                #[inline(always)]
                || {
                    let n = (chunk.len() / c) as f32;
                    let mut s = vec![0.0f32; c];
                    for p in chunk.chunks_exact(c) {
                        s.iter_mut().zip(p).for_each(|(a, v)| *a += v);
                    }
                    let mean: Vec<f32> = s.iter().map(|v| v / n).collect();
                    let mut q = vec![0.0f32; c];
                    for p in chunk.chunks_exact(c) {
                        for ((a, v), m) in q.iter_mut().zip(p).zip(&mean) {
                            let d = v - m;
                            *a += d * d;
                        }
                    }
                    (
                        n as f64,
                        mean.into_iter().map(f64::from).collect(),
                        q.into_iter().map(f64::from).collect(),
                    )
                },
            )
        })
        .collect();
    let (mut n, mut mean, mut m2) = (0.0f64, vec![0.0f64; c], vec![0.0f64; c]);
    for (nb, mb, qb) in parts {
        let tot = n + nb;
        for ch in 0..c {
            let d = mb[ch] - mean[ch];
            mean[ch] += d * nb / tot;
            m2[ch] += qb[ch] + d * d * n * nb / tot;
        }
        n = tot;
    }
    (
        mean.iter().map(|&m| m as f32).collect(),
        m2.iter().map(|&q| (q / n) as f32).collect(),
    )
}

/// `relu?((c − mean)·scale + β [+ residual])` into a new activation, `scale = γ·invstd`.
///
/// The centring comes first, as in Burn and PyTorch: folded into one affine map
/// (`c·scale + (β − mean·scale)`) the two large terms cancel near the ReLU's kink, and pre-
/// activations within rounding of zero land on the wrong side of it (measured against a float64
/// reference: BatchNorm β gradients 5·10⁻³ off instead of 10⁻⁴).
fn bn_apply(
    c: &Act,
    mean: &[f32],
    scale: &[f32],
    beta: &[f32],
    residual: Option<&Act>,
    relu: bool,
    pool: &Pool,
) -> Act {
    let ch = c.c;
    let mut out = pool.take(c.data.len());
    out.par_chunks_mut(CHUNK_PIXELS * ch)
        .zip(c.data.par_chunks(CHUNK_PIXELS * ch))
        .enumerate()
        .for_each(|(t, (dst, src))| {
            wide(
                #[inline(always)]
                || {
                    let res = residual.map(|r| &r.data[t * CHUNK_PIXELS * ch..t * CHUNK_PIXELS * ch + src.len()]);
                    for (i, (d, s)) in dst.chunks_exact_mut(ch).zip(src.chunks_exact(ch)).enumerate() {
                        let (d, s, mean, scale, beta) =
                            (&mut d[..ch], &s[..ch], &mean[..ch], &scale[..ch], &beta[..ch]);
                        for i in 0..ch {
                            d[i] = (s[i] - mean[i]) * scale[i] + beta[i];
                        }
                        if let Some(r) = res {
                            d.iter_mut().zip(&r[i * ch..(i + 1) * ch]).for_each(|(o, v)| *o += v);
                        }
                        if relu {
                            d.iter_mut().for_each(|o| *o = o.max(0.0));
                        }
                    }
                },
            )
        });
    Act { data: out, ..*c }
}

/// Normalises `c` with its batch statistics and records them; the module's running statistics
/// are updated as Burn's BatchNorm does.
fn bn_forward(l: &Layer, c: &Act, residual: Option<&Act>, relu: bool, pool: &Pool) -> (Vec<f32>, Vec<f32>, Act) {
    let bn = l.bn.as_ref().expect("a BatchNorm layer");
    let (mean, var) = channel_moments(c);
    let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + bn.eps).sqrt()).collect();
    let scale: Vec<f32> = bn.gamma.iter().zip(&invstd).map(|(g, s)| g * s).collect();
    let y = bn_apply(c, &mean, &scale, &bn.beta, residual, relu, pool);
    if let Some(src) = l.src.bn.as_ref() {
        update_running(src, &mean, &var);
    }
    (mean, invstd, y)
}

fn update_running(bn: &BatchNorm, mean: &[f32], var: &[f32]) {
    let m = bn.momentum as f32;
    let blend = |state: &RunningState<Tensor<1>>, batch: &[f32]| {
        let old = state.value_sync();
        let device = old.device();
        let new: Vec<f32> = host(old)
            .iter()
            .zip(batch)
            .map(|(o, b)| o * (1.0 - m) + b * m)
            .collect();
        state.update(Tensor::from_data(TensorData::new(new, [batch.len()]), &device));
    };
    blend(&bn.running_mean, mean);
    blend(&bn.running_var, var);
}

/// A layer that is not fused with a residual: conv, then BatchNorm and ReLU if it has them.
fn forward_layer(l: &Layer, x: &Act, pool: &Pool) -> LayerTape {
    let (oh, ow) = l.conv.out_hw(x.h, x.w);
    let buf = pool.take(x.n * oh * ow * l.conv.cout);
    let c = l.conv.forward_into(x, None, l.conv.relu, buf);
    if l.bn.is_some() {
        let (mean, invstd, y) = bn_forward(l, &c, None, l.relu, pool);
        LayerTape {
            c: Some(c),
            mean,
            invstd,
            y: Some(y),
        }
    } else {
        LayerTape {
            c: None,
            mean: Vec::new(),
            invstd: Vec::new(),
            y: Some(c),
        }
    }
}

fn forward_stack(layers: &[Layer], x: &Act, pool: &Pool) -> BlockTape {
    let mut tapes: Vec<LayerTape> = Vec::with_capacity(layers.len());
    for l in layers {
        let input = tapes
            .last()
            .map_or(x, |t| t.y.as_ref().expect("stack outputs are kept"));
        tapes.push(forward_layer(l, input, pool));
    }
    // The block's output is its last layer's (moved, not copied).
    let last = tapes.last_mut().expect("a stack has layers");
    let out = last.y.take().expect("stack outputs are kept");
    BlockTape {
        layers: tapes,
        shortcut: None,
        out,
    }
}

fn forward_residual(layers: &[Layer], has_shortcut: bool, x: &Act, pool: &Pool) -> BlockTape {
    let (main, short) = if has_shortcut {
        layers.split_at(layers.len() - 1)
    } else {
        (layers, &[][..])
    };
    let shortcut = short.first().map(|s| forward_layer(s, x, pool));
    let (last, first) = main.split_last().expect("residual blocks have convolutions");
    let mut tapes: Vec<LayerTape> = Vec::with_capacity(main.len());
    for l in first {
        let input = tapes
            .last()
            .map_or(x, |t| t.y.as_ref().expect("inner outputs are kept"));
        tapes.push(forward_layer(l, input, pool));
    }
    let input = tapes
        .last()
        .map_or(x, |t| t.y.as_ref().expect("inner outputs are kept"));
    let (oh, ow) = last.conv.out_hw(input.h, input.w);
    let buf = pool.take(input.n * oh * ow * last.conv.cout);
    let c = last.conv.forward_into(input, None, false, buf);
    let residual = shortcut
        .as_ref()
        .map_or(x, |s| s.y.as_ref().expect("shortcut output is kept"));
    let (mean, invstd, out) = if last.bn.is_some() {
        bn_forward(last, &c, Some(residual), true, pool)
    } else {
        let mut y = c.clone();
        y.data
            .iter_mut()
            .zip(&residual.data)
            .for_each(|(o, r)| *o = (*o + r).max(0.0));
        (Vec::new(), Vec::new(), y)
    };
    tapes.push(LayerTape {
        c: Some(c),
        mean,
        invstd,
        y: None,
    });
    BlockTape {
        layers: tapes,
        shortcut,
        out,
    }
}

// ----- backward -----

/// `dy·[y > 0]` in place.
fn relu_mask(dy: &mut Act, y: &Act) {
    dy.data
        .par_chunks_mut(CHUNK_PIXELS * dy.c)
        .zip(y.data.par_chunks(CHUNK_PIXELS * dy.c))
        .for_each(|(d, y)| {
            wide(
                #[inline(always)]
                || {
                    d.iter_mut().zip(y).for_each(|(d, y)| {
                        if *y <= 0.0 {
                            *d = 0.0
                        }
                    })
                },
            )
        });
}

/// BatchNorm's backward pass: from `g` (the gradient of its output; where `mask` is given, of
/// `relu(output)`, with `mask` that ReLU's output) to the gradient of its input; returns it with
/// `(dγ, dβ)`. Two passes: the per-channel sums, then the input gradient.
fn bn_backward(
    g: &Act,
    mask: Option<&Act>,
    c: &Act,
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    pool: &Pool,
) -> (Act, Vec<f32>, Vec<f32>) {
    let ch = g.c;
    let step = CHUNK_PIXELS * ch;
    let parts: Vec<(Vec<f32>, Vec<f32>)> = g
        .data
        .par_chunks(step)
        .zip(c.data.par_chunks(step))
        .enumerate()
        .map(|(t, (gs, cs))| {
            wide(
                #[inline(always)]
                || {
                    let ys = mask.map(|y| &y.data[t * step..t * step + gs.len()]);
                    let (mut s1, mut s2) = (vec![0.0f32; ch], vec![0.0f32; ch]);
                    let (a, b, mu) = (&mut s1[..ch], &mut s2[..ch], &mean[..ch]);
                    for (p, (gp, cp)) in gs.chunks_exact(ch).zip(cs.chunks_exact(ch)).enumerate() {
                        let (gp, cp) = (&gp[..ch], &cp[..ch]);
                        match ys {
                            Some(ys) => {
                                let yp = &ys[p * ch..p * ch + ch];
                                for i in 0..ch {
                                    let gv = if yp[i] > 0.0 { gp[i] } else { 0.0 };
                                    a[i] += gv;
                                    b[i] += gv * (cp[i] - mu[i]);
                                }
                            }
                            None => {
                                for i in 0..ch {
                                    a[i] += gp[i];
                                    b[i] += gp[i] * (cp[i] - mu[i]);
                                }
                            }
                        }
                    }
                    (s1, s2)
                },
            )
        })
        .collect();
    let (mut s1, mut s2) = (vec![0.0f64; ch], vec![0.0f64; ch]);
    for (a, b) in parts {
        for i in 0..ch {
            s1[i] += a[i] as f64;
            s2[i] += b[i] as f64;
        }
    }
    let m = (g.data.len() / ch) as f64;
    let dbeta: Vec<f32> = s1.iter().map(|&v| v as f32).collect();
    let dgamma: Vec<f32> = s2.iter().zip(invstd).map(|(&v, &s)| (v * s as f64) as f32).collect();
    // dx = γ·invstd·(g − Σg/M − x̂·Σ(g·x̂)/M), with x̂ = (c − μ)·invstd.
    let k1: Vec<f32> = gamma.iter().zip(invstd).map(|(a, b)| a * b).collect();
    let mg: Vec<f32> = s1.iter().map(|&v| (v / m) as f32).collect();
    let k2: Vec<f32> = s2.iter().zip(invstd).map(|(&v, &s)| (v / m) as f32 * s * s).collect();
    let mut out = pool.take(g.data.len());
    out.par_chunks_mut(step)
        .zip(g.data.par_chunks(step).zip(c.data.par_chunks(step)))
        .enumerate()
        .for_each(|(t, (os, (gs, cs)))| {
            wide(
                #[inline(always)]
                || {
                    let ys = mask.map(|y| &y.data[t * step..t * step + gs.len()]);
                    let (k1, mg, k2, mu) = (&k1[..ch], &mg[..ch], &k2[..ch], &mean[..ch]);
                    for (p, (op, (gp, cp))) in os
                        .chunks_exact_mut(ch)
                        .zip(gs.chunks_exact(ch).zip(cs.chunks_exact(ch)))
                        .enumerate()
                    {
                        let (op, gp, cp) = (&mut op[..ch], &gp[..ch], &cp[..ch]);
                        match ys {
                            Some(ys) => {
                                let yp = &ys[p * ch..p * ch + ch];
                                for i in 0..ch {
                                    let gv = if yp[i] > 0.0 { gp[i] } else { 0.0 };
                                    op[i] = k1[i] * (gv - mg[i] - (cp[i] - mu[i]) * k2[i]);
                                }
                            }
                            None => {
                                for i in 0..ch {
                                    op[i] = k1[i] * (gp[i] - mg[i] - (cp[i] - mu[i]) * k2[i]);
                                }
                            }
                        }
                    }
                },
            )
        });
    (Act { data: out, ..*g }, dgamma, dbeta)
}

/// The gradients of a convolution's weights (`[(ky·k + kx)·cin + ci][cout]`) from its input `x`
/// and output gradient `dc`: one GEMM per sample over its im2col matrix, a partial sum per thread.
fn conv_weight_grad(conv: &Conv, x: &Act, dc: &Act) -> Vec<f32> {
    if direct_conv::weight_grad_runs(conv.cin, conv.cout, conv.k) {
        return conv_weight_grad_direct(conv, x, dc);
    }
    let (oh, ow) = (dc.h, dc.w);
    let p = oh * ow;
    let kk = conv.k * conv.k * conv.cin;
    let cout = conv.cout;
    let direct = conv.k == 1 && conv.stride == 1 && conv.pad == 0;
    let threads = rayon::current_num_threads().max(1);
    let per_task = x.n.div_ceil(threads).max(1);
    let partials: Vec<Vec<f32>> = (0..x.n.div_ceil(per_task))
        .into_par_iter()
        .map(|t| {
            let mut dw = vec![0.0f32; kk * cout];
            let mut col = if direct { Vec::new() } else { vec![0.0f32; p * kk] };
            for s in t * per_task..((t + 1) * per_task).min(x.n) {
                let lhs: &[f32] = if direct {
                    &x.data[s * p * kk..(s + 1) * p * kk]
                } else {
                    conv.im2col(x, oh, ow, s * p, &mut col);
                    &col
                };
                let dy = &dc.data[s * p * cout..(s + 1) * p * cout];
                // dW (kk×cout) += colᵀ (kk×p) · dy (p×cout).
                matmul(
                    &mut dw,
                    kk,
                    cout,
                    p,
                    true,
                    MatRef::transposed(lhs, kk),
                    MatRef::row_major(dy, cout),
                    gemm::Parallelism::None,
                );
            }
            dw
        })
        .collect();
    sum_partials(partials)
}

fn sum_partials(partials: Vec<Vec<f32>>) -> Vec<f32> {
    let mut it = partials.into_iter();
    let mut acc = it.next().expect("at least one task");
    for part in it {
        acc.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    acc
}

/// [`conv_weight_grad`] on the direct AVX-512 kernel: each task zero-pads its samples one at a
/// time and accumulates `[tap][cout][cin]`, transposed at the end.
fn conv_weight_grad_direct(conv: &Conv, x: &Act, dc: &Act) -> Vec<f32> {
    let (k, cin, cout, pad) = (conv.k, conv.cin, conv.cout, conv.pad);
    let (hp, wp) = (x.h + 2 * pad, x.w + 2 * pad);
    let g = direct_conv::GradGeometry {
        cin,
        cout,
        k,
        stride: conv.stride,
        wp,
        oh: dc.h,
        ow: dc.w,
    };
    let p = dc.h * dc.w;
    let threads = rayon::current_num_threads().max(1);
    let per_task = x.n.div_ceil(threads).max(1);
    let partials: Vec<Vec<f32>> = (0..x.n.div_ceil(per_task))
        .into_par_iter()
        .map(|t| {
            let mut dwt = vec![0.0f32; k * k * cout * cin];
            let mut xp = vec![0.0f32; if pad > 0 { hp * wp * cin } else { 0 }];
            for s in t * per_task..((t + 1) * per_task).min(x.n) {
                let sample = &x.data[s * x.sample_len()..(s + 1) * x.sample_len()];
                let src: &[f32] = if pad > 0 {
                    let row = x.w * cin;
                    for y in 0..x.h {
                        let at = ((y + pad) * wp + pad) * cin;
                        xp[at..at + row].copy_from_slice(&sample[y * row..(y + 1) * row]);
                    }
                    &xp
                } else {
                    sample
                };
                direct_conv::weight_grad(&g, src, &dc.data[s * p * cout..(s + 1) * p * cout], &mut dwt);
            }
            dwt
        })
        .collect();
    let dwt = sum_partials(partials);
    let mut dw = vec![0.0f32; dwt.len()];
    for t in 0..k * k {
        for co in 0..cout {
            for ci in 0..cin {
                dw[(t * cin + ci) * cout + co] = dwt[(t * cout + co) * cin + ci];
            }
        }
    }
    dw
}

/// The gradient of a convolution's input (`[n, h, w, cin]`) from its output gradient `dc`, plus
/// `residual` where given.
///
/// Stride 1 with "same" padding: the convolution of `dc` with the flipped, transposed weights
/// (the forward kernel, direct AVX-512 where it runs). Otherwise: `dc · Wᵀ` per sample into an
/// im2col-shaped buffer, scattered back onto the input positions (col2im).
fn conv_input_grad(conv: &Conv, dc: &Act, h: usize, w: usize, residual: Option<&Act>, pool: &Pool) -> Act {
    let (k, cin, cout) = (conv.k, conv.cin, conv.cout);
    if conv.stride == 1 && 2 * conv.pad == k - 1 {
        let taps = k * k;
        let mut wf = vec![0.0f32; conv.w.len()];
        for t in 0..taps {
            for co in 0..cout {
                for ci in 0..cin {
                    wf[(t * cout + co) * cin + ci] = conv.w[((taps - 1 - t) * cin + ci) * cout + co];
                }
            }
        }
        let flipped = Conv::from_host(cout, cin, k, 1, conv.pad, wf, vec![0.0; cin], false, ConvKernel::Auto);
        return flipped.forward_into(dc, residual, false, pool.take(dc.n * h * w * cin));
    }
    let (oh, ow) = (dc.h, dc.w);
    let p = oh * ow;
    let kk = k * k * cin;
    let (s, pad) = (conv.stride as isize, conv.pad as isize);
    let mut dx = pool.take(dc.n * h * w * cin);
    match residual {
        Some(r) => dx.copy_from_slice(&r.data),
        None => dx.fill(0.0),
    }
    // One col buffer per worker, overwritten by the GEMM for every sample.
    dx.par_chunks_mut(h * w * cin).enumerate().for_each_init(
        || vec![0.0f32; p * kk],
        |col, (n, img)| {
            wide(
                #[inline(always)]
                || {
                    let dy = &dc.data[n * p * cout..(n + 1) * p * cout];
                    // col (p×kk) = dy (p×cout) · Wᵀ (cout×kk).
                    matmul(
                        col,
                        p,
                        kk,
                        cout,
                        false,
                        MatRef::row_major(dy, cout),
                        MatRef::transposed(&conv.w, cout),
                        gemm::Parallelism::None,
                    );
                    for (pos, row) in col.chunks_exact(kk).enumerate() {
                        let (oy, ox) = ((pos / ow) as isize, (pos % ow) as isize);
                        for ky in 0..k {
                            let iy = oy * s + ky as isize - pad;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let ix = ox * s + kx as isize - pad;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let src = &row[(ky * k + kx) * cin..(ky * k + kx + 1) * cin];
                                let at = (iy as usize * w + ix as usize) * cin;
                                img[at..at + cin].iter_mut().zip(src).for_each(|(a, b)| *a += b);
                            }
                        }
                    }
                },
            )
        },
    );
    Act {
        n: dc.n,
        h,
        w,
        c: cin,
        data: dx,
    }
}

fn register<const D: usize>(params: &mut GradientsParams, p: &Param<Tensor<D>>, v: Vec<f32>, device: &Device) {
    let shape = p.val().dims();
    params.register(p.id, Tensor::<D>::from_data(TensorData::new(v, shape), device));
}

/// Where a layer's backward pass writes: the parameters' gradients and the tensor device.
struct Sink<'a> {
    params: &'a mut GradientsParams,
    device: &'a Device,
    pool: &'a Pool,
}

/// The backward pass of one layer from the gradient `g` of its output (of `relu(output)` where
/// `mask`, that ReLU's output, is given): registers its parameters' gradients and returns the
/// gradient of its input `x` (plus `residual`, fused into the convolution's epilogue) when
/// `need_dx`.
#[allow(clippy::too_many_arguments)] // one layer's backward pass: every argument is needed
fn backward_layer(
    l: &Layer,
    tape: &LayerTape,
    x: &Act,
    g: &Act,
    mask: Option<&Act>,
    need_dx: bool,
    residual: Option<&Act>,
    sink: &mut Sink,
) -> Option<Act> {
    let owned: Option<Act> = match (&l.bn, &tape.c, l.src.bn.as_ref()) {
        (Some(bn), Some(c), Some(src)) => {
            let (dc, dgamma, dbeta) = bn_backward(g, mask, c, &tape.mean, &tape.invstd, &bn.gamma, sink.pool);
            register(sink.params, &src.gamma, dgamma, sink.device);
            register(sink.params, &src.beta, dbeta, sink.device);
            Some(dc)
        }
        _ => mask.map(|y| {
            let mut d = Act {
                data: sink.pool.take(g.data.len()),
                ..*g
            };
            d.data.copy_from_slice(&g.data);
            relu_mask(&mut d, y);
            d
        }),
    };
    let dc = owned.as_ref().unwrap_or(g);
    let conv = &l.conv;
    let dw = conv_weight_grad(conv, x, dc);
    register(
        sink.params,
        &l.src.conv.weight,
        from_taps(&dw, conv.cout, conv.cin, conv.k),
        sink.device,
    );
    if l.has_bias
        && let Some(b) = &l.src.conv.bias
    {
        let mut db = vec![0.0f64; conv.cout];
        for row in dc.data.chunks_exact(conv.cout) {
            db.iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64);
        }
        register(sink.params, b, db.into_iter().map(|v| v as f32).collect(), sink.device);
    }
    let dx = need_dx.then(|| conv_input_grad(conv, dc, x.h, x.w, residual, sink.pool));
    sink.pool.give_act(owned);
    dx
}

fn backward_stack(layers: &[Layer], tape: &BlockTape, x: &Act, dy: Act, need_dx: bool, sink: &mut Sink) -> Option<Act> {
    let mut g = dy;
    for (j, l) in layers.iter().enumerate().rev() {
        let t = &tape.layers[j];
        let mask = l.relu.then(|| t.y.as_ref().unwrap_or(&tape.out));
        let input = if j == 0 {
            x
        } else {
            tape.layers[j - 1].y.as_ref().expect("stack outputs are kept")
        };
        let next = backward_layer(l, t, input, &g, mask, need_dx || j > 0, None, sink);
        sink.pool.give(std::mem::replace(&mut g, next?).data);
    }
    Some(g)
}

fn backward_residual(
    layers: &[Layer],
    has_shortcut: bool,
    tape: &BlockTape,
    x: &Act,
    mut dy: Act,
    need_dx: bool,
    sink: &mut Sink,
) -> Option<Act> {
    let (main, short) = if has_shortcut {
        layers.split_at(layers.len() - 1)
    } else {
        (layers, &[][..])
    };
    // The sum's gradient feeds both paths.
    relu_mask(&mut dy, &tape.out);
    let d_short = match (short.first(), &tape.shortcut) {
        (Some(s), Some(t)) => backward_layer(s, t, x, &dy, None, need_dx, None, sink),
        _ => None,
    };
    // The input's gradient: the main path's plus the shortcut's (the sum's own gradient for the
    // identity), added in the first convolution's epilogue.
    let residual = if has_shortcut { d_short.as_ref() } else { Some(&dy) };
    let mut g: Option<Act> = None;
    for (j, l) in main.iter().enumerate().rev() {
        let t = &tape.layers[j];
        let mask = (j + 1 < main.len() && l.relu).then(|| t.y.as_ref().expect("inner outputs are kept"));
        let input = if j == 0 {
            x
        } else {
            tape.layers[j - 1].y.as_ref().expect("inner outputs are kept")
        };
        let res = if j == 0 { residual } else { None };
        let next = backward_layer(
            l,
            t,
            input,
            g.as_ref().unwrap_or(&dy),
            mask,
            need_dx || j > 0,
            res,
            sink,
        );
        sink.pool.give_act(std::mem::replace(&mut g, next));
        g.as_ref()?;
    }
    sink.pool.give(dy.data);
    sink.pool.give_act(d_short);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_layout_round_trips() {
        let raw: Vec<f32> = (0..2 * 3 * 9).map(|v| v as f32).collect();
        assert_eq!(from_taps(&to_taps(&raw, 2, 3, 3), 2, 3, 3), raw);
    }

    #[test]
    fn moments_match_the_two_pass_definition() {
        let c = 3;
        let data: Vec<f32> = (0..1000 * c).map(|i| 1000.0 + ((i * 37) % 101) as f32 * 0.01).collect();
        let a = Act {
            n: 1,
            h: 10,
            w: 100,
            c,
            data: data.clone(),
        };
        let (mean, var) = channel_moments(&a);
        for ch in 0..c {
            let v: Vec<f64> = data.iter().skip(ch).step_by(c).map(|&x| x as f64).collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let q = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
            assert!((mean[ch] as f64 - m).abs() < 1e-3, "mean {ch}");
            assert!(
                (var[ch] as f64 - q).abs() < 1e-4 * q.max(1e-3),
                "var {ch}: {} vs {q}",
                var[ch]
            );
        }
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;
    use crate::infer::direct_conv::test_values as values;

    /// The definition: `dx[n][iy][ix][ci] = Σ dy[n][oy][ox][co]·w[tap][ci][co]` over the taps
    /// that map (oy, ox) onto (iy, ix).
    fn input_grad_reference(conv: &Conv, dc: &Act, h: usize, w: usize) -> Vec<f32> {
        let (k, cin, cout, s, p) = (conv.k, conv.cin, conv.cout, conv.stride, conv.pad as isize);
        let mut dx = vec![0.0f32; dc.n * h * w * cin];
        for n in 0..dc.n {
            for oy in 0..dc.h {
                for ox in 0..dc.w {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * s + ky) as isize - p;
                            let ix = (ox * s + kx) as isize - p;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            for ci in 0..cin {
                                let mut acc = 0.0;
                                for co in 0..cout {
                                    acc += dc.data[((n * dc.h + oy) * dc.w + ox) * cout + co]
                                        * conv.w[((ky * k + kx) * cin + ci) * cout + co];
                                }
                                dx[((n * h + iy as usize) * w + ix as usize) * cin + ci] += acc;
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    #[test]
    fn input_and_weight_grads_match_the_definition() {
        let pool = Pool::default();
        for &(n, h, cin, cout, k, stride) in &[
            (5, 12, 16, 16, 3, 1),
            (6, 16, 16, 16, 3, 1),
            (3, 16, 16, 32, 3, 2),
            (3, 12, 16, 32, 1, 2),
            (2, 7, 32, 16, 3, 1),
        ] {
            let pad = k / 2;
            let w = values(k * k * cin * cout, 1);
            let conv = Conv::from_host(cin, cout, k, stride, pad, w, vec![0.0; cout], false, ConvKernel::Auto);
            let (oh, ow) = conv.out_hw(h, h);
            let x = Act {
                n,
                h,
                w: h,
                c: cin,
                data: values(n * h * h * cin, 2),
            };
            let dc = Act {
                n,
                h: oh,
                w: ow,
                c: cout,
                data: values(n * oh * ow * cout, 3),
            };
            let got = conv_input_grad(&conv, &dc, h, h, None, &pool);
            let want = input_grad_reference(&conv, &dc, h, h);
            let worst = got
                .data
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-3,
                "input grad n{n} h{h} {cin}->{cout} k{k} s{stride}: {worst}"
            );
            // Weight gradient (the direct kernel where it runs) against the definition.
            let direct = conv_weight_grad(&conv, &x, &dc);
            let mut want_w = vec![0.0f32; direct.len()];
            for nn in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= h as isize {
                                    continue;
                                }
                                for ci in 0..cin {
                                    let xv = x.data[((nn * h + iy as usize) * h + ix as usize) * cin + ci];
                                    for co in 0..cout {
                                        want_w[((ky * k + kx) * cin + ci) * cout + co] +=
                                            xv * dc.data[((nn * oh + oy) * ow + ox) * cout + co];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let worst = direct
                .iter()
                .zip(&want_w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-3,
                "weight grad n{n} h{h} {cin}->{cout} k{k} s{stride}: {worst}"
            );
        }
    }
}

//! Depthwise convolution (one group per channel, MobileNetV2's 3×3 layers), channels-last.
//!
//! Why its own kernel: a depthwise convolution has `k²` MACs per output value, too few for a
//! GEMM (im2col would copy every input `k²` times for one multiply each). In NHWC a pixel's
//! channels are contiguous, and so are a tap's weights, so one output pixel is `k²` fused
//! multiply-adds over contiguous channel runs, which the compiler vectorises.

use rayon::prelude::*;

use crate::ops::out_len;
use crate::par::{SERIAL_MACS, for_each_chunk};
use crate::simd::wide;
use crate::{Act, BufferPool, Epilogue};

/// A depthwise convolution with its BatchNorm folded in; weights `[ky·kw + kx][c]`.
#[derive(Clone, Debug)]
pub struct Depthwise {
    /// Channels (in and out).
    pub c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding above and below.
    pub ph: usize,
    /// Zero padding left and right.
    pub pw: usize,
    /// Weights, `[(ky·kw + kx)][c]`.
    pub w: Vec<f32>,
    /// Bias per channel.
    pub b: Vec<f32>,
    /// The activation applied before the output is stored.
    pub act: Epilogue,
}

impl Depthwise {
    /// A `kh×kw` depthwise convolution over `c` channels from host weights `w` (`[tap][c]`).
    ///
    /// # Panics
    /// If `w` or `b` does not have the length the geometry says, or the stride is 0.
    pub fn from_host(
        c: usize,
        [kh, kw]: [usize; 2],
        stride: usize,
        [ph, pw]: [usize; 2],
        w: Vec<f32>,
        b: Vec<f32>,
        act: Epilogue,
    ) -> Self {
        assert_eq!(
            w.len(),
            kh * kw * c,
            "Depthwise::from_host: weights of a {kh}×{kw} depthwise convolution over {c} channels"
        );
        assert_eq!(b.len(), c, "Depthwise::from_host: one bias per channel");
        assert!(stride > 0, "Depthwise::from_host: stride 0");
        Self {
            c,
            kh,
            kw,
            stride,
            ph,
            pw,
            w,
            b,
            act,
        }
    }

    /// Output height and width for an `h × w` input.
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            out_len(h, self.kh, self.stride, self.ph),
            out_len(w, self.kw, self.stride, self.pw),
        )
    }

    /// `act(conv(x) + b)`.
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, h', w', c]`
    pub fn forward(&self, x: &Act) -> Act {
        let (oh, ow) = self.out_hw(x.h, x.w);
        self.forward_into(x, vec![0.0; x.n * oh * ow * self.c])
    }

    /// [`Depthwise::forward`] into `out` (a recycled buffer of the output's length; its values
    /// are overwritten).
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, h', w', c]`
    ///
    /// # Panics
    /// If `out` does not have the output's length.
    pub fn forward_into(&self, x: &Act, mut out: Vec<f32>) -> Act {
        debug_assert_eq!(x.c, self.c);
        let (oh, ow) = self.out_hw(x.h, x.w);
        let c = self.c;
        let row_len = ow * c;
        assert_eq!(
            out.len(),
            x.n * oh * row_len,
            "Depthwise::forward_into: output buffer length"
        );
        let sample_len = x.sample_len();
        if row_len > 0 {
            let macs = out.len() * self.kh * self.kw;
            for_each_chunk(&mut out, row_len, macs, SERIAL_MACS, |(r, dst)| {
                let (sample, oy) = (r / oh, r % oh);
                let img = &x.data[sample * sample_len..(sample + 1) * sample_len];
                for (ox, px) in dst.chunks_mut(c).enumerate() {
                    px.copy_from_slice(&self.b);
                    for ky in 0..self.kh {
                        let iy = (oy * self.stride + ky) as isize - self.ph as isize;
                        if iy < 0 || iy >= x.h as isize {
                            continue;
                        }
                        for kx in 0..self.kw {
                            let ix = (ox * self.stride + kx) as isize - self.pw as isize;
                            if ix < 0 || ix >= x.w as isize {
                                continue;
                            }
                            let at = (iy as usize * x.w + ix as usize) * c;
                            let tap = &self.w[(ky * self.kw + kx) * c..(ky * self.kw + kx + 1) * c];
                            for ((o, v), wt) in px.iter_mut().zip(&img[at..at + c]).zip(tap) {
                                *o += v * wt;
                            }
                        }
                    }
                    self.act.apply(px);
                }
            });
        }
        Act {
            n: x.n,
            h: oh,
            w: ow,
            c,
            data: out,
        }
    }
}

impl Depthwise {
    /// Every tap `(ky, kx)` in bounds for output `(oy, ox)` of an `h × w` input: `f(tap, at)`
    /// with `at` the input pixel's offset in a sample (`(iy·w + ix)·c`).
    #[inline(always)]
    fn taps(&self, oy: usize, ox: usize, h: usize, w: usize, mut f: impl FnMut(usize, usize)) {
        for ky in 0..self.kh {
            let iy = (oy * self.stride + ky) as isize - self.ph as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..self.kw {
                let ix = (ox * self.stride + kx) as isize - self.pw as isize;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                f(ky * self.kw + kx, (iy as usize * w + ix as usize) * self.c);
            }
        }
    }

    /// The gradient of the weights (`[tap][c]`, the layout of [`Depthwise::w`]) from the input
    /// `x` and the gradient `dc` of the output before its activation. Per sample in parallel,
    /// then summed.
    ///
    /// # Shapes
    /// `x`: `[n, h, w, c]`, `dc`: `[n, h', w', c]` → `kh·kw·c`
    pub fn weight_grad(&self, x: &Act, dc: &Act) -> Vec<f32> {
        let (c, taps) = (self.c, self.kh * self.kw);
        let (h, w) = (x.h, x.w);
        let zeros = || vec![0.0f32; taps * c];
        if x.n == 0 {
            return zeros();
        }
        x.data
            .par_chunks(x.sample_len())
            .zip(dc.data.par_chunks(dc.sample_len()))
            .map(|(img, d)| {
                wide(
                    #[inline(always)]
                    || {
                        let mut acc = zeros();
                        for oy in 0..dc.h {
                            for ox in 0..dc.w {
                                let g = &d[(oy * dc.w + ox) * c..(oy * dc.w + ox + 1) * c];
                                self.taps(oy, ox, h, w, |t, at| {
                                    let a = &mut acc[t * c..(t + 1) * c];
                                    for ((a, g), v) in a.iter_mut().zip(g).zip(&img[at..at + c]) {
                                        *a += g * v;
                                    }
                                });
                            }
                        }
                        acc
                    },
                )
            })
            .reduce(zeros, |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            })
    }

    /// The gradient of the input (`h × w`) from the gradient `dc` of the output before its
    /// activation, plus `residual` (the gradient reaching the input by another path) when given;
    /// the buffer comes from `pool`.
    ///
    /// # Shapes
    /// `dc`: `[n, h', w', c]` → `[n, h, w, c]`
    pub fn input_grad(&self, dc: &Act, h: usize, w: usize, residual: Option<&Act>, pool: &BufferPool) -> Act {
        let c = self.c;
        let mut dx = pool.take(dc.n * h * w * c);
        match residual {
            Some(r) => dx.copy_from_slice(&r.data),
            None => dx.fill(0.0),
        }
        if h * w * c > 0 {
            dx.par_chunks_mut(h * w * c)
                .zip(dc.data.par_chunks(dc.sample_len().max(1)))
                .for_each(|(img, d)| {
                    wide(
                        #[inline(always)]
                        || {
                            for oy in 0..dc.h {
                                for ox in 0..dc.w {
                                    let g = &d[(oy * dc.w + ox) * c..(oy * dc.w + ox + 1) * c];
                                    self.taps(oy, ox, h, w, |t, at| {
                                        let wt = &self.w[t * c..(t + 1) * c];
                                        for ((o, g), wt) in img[at..at + c].iter_mut().zip(g).zip(wt) {
                                            *o += g * wt;
                                        }
                                    });
                                }
                            }
                        },
                    )
                });
        }
        Act {
            n: dc.n,
            h,
            w,
            c,
            data: dx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{act, max_abs_diff, values};
    use crate::{Conv, ConvKernel, conv_grad};

    #[test]
    fn gradients_equal_the_dense_convolutions() {
        // The depthwise layer as a dense one with zero cross-channel weights: its gradients are
        // the dense layer's, read on the diagonal.
        for (i, &(c, k, stride, pad, h, w)) in [(16, 3, 1, 1, 7, 9), (24, 3, 2, 1, 8, 5), (3, 3, 2, 0, 9, 9)]
            .iter()
            .enumerate()
        {
            let wt = values(k * k * c, 40 + i as u32);
            let x = act(3, h, w, c, 50 + i as u32);
            let mut dense = vec![0.0f32; k * k * c * c];
            for t in 0..k * k {
                for ch in 0..c {
                    dense[(t * c + ch) * c + ch] = wt[t * c + ch];
                }
            }
            let dw = Depthwise::from_host(c, [k, k], stride, [pad, pad], wt, vec![0.0; c], Epilogue::None);
            let conv = Conv::from_host(c, c, k, stride, pad, dense, vec![0.0; c], false, ConvKernel::Gemm);
            let (oh, ow) = dw.out_hw(h, w);
            let dc = act(3, oh, ow, c, 60 + i as u32);
            let want = conv_grad::weight_grad_gemm(&conv, &x, &dc);
            let diag: Vec<f32> = (0..k * k)
                .flat_map(|t| (0..c).map(move |ch| (t, ch)))
                .map(|(t, ch)| want[(t * c + ch) * c + ch])
                .collect();
            let got = dw.weight_grad(&x, &dc);
            assert!(max_abs_diff(&got, &diag) <= 1e-4, "case {i}: weight gradients");
            let pool = BufferPool::default();
            let residual = act(3, h, w, c, 70 + i as u32);
            let want = conv_grad::input_grad(&conv, &dc, h, w, Some(&residual), &pool);
            let got = dw.input_grad(&dc, h, w, Some(&residual), &pool);
            assert_eq!((got.n, got.h, got.w, got.c), (want.n, want.h, want.w, want.c));
            assert!(max_abs_diff(&got.data, &want.data) <= 1e-4, "case {i}: input gradients");
        }
    }

    #[test]
    fn equals_a_dense_convolution_with_zero_cross_channel_weights() {
        // (c, k, stride, pad, h, w): MobileNetV2's 3×3 stride 1 and 2, an odd map, a 5×5 kernel.
        for (i, &(c, k, stride, pad, h, w)) in [
            (16, 3, 1, 1, 7, 9),
            (24, 3, 2, 1, 8, 5),
            (5, 5, 1, 2, 4, 6),
            (3, 3, 2, 0, 9, 9),
        ]
        .iter()
        .enumerate()
        {
            let wt = values(k * k * c, 10 + i as u32);
            let b = values(c, 20 + i as u32);
            let x = act(2, h, w, c, 30 + i as u32);
            // The same layer as a dense convolution: tap weights on the diagonal only.
            let mut dense = vec![0.0f32; k * k * c * c];
            for t in 0..k * k {
                for ch in 0..c {
                    dense[(t * c + ch) * c + ch] = wt[t * c + ch];
                }
            }
            for e in [Epilogue::None, Epilogue::Relu6] {
                let dw = Depthwise::from_host(c, [k, k], stride, [pad, pad], wt.clone(), b.clone(), e);
                let conv = Conv::from_host(c, c, k, stride, pad, dense.clone(), b.clone(), false, ConvKernel::Gemm);
                let mut want = conv.forward(&x, None, false);
                want.data.chunks_mut(c).for_each(|p| e.apply(p));
                let got = dw.forward(&x);
                assert_eq!((got.h, got.w, got.c), (want.h, want.w, want.c), "case {i}");
                let worst = max_abs_diff(&got.data, &want.data);
                assert!(worst <= 1e-5, "case {i} {e:?}: {worst}");
            }
        }
    }
}

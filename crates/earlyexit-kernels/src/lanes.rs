//! A direct channels-last convolution in portable SIMD (`pulp`): AVX2 + FMA on x86-64, NEON on
//! aarch64, one source for both.
//!
//! Why: the im2col + GEMM route pays for narrow layers twice. Its im2col buffer copies every
//! input `k²` times, and with 8 or 24 output channels the GEMM's micro-kernel tiles are mostly
//! empty; EENet-8 at width 8 spent more time in im2col and the epilogue pass than in its
//! multiply-adds. Here, as in the AVX-512 kernel ([`crate::direct`]), a tile of pixels × vectors
//! of output channels stays in registers over every tap and input channel, and bias, residual
//! and ReLU are applied before the single store; the vector width is the CPU's (8 lanes on AVX2,
//! 4 on NEON), so any multiple of it runs here. The weights keep [`crate::Conv::w`]'s layout
//! (`[tap][cin][cout]`: a tap and input channel's output channels are contiguous).
//!
//! Safe code: `pulp` checks the CPU's features once ([`Lanes::detect`]) and its vector
//! operations take slices.

use pulp::{Simd, WithSimd};

/// The SIMD instruction set this kernel runs on, detected at run time.
#[derive(Clone, Copy, Debug)]
pub enum Lanes {
    /// AVX2 + FMA, 8 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2(pulp::x86::V3),
    /// NEON, 4 lanes.
    #[cfg(target_arch = "aarch64")]
    Neon(pulp::aarch64::Neon),
}

impl Lanes {
    /// The instruction set this CPU offers the kernel, if any.
    pub fn detect() -> Option<Lanes> {
        #[cfg(target_arch = "x86_64")]
        {
            pulp::x86::V3::try_new().map(Lanes::Avx2)
        }
        #[cfg(target_arch = "aarch64")]
        {
            pulp::aarch64::Neon::try_new().map(Lanes::Neon)
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            None
        }
    }

    /// `f32` lanes per vector.
    pub fn width(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Lanes::Avx2(_) => <pulp::x86::V3 as Simd>::F32_LANES,
            #[cfg(target_arch = "aarch64")]
            Lanes::Neon(_) => <pulp::aarch64::Neon as Simd>::F32_LANES,
        }
    }

    fn run<R>(self, op: impl WithSimd<Output = R>) -> R {
        match self {
            #[cfg(target_arch = "x86_64")]
            Lanes::Avx2(s) => Simd::vectorize(s, op),
            #[cfg(target_arch = "aarch64")]
            Lanes::Neon(s) => Simd::vectorize(s, op),
        }
    }
}

/// The shape of one convolution over one NHWC sample.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Input channels.
    pub cin: usize,
    /// Output channels (a multiple of the lane width).
    pub cout: usize,
    /// Kernel height and width.
    pub k: [usize; 2],
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding above/below and left/right.
    pub pad: [usize; 2],
    /// Input height and width.
    pub hw: [usize; 2],
    /// Output width.
    pub ow: usize,
}

/// One output row `oy` of one sample: `out_row` (`[ow][cout]`) = conv(`x`) + `bias`
/// (+ `res_row`), then ReLU if `relu`. `x` is the sample's `[h][w][cin]` input, `w` the weights
/// `[(ky·kw + kx)·cin + ci][cout]`.
///
/// # Panics
/// If `cout` is not a multiple of the lane width or a slice is shorter than the geometry says.
#[allow(clippy::too_many_arguments)] // one row of one convolution: every argument is needed
pub fn conv_row(
    lanes: Lanes,
    g: &Geometry,
    x: &[f32],
    oy: usize,
    w: &[f32],
    bias: &[f32],
    res_row: Option<&[f32]>,
    relu: bool,
    out_row: &mut [f32],
) {
    assert!(
        g.cout.is_multiple_of(lanes.width()),
        "lanes::conv_row: cout not a multiple of the lanes"
    );
    assert!(
        x.len() >= g.hw[0] * g.hw[1] * g.cin,
        "lanes::conv_row: input shorter than its geometry"
    );
    assert!(w.len() >= g.k[0] * g.k[1] * g.cin * g.cout && bias.len() >= g.cout);
    assert!(out_row.len() >= g.ow * g.cout && res_row.is_none_or(|r| r.len() >= g.ow * g.cout));
    lanes.run(Row {
        g,
        x,
        oy,
        w,
        bias,
        res_row,
        relu,
        out_row,
    });
}

struct Row<'a> {
    g: &'a Geometry,
    x: &'a [f32],
    oy: usize,
    w: &'a [f32],
    bias: &'a [f32],
    res_row: Option<&'a [f32]>,
    relu: bool,
    out_row: &'a mut [f32],
}

impl WithSimd for Row<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Row {
            g,
            x,
            oy,
            w: weights,
            bias,
            res_row,
            relu,
            out_row,
        } = self;
        let [kh, kw] = g.k;
        let [ph, pw] = g.pad;
        let [h, w] = g.hw;
        let s = g.stride;
        let iy0 = (oy * s) as isize - ph as isize;
        let ky = (
            (-iy0).max(0) as usize,
            ((h as isize - iy0).min(kh as isize)).max(0) as usize,
        );
        // Output columns whose every tap lands inside the image: [lo, hi).
        let lo = pw.div_ceil(s).min(g.ow);
        let hi = if w + pw >= kw {
            ((w + pw - kw) / s + 1).min(g.ow).max(lo)
        } else {
            lo
        };
        let blocks = g.cout / S::F32_LANES;
        let t = Tile {
            g,
            x,
            w: weights,
            bias,
            relu,
            iy0,
            ky,
        };
        let mut b0 = 0;
        while b0 < blocks {
            // Eight accumulators per tile: enough independent FMA chains for two FMA units.
            let nb = if blocks - b0 >= 4 {
                4
            } else if blocks - b0 >= 2 {
                2
            } else {
                1
            };
            let mut ox = 0;
            while ox < g.ow {
                let interior = ox >= lo && ox < hi;
                let left = if interior { hi - ox } else { 1 };
                let (out, res) = (&mut *out_row, res_row);
                macro_rules! go {
                    ($p:literal, $nb:literal) => {
                        t.run::<S, $p, $nb>(simd, ox, b0, out, res, interior)
                    };
                }
                let p = match (nb, interior && left >= 8 / nb) {
                    (4, true) => go!(2, 4),
                    (2, true) => go!(4, 2),
                    (1, true) => go!(8, 1),
                    (4, false) => go!(1, 4),
                    (2, false) => go!(1, 2),
                    _ => go!(1, 1),
                };
                ox += p;
            }
            b0 += nb;
        }
    }
}

/// What every tile of a row shares.
struct Tile<'a> {
    g: &'a Geometry,
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    relu: bool,
    /// Input row of tap `ky = 0` (may be negative: padding).
    iy0: isize,
    /// Taps `ky` that land inside the image.
    ky: (usize, usize),
}

impl Tile<'_> {
    /// `P` pixels from `ox0` × `NB` vectors of output channels from vector `b0`; `interior`: every
    /// tap of every pixel lands inside the image (else `P == 1` and the taps are clipped).
    /// Returns `P`.
    #[inline(always)]
    fn run<S: Simd, const P: usize, const NB: usize>(
        &self,
        simd: S,
        ox0: usize,
        b0: usize,
        out_row: &mut [f32],
        res_row: Option<&[f32]>,
        interior: bool,
    ) -> usize {
        let g = self.g;
        let l = S::F32_LANES;
        let (cin, cout) = (g.cin, g.cout);
        let [_, kw] = g.k;
        let [_, pw] = g.pad;
        let w_in = g.hw[1];
        let mut acc = [[simd.splat_f32s(0.0); NB]; P];
        let ix0 = |p: usize| ((ox0 + p) * g.stride) as isize - pw as isize;
        let kx = if interior {
            (0, kw)
        } else {
            let i = ix0(0);
            (
                (-i).max(0) as usize,
                ((w_in as isize - i).min(kw as isize)).max(0) as usize,
            )
        };
        for ky in self.ky.0..self.ky.1 {
            let iy = (self.iy0 + ky as isize) as usize;
            for kx in kx.0..kx.1 {
                let tap = ky * kw + kx;
                let mut base = [0usize; P];
                for (p, b) in base.iter_mut().enumerate() {
                    *b = (iy * w_in + (ix0(p) + kx as isize) as usize) * cin;
                }
                for ci in 0..cin {
                    let row = (tap * cin + ci) * cout + b0 * l;
                    let wv = S::as_simd_f32s(&self.w[row..row + NB * l]).0;
                    for (a, &b) in acc.iter_mut().zip(&base) {
                        let xv = simd.splat_f32s(self.x[b + ci]);
                        for (ab, &wb) in a.iter_mut().zip(wv) {
                            *ab = simd.mul_add_e_f32s(xv, wb, *ab);
                        }
                    }
                }
            }
        }
        let bias = S::as_simd_f32s(&self.bias[b0 * l..(b0 + NB) * l]).0;
        let zero = simd.splat_f32s(0.0);
        for (p, a) in acc.iter().enumerate() {
            let at = (ox0 + p) * cout + b0 * l;
            let res = res_row.map(|r| S::as_simd_f32s(&r[at..at + NB * l]).0);
            let out = S::as_mut_simd_f32s(&mut out_row[at..at + NB * l]).0;
            for (b, (o, &v)) in out.iter_mut().zip(a).enumerate() {
                let mut v = simd.add_f32s(v, bias[b]);
                if let Some(r) = res {
                    v = simd.add_f32s(v, r[b]);
                }
                *o = if self.relu { simd.max_f32s(v, zero) } else { v };
            }
        }
        P
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{act, conv_forward, max_abs_diff, values};
    use crate::{Conv, ConvKernel};

    use super::*;

    /// (cin, cout in vectors, kernel, stride, padding, h, w).
    type Case = (usize, usize, [usize; 2], usize, [usize; 2], usize, usize);

    #[test]
    fn matches_the_definition_on_narrow_layers_borders_and_strides() {
        let Some(lanes) = Lanes::detect() else {
            panic!("this CPU has neither AVX2 + FMA nor NEON; mark this test ignored on it");
        };
        let l = lanes.width();
        // (cin, cout in lanes, k, stride, pad, h, w): EENet-8's 1→8 stem and 8→8 / 8→16 layers,
        // 3 vectors (an odd block count), stride 2, 1×1, rectangular, a map narrower than a tile.
        let cases: [Case; 8] = [
            (1, 1, [3, 3], 1, [1, 1], 9, 13),
            (8, 1, [3, 3], 1, [1, 1], 7, 7),
            (8, 2, [3, 3], 2, [1, 1], 11, 12),
            (5, 3, [3, 3], 1, [1, 1], 5, 17),
            (16, 4, [1, 1], 2, [0, 0], 8, 9),
            (6, 2, [1, 7], 1, [0, 3], 6, 10),
            (4, 1, [5, 5], 1, [2, 2], 3, 3),
            (3, 5, [3, 3], 1, [0, 0], 6, 6),
        ];
        for (i, &(cin, vecs, k, stride, pad, h, w)) in cases.iter().enumerate() {
            let cout = vecs * l;
            let seed = i as u32;
            let conv = Conv::from_host_rect(
                cin,
                cout,
                k,
                stride,
                pad,
                values(k[0] * k[1] * cin * cout, 70 + seed),
                values(cout, 80 + seed),
                false,
                ConvKernel::Gemm,
            );
            let x = act(2, h, w, cin, 90 + seed);
            let (oh, ow) = conv.out_hw(h, w);
            let res = act(2, oh, ow, cout, 95 + seed);
            let g = Geometry {
                cin,
                cout,
                k,
                stride,
                pad,
                hw: [h, w],
                ow,
            };
            for (residual, relu) in [(false, false), (true, true), (false, true)] {
                let want = conv_forward(&conv, &x, residual.then_some(&res), relu);
                let mut got = vec![f32::NAN; want.data.len()];
                let row_len = ow * cout;
                for (r, out) in got.chunks_mut(row_len).enumerate() {
                    let (n, oy) = (r / oh, r % oh);
                    let img = &x.data[n * h * w * cin..(n + 1) * h * w * cin];
                    let res_row = residual.then(|| &res.data[r * row_len..(r + 1) * row_len]);
                    conv_row(lanes, &g, img, oy, &conv.w, &conv.b, res_row, relu, out);
                }
                let worst = max_abs_diff(&got, &want.data);
                assert!(worst <= 1e-4, "case {i} residual {residual} relu {relu}: {worst}");
            }
        }
    }
}

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
//! Every output row runs in tiles of `P` pixels × `NB` vectors of output channels (seven or more
//! accumulators), over a zero-padded copy of the sample ([`PaddedInput`]), so border pixels run
//! in full tiles too.
//!
//! Nearly safe code: `pulp` checks the CPU's features once ([`Lanes::detect`]) and its vector
//! operations take slices; the one unchecked read is the input value of the inner loop, inside a
//! slice whose bounds are checked per kernel row.

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
/// (+ `res_row`), then ReLU if `relu`. `x` is sample `sample`'s `[h][w][cin]` input, `w` the
/// weights `[(ky·kw + kx)·cin + ci][cout]`. `padded` keeps the zero-padded copy of the sample
/// between its rows: one per thread and input batch, since it is known by its sample index only
/// (see [`PaddedInput`]).
///
/// # Panics
/// If `cout` is not a multiple of the lane width or a slice is shorter than the geometry says.
#[allow(clippy::too_many_arguments)] // one row of one convolution: every argument is needed
pub fn conv_row(
    lanes: Lanes,
    g: &Geometry,
    sample: usize,
    x: &[f32],
    oy: usize,
    w: &[f32],
    bias: &[f32],
    res_row: Option<&[f32]>,
    relu: bool,
    out_row: &mut [f32],
    padded: &mut PaddedInput,
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
    let (src, row_stride) = padded.of(g, sample, x);
    let at = oy * g.stride * row_stride;
    lanes.run(Row {
        g,
        src: &src[at..at + g.k[0] * row_stride],
        row_stride,
        w,
        bias,
        res_row,
        relu,
        out_row,
    });
}

/// A sample's input with its zero padding written out, so that every tap of every output pixel
/// lands inside: border pixels then run in full tiles like the others.
///
/// Why a padded copy rather than clipped taps at the borders: a border pixel computed alone has
/// one chain of dependent multiply-adds per vector, eight times slower than a tile of pixels; on
/// a 28-pixel row its two border columns cost as much as the other 26. The copy is made once per
/// sample and thread (the rows of a sample run one after the other), one pass over the input
/// against `kh · kw · cout` multiply-adds per input value.
#[derive(Debug, Default)]
pub struct PaddedInput {
    sample: Option<usize>,
    buf: Vec<f32>,
}

impl PaddedInput {
    /// The rows sample `sample` (input `x`) is read from, and the distance between them: `x`
    /// itself when the convolution has no padding, else the padded copy (made on the sample's
    /// first row).
    fn of<'a>(&'a mut self, g: &Geometry, sample: usize, x: &'a [f32]) -> (&'a [f32], usize) {
        let [kh, kw] = g.k;
        let [ph, pw] = g.pad;
        let [h, w] = g.hw;
        let cin = g.cin;
        if ph == 0 && pw == 0 {
            return (x, w * cin);
        }
        // Only the rows and columns some tap reads.
        let oh = crate::ops::out_len(h, kh, g.stride, ph);
        let (hp, wp) = ((oh - 1) * g.stride + kh, (g.ow.max(1) - 1) * g.stride + kw);
        let row = wp * cin;
        if self.sample != Some(sample) || self.buf.len() != hp * row {
            self.buf.clear();
            self.buf.resize(hp * row, 0.0);
            let cols = w.min(wp.saturating_sub(pw));
            for iy in 0..h.min(hp.saturating_sub(ph)) {
                let (from, to) = (iy * w * cin, (iy + ph) * row + pw * cin);
                self.buf[to..to + cols * cin].copy_from_slice(&x[from..from + cols * cin]);
            }
            self.sample = Some(sample);
        }
        (&self.buf, row)
    }
}

struct Row<'a> {
    g: &'a Geometry,
    /// The `kh` input rows under the output row, every tap inside ([`PaddedInput`]).
    src: &'a [f32],
    row_stride: usize,
    w: &'a [f32],
    bias: &'a [f32],
    res_row: Option<&'a [f32]>,
    relu: bool,
    /// Taken out by [`WithSimd::with_simd`] and written tile by tile.
    out_row: &'a mut [f32],
}

impl WithSimd for Row<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let out = std::mem::take(&mut self.out_row);
        let blocks = self.g.cout / S::F32_LANES;
        let ow = self.g.ow;
        let mut b0 = 0;
        while b0 < blocks {
            // Eight accumulators per tile: enough independent FMA chains for two FMA units.
            let nb = match blocks - b0 {
                4.. => 4,
                2 | 3 => 2,
                _ => 1,
            };
            macro_rules! tiles {
                ($p:literal, $nb:literal) => {
                    self.tiles::<S, $p, $nb>(simd, b0, out)
                };
            }
            // Seven pixels where they divide a row that eight do not (28, 14, 7: MNIST's maps),
            // so that no tile recomputes pixels.
            let sevens = ow.is_multiple_of(7) && !ow.is_multiple_of(8);
            match (nb, ow) {
                (4, 2..) => tiles!(2, 4),
                (2, 4..) => tiles!(4, 2),
                (2, 2..) => tiles!(2, 2),
                (1, 7..) if sevens => tiles!(7, 1),
                (1, 8..) => tiles!(8, 1),
                (1, 4..) => tiles!(4, 1),
                (1, 2..) => tiles!(2, 1),
                (4, _) => tiles!(1, 4),
                (2, _) => tiles!(1, 2),
                _ => tiles!(1, 1),
            }
            b0 += nb;
        }
    }
}

impl Row<'_> {
    /// Output channel vectors `b0..b0 + NB` of the whole row, `P` pixels at a time; the last
    /// tile ends at the row's end and may recompute pixels of the one before (same values), so
    /// that no pixel runs in a narrower tile with fewer independent chains. Needs `P <= ow`.
    #[inline(always)]
    fn tiles<S: Simd, const P: usize, const NB: usize>(&self, simd: S, b0: usize, out_row: &mut [f32]) {
        let ow = self.g.ow;
        let mut ox = 0;
        loop {
            let at = ox.min(ow - P);
            self.tile::<S, P, NB>(simd, at, b0, out_row);
            if at + P >= ow {
                return;
            }
            ox += P;
        }
    }

    /// `P` pixels from `ox0` × `NB` vectors of output channels from vector `b0`, stored with bias,
    /// residual and ReLU.
    #[inline(always)]
    fn tile<S: Simd, const P: usize, const NB: usize>(&self, simd: S, ox0: usize, b0: usize, out_row: &mut [f32]) {
        let g = self.g;
        let l = S::F32_LANES;
        let (cin, cout) = (g.cin, g.cout);
        let [kh, kw] = g.k;
        // For one kernel row, a pixel reads `kw · cin` contiguous inputs (its taps' channels),
        // and the weights of those taps are contiguous too: one loop of `run` steps.
        let run = kw * cin;
        let step = g.stride * cin;
        let mut acc = [[simd.splat_f32s(0.0); NB]; P];
        for ky in 0..kh {
            let x0 = ky * self.row_stride + ox0 * step;
            let xs = &self.src[x0..x0 + (P - 1) * step + run];
            let ws = &self.w[ky * run * cout..(ky + 1) * run * cout];
            for j in 0..run {
                let at = j * cout + b0 * l;
                let wv = S::as_simd_f32s(&ws[at..at + NB * l]).0;
                let wv: [S::f32s; NB] = core::array::from_fn(|b| wv[b]);
                for (p, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `p < P` and `j < run`, so `p · step + j < (P - 1) · step + run`,
                    // the length of `xs` (checked when it was sliced).
                    let xv = simd.splat_f32s(unsafe { *xs.get_unchecked(p * step + j) });
                    for (ab, &wb) in a.iter_mut().zip(&wv) {
                        *ab = simd.mul_add_e_f32s(xv, wb, *ab);
                    }
                }
            }
        }
        let bias = S::as_simd_f32s(&self.bias[b0 * l..(b0 + NB) * l]).0;
        let zero = simd.splat_f32s(0.0);
        for (p, a) in acc.iter().enumerate() {
            let at = (ox0 + p) * cout + b0 * l;
            let res = self.res_row.map(|r| S::as_simd_f32s(&r[at..at + NB * l]).0);
            let out = S::as_mut_simd_f32s(&mut out_row[at..at + NB * l]).0;
            for (b, (o, &v)) in out.iter_mut().zip(a).enumerate() {
                let mut v = simd.add_f32s(v, bias[b]);
                if let Some(r) = res {
                    v = simd.add_f32s(v, r[b]);
                }
                *o = if self.relu { simd.max_f32s(v, zero) } else { v };
            }
        }
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
                let mut padded = PaddedInput::default();
                let row_len = ow * cout;
                for (r, out) in got.chunks_mut(row_len).enumerate() {
                    let (n, oy) = (r / oh, r % oh);
                    let img = &x.data[n * h * w * cin..(n + 1) * h * w * cin];
                    let res_row = residual.then(|| &res.data[r * row_len..(r + 1) * row_len]);
                    conv_row(lanes, &g, n, img, oy, &conv.w, &conv.b, res_row, relu, out, &mut padded);
                }
                let worst = max_abs_diff(&got, &want.data);
                assert!(worst <= 1e-4, "case {i} residual {residual} relu {relu}: {worst}");
            }
        }
    }
}

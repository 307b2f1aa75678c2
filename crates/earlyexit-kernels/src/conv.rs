//! Convolutions with their BatchNorm folded in, forward: the direct AVX-512 kernel or im2col +
//! GEMM, with bias, residual and ReLU applied before the output is stored.

use rayon::prelude::*;

use crate::lanes::{self, Lanes, PaddedInput};
use crate::matmul::{MatRef, matmul};
use crate::ops::out_len;
use crate::par::{SERIAL_MACS, for_each_chunk};
use crate::{Act, Isa, direct};

/// Output rows (positions × samples) per GEMM task: large enough to amortise packing, small
/// enough that the im2col tile stays in cache and both cores get work at batch 1.
const MAX_TILE_ROWS: usize = 256;
const MIN_TILE_ROWS: usize = 32;

/// A convolution with its BatchNorm folded in; weights `[(ky·kw + kx)·cin + ci][cout]`.
/// Square kernels run the direct kernel where it runs; rectangular ones (Inception-v3's 1×7 and
/// 7×1) im2col + GEMM.
#[derive(Clone, Debug)]
pub struct Conv {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
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
    /// Weights, `[(ky·kw + kx)·cin + ci][cout]`.
    pub w: Vec<f32>,
    /// Bias per output channel.
    pub b: Vec<f32>,
    /// Whether the layer's own ReLU follows (fused into the epilogue by its callers).
    pub relu: bool,
    /// `w` repacked for the direct AVX-512 kernel, where it runs this convolution.
    packed: Option<Vec<f32>>,
    /// The portable-SIMD direct kernel ([`crate::lanes`]), where it runs this convolution and
    /// the AVX-512 one does not.
    lanes: Option<Lanes>,
}

/// Weights `[cout][cin][kh][kw]` (Burn's and PyTorch's layout) with `taps = kh·kw` →
/// `[(ky·kw + kx)·cin + ci][cout]` (the layout of [`Conv::w`]).
pub fn oihw_to_taps(raw: &[f32], cout: usize, cin: usize, taps: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; raw.len()];
    for o in 0..cout {
        for i in 0..cin {
            for t in 0..taps {
                w[(t * cin + i) * cout + o] = raw[(o * cin + i) * taps + t];
            }
        }
    }
    w
}

/// The inverse of [`oihw_to_taps`].
pub fn taps_to_oihw(w: &[f32], cout: usize, cin: usize, taps: usize) -> Vec<f32> {
    let mut raw = vec![0.0f32; w.len()];
    for o in 0..cout {
        for i in 0..cin {
            for t in 0..taps {
                raw[(o * cin + i) * taps + t] = w[(t * cin + i) * cout + o];
            }
        }
    }
    raw
}

/// Which kernel runs the compiled path's convolutions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvKernel {
    /// The direct AVX-512 kernel wherever the CPU has AVX-512F and a convolution has a multiple
    /// of 16 output channels, the portable-SIMD direct kernel ([`crate::lanes`]) for multiples
    /// of the vector width, im2col + GEMM for the others (as [`crate::Isa::selected`] allows).
    #[default]
    Auto,
    /// im2col + GEMM everywhere (portable; the reference the direct kernel is tested against).
    Gemm,
}

impl Conv {
    /// A square `k×k` convolution from host weights `w` (`[(ky·k + kx)·cin + ci][cout]`) and
    /// bias `b`; `relu` records whether the layer's ReLU follows it. The weights are repacked for
    /// the direct kernel when `kernel` allows it and it runs here.
    ///
    /// # Panics
    /// If `w` or `b` does not have the length the geometry says.
    #[allow(clippy::too_many_arguments)] // the full geometry of a convolution
    pub fn from_host(
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
        Self::from_host_rect(cin, cout, [k, k], stride, [pad, pad], w, b, relu, kernel)
    }

    /// [`Conv::from_host`] with a `kh×kw` kernel and `[ph, pw]` padding.
    ///
    /// # Panics
    /// If `w` or `b` does not have the length the geometry says.
    #[allow(clippy::too_many_arguments)] // the full geometry of a convolution
    pub fn from_host_rect(
        cin: usize,
        cout: usize,
        [kh, kw]: [usize; 2],
        stride: usize,
        [ph, pw]: [usize; 2],
        w: Vec<f32>,
        b: Vec<f32>,
        relu: bool,
        kernel: ConvKernel,
    ) -> Self {
        assert_eq!(
            w.len(),
            kh * kw * cin * cout,
            "Conv::from_host: weights of a {kh}×{kw} {cin}→{cout} convolution"
        );
        assert_eq!(b.len(), cout, "Conv::from_host: one bias per output channel");
        let square = kh == kw && ph == pw;
        let packed =
            (kernel == ConvKernel::Auto && square && cout.is_multiple_of(direct::LANES) && direct::available())
                .then(|| direct::pack(&w, kh, cin, cout));
        let simd = matches!(Isa::selected(), Isa::Avx512 | Isa::Avx2 | Isa::Neon);
        let lanes = (kernel == ConvKernel::Auto && packed.is_none() && simd)
            .then(Lanes::detect)
            .flatten()
            .filter(|l| cout.is_multiple_of(l.width()));
        Self {
            cin,
            cout,
            kh,
            kw,
            stride,
            ph,
            pw,
            w,
            b,
            relu,
            packed,
            lanes,
        }
    }

    /// The kernel size and padding of a square convolution with equal padding on every side
    /// (what the training kernels run).
    pub fn square(&self) -> Option<(usize, usize)> {
        (self.kh == self.kw && self.ph == self.pw).then_some((self.kh, self.ph))
    }

    /// Whether the direct AVX-512 kernel runs this convolution.
    pub fn is_direct(&self) -> bool {
        self.packed.is_some()
    }

    /// Which kernel runs this convolution: `direct-avx512`, `direct-simd` (AVX2 or NEON) or
    /// `im2col-gemm`.
    pub fn kernel_name(&self) -> &'static str {
        match (&self.packed, &self.lanes) {
            (Some(_), _) => "direct-avx512",
            (None, Some(_)) => "direct-simd",
            (None, None) => "im2col-gemm",
        }
    }

    /// Output height and width for an `h × w` input.
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            out_len(h, self.kh, self.stride, self.ph),
            out_len(w, self.kw, self.stride, self.pw),
        )
    }

    /// `conv(x) + b + residual`, then ReLU if `relu`; `residual` has the output's shape.
    pub fn forward(&self, x: &Act, residual: Option<&Act>, relu: bool) -> Act {
        self.forward_into(x, residual, relu, Vec::new())
    }

    /// [`Self::forward`] writing into `out` (resized; its old values are all overwritten), so
    /// that a caller can recycle its buffers.
    pub fn forward_into(&self, x: &Act, residual: Option<&Act>, relu: bool, mut out: Vec<f32>) -> Act {
        debug_assert_eq!(x.c, self.cin);
        let (oh, ow) = self.out_hw(x.h, x.w);
        out.resize(x.n * oh * ow * self.cout, 0.0);
        if let Some(packed) = &self.packed {
            return self.forward_direct(packed, x, residual, relu, out);
        }
        if let Some(lanes) = self.lanes {
            return self.forward_lanes(lanes, x, residual, relu, out);
        }
        let per_sample = oh * ow;
        let rows = x.n * per_sample;
        let (cin, cout, kk) = (self.cin, self.cout, self.kh * self.kw * self.cin);
        let threads = rayon::current_num_threads().max(1);
        let tile = rows.div_ceil(threads * 2).clamp(MIN_TILE_ROWS, MAX_TILE_ROWS);
        let direct = kk == cin && self.stride == 1 && self.ph == 0 && self.pw == 0;
        // Few tasks (small batches, late stages): let the GEMM split its own work instead; tiny
        // convolutions stay on this thread ([`crate::par`]).
        let tasks = rows.div_ceil(tile);
        let small = rows * kk * cout < SERIAL_MACS;
        let par = if tasks < threads && !small {
            crate::Parallelism::Rayon(threads)
        } else {
            crate::Parallelism::None
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
        if tasks < threads || small {
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

    /// [`Conv::forward`] with the direct AVX-512 kernel.
    fn forward_direct(&self, packed: &[f32], x: &Act, residual: Option<&Act>, relu: bool, out: Vec<f32>) -> Act {
        let ow = self.out_hw(x.h, x.w).1;
        let g = direct::Geometry {
            cin: self.cin,
            cout: self.cout,
            k: self.kh,
            stride: self.stride,
            pad: self.ph,
            h: x.h,
            w: x.w,
            ow,
        };
        self.by_rows(x, residual, out, |_, img, oy, res, out_row, _| {
            direct::conv_row(&g, img, oy, packed, &self.b, res, relu, out_row)
        })
    }

    /// [`Conv::forward`] with the portable-SIMD direct kernel.
    fn forward_lanes(&self, lanes: Lanes, x: &Act, residual: Option<&Act>, relu: bool, out: Vec<f32>) -> Act {
        let ow = self.out_hw(x.h, x.w).1;
        let g = lanes::Geometry {
            cin: self.cin,
            cout: self.cout,
            k: [self.kh, self.kw],
            stride: self.stride,
            pad: [self.ph, self.pw],
            hw: [x.h, x.w],
            ow,
        };
        self.by_rows(x, residual, out, |sample, img, oy, res, out_row, padded| {
            lanes::conv_row(lanes, &g, sample, img, oy, &self.w, &self.b, res, relu, out_row, padded)
        })
    }

    /// The output row by row for a direct kernel, `row(sample, its input, oy, residual row, out
    /// row, padded)` (`padded`: the portable kernel's padded input, kept across one task's rows),
    /// rows (sample, y) split between the threads (about four tasks per thread: enough to
    /// balance, few enough to amortise the hand-off), or on this thread when the convolution is
    /// small ([`crate::par`]).
    fn by_rows(
        &self,
        x: &Act,
        residual: Option<&Act>,
        mut out: Vec<f32>,
        row: impl Fn(usize, &[f32], usize, Option<&[f32]>, &mut [f32], &mut PaddedInput) + Sync,
    ) -> Act {
        let (oh, ow) = self.out_hw(x.h, x.w);
        let row_len = ow * self.cout;
        let rows = x.n * oh;
        debug_assert_eq!(out.len(), rows * row_len);
        let threads = rayon::current_num_threads().max(1);
        let per_task = rows.div_ceil(threads * 4).max(1);
        let sample_len = x.sample_len();
        let macs = out.len() * self.kh * self.kw * self.cin;
        for_each_chunk(&mut out, per_task * row_len, macs, SERIAL_MACS, |(t, dst)| {
            let mut padded = PaddedInput::default();
            for (i, out_row) in dst.chunks_mut(row_len).enumerate() {
                let r = t * per_task + i;
                let (sample, oy) = (r / oh, r % oh);
                let img = &x.data[sample * sample_len..(sample + 1) * sample_len];
                let res = residual.map(|a| &a.data[r * row_len..(r + 1) * row_len]);
                row(sample, img, oy, res, out_row, &mut padded);
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
    pub fn im2col(&self, x: &Act, oh: usize, ow: usize, r0: usize, col: &mut [f32]) {
        let (cin, kh, kw, s) = (self.cin, self.kh, self.kw, self.stride);
        let (ph, pw) = (self.ph as isize, self.pw as isize);
        let kk = kh * kw * cin;
        let per_sample = oh * ow;
        let sample_len = x.sample_len();
        for (i, row) in col.chunks_mut(kk).enumerate() {
            let r = r0 + i;
            let (sample, pos) = (r / per_sample, r % per_sample);
            let (y, xo) = ((pos / ow) as isize, (pos % ow) as isize);
            let img = &x.data[sample * sample_len..(sample + 1) * sample_len];
            for ky in 0..kh {
                let iy = y * s as isize + ky as isize - ph;
                let dst = &mut row[ky * kw * cin..(ky + 1) * kw * cin];
                if iy < 0 || iy >= x.h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let ix0 = xo * s as isize - pw;
                if s == 1 && ix0 >= 0 && ix0 + kw as isize <= x.w as isize {
                    // The kw taps of this kernel row are adjacent in NHWC: one copy.
                    let start = (iy as usize * x.w + ix0 as usize) * cin;
                    dst.copy_from_slice(&img[start..start + kw * cin]);
                    continue;
                }
                for kx in 0..kw {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{act, conv_forward, max_abs_diff, values};

    /// (cin, cout, k, stride, pad, h, w): stem-like 3 input channels, 1, 2 and 4 blocks of 16
    /// output channels, stride 2, 1×1 shortcuts, odd sizes, widths that leave partial tiles, a
    /// kernel larger than part of the image, and channel counts off the direct kernel's grid.
    const CASES: [(usize, usize, usize, usize, usize, usize, usize); 13] = [
        (1, 8, 3, 1, 1, 9, 10),
        (8, 24, 3, 2, 1, 11, 9),
        (16, 40, 1, 1, 0, 4, 5),
        (3, 16, 3, 1, 1, 9, 21),
        (16, 16, 3, 1, 1, 7, 7),
        (16, 32, 3, 2, 1, 11, 13),
        (32, 64, 3, 1, 1, 5, 17),
        (16, 48, 1, 2, 0, 8, 9),
        (8, 64, 1, 1, 0, 3, 31),
        (5, 32, 5, 1, 2, 6, 4),
        (4, 16, 3, 1, 1, 1, 2),
        (3, 10, 3, 1, 1, 5, 6),
        (7, 5, 1, 1, 0, 4, 4),
    ];

    #[test]
    fn rectangular_kernels_match_the_definition() {
        // Inception-v3's 1×7 / 7×1 (padding 0×3 / 3×0) and 1×3 / 3×1, with stride 2 once.
        for (i, &(k, pad, stride)) in [
            ([1, 7], [0, 3], 1),
            ([7, 1], [3, 0], 1),
            ([1, 3], [0, 1], 2),
            ([3, 1], [1, 0], 1),
        ]
        .iter()
        .enumerate()
        {
            let (cin, cout) = (5, 16);
            let w = values(k[0] * k[1] * cin * cout, 40 + i as u32);
            let b = values(cout, 50 + i as u32);
            let conv = Conv::from_host_rect(cin, cout, k, stride, pad, w, b, true, ConvKernel::Auto);
            // Rectangular convolutions always run im2col + GEMM.
            assert!(!conv.is_direct() && conv.square().is_none());
            let x = act(2, 9, 8, cin, 60 + i as u32);
            let want = conv_forward(&conv, &x, None, true);
            let got = conv.forward(&x, None, true);
            assert_eq!((got.h, got.w), (want.h, want.w), "case {i}");
            let worst = max_abs_diff(&got.data, &want.data);
            assert!(worst <= 1e-4, "case {i}: {worst}");
        }
    }

    #[test]
    fn tap_layout_round_trips() {
        let raw: Vec<f32> = (0..2 * 3 * 9).map(|v| v as f32).collect();
        let taps = oihw_to_taps(&raw, 2, 3, 9);
        // Output 1, input 2, tap (1, 2) = index 5: OIHW (1·3 + 2)·9 + 5 = 50.
        assert_eq!(taps[(5 * 3 + 2) * 2 + 1], 50.0);
        assert_eq!(taps_to_oihw(&taps, 2, 3, 9), raw);
    }

    #[test]
    fn both_kernels_match_the_definition_on_every_tile_and_border_shape() {
        for (i, &(cin, cout, k, stride, pad, h, w)) in CASES.iter().enumerate() {
            let seed = i as u32;
            let weights = values(k * k * cin * cout, 100 + seed);
            let bias = values(cout, 200 + seed);
            let x = act(2, h, w, cin, seed);
            for kernel in [ConvKernel::Auto, ConvKernel::Gemm] {
                let conv = Conv::from_host(cin, cout, k, stride, pad, weights.clone(), bias.clone(), false, kernel);
                // The direct kernels are really the ones under test wherever they can run.
                let direct = kernel == ConvKernel::Auto && direct::available() && cout % direct::LANES == 0;
                assert_eq!(conv.is_direct(), direct, "case {i} {kernel:?}");
                let simd = kernel == ConvKernel::Auto
                    && !direct
                    && Isa::selected() != Isa::Portable
                    && Lanes::detect().is_some_and(|l| cout % l.width() == 0);
                assert_eq!(conv.kernel_name() == "direct-simd", simd, "case {i} {kernel:?}");
                let (oh, ow) = conv.out_hw(h, w);
                let res = act(2, oh, ow, cout, 300 + seed);
                for (residual, relu) in [(false, false), (true, true), (false, true)] {
                    let r = residual.then_some(&res);
                    let want = conv_forward(&conv, &x, r, relu);
                    let got = conv.forward_into(&x, r, relu, vec![f32::NAN; 3]);
                    assert_eq!((got.n, got.h, got.w, got.c), (want.n, want.h, want.w, want.c));
                    let worst = max_abs_diff(&got.data, &want.data);
                    assert!(
                        worst <= 1e-4,
                        "case {i} {kernel:?} residual {residual} relu {relu}: max difference {worst}"
                    );
                }
            }
        }
    }
}

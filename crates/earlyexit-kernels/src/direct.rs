//! A direct channels-last convolution for CPUs with AVX-512, the compiled path's fast kernel.
//!
//! Why: the im2col + GEMM route copies every input value k² times into a buffer and the `gemm`
//! crate runs 256-bit (AVX2) micro-kernels, while the PyTorch we compare against runs oneDNN's
//! 512-bit direct kernels. Here one output pixel's 16 channels fill one 512-bit register: a tile
//! of `P` pixels × `NB` blocks of 16 output channels stays in registers while every tap and input
//! channel is accumulated (one broadcast input value, `NB` weight vectors, `P·NB` FMAs), and bias,
//! residual and ReLU are applied before the single store. No im2col buffer and no padded copy:
//! taps outside the image are skipped (rows per tile, columns in one-pixel border tiles).
//!
//! Used for convolutions with a multiple of 16 output channels when the CPU has AVX-512F
//! (checked at run time); the GEMM route stays for the others and as the portable reference.

/// Output channels per vector register.
pub const LANES: usize = 16;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weights `[(ky·k + kx)·cin + ci][cout]` repacked as `[cout/16][ky·k + kx][cin][16]`, so that a
/// block of 16 output channels reads its weights contiguously.
pub fn pack(w: &[f32], k: usize, cin: usize, cout: usize) -> Vec<f32> {
    debug_assert_eq!(cout % LANES, 0);
    let taps = k * k;
    let mut out = vec![0.0f32; w.len()];
    for b in 0..cout / LANES {
        for t in 0..taps {
            for ci in 0..cin {
                let src = (t * cin + ci) * cout + b * LANES;
                let dst = ((b * taps + t) * cin + ci) * LANES;
                out[dst..dst + LANES].copy_from_slice(&w[src..src + LANES]);
            }
        }
    }
    out
}

/// The shape of one convolution over one NHWC sample.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Input channels.
    pub cin: usize,
    /// Output channels (a multiple of [`LANES`]).
    pub cout: usize,
    /// Kernel size (square).
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (every side).
    pub pad: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output width.
    pub ow: usize,
}

/// One output row `oy` of one sample: `out_row` (`[ow][cout]`) = conv(`x`) + `bias` (+ `res_row`),
/// then ReLU if `relu`. `x` is the sample's `[h][w][cin]` input, `packed` the weights from
/// [`pack`].
///
/// # Panics
/// If the slices are shorter than the geometry says, or the CPU lacks AVX-512F (check
/// [`available`] first).
#[allow(clippy::too_many_arguments)] // one row of one convolution: every argument is needed
pub fn conv_row(
    g: &Geometry,
    x: &[f32],
    oy: usize,
    packed: &[f32],
    bias: &[f32],
    res_row: Option<&[f32]>,
    relu: bool,
    out_row: &mut [f32],
) {
    assert!(available(), "direct_conv::conv_row needs AVX-512F");
    assert!(x.len() >= g.h * g.w * g.cin, "input shorter than its geometry");
    assert!(packed.len() >= g.k * g.k * g.cin * g.cout && bias.len() >= g.cout);
    assert!(out_row.len() >= g.ow * g.cout);
    if let Some(r) = res_row {
        assert!(r.len() >= g.ow * g.cout);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (checked above) and every slice is at least as long as the
    // geometry addresses (checked above); the kernel reads and writes only within them.
    unsafe {
        x86::conv_row(g, x, oy, packed, bias, res_row, relu, out_row)
    }
}

/// The shape of one convolution's weight gradient over one sample, input zero-padded.
#[derive(Clone, Copy, Debug)]
pub struct GradGeometry {
    /// Input channels (a multiple of [`LANES`]).
    pub cin: usize,
    /// Output channels (even).
    pub cout: usize,
    /// Kernel size: 1 or 3.
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Width of the padded input (`w + 2·pad`).
    pub wp: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// Whether [`weight_grad`] runs this geometry: AVX-512F, 16·j input channels, an even number of
/// output channels and a 1×1 or 3×3 kernel.
pub fn weight_grad_runs(cin: usize, cout: usize, k: usize) -> bool {
    available() && cin.is_multiple_of(LANES) && cout.is_multiple_of(2) && (k == 1 || k == 3)
}

/// One sample's contribution to a convolution's weight gradient, added to `dwt`, laid out
/// `[(ky·k + kx)][co][ci]`: `dwt[t][co][ci] += Σ_(oy, ox) xp[oy·s + ky][ox·s + kx][ci] · dy[oy][ox][co]`.
/// `xp` is the sample's input zero-padded on every side (`[h + 2·pad][wp][cin]`), `dy` the
/// gradient of its output (`[oh][ow][cout]`).
///
/// Why: 16 input channels fill a register and two output channels are broadcast, so each
/// pixel costs 9 vector loads and 2 broadcasts for 18 FMAs, with the 18 partial sums of the 3×3
/// taps in registers for the whole sample (the GEMM route runs 8-wide micro-kernels on an
/// im2col copy).
///
/// # Panics
/// If [`weight_grad_runs`] is false for the geometry or a slice is shorter than it says.
pub fn weight_grad(g: &GradGeometry, xp: &[f32], dy: &[f32], dwt: &mut [f32]) {
    assert!(weight_grad_runs(g.cin, g.cout, g.k), "weight_grad cannot run {g:?}");
    let hp_needed = (g.oh - 1) * g.stride + g.k;
    let wp_needed = (g.ow - 1) * g.stride + g.k;
    assert!(
        g.wp >= wp_needed && xp.len() >= hp_needed * g.wp * g.cin,
        "padded input too short"
    );
    assert!(dy.len() >= g.oh * g.ow * g.cout && dwt.len() >= g.k * g.k * g.cout * g.cin);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present and every slice covers what the geometry addresses (checked).
    unsafe {
        match g.k {
            3 => x86::weight_grad::<3>(g, xp, dy, dwt),
            _ => x86::weight_grad::<1>(g, xp, dy, dwt),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Geometry, GradGeometry, LANES};

    /// Pointers and bounds shared by the tiles of one output row.
    struct Row {
        x: *const f32,
        w: *const f32,
        bias: *const f32,
        res: *const f32,
        out: *mut f32,
        relu: bool,
        /// Input row of tap `ky = 0` (may be negative: padding).
        iy0: isize,
        /// Taps `ky` that land inside the image.
        ky: (usize, usize),
    }

    /// Output pixels per tile for `nb` blocks of 16 channels: `nb·p` accumulators and `nb`
    /// weight vectors must fit in the 32 vector registers.
    const fn pixels(nb: usize) -> usize {
        match nb {
            4 => 6,
            2 => 12,
            _ => 16,
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_row(
        g: &Geometry,
        x: &[f32],
        oy: usize,
        packed: &[f32],
        bias: &[f32],
        res_row: Option<&[f32]>,
        relu: bool,
        out_row: &mut [f32],
    ) {
        let (k, s, pad) = (g.k, g.stride, g.pad);
        // Kernel rows that land inside the image for this output row.
        let iy0 = (oy * s) as isize - pad as isize;
        let ky_lo = (-iy0).max(0) as usize;
        let ky_hi = ((g.h as isize - iy0).min(k as isize)).max(0) as usize;
        // Output columns whose every tap lands inside the image: [ox_lo, ox_hi).
        let ox_lo = pad.div_ceil(s).min(g.ow);
        let ox_hi = if g.w + pad >= k {
            ((g.w + pad - k) / s + 1).min(g.ow).max(ox_lo)
        } else {
            ox_lo
        };
        let blocks = g.cout / LANES;
        let nb = if blocks.is_multiple_of(4) {
            4
        } else if blocks.is_multiple_of(2) {
            2
        } else {
            1
        };
        let block_len = k * k * g.cin * LANES;
        for b0 in (0..blocks).step_by(nb) {
            let row = Row {
                x: x.as_ptr(),
                w: unsafe { packed.as_ptr().add(b0 * block_len) },
                bias: unsafe { bias.as_ptr().add(b0 * LANES) },
                res: res_row.map_or(std::ptr::null(), |r| unsafe { r.as_ptr().add(b0 * LANES) }),
                out: unsafe { out_row.as_mut_ptr().add(b0 * LANES) },
                relu,
                iy0,
                ky: (ky_lo, ky_hi),
            };
            // Border pixels one at a time, with their own column bounds.
            for ox in (0..ox_lo).chain(ox_hi..g.ow) {
                let ix0 = (ox * s) as isize - pad as isize;
                let kx_lo = (-ix0).max(0) as usize;
                let kx_hi = ((g.w as isize - ix0).min(k as isize)).max(0) as usize;
                unsafe { dispatch(nb, 1, g, &row, ox, (kx_lo, kx_hi)) };
            }
            // Interior pixels in tiles of up to `pixels(nb)`, split evenly.
            let n = ox_hi - ox_lo;
            if n > 0 {
                let pmax = pixels(nb);
                let tiles = n.div_ceil(pmax);
                let mut ox = ox_lo;
                for t in 0..tiles {
                    let p = (n - (ox - ox_lo)).div_ceil(tiles - t);
                    unsafe { dispatch(nb, p, g, &row, ox, (0, k)) };
                    ox += p;
                }
            }
        }
    }

    /// Calls the tile kernel instantiated for `nb` channel blocks and `p` pixels.
    #[target_feature(enable = "avx512f")]
    unsafe fn dispatch(nb: usize, p: usize, g: &Geometry, row: &Row, ox0: usize, kx: (usize, usize)) {
        if p == 1 {
            // Border pixels: one accumulator chain per block would be FMA-latency bound.
            return match nb {
                4 => unsafe { pixel::<4>(g, row, ox0, kx) },
                2 => unsafe { pixel::<2>(g, row, ox0, kx) },
                _ => unsafe { pixel::<1>(g, row, ox0, kx) },
            };
        }
        macro_rules! by_p {
            ($nb:literal; $($p:literal)*) => {
                match p {
                    $($p => unsafe { tile::<$nb, $p>(g, row, ox0, kx) },)*
                    _ => unreachable!("tile of {p} pixels for {} blocks", $nb),
                }
            };
        }
        match nb {
            4 => by_p!(4; 2 3 4 5 6),
            2 => by_p!(2; 2 3 4 5 6 7 8 9 10 11 12),
            _ => by_p!(1; 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
        }
    }

    /// One output pixel × `NB` blocks of 16 channels: the input channels are spread over four
    /// independent accumulators (summed at the end) so that the FMAs do not wait on each other.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // `b` indexes the four partial sums alike
    unsafe fn pixel<const NB: usize>(g: &Geometry, row: &Row, ox0: usize, kx: (usize, usize)) {
        const U: usize = 4;
        let (cin, k, s) = (g.cin, g.k, g.stride);
        let block_len = k * k * cin * LANES;
        let mut acc = [[_mm512_setzero_ps(); NB]; U];
        let ix0 = (ox0 * s) as isize - g.pad as isize;
        for ky in row.ky.0..row.ky.1 {
            let iy = (row.iy0 + ky as isize) as usize;
            for kxx in kx.0..kx.1 {
                let ix = (ix0 + kxx as isize) as usize;
                // SAFETY: as in `tile`.
                let xb = unsafe { row.x.add((iy * g.w + ix) * cin) };
                let wt = unsafe { row.w.add((ky * k + kxx) * cin * LANES) };
                let mut ci = 0;
                while ci + U <= cin {
                    for (u, a) in acc.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(unsafe { *xb.add(ci + u) });
                        for (b, ab) in a.iter_mut().enumerate() {
                            let w = unsafe { _mm512_loadu_ps(wt.add(b * block_len + (ci + u) * LANES)) };
                            *ab = _mm512_fmadd_ps(xv, w, *ab);
                        }
                    }
                    ci += U;
                }
                for c in ci..cin {
                    let xv = _mm512_set1_ps(unsafe { *xb.add(c) });
                    for (b, ab) in acc[0].iter_mut().enumerate() {
                        let w = unsafe { _mm512_loadu_ps(wt.add(b * block_len + c * LANES)) };
                        *ab = _mm512_fmadd_ps(xv, w, *ab);
                    }
                }
            }
        }
        for b in 0..NB {
            let sum = _mm512_add_ps(_mm512_add_ps(acc[0][b], acc[1][b]), _mm512_add_ps(acc[2][b], acc[3][b]));
            let v = _mm512_add_ps(sum, unsafe { _mm512_loadu_ps(row.bias.add(b * LANES)) });
            // SAFETY: as in `tile`: the output row holds `ow·cout` values.
            unsafe { epilogue(row, ox0 * g.cout + b * LANES, v) };
        }
    }

    /// The end of every output vector: the residual at `off` added where there is one, ReLU if
    /// asked, one store at `off` of the output row.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn epilogue(row: &Row, off: usize, mut v: __m512) {
        if !row.res.is_null() {
            // SAFETY: the residual row has the output row's length (checked by `conv_row`).
            v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(row.res.add(off)) });
        }
        if row.relu {
            v = _mm512_max_ps(v, _mm512_setzero_ps());
        }
        // SAFETY: the caller passes an offset inside the output row.
        unsafe { _mm512_storeu_ps(row.out.add(off), v) };
    }

    /// `P` adjacent output pixels × `NB` blocks of 16 output channels, starting at pixel `ox0`;
    /// taps `row.ky` × `kx` (the caller guarantees they land inside the image for every pixel).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const NB: usize, const P: usize>(g: &Geometry, row: &Row, ox0: usize, kx: (usize, usize)) {
        let (cin, k, s) = (g.cin, g.k, g.stride);
        let block_len = k * k * cin * LANES;
        let mut acc = [[_mm512_setzero_ps(); NB]; P];
        for b in 0..NB {
            let bv = unsafe { _mm512_loadu_ps(row.bias.add(b * LANES)) };
            for a in acc.iter_mut() {
                a[b] = bv;
            }
        }
        let ix0 = (ox0 * s) as isize - g.pad as isize;
        let step = s * cin;
        for ky in row.ky.0..row.ky.1 {
            let iy = (row.iy0 + ky as isize) as usize;
            for kxx in kx.0..kx.1 {
                let ix = (ix0 + kxx as isize) as usize;
                // SAFETY: the caller clipped `ky` and `kx` so that every pixel's tap lies inside
                // the sample; `w` holds `NB` blocks of `k·k·cin·16` weights.
                let xb = unsafe { row.x.add((iy * g.w + ix) * cin) };
                let wt = unsafe { row.w.add((ky * k + kxx) * cin * LANES) };
                for ci in 0..cin {
                    let mut wv = [_mm512_setzero_ps(); NB];
                    for (b, w) in wv.iter_mut().enumerate() {
                        *w = unsafe { _mm512_loadu_ps(wt.add(b * block_len + ci * LANES)) };
                    }
                    for (p, a) in acc.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(unsafe { *xb.add(p * step + ci) });
                        for (ab, w) in a.iter_mut().zip(&wv) {
                            *ab = _mm512_fmadd_ps(xv, *w, *ab);
                        }
                    }
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            for (b, v) in a.iter().enumerate() {
                // SAFETY: pixel ox0 + p < ow and block b < cout/16: inside the output row.
                unsafe { epilogue(row, (ox0 + p) * g.cout + b * LANES, *v) };
            }
        }
    }

    /// See [`super::weight_grad`]: for each block of 16 input channels and each pair of output
    /// channels, `2·K²` accumulators over every output pixel of the sample.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad<const K: usize>(g: &GradGeometry, xp: &[f32], dy: &[f32], dwt: &mut [f32]) {
        let (cin, cout, s, wp) = (g.cin, g.cout, g.stride, g.wp);
        let (xp, dy, out) = (xp.as_ptr(), dy.as_ptr(), dwt.as_mut_ptr());
        for cb in (0..cin).step_by(LANES) {
            for co in (0..cout).step_by(2) {
                let mut a0 = [[_mm512_setzero_ps(); K]; K];
                let mut a1 = [[_mm512_setzero_ps(); K]; K];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        // SAFETY: (oy, ox) is an output pixel and co + 1 < cout; the padded input
                        // holds every tap of every output pixel (checked by the caller).
                        let d = unsafe { dy.add((oy * g.ow + ox) * cout + co) };
                        let (d0, d1) = unsafe { (_mm512_set1_ps(*d), _mm512_set1_ps(*d.add(1))) };
                        let base = unsafe { xp.add(((oy * s) * wp + ox * s) * cin + cb) };
                        for ky in 0..K {
                            for kx in 0..K {
                                let xv = unsafe { _mm512_loadu_ps(base.add((ky * wp + kx) * cin)) };
                                a0[ky][kx] = _mm512_fmadd_ps(xv, d0, a0[ky][kx]);
                                a1[ky][kx] = _mm512_fmadd_ps(xv, d1, a1[ky][kx]);
                            }
                        }
                    }
                }
                for ky in 0..K {
                    for kx in 0..K {
                        let t = ky * K + kx;
                        for (j, a) in [a0[ky][kx], a1[ky][kx]].into_iter().enumerate() {
                            // SAFETY: t < K², co + j < cout, cb + 16 ≤ cin.
                            let o = unsafe { out.add((t * cout + co + j) * cin + cb) };
                            unsafe { _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), a)) };
                        }
                    }
                }
            }
        }
    }
}

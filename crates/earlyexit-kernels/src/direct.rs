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

/// Whether the kernel runs here: the CPU has AVX-512F and `EARLYEXIT_CPU` does not narrow the
/// kernels to the portable path ([`crate::Isa::selected`]).
pub fn available() -> bool {
    crate::Isa::selected() == crate::Isa::Avx512
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
    assert!(x.len() >= size(&[g.h, g.w, g.cin]), "input shorter than its geometry");
    assert!(packed.len() >= size(&[g.k, g.k, g.cin, g.cout]) && bias.len() >= g.cout);
    assert!(out_row.len() >= size(&[g.ow, g.cout]));
    if let Some(r) = res_row {
        assert!(r.len() >= size(&[g.ow, g.cout]));
    }
    if g.ow == 0 {
        return; // an empty row: nothing to write (and no pointer to offset into it)
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `x86::conv_row` needs AVX-512F and buffers as long as the geometry says (its
    // `# Safety`). `available()` asserted above that this CPU has AVX-512F, and the asserts above
    // give `x.len() ≥ h·w·cin`, `packed.len() ≥ k²·cin·cout`, `bias.len() ≥ cout` and
    // `out_row.len()`, `res_row.len() ≥ ow·cout`, with products that cannot wrap ([`size`]
    // panics instead), and `ow > 0` (returned above), so the kernel's row pointers stay inside
    // `out_row`.
    unsafe {
        x86::conv_row(g, x, oy, packed, bias, res_row, relu, out_row)
    }
    // Elsewhere `available()` is false and the assert above has already panicked.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (oy, relu);
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

/// The product of `factors`, or a panic if it overflows `usize`: buffer-length checks that a
/// wrapped product would pass are no checks (release builds do not check overflow).
fn size(factors: &[usize]) -> usize {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .unwrap_or_else(|| panic!("buffer size {factors:?} overflows usize"))
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
    if g.oh == 0 || g.ow == 0 {
        return; // no output pixel: no contribution
    }
    let hp_needed = size(&[g.oh - 1, g.stride])
        .checked_add(g.k)
        .expect("geometry overflows usize");
    let wp_needed = size(&[g.ow - 1, g.stride])
        .checked_add(g.k)
        .expect("geometry overflows usize");
    assert!(
        g.wp >= wp_needed && xp.len() >= size(&[hp_needed, g.wp, g.cin]),
        "padded input too short"
    );
    assert!(dy.len() >= size(&[g.oh, g.ow, g.cout]) && dwt.len() >= size(&[g.k, g.k, g.cout, g.cin]));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `weight_grad_runs` (asserted above) checked AVX-512F on this CPU, `cin % 16 == 0`,
    // an even `cout` and `k ∈ {1, 3}`, so the `K` picked below equals `g.k`; the asserts above give
    // `wp ≥ (ow-1)·stride + k`, `xp.len() ≥ ((oh-1)·stride + k)·wp·cin`, `dy.len() ≥ oh·ow·cout`
    // and `dwt.len() ≥ k²·cout·cin` (products that cannot wrap: [`size`] panics instead), with
    // `oh, ow > 0` (returned above): everything `x86::weight_grad`'s `# Safety` asks.
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

    /// Pointers and bounds shared by the tiles of one output row, for the `nb` blocks of 16
    /// output channels starting at block `b0`.
    ///
    /// Invariants (established by [`conv_row`] from its `# Safety` contract), with
    /// `block_len = k·k·cin·16`:
    /// - `x` is valid for reads of the sample's `h·w·cin` inputs;
    /// - `w` is valid for reads of `nb·block_len` packed weights (blocks `b0..b0 + nb`);
    /// - `bias` is valid for reads of `nb·16` biases;
    /// - for every pixel `ox < ow` and block `b < nb`, `out.add(ox·cout + b·16)` is valid for
    ///   writes of 16 floats and, unless `res` is null, `res.add(ox·cout + b·16)` for reads of 16;
    /// - every `ky` in `ky.0..ky.1` has `ky < k` and `0 ≤ iy0 + ky < h`.
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

    /// See [`super::conv_row`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and, with `g` the geometry and none of these products
    /// overflowing `usize`: `x.len() ≥ h·w·cin`, `packed.len() ≥ k·k·cin·cout`,
    /// `bias.len() ≥ cout`, `out_row.len() ≥ ow·cout`, `res_row` (if any) `.len() ≥ ow·cout`, and
    /// `ow ≥ 1` (with `ow == 0` and more than one group of `nb` blocks, the row pointers of
    /// blocks `b0 > 0` would be offset past the end of a possibly empty `out_row`/`res_row`;
    /// nothing is dereferenced, but the offset itself is out of bounds). `oy` and the relation
    /// of `ow` to `w` are free: taps outside the image are clipped. `cout` need not be a
    /// multiple of 16: the trailing `cout % 16` channels are left untouched.
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
                // SAFETY: `b0 < blocks = cout / 16`, so `b0·block_len < blocks·block_len ≤
                // k²·cin·cout ≤ packed.len()` (caller's contract): the offset stays in `packed`.
                w: unsafe { packed.as_ptr().add(b0 * block_len) },
                // SAFETY: `b0·16 < blocks·16 ≤ cout ≤ bias.len()` (caller's contract).
                bias: unsafe { bias.as_ptr().add(b0 * LANES) },
                // SAFETY: `b0·16 < cout ≤ ow·cout ≤ r.len()`, given `ow ≥ 1` (caller's contract).
                res: res_row.map_or(std::ptr::null(), |r| unsafe { r.as_ptr().add(b0 * LANES) }),
                // SAFETY: `b0·16 < cout ≤ ow·cout ≤ out_row.len()`, given `ow ≥ 1` (caller's
                // contract).
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
                // SAFETY: AVX-512F is enabled here (this fn's `target_feature`, backed by the
                // caller's check in `super::conv_row`). `row` was built just above for `nb`
                // blocks and meets the `Row` invariants: `b0 + nb ≤ blocks` because `nb` divides
                // `blocks`, and `ky_lo..ky_hi` clips the taps to input rows `0..h`. The pixel `ox`
                // is `< ox_lo ≤ ow` or in `ox_hi..ow`, and `kx_lo..kx_hi` clips its taps to input
                // columns `0 ≤ ix0 + kx < w` with `kx < k`: `dispatch`'s contract for `p == 1`.
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
                    // SAFETY: AVX-512F and `row` as for the border pixels above. The tiles cover
                    // `ox_lo..ox_hi` exactly (the `p` sum to `n`), so pixels `ox..ox + p` lie in
                    // `ox_lo..ox_hi ⊆ 0..ow`; there `ox·s ≥ pad` (`ox_lo = ⌈pad/s⌉`) and
                    // `ox·s + k ≤ w + pad` (`ox_hi ≤ (w + pad - k)/s + 1`), so all `k` tap columns
                    // of every pixel of the tile land in `0..w`: `dispatch`'s contract for `kx =
                    // (0, k)`. `p ≤ pixels(nb)`: `n` is split evenly over `⌈n / pixels(nb)⌉` tiles.
                    unsafe { dispatch(nb, p, g, &row, ox, (0, k)) };
                    ox += p;
                }
            }
        }
    }

    /// Calls the tile kernel instantiated for `nb` channel blocks and `p` pixels.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `row` must meet the [`Row`] invariants for exactly `nb`
    /// blocks (1, 2 or 4); the `p` pixels `ox0..ox0 + p` must be output pixels (`< ow`), and for
    /// each of them every tap column `ox·stride - pad + kx`, `kx` in `kx.0..kx.1`, must lie in
    /// `0..w`, with `kx.1 ≤ k`. `p` must be 1 or at most `pixels(nb)` (else this panics).
    #[target_feature(enable = "avx512f")]
    unsafe fn dispatch(nb: usize, p: usize, g: &Geometry, row: &Row, ox0: usize, kx: (usize, usize)) {
        if p == 1 {
            // Border pixels: one accumulator chain per block would be FMA-latency bound.
            return match nb {
                // SAFETY: `row` was built for `nb == 4` blocks and `p == 1`, so this function's
                // contract is `pixel::<4>`'s; AVX-512F is enabled (caller's contract).
                4 => unsafe { pixel::<4>(g, row, ox0, kx) },
                // SAFETY: as above, with `nb == 2` blocks.
                2 => unsafe { pixel::<2>(g, row, ox0, kx) },
                // SAFETY: as above, with `nb == 1` block (`conv_row` picks only 1, 2 or 4).
                _ => unsafe { pixel::<1>(g, row, ox0, kx) },
            };
        }
        macro_rules! by_p {
            ($nb:literal; $($p:literal)*) => {
                match p {
                    // SAFETY: `row` was built for `nb` blocks (`by_p!` is invoked in the arm
                    // `nb == $nb`) and the tile has `P == p` pixels, so this function's contract
                    // (pixels `ox0..ox0 + p` inside the image for columns `kx`) is `tile`'s;
                    // AVX-512F is enabled (caller's contract).
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
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `row` must meet the [`Row`] invariants for `NB` blocks;
    /// `ox0 < ow`; every tap column `ox0·stride - pad + kx`, `kx` in `kx.0..kx.1`, must lie in
    /// `0..w`, with `kx.1 ≤ k`.
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
                // SAFETY: `0 ≤ iy < h` (`Row` invariant on `row.ky`) and `0 ≤ ix < w` (caller's
                // clipping of `kx`), so the pixel's `cin` inputs at `(iy·w + ix)·cin` lie within
                // the `h·w·cin` values `row.x` covers.
                let xb = unsafe { row.x.add((iy * g.w + ix) * cin) };
                // SAFETY: `ky < k` (`Row` invariant) and `kxx < kx.1 ≤ k` (caller's contract), so
                // the offset is below `k·k·cin·16 = block_len`, inside block 0 of `row.w`.
                let wt = unsafe { row.w.add((ky * k + kxx) * cin * LANES) };
                let mut ci = 0;
                while ci + U <= cin {
                    for (u, a) in acc.iter_mut().enumerate() {
                        // SAFETY: `ci + u < ci + U ≤ cin` by the loop bound: one of the pixel's
                        // `cin` inputs at `xb`.
                        let xv = _mm512_set1_ps(unsafe { *xb.add(ci + u) });
                        for (b, ab) in a.iter_mut().enumerate() {
                            // SAFETY: `b < NB` and `ci + u < cin`: the 16 weights end at
                            // `b·block_len + (ky·k + kxx)·cin·16 + (ci + u + 1)·16 ≤ (b + 1)·block_len
                            // ≤ NB·block_len` past `row.w` (`Row` invariant); `loadu` needs no
                            // alignment; AVX-512F is enabled (caller's contract).
                            let w = unsafe { _mm512_loadu_ps(wt.add(b * block_len + (ci + u) * LANES)) };
                            *ab = _mm512_fmadd_ps(xv, w, *ab);
                        }
                    }
                    ci += U;
                }
                for c in ci..cin {
                    // SAFETY: `c < cin` by the loop bound: one of the pixel's inputs at `xb`.
                    let xv = _mm512_set1_ps(unsafe { *xb.add(c) });
                    for (b, ab) in acc[0].iter_mut().enumerate() {
                        // SAFETY: `b < NB` and `c < cin`: in block `b` of `row.w`, as above.
                        let w = unsafe { _mm512_loadu_ps(wt.add(b * block_len + c * LANES)) };
                        *ab = _mm512_fmadd_ps(xv, w, *ab);
                    }
                }
            }
        }
        for b in 0..NB {
            let sum = _mm512_add_ps(_mm512_add_ps(acc[0][b], acc[1][b]), _mm512_add_ps(acc[2][b], acc[3][b]));
            // SAFETY: `b < NB`, so `b·16 + 16 ≤ NB·16`, the biases `row.bias` covers (`Row`
            // invariant).
            let v = _mm512_add_ps(sum, unsafe { _mm512_loadu_ps(row.bias.add(b * LANES)) });
            // SAFETY: `ox0 < ow` (caller's contract) and `b < NB`: the `Row` invariant makes
            // `ox0·cout + b·16` a valid 16-float offset of `row.out` (and `row.res`), which is
            // `epilogue`'s contract; AVX-512F is enabled.
            unsafe { epilogue(row, ox0 * g.cout + b * LANES, v) };
        }
    }

    /// The end of every output vector: the residual at `off` added where there is one, ReLU if
    /// asked, one store at `off` of the output row.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `row.out.add(off)` must be valid for writes of 16 floats and,
    /// unless `row.res` is null, `row.res.add(off)` for reads of 16 (the [`Row`] invariant gives
    /// both for `off = ox·cout + b·16` with `ox < ow` and `b < nb`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn epilogue(row: &Row, off: usize, mut v: __m512) {
        if !row.res.is_null() {
            // SAFETY: `row.res` is not null, so the caller's contract makes `row.res.add(off)`
            // valid for the 16-float unaligned load (the residual row is as long as the output
            // row, asserted in `super::conv_row`).
            v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(row.res.add(off)) });
        }
        if row.relu {
            v = _mm512_max_ps(v, _mm512_setzero_ps());
        }
        // SAFETY: the caller's contract makes `row.out.add(off)` valid for this 16-float
        // unaligned store; `row.out` comes from the unique borrow `out_row` in `conv_row`.
        unsafe { _mm512_storeu_ps(row.out.add(off), v) };
    }

    /// `P` adjacent output pixels × `NB` blocks of 16 output channels, starting at pixel `ox0`;
    /// taps `row.ky` × `kx` (the caller guarantees they land inside the image for every pixel).
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `row` must meet the [`Row`] invariants for `NB` blocks;
    /// `ox0 + P ≤ ow`; for every pixel `ox` in `ox0..ox0 + P`, every tap column
    /// `ox·stride - pad + kx`, `kx` in `kx.0..kx.1`, must lie in `0..w`, with `kx.1 ≤ k`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const NB: usize, const P: usize>(g: &Geometry, row: &Row, ox0: usize, kx: (usize, usize)) {
        let (cin, k, s) = (g.cin, g.k, g.stride);
        let block_len = k * k * cin * LANES;
        let mut acc = [[_mm512_setzero_ps(); NB]; P];
        for b in 0..NB {
            // SAFETY: `b < NB`, so `b·16 + 16 ≤ NB·16`, the biases `row.bias` covers (`Row`
            // invariant); AVX-512F is enabled (caller's contract).
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
                // SAFETY: `0 ≤ iy < h` (`Row` invariant on `row.ky`) and `0 ≤ ix < w` (this is
                // pixel `ox0`'s tap column, inside the image by the caller's contract), so the
                // offset `(iy·w + ix)·cin` lies within the `h·w·cin` inputs `row.x` covers.
                let xb = unsafe { row.x.add((iy * g.w + ix) * cin) };
                // SAFETY: `ky < k` (`Row` invariant) and `kxx < kx.1 ≤ k` (caller's contract), so
                // the offset is below `k·k·cin·16 = block_len`, inside block 0 of `row.w`.
                let wt = unsafe { row.w.add((ky * k + kxx) * cin * LANES) };
                for ci in 0..cin {
                    let mut wv = [_mm512_setzero_ps(); NB];
                    for (b, w) in wv.iter_mut().enumerate() {
                        // SAFETY: `b < NB` and `ci < cin`: the 16 weights end at
                        // `b·block_len + (ky·k + kxx)·cin·16 + (ci + 1)·16 ≤ (b + 1)·block_len ≤
                        // NB·block_len` past `row.w` (`Row` invariant); `loadu` needs no alignment.
                        *w = unsafe { _mm512_loadu_ps(wt.add(b * block_len + ci * LANES)) };
                    }
                    for (p, a) in acc.iter_mut().enumerate() {
                        // SAFETY: `xb + p·stride·cin` is pixel `ox0 + p`'s tap at column
                        // `ix + p·stride`, inside `0..w` for every `p < P` (caller's contract), on
                        // the in-image row `iy`; `ci < cin` picks one of its inputs.
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
                // SAFETY: `ox0 + p < ox0 + P ≤ ow` (caller's contract) and `b < NB`: the `Row`
                // invariant makes `(ox0 + p)·cout + b·16` a valid 16-float offset of `row.out`
                // (and `row.res`), which is `epilogue`'s contract; AVX-512F is enabled.
                unsafe { epilogue(row, (ox0 + p) * g.cout + b * LANES, *v) };
            }
        }
    }

    /// See [`super::weight_grad`]: for each block of 16 input channels and each pair of output
    /// channels, `2·K²` accumulators over every output pixel of the sample.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `K == g.k`; `g.cin` a multiple of 16 and `g.cout` even; and,
    /// with none of these products overflowing `usize`: `g.wp ≥ (ow - 1)·stride + K`,
    /// `xp.len() ≥ ((oh - 1)·stride + K)·wp·cin`, `dy.len() ≥ oh·ow·cout` and
    /// `dwt.len() ≥ K²·cout·cin` (the first two only matter when `oh, ow ≥ 1`).
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
                        // SAFETY: `oy < oh`, `ox < ow` and `co < cout`, so the offset is below
                        // `oh·ow·cout ≤ dy.len()` (caller's contract).
                        let d = unsafe { dy.add((oy * g.ow + ox) * cout + co) };
                        // SAFETY: `co` is even and `cout` even, so `co + 1 < cout`: both
                        // `d` and `d + 1` are gradients of this pixel, inside `dy`.
                        let (d0, d1) = unsafe { (_mm512_set1_ps(*d), _mm512_set1_ps(*d.add(1))) };
                        // SAFETY: row `oy·s ≤ (oh - 1)·s` and column `ox·s ≤ (ow - 1)·s < wp` of
                        // the padded input, and `cb < cin`, so the offset is inside `xp`.
                        let base = unsafe { xp.add(((oy * s) * wp + ox * s) * cin + cb) };
                        for ky in 0..K {
                            for kx in 0..K {
                                // SAFETY: row `oy·s + ky ≤ (oh - 1)·s + K - 1` and column
                                // `ox·s + kx ≤ (ow - 1)·s + K - 1 < wp` (caller's contract), and
                                // lanes `cb..cb + 16 ⊆ 0..cin` (`cin % 16 == 0`), so the 16 floats
                                // end at most at `((oh - 1)·s + K)·wp·cin ≤ xp.len()`; `loadu`
                                // needs no alignment; AVX-512F is enabled (caller's contract).
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
                            // SAFETY: `t < K²`, `co + j ≤ co + 1 < cout` and `cb + 16 ≤ cin`, so
                            // `o..o + 16` ends at most at `K²·cout·cin ≤ dwt.len()` (caller's
                            // contract).
                            let o = unsafe { out.add((t * cout + co + j) * cin + cb) };
                            // SAFETY: `o..o + 16` lies in `dwt` (above), a unique borrow that
                            // overlaps neither `xp` nor `dy`; unaligned load and store need no
                            // alignment; AVX-512F is enabled (caller's contract).
                            unsafe { _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), a)) };
                        }
                    }
                }
            }
        }
    }
}

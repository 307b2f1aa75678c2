//! Gradients of a convolution ([`crate::Conv`]) with respect to its weights and its input.
//!
//! Square kernels with equal padding on every side only ([`Conv::square`]): the convolutions
//! the native training pass runs.

use rayon::prelude::*;

use crate::matmul::{MatRef, matmul};
use crate::simd::wide;
use crate::{Act, BufferPool, Conv, ConvKernel, Parallelism, direct};

/// The gradients of a convolution's weights (`[(ky·k + kx)·cin + ci][cout]`) from its input `x`
/// and output gradient `dc`: the direct AVX-512 kernel where it runs
/// ([`direct::weight_grad_runs`]), else [`weight_grad_gemm`].
///
/// # Panics
/// If `conv` is not square ([`Conv::square`]).
pub fn weight_grad(conv: &Conv, x: &Act, dc: &Act) -> Vec<f32> {
    let (k, _) = square(conv);
    if direct::weight_grad_runs(conv.cin, conv.cout, k) {
        weight_grad_direct(conv, x, dc)
    } else {
        weight_grad_gemm(conv, x, dc)
    }
}

/// [`weight_grad`] on any CPU: one GEMM per sample over its im2col matrix, a partial sum per
/// thread.
///
/// # Panics
/// If `conv` is not square ([`Conv::square`]).
pub fn weight_grad_gemm(conv: &Conv, x: &Act, dc: &Act) -> Vec<f32> {
    let (k, pad) = square(conv);
    let (oh, ow) = (dc.h, dc.w);
    let p = oh * ow;
    let kk = k * k * conv.cin;
    let cout = conv.cout;
    let direct = k == 1 && conv.stride == 1 && pad == 0;
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
                    Parallelism::None,
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

/// [`weight_grad`] on the direct AVX-512 kernel: each task zero-pads its samples one at a
/// time and accumulates `[tap][cout][cin]`, transposed at the end.
fn weight_grad_direct(conv: &Conv, x: &Act, dc: &Act) -> Vec<f32> {
    let (k, pad) = square(conv);
    let (cin, cout) = (conv.cin, conv.cout);
    let (hp, wp) = (x.h + 2 * pad, x.w + 2 * pad);
    let g = direct::GradGeometry {
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
                direct::weight_grad(&g, src, &dc.data[s * p * cout..(s + 1) * p * cout], &mut dwt);
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
///
/// # Panics
/// If `conv` is not square ([`Conv::square`]).
pub fn input_grad(conv: &Conv, dc: &Act, h: usize, w: usize, residual: Option<&Act>, pool: &BufferPool) -> Act {
    let (k, pad) = square(conv);
    let (cin, cout) = (conv.cin, conv.cout);
    if conv.stride == 1 && 2 * pad == k - 1 {
        let taps = k * k;
        let mut wf = vec![0.0f32; conv.w.len()];
        for t in 0..taps {
            for co in 0..cout {
                for ci in 0..cin {
                    wf[(t * cout + co) * cin + ci] = conv.w[((taps - 1 - t) * cin + ci) * cout + co];
                }
            }
        }
        let flipped = Conv::from_host(cout, cin, k, 1, pad, wf, vec![0.0; cin], false, ConvKernel::Auto);
        return flipped.forward_into(dc, residual, false, pool.take(dc.n * h * w * cin));
    }
    let (oh, ow) = (dc.h, dc.w);
    let p = oh * ow;
    let kk = k * k * cin;
    let (s, pad) = (conv.stride as isize, pad as isize);
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
                        Parallelism::None,
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

/// `conv`'s square kernel size and padding.
fn square(conv: &Conv) -> (usize, usize) {
    conv.square()
        .expect("the convolution gradients run square kernels with equal padding")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, values};

    /// The definition: `dx[n][iy][ix][ci] = Σ dy[n][oy][ox][co]·w[tap][ci][co]` over the taps
    /// that map (oy, ox) onto (iy, ix).
    fn input_grad_reference(conv: &Conv, dc: &Act, h: usize, w: usize) -> Vec<f32> {
        let (k, cin, cout, s, p) = (conv.kh, conv.cin, conv.cout, conv.stride, conv.ph as isize);
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
        let pool = BufferPool::default();
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
            let got = input_grad(&conv, &dc, h, h, None, &pool);
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
            // Weight gradient on both routes (the direct kernel where it runs) against the
            // definition.
            let mut want_w = vec![0.0f32; k * k * cin * cout];
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
            for (route, got) in [
                ("auto", weight_grad(&conv, &x, &dc)),
                ("gemm", weight_grad_gemm(&conv, &x, &dc)),
            ] {
                let worst = max_abs_diff(&got, &want_w);
                assert!(
                    worst < 1e-3,
                    "weight grad ({route}) n{n} h{h} {cin}->{cout} k{k} s{stride}: {worst}"
                );
            }
        }
    }
}

//! Gradients of a convolution ([`crate::Conv`]) with respect to its weights and its input.
//!
//! Any kernel shape (Inception's 1×7 and 7×1 among them); the direct AVX-512 weight-gradient
//! kernel runs square ones.

use rayon::prelude::*;

use crate::matmul::{MatRef, matmul};
use crate::simd::wide;
use crate::{Act, BufferPool, Conv, ConvKernel, Parallelism, direct};

/// The gradients of a convolution's weights (`[(ky·k + kx)·cin + ci][cout]`) from its input `x`
/// and output gradient `dc`: the direct AVX-512 kernel where it runs (square kernels,
/// [`direct::weight_grad_runs`]), else [`weight_grad_gemm`].
pub fn weight_grad(conv: &Conv, x: &Act, dc: &Act) -> Vec<f32> {
    if conv
        .square()
        .is_some_and(|(k, _)| direct::weight_grad_runs(conv.cin, conv.cout, k))
    {
        weight_grad_direct(conv, x, dc)
    } else {
        weight_grad_gemm(conv, x, dc)
    }
}

/// [`weight_grad`] on any CPU: one GEMM per sample over its im2col matrix, a partial sum per
/// thread.
pub fn weight_grad_gemm(conv: &Conv, x: &Act, dc: &Act) -> Vec<f32> {
    let (oh, ow) = (dc.h, dc.w);
    let p = oh * ow;
    let kk = conv.kh * conv.kw * conv.cin;
    let cout = conv.cout;
    let direct = conv.kh == 1 && conv.kw == 1 && conv.stride == 1 && conv.ph == 0 && conv.pw == 0;
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
pub fn input_grad(conv: &Conv, dc: &Act, h: usize, w: usize, residual: Option<&Act>, pool: &BufferPool) -> Act {
    let (kh, kw, ph, pw) = (conv.kh, conv.kw, conv.ph, conv.pw);
    let (cin, cout) = (conv.cin, conv.cout);
    if conv.stride == 1 && 2 * ph + 1 == kh && 2 * pw + 1 == kw {
        // Flipping both axes maps tap `t` to `taps − 1 − t`.
        let taps = kh * kw;
        let mut wf = vec![0.0f32; conv.w.len()];
        for t in 0..taps {
            for co in 0..cout {
                for ci in 0..cin {
                    wf[(t * cout + co) * cin + ci] = conv.w[((taps - 1 - t) * cin + ci) * cout + co];
                }
            }
        }
        let flipped = Conv::from_host_rect(
            cout,
            cin,
            [kh, kw],
            1,
            [ph, pw],
            wf,
            vec![0.0; cin],
            false,
            ConvKernel::Auto,
        );
        return flipped.forward_into(dc, residual, false, pool.take(dc.n * h * w * cin));
    }
    let (oh, ow) = (dc.h, dc.w);
    let p = oh * ow;
    let kk = kh * kw * cin;
    let (s, ph, pw) = (conv.stride as isize, ph as isize, pw as isize);
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
                        for ky in 0..kh {
                            let iy = oy * s + ky as isize - ph;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = ox * s + kx as isize - pw;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let src = &row[(ky * kw + kx) * cin..(ky * kw + kx + 1) * cin];
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
            // Inception's 5×5 "same" convolution, 48 → 64 channels (its input gradient runs the
            // forward kernel 64 → 48).
            (2, 9, 48, 64, 5, 1),
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

    #[test]
    fn rectangular_kernels_match_the_definition() {
        // Inception's 1×7 / 7×1 "same" convolutions (the flipped-kernel route), 1×3 and 3×1,
        // a strided one and an unpadded one (the col2im route).
        let pool = BufferPool::default();
        for (i, &(kh, kw, ph, pw, stride)) in [
            (1, 7, 0, 3, 1),
            (7, 1, 3, 0, 1),
            (1, 3, 0, 1, 1),
            (3, 1, 1, 0, 2),
            (3, 5, 0, 0, 1),
        ]
        .iter()
        .enumerate()
        {
            // Channel counts the direct kernels take (multiples of 16) on the "same" cases.
            let (cin, cout) = if i < 2 { (32, 48) } else { (8, 12) };
            let (n, h, wd) = (2, 9, 8);
            let seed = 10 * i as u32;
            let conv = Conv::from_host_rect(
                cin,
                cout,
                [kh, kw],
                stride,
                [ph, pw],
                values(kh * kw * cin * cout, seed + 1),
                vec![0.0; cout],
                false,
                ConvKernel::Auto,
            );
            let (oh, ow) = conv.out_hw(h, wd);
            let x = Act {
                n,
                h,
                w: wd,
                c: cin,
                data: values(n * h * wd * cin, seed + 2),
            };
            let dc = Act {
                n,
                h: oh,
                w: ow,
                c: cout,
                data: values(n * oh * ow * cout, seed + 3),
            };
            let (mut want_dx, mut want_dw) = (vec![0.0f32; x.data.len()], vec![0.0f32; conv.w.len()]);
            for nn in 0..n {
                for (oy, ox) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
                    for (ky, kx) in (0..kh).flat_map(|y| (0..kw).map(move |x| (y, x))) {
                        let iy = (oy * stride + ky) as isize - ph as isize;
                        let ix = (ox * stride + kx) as isize - pw as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                            continue;
                        }
                        let at = ((nn * h + iy as usize) * wd + ix as usize) * cin;
                        for ci in 0..cin {
                            for co in 0..cout {
                                let t = ((ky * kw + kx) * cin + ci) * cout + co;
                                let g = dc.data[((nn * oh + oy) * ow + ox) * cout + co];
                                want_dx[at + ci] += g * conv.w[t];
                                want_dw[t] += g * x.data[at + ci];
                            }
                        }
                    }
                }
            }
            let got = input_grad(&conv, &dc, h, wd, None, &pool);
            assert!(max_abs_diff(&got.data, &want_dx) < 1e-3, "case {i}: input gradient");
            // With a residual gradient added (split branches sum their input gradients so).
            let residual = Act {
                data: values(x.data.len(), seed + 4),
                ..x
            };
            let got = input_grad(&conv, &dc, h, wd, Some(&residual), &pool);
            let want: Vec<f32> = want_dx.iter().zip(&residual.data).map(|(a, b)| a + b).collect();
            assert!(
                max_abs_diff(&got.data, &want) < 1e-3,
                "case {i}: input gradient plus a residual"
            );
            assert!(
                max_abs_diff(&weight_grad(&conv, &x, &dc), &want_dw) < 1e-3,
                "case {i}: weight gradient"
            );
        }
    }
}

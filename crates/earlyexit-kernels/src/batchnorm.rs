//! BatchNorm in training mode on channels-last activations: batch moments, the fused
//! normalise + residual + ReLU pass, the backward pass, and the ReLU mask.
//!
//! Every pass works on chunks of [`CHUNK_PIXELS`] pixels in parallel, each compiled wide
//! ([`crate::simd::wide`]); sums are merged in f64.

use rayon::prelude::*;

use crate::simd::wide;
use crate::{Act, BufferPool};

/// Pixels per task of the elementwise and reduction passes: a chunk of 64 channels is 64 KiB.
pub const CHUNK_PIXELS: usize = 256;

/// Batch mean and biased variance per channel (Chan's parallel merge of per-chunk moments, so
/// large means do not cancel the variance away).
pub fn moments(a: &Act) -> (Vec<f32>, Vec<f32>) {
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
pub fn normalize(
    c: &Act,
    mean: &[f32],
    scale: &[f32],
    beta: &[f32],
    residual: Option<&Act>,
    relu: bool,
    pool: &BufferPool,
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

/// `dy·[y > 0]` in place.
pub fn relu_mask(dy: &mut Act, y: &Act) {
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
pub fn backward(
    g: &Act,
    mask: Option<&Act>,
    c: &Act,
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    pool: &BufferPool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let (mean, var) = moments(&a);
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

//! Deterministic inputs and plain-loop definitions for testing the kernels (here and in the
//! crates that use them).

use crate::{Act, Conv};

/// Deterministic values in [-1, 1) (an xorshift stream): the same `n` values for the same seed
/// on every machine.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// An activation of deterministic values.
pub fn act(n: usize, h: usize, w: usize, c: usize, seed: u32) -> Act {
    Act {
        n,
        h,
        w,
        c,
        data: values(n * h * w * c, seed),
    }
}

/// The definition of [`Conv::forward`] as a plain loop: `conv(x) + b (+ residual)`, then ReLU if
/// `relu`.
pub fn conv_forward(conv: &Conv, x: &Act, residual: Option<&Act>, relu: bool) -> Act {
    let (oh, ow) = conv.out_hw(x.h, x.w);
    let (kh, kw, cin, cout, s) = (conv.kh, conv.kw, conv.cin, conv.cout, conv.stride);
    let (ph, pw) = (conv.ph as isize, conv.pw as isize);
    let mut out = vec![0.0f32; x.n * oh * ow * cout];
    for n in 0..x.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..cout {
                    let mut a = conv.b[o];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * s + ky) as isize - ph;
                            let ix = (ox * s + kx) as isize - pw;
                            if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                continue;
                            }
                            for ci in 0..cin {
                                a += x.data[((n * x.h + iy as usize) * x.w + ix as usize) * cin + ci]
                                    * conv.w[((ky * kw + kx) * cin + ci) * cout + o];
                            }
                        }
                    }
                    let i = ((n * oh + oy) * ow + ox) * cout + o;
                    if let Some(r) = residual {
                        a += r.data[i];
                    }
                    out[i] = if relu { a.max(0.0) } else { a };
                }
            }
        }
    }
    Act {
        n: x.n,
        h: oh,
        w: ow,
        c: cout,
        data: out,
    }
}

/// The largest absolute difference between two equally long slices.
///
/// # Panics
/// If their lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "max_abs_diff: lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
}

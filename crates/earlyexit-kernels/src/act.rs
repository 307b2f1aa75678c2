//! Channels-last (NHWC) activations of a batch on the host.

use crate::par::{SERIAL_VALUES, for_each_chunk};

/// Channels-last activations of a batch: `data[((s·h + y)·w + x)·c + ch]`.
///
/// Why channels-last: a pixel's channels are contiguous, so a convolution tap is one contiguous
/// read and 16 output channels fill one AVX-512 register.
#[derive(Clone, Debug, PartialEq)]
pub struct Act {
    /// Samples.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `n·h·w·c` values, channels fastest.
    pub data: Vec<f32>,
}

impl Act {
    /// Values per sample (`h·w·c`).
    pub fn sample_len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// From channels-first values `[n][c][h][w]` (Burn's and PyTorch's layout).
    ///
    /// # Panics
    /// If `nchw` does not hold `n·c·h·w` values.
    pub fn from_nchw(nchw: &[f32], n: usize, c: usize, h: usize, w: usize) -> Self {
        assert_eq!(
            nchw.len(),
            n * c * h * w,
            "Act::from_nchw: {n}×{c}×{h}×{w} values expected"
        );
        let hw = h * w;
        let mut data = vec![0.0f32; nchw.len()];
        if hw * c > 0 {
            for_each_chunk(&mut data, hw * c, nchw.len(), SERIAL_VALUES, |(s, dst)| {
                let src = &nchw[s * c * hw..(s + 1) * c * hw];
                for ch in 0..c {
                    for p in 0..hw {
                        dst[p * c + ch] = src[ch * hw + p];
                    }
                }
            });
        }
        Self { n, h, w, c, data }
    }

    /// The "option A" shortcut of the CIFAR ResNets: every `stride`-th row and column
    /// (`⌈h/stride⌉ × ⌈w/stride⌉`), its channels placed at `front..front + c` of `cout` zeroed
    /// ones.
    ///
    /// # Panics
    /// If `stride` is 0 or `front + c > cout`.
    pub fn subsample_pad_channels(&self, stride: usize, front: usize, cout: usize) -> Self {
        assert!(
            stride > 0 && front + self.c <= cout,
            "subsample_pad_channels: bad geometry"
        );
        let (oh, ow) = (self.h.div_ceil(stride), self.w.div_ceil(stride));
        let mut data = vec![0.0f32; self.n * oh * ow * cout];
        let c = self.c;
        if oh * ow * cout > 0 {
            let len = data.len();
            for_each_chunk(&mut data, oh * ow * cout, len, SERIAL_VALUES, |(s, dst)| {
                let src = &self.data[s * self.sample_len()..(s + 1) * self.sample_len()];
                for y in 0..oh {
                    for x in 0..ow {
                        let from = ((y * stride) * self.w + x * stride) * c;
                        let to = (y * ow + x) * cout + front;
                        dst[to..to + c].copy_from_slice(&src[from..from + c]);
                    }
                }
            });
        }
        Self {
            n: self.n,
            h: oh,
            w: ow,
            c: cout,
            data,
        }
    }

    /// The gradient of [`Act::subsample_pad_channels`] with respect to its input (`[n, h, w, c]`)
    /// from the gradient of its output (`self`): the channels `front..front + c` of every output
    /// pixel go back to the input pixel it was taken from; every other input pixel gets zero.
    ///
    /// # Panics
    /// If `stride` is 0, `front + c > self.c`, or `(h, w)` does not subsample to `self`'s map.
    pub fn subsample_pad_channels_backward(&self, stride: usize, front: usize, h: usize, w: usize, c: usize) -> Act {
        assert!(
            stride > 0 && front + c <= self.c && h.div_ceil(stride) == self.h && w.div_ceil(stride) == self.w,
            "subsample_pad_channels_backward: bad geometry"
        );
        let mut data = vec![0.0f32; self.n * h * w * c];
        let out_len = self.sample_len();
        if h * w * c > 0 {
            let len = data.len();
            for_each_chunk(&mut data, h * w * c, len, SERIAL_VALUES, |(s, dst)| {
                let src = &self.data[s * out_len..(s + 1) * out_len];
                for y in 0..self.h {
                    for x in 0..self.w {
                        let from = (y * self.w + x) * self.c + front;
                        let to = ((y * stride) * w + x * stride) * c;
                        dst[to..to + c].copy_from_slice(&src[from..from + c]);
                    }
                }
            });
        }
        Act {
            n: self.n,
            h,
            w,
            c,
            data,
        }
    }

    /// The values channels-first, `[n][c][h][w]`.
    pub fn to_nchw(&self) -> Vec<f32> {
        let (hw, c) = (self.h * self.w, self.c);
        let mut v = vec![0.0f32; self.data.len()];
        if hw * c > 0 {
            let len = v.len();
            for_each_chunk(&mut v, hw * c, len, SERIAL_VALUES, |(s, dst)| {
                let src = &self.data[s * c * hw..(s + 1) * c * hw];
                for p in 0..hw {
                    for ch in 0..c {
                        dst[ch * hw + p] = src[p * c + ch];
                    }
                }
            });
        }
        v
    }

    /// Keeps the samples at `rows` (in that order): the compaction step of per-sample exits.
    pub fn select(&self, rows: &[usize]) -> Act {
        let len = self.sample_len();
        let mut data = Vec::with_capacity(rows.len() * len);
        for &r in rows {
            data.extend_from_slice(&self.data[r * len..(r + 1) * len]);
        }
        Act {
            n: rows.len(),
            data,
            ..*self
        }
    }

    /// Global average pool: `[n][c]`, row-major.
    pub fn global_avg_pool(&self) -> Vec<f32> {
        self.pool_all(false)
    }

    /// Global average pool of `relu(self)` (`dense` heads' pooled history), without a copy.
    pub fn relu_global_avg_pool(&self) -> Vec<f32> {
        self.pool_all(true)
    }

    fn pool_all(&self, relu: bool) -> Vec<f32> {
        let (hw, c) = (self.h * self.w, self.c);
        let mut out = vec![0.0f32; self.n * c];
        if c == 0 {
            return out;
        }
        for (s, o) in out.chunks_mut(c).enumerate() {
            for p in self.data[s * hw * c..(s + 1) * hw * c].chunks(c) {
                for (a, v) in o.iter_mut().zip(p) {
                    *a += if relu { v.max(0.0) } else { *v };
                }
            }
            let inv = 1.0 / hw as f32;
            o.iter_mut().for_each(|a| *a *= inv);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip_and_pool_averages() {
        let nchw: Vec<f32> = (0..2 * 3 * 2 * 2).map(|v| v as f32).collect();
        let a = Act::from_nchw(&nchw, 2, 3, 2, 2);
        // Sample 0, pixel (0, 1), channel 2 is NCHW index 2·4 + 1.
        assert_eq!(a.data[3 + 2], 9.0);
        assert_eq!(a.to_nchw(), nchw);
        let pooled = a.global_avg_pool();
        assert_eq!(&pooled[..3], &[1.5, 5.5, 9.5]);
        let mut shifted = a.clone();
        shifted.data.iter_mut().for_each(|v| *v -= 2.0);
        // relu(x - 2) of channel 0 (0, 1, 2, 3) is (0, 0, 0, 1).
        assert_eq!(shifted.relu_global_avg_pool()[0], 0.25);
        // The option-A shortcut's backward pass is its adjoint: <P x, g> = <x, Pᵀ g>.
        let x = Act::from_nchw(
            &(0..2 * 3 * 5 * 5).map(|v| (v % 7) as f32 - 3.0).collect::<Vec<_>>(),
            2,
            3,
            5,
            5,
        );
        let p = x.subsample_pad_channels(2, 2, 8);
        let g = Act {
            data: (0..p.data.len()).map(|v| (v % 5) as f32 - 2.0).collect(),
            ..p.clone()
        };
        let back = g.subsample_pad_channels_backward(2, 2, 5, 5, 3);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(u, v)| u * v).sum::<f32>();
        assert_eq!(dot(&p.data, &g.data), dot(&x.data, &back.data));
        assert_eq!((back.h, back.w, back.c), (5, 5, 3));
        let b = a.select(&[1]);
        assert_eq!(b.n, 1);
        assert_eq!(b.data, a.data[12..]);
    }
}

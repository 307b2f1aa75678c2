//! A fully connected layer on the host: `y = z·W + b`.

use crate::Parallelism;
use crate::matmul::{MatRef, matmul};
use crate::par::for_each_chunk;

/// Multiply-adds below which the dot products of a small batch stay on the calling thread; above
/// it they are shared with the pool.
const SERIAL_MACS_DOT: usize = 1 << 16;

/// Batches below this run a narrow layer with its transposed copy ([`Dense::for_inference`]).
const SMALL_BATCH: usize = 8;

/// Layers with fewer outputs than this are narrow: the GEMM's micro-kernel tiles over the
/// outputs are mostly empty, and it packs the whole weight matrix on every call.
const NARROW: usize = 16;

/// `y = z·W + b` with the weight laid out `[d_in][d_out]` (Burn's `Linear` layout).
#[derive(Clone, Debug)]
pub struct Dense {
    /// Input features.
    pub din: usize,
    /// Output features.
    pub dout: usize,
    /// Weights, `[din][dout]`.
    pub w: Vec<f32>,
    /// Bias, `[dout]`.
    pub b: Vec<f32>,
    /// `w` transposed (`[dout][din]`) for small batches of a narrow layer; see
    /// [`Dense::for_inference`].
    wt: Option<Vec<f32>>,
}

impl Dense {
    /// A layer from its weights (`[din][dout]`) and bias.
    ///
    /// # Panics
    /// If the lengths do not match `din` and `dout`.
    pub fn from_host(din: usize, dout: usize, w: Vec<f32>, b: Vec<f32>) -> Self {
        assert_eq!(w.len(), din * dout, "Dense::from_host: weights of a {din}→{dout} layer");
        assert_eq!(b.len(), dout, "Dense::from_host: one bias per output");
        Self {
            din,
            dout,
            w,
            b,
            wt: None,
        }
    }

    /// The same layer with a transposed copy of its weights when it is narrow (fewer than 16
    /// outputs: exit heads, classifiers), which small batches then run as one dot product per
    /// output. Why: at batch 1 the GEMM packs the whole weight matrix on every call; a plain
    /// head on ResNet-20's 16×28×28 features took 50 µs for 0.13 M multiply-adds that way, as
    /// long as a stage. For inference only: training updates [`Dense::w`] in place, which the
    /// copy would not follow.
    pub fn for_inference(mut self) -> Self {
        self.wt = (self.dout < NARROW).then(|| {
            let mut wt = vec![0.0f32; self.w.len()];
            for (i, row) in self.w.chunks_exact(self.dout.max(1)).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    wt[j * self.din + i] = v;
                }
            }
            wt
        });
        self
    }

    /// The same layer fed with channels-last flattened features instead of the channels-first
    /// flattening (`[c][h·w]`) it was trained on: its input rows reordered to `[h·w][c]`.
    ///
    /// # Panics
    /// If `c·hw` is not the layer's input size.
    pub fn with_nhwc_input(mut self, c: usize, hw: usize) -> Self {
        assert_eq!(self.din, c * hw, "Dense::with_nhwc_input: {c}×{hw} inputs expected");
        let mut w = vec![0.0f32; self.w.len()];
        for ch in 0..c {
            for p in 0..hw {
                let (src, dst) = ((ch * hw + p) * self.dout, (p * c + ch) * self.dout);
                w[dst..dst + self.dout].copy_from_slice(&self.w[src..src + self.dout]);
            }
        }
        self.w = w;
        if self.wt.is_some() {
            self = self.for_inference();
        }
        self
    }

    /// The outputs for `z`, `[n][din]` row-major.
    ///
    /// # Shapes
    /// `z`: `[n·din]` → `[n·dout]`.
    pub fn forward(&self, z: &[f32]) -> Vec<f32> {
        let n = z.len() / self.din.max(1);
        if let Some(wt) = self.wt.as_deref().filter(|_| n < SMALL_BATCH && self.din > 0) {
            let mut out = vec![0.0f32; n * self.dout];
            // One output (of one sample) per task: `wt`'s rows are independent dot products.
            let macs = n * self.din * self.dout;
            for_each_chunk(&mut out, 1, macs, SERIAL_MACS_DOT, |(i, y)| {
                let (s, j) = (i / self.dout, i % self.dout);
                let zs = &z[s * self.din..(s + 1) * self.din];
                let row = &wt[j * self.din..(j + 1) * self.din];
                y[0] = self.b[j]
                    + crate::simd::wide(
                        #[inline(always)]
                        || dot(zs, row),
                    );
            });
            return out;
        }
        let mut out = Vec::with_capacity(n * self.dout);
        for _ in 0..n {
            out.extend_from_slice(&self.b);
        }
        // `out` starts as the bias: the product accumulates onto it.
        matmul(
            &mut out,
            n,
            self.dout,
            self.din,
            true,
            MatRef::row_major(z, self.din),
            MatRef::row_major(&self.w, self.dout),
            Parallelism::None,
        );
        out
    }
}

/// `Σ a[i]·b[i]`, in 32 lane-wise partial sums (so that it vectorises and keeps several FMA
/// chains in flight) added at the end.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const W: usize = 32;
    let mut acc = [0.0f32; W];
    let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..W {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_reordered_input() {
        // 2 channels × 2 positions → 1 output; weight of NCHW input i is i + 1.
        let d = Dense::from_host(4, 1, vec![1.0, 2.0, 3.0, 4.0], vec![0.5]);
        // NCHW features [c0p0, c0p1, c1p0, c1p1] = [1, 0, 0, 0]... and two samples.
        assert_eq!(d.forward(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), vec![1.5, 4.5]);
        // The same features flattened NHWC: [p0c0, p0c1, p1c0, p1c1].
        let nhwc = d.with_nhwc_input(2, 2);
        assert_eq!(nhwc.forward(&[0.0, 1.0, 0.0, 0.0]), vec![3.5]); // c1p0 → weight 3
        assert_eq!(nhwc.forward(&[0.0, 0.0, 1.0, 0.0]), vec![2.5]); // c0p1 → weight 2
    }

    /// The dot-product route of small batches equals the GEMM, before and after reordering the
    /// inputs, below and above the batch where the GEMM takes over.
    #[test]
    fn small_batches_of_narrow_layers_match_the_gemm() {
        let (din, dout) = (75, 10);
        let w: Vec<f32> = (0..din * dout).map(|i| ((i * 37) % 23) as f32 * 0.1 - 1.1).collect();
        let b: Vec<f32> = (0..dout).map(|j| j as f32 * 0.3).collect();
        let gemm = Dense::from_host(din, dout, w.clone(), b.clone());
        let fast = Dense::from_host(din, dout, w, b).for_inference();
        assert!(fast.wt.is_some());
        for n in [1, 3, SMALL_BATCH + 1] {
            let z: Vec<f32> = (0..n * din).map(|i| ((i * 11) % 17) as f32 * 0.05 - 0.4).collect();
            let (want, got) = (gemm.forward(&z), fast.forward(&z));
            assert_eq!(want.len(), got.len());
            for (u, v) in want.iter().zip(&got) {
                assert!((u - v).abs() < 1e-4, "batch {n}: {u} vs {v}");
            }
        }
        let (gemm, fast) = (gemm.with_nhwc_input(3, 25), fast.with_nhwc_input(3, 25));
        let z: Vec<f32> = (0..din).map(|i| (i % 5) as f32).collect();
        for (u, v) in gemm.forward(&z).iter().zip(&fast.forward(&z)) {
            assert!((u - v).abs() < 1e-3, "reordered: {u} vs {v}");
        }
        // Wide layers keep only the GEMM's layout.
        assert!(
            Dense::from_host(2, NARROW, vec![0.0; 2 * NARROW], vec![0.0; NARROW])
                .for_inference()
                .wt
                .is_none()
        );
    }
}

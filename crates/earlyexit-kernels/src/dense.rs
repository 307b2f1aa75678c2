//! A fully connected layer on the host: `y = z·W + b`.

use crate::Parallelism;
use crate::matmul::{MatRef, matmul};

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
}

impl Dense {
    /// A layer from its weights (`[din][dout]`) and bias.
    ///
    /// # Panics
    /// If the lengths do not match `din` and `dout`.
    pub fn from_host(din: usize, dout: usize, w: Vec<f32>, b: Vec<f32>) -> Self {
        assert_eq!(w.len(), din * dout, "Dense::from_host: weights of a {din}→{dout} layer");
        assert_eq!(b.len(), dout, "Dense::from_host: one bias per output");
        Self { din, dout, w, b }
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
        self
    }

    /// The outputs for `z`, `[n][din]` row-major.
    ///
    /// # Shapes
    /// `z`: `[n·din]` → `[n·dout]`.
    pub fn forward(&self, z: &[f32]) -> Vec<f32> {
        let n = z.len() / self.din.max(1);
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
}

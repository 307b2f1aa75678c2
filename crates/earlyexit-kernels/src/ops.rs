//! Channels-last passes that are not convolutions: activations, a BatchNorm that cannot be
//! folded (pre-activation blocks), pooling, channel concatenation.

use rayon::prelude::*;

use crate::par::{SERIAL_VALUES, for_each_chunk};

use crate::Act;

/// The activation a kernel applies before it stores its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Epilogue {
    /// None (a linear layer).
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNetV2).
    Relu6,
}

impl Epilogue {
    /// Applies the activation to `v` in place.
    pub fn apply(self, v: &mut [f32]) {
        match self {
            Epilogue::None => {}
            Epilogue::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
            Epilogue::Relu6 => v.iter_mut().for_each(|x| *x = x.clamp(0.0, 6.0)),
        }
    }
}

/// Output positions of a window of `k` taps with `stride` over `len` inputs padded by `pad` on
/// both sides (floor mode, as PyTorch's default): the one formula of every convolution and pool.
pub(crate) fn out_len(len: usize, k: usize, stride: usize, pad: usize) -> usize {
    (len + 2 * pad - k) / stride + 1
}

/// A pooling window: square, with stride and zero padding (taps outside the image are skipped
/// by max pooling and, without `count_include_pad`, by average pooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding (every side).
    pub pad: usize,
}

impl Window {
    /// Output height and width for an `h × w` input (floor mode, as PyTorch's default).
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            out_len(h, self.k, self.stride, self.pad),
            out_len(w, self.k, self.stride, self.pad),
        )
    }
}

/// How a pooling window combines its taps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduce {
    Max,
    /// The sum divided by `k²` (`count_include_pad`) or by the taps inside the image.
    Mean {
        count_include_pad: bool,
    },
}

impl Act {
    /// `y = act(x·scale + shift)` per channel, in place: an inference-mode BatchNorm that no
    /// convolution before it can absorb.
    ///
    /// # Panics
    /// If `scale` or `shift` does not have one value per channel.
    pub fn affine(&mut self, scale: &[f32], shift: &[f32], act: Epilogue) {
        let (scale, shift) = self.affine_rows(scale, shift);
        let len = self.data.len();
        for_each_chunk(&mut self.data, scale.len(), len, SERIAL_VALUES, |(_, chunk)| {
            crate::simd::wide(
                #[inline(always)]
                || {
                    for ((v, s), b) in chunk.iter_mut().zip(&scale).zip(&shift) {
                        *v = v.mul_add(*s, *b);
                    }
                    act.apply(chunk);
                },
            );
        });
    }

    /// [`Act::affine`] into a new activation, `self` unchanged: one pass instead of a copy and a
    /// pass (a pre-activation block keeps its input for the shortcut).
    ///
    /// # Panics
    /// If `scale` or `shift` does not have one value per channel.
    pub fn affine_to(&self, scale: &[f32], shift: &[f32], act: Epilogue) -> Act {
        let (scale, shift) = self.affine_rows(scale, shift);
        let mut data = vec![0.0f32; self.data.len()];
        let len = data.len();
        for_each_chunk(&mut data, scale.len(), len, SERIAL_VALUES, |(i, chunk)| {
            let x = &self.data[i * scale.len()..][..chunk.len()];
            crate::simd::wide(
                #[inline(always)]
                || {
                    for (((y, v), s), b) in chunk.iter_mut().zip(x).zip(&scale).zip(&shift) {
                        *y = v.mul_add(*s, *b);
                    }
                    act.apply(chunk);
                },
            );
        });
        Act { data, ..*self }
    }

    /// `scale` and `shift` repeated over 64 pixels: the chunk a task works on, so that one flat
    /// loop over it vectorises whatever the channel count.
    fn affine_rows(&self, scale: &[f32], shift: &[f32]) -> (Vec<f32>, Vec<f32>) {
        assert!(
            scale.len() == self.c && shift.len() == self.c,
            "Act::affine: one scale and shift per channel"
        );
        let rep = |v: &[f32]| v.iter().copied().cycle().take(v.len() * 64).collect::<Vec<f32>>();
        (rep(scale), rep(shift))
    }

    /// Applies `act` to every value, in place.
    pub fn activate(&mut self, act: Epilogue) {
        if act != Epilogue::None {
            let len = self.data.len();
            for_each_chunk(&mut self.data, 4096, len, SERIAL_VALUES, |(_, c)| act.apply(c));
        }
    }

    /// Max pooling (PyTorch's `MaxPool2d`: padded taps never win).
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, h', w', c]`
    pub fn max_pool(&self, win: Window) -> Act {
        self.pool(win, Reduce::Max)
    }

    /// Average pooling (PyTorch's `AvgPool2d`).
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, h', w', c]`
    pub fn avg_pool(&self, win: Window, count_include_pad: bool) -> Act {
        self.pool(win, Reduce::Mean { count_include_pad })
    }

    fn pool(&self, win: Window, reduce: Reduce) -> Act {
        let (oh, ow) = win.out_hw(self.h, self.w);
        let rows: Vec<[usize; 2]> = (0..oh).map(|y| span(y, win, self.h)).collect();
        let cols: Vec<[usize; 2]> = (0..ow).map(|x| span(x, win, self.w)).collect();
        self.pool_spans(&rows, &cols, |taps| match reduce {
            Reduce::Max => None,
            Reduce::Mean {
                count_include_pad: true,
            } => Some(1.0 / (win.k * win.k) as f32),
            Reduce::Mean {
                count_include_pad: false,
            } => Some(1.0 / taps as f32),
        })
    }

    /// The backward pass of [`Act::avg_pool`]: `self` is the gradient of its output, each value
    /// spread over its window (divided as the forward pass divided); the result is the gradient
    /// of an `h × w` input.
    ///
    /// # Shapes
    /// `[n, h', w', c]` → `[n, h, w, c]`
    pub fn avg_pool_backward(&self, win: Window, count_include_pad: bool, h: usize, w: usize) -> Act {
        let rows: Vec<[usize; 2]> = (0..self.h).map(|y| span(y, win, h)).collect();
        let cols: Vec<[usize; 2]> = (0..self.w).map(|x| span(x, win, w)).collect();
        self.spread_spans(&rows, &cols, h, w, |taps| {
            1.0 / if count_include_pad { win.k * win.k } else { taps }.max(1) as f32
        })
    }

    /// [`Act::max_pool`] for training: also where each output's maximum came from (its index
    /// `(y·w + x)·c + ch` within the sample; the first maximum in scan order on ties).
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, h', w', c]` and `n·h'·w'·c` indices
    pub fn max_pool_argmax(&self, win: Window) -> (Act, Vec<u32>) {
        let (oh, ow) = win.out_hw(self.h, self.w);
        let c = self.c;
        assert!(
            self.sample_len() <= u32::MAX as usize,
            "max_pool_argmax: a sample too large for u32 indices"
        );
        let row_len = ow * c;
        let mut data = vec![0.0f32; self.n * oh * row_len];
        let mut arg = vec![0u32; data.len()];
        let sample_len = self.sample_len();
        if row_len > 0 {
            data.par_chunks_mut(row_len)
                .zip(arg.par_chunks_mut(row_len))
                .enumerate()
                .for_each(|(r, (dst, idx))| {
                    let (sample, y) = (r / oh, r % oh);
                    let img = &self.data[sample * sample_len..(sample + 1) * sample_len];
                    let [y0, y1] = span(y, win, self.h);
                    for (x, (px, ix)) in dst.chunks_mut(c).zip(idx.chunks_mut(c)).enumerate() {
                        let [x0, x1] = span(x, win, self.w);
                        px.fill(f32::NEG_INFINITY);
                        for iy in y0..y1 {
                            for jx in x0..x1 {
                                let at = (iy * self.w + jx) * c;
                                for ch in 0..c {
                                    let v = img[at + ch];
                                    if v > px[ch] {
                                        px[ch] = v;
                                        ix[ch] = (at + ch) as u32;
                                    }
                                }
                            }
                        }
                    }
                });
        }
        (
            Act {
                n: self.n,
                h: oh,
                w: ow,
                c,
                data,
            },
            arg,
        )
    }

    /// The gradient of a max pool's input (`[n, h, w, c]`) from the gradient of its output
    /// (`self`) and [`Act::max_pool_argmax`]'s indices: each output's gradient goes to where its
    /// maximum came from (summed where windows overlap).
    ///
    /// # Panics
    /// If `argmax` does not hold one index per output value, or an index lies outside a sample.
    pub fn max_pool_backward(&self, argmax: &[u32], h: usize, w: usize) -> Act {
        assert_eq!(argmax.len(), self.data.len(), "max_pool_backward: one index per output");
        let in_len = h * w * self.c;
        let out_len = self.sample_len();
        let mut data = vec![0.0f32; self.n * in_len];
        if in_len > 0 {
            let len = data.len();
            for_each_chunk(&mut data, in_len, len, SERIAL_VALUES, |(s, dst)| {
                let g = &self.data[s * out_len..(s + 1) * out_len];
                let idx = &argmax[s * out_len..(s + 1) * out_len];
                for (v, &i) in g.iter().zip(idx) {
                    dst[i as usize] += v;
                }
            });
        }
        Act {
            n: self.n,
            h,
            w,
            c: self.c,
            data,
        }
    }

    /// Adaptive average pooling to `oh × ow` (PyTorch's `AdaptiveAvgPool2d`: output cell `i`
    /// averages input rows `⌊i·h/oh⌋ .. ⌈(i+1)·h/oh⌉`).
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, oh, ow, c]`
    pub fn adaptive_avg_pool(&self, oh: usize, ow: usize) -> Act {
        self.pool_spans(&adaptive_spans(oh, self.h), &adaptive_spans(ow, self.w), |taps| {
            Some(1.0 / taps as f32)
        })
    }

    /// The backward pass of [`Act::adaptive_avg_pool`]: `self` is the gradient of its output,
    /// spread evenly over each cell's input span; the result is the gradient of an `h × w` input.
    ///
    /// # Shapes
    /// `[n, oh, ow, c]` → `[n, h, w, c]`
    pub fn adaptive_avg_pool_backward(&self, h: usize, w: usize) -> Act {
        let (rows, cols) = (adaptive_spans(self.h, h), adaptive_spans(self.w, w));
        self.spread_spans(&rows, &cols, h, w, |taps| 1.0 / taps.max(1) as f32)
    }

    /// The adjoint of [`Act::pool_spans`]'s averages: each output value (of `self`) times
    /// `scale(taps)` added onto every input position of its span, into an `h × w` input.
    fn spread_spans(
        &self,
        rows: &[[usize; 2]],
        cols: &[[usize; 2]],
        h: usize,
        w: usize,
        scale: impl Fn(usize) -> f32 + Sync,
    ) -> Act {
        let (oh, ow, c) = (self.h, self.w, self.c);
        let mut data = vec![0.0f32; self.n * h * w * c];
        let sample_len = h * w * c;
        if sample_len > 0 {
            for_each_chunk(&mut data, sample_len, self.data.len(), SERIAL_VALUES, |(s, dst)| {
                let g = &self.data[s * oh * ow * c..(s + 1) * oh * ow * c];
                for (y, &[y0, y1]) in rows.iter().enumerate() {
                    for (x, &[x0, x1]) in cols.iter().enumerate() {
                        let k = scale((y1 - y0) * (x1 - x0));
                        let src = &g[(y * ow + x) * c..(y * ow + x + 1) * c];
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let at = (iy * w + ix) * c;
                                dst[at..at + c].iter_mut().zip(src).for_each(|(d, v)| *d += v * k);
                            }
                        }
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

    /// Pools input rows `rows[y]` × columns `cols[x]` into output `(y, x)`: the maximum when
    /// `scale(taps)` is `None`, else the sum times `scale(taps)`.
    fn pool_spans(&self, rows: &[[usize; 2]], cols: &[[usize; 2]], scale: impl Fn(usize) -> Option<f32> + Sync) -> Act {
        let (oh, ow, c) = (rows.len(), cols.len(), self.c);
        let row_len = ow * c;
        let mut data = vec![0.0f32; self.n * oh * row_len];
        let sample_len = self.sample_len();
        if row_len > 0 {
            let len = self.data.len();
            for_each_chunk(&mut data, row_len, len, SERIAL_VALUES, |(r, dst)| {
                let (sample, y) = (r / oh, r % oh);
                let img = &self.data[sample * sample_len..(sample + 1) * sample_len];
                let [y0, y1] = rows[y];
                for (px, &[x0, x1]) in dst.chunks_mut(c).zip(cols) {
                    let taps = (y1 - y0) * (x1 - x0);
                    let s = scale(taps);
                    px.fill(if s.is_some() { 0.0 } else { f32::NEG_INFINITY });
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            let at = (iy * self.w + ix) * c;
                            let src = &img[at..at + c];
                            match s {
                                None => px.iter_mut().zip(src).for_each(|(o, v)| *o = o.max(*v)),
                                Some(_) => px.iter_mut().zip(src).for_each(|(o, v)| *o += v),
                            }
                        }
                    }
                    if let Some(s) = s {
                        px.iter_mut().for_each(|o| *o *= s);
                    }
                }
            });
        }
        Act {
            n: self.n,
            h: oh,
            w: ow,
            c,
            data,
        }
    }

    /// The channels of `parts` (same batch and map size) one after the other.
    ///
    /// # Panics
    /// If `parts` is empty or their batch or map sizes differ.
    pub fn concat_channels(parts: &[&Act]) -> Act {
        let first = parts.first().expect("Act::concat_channels of no parts");
        let (n, h, w) = (first.n, first.h, first.w);
        assert!(
            parts.iter().all(|p| (p.n, p.h, p.w) == (n, h, w)),
            "Act::concat_channels: batch and map sizes differ"
        );
        let c: usize = parts.iter().map(|p| p.c).sum();
        let mut data = vec![0.0f32; n * h * w * c];
        if c > 0 {
            let len = data.len();
            for_each_chunk(&mut data, c, len, SERIAL_VALUES, |(px, dst)| {
                let mut at = 0;
                for p in parts {
                    dst[at..at + p.c].copy_from_slice(&p.data[px * p.c..(px + 1) * p.c]);
                    at += p.c;
                }
            });
        }
        Act { n, h, w, c, data }
    }

    /// The inverse of [`Act::concat_channels`]: consecutive channel groups of `sizes` channels.
    ///
    /// # Panics
    /// If `sizes` do not add up to the channels.
    pub fn split_channels(&self, sizes: &[usize]) -> Vec<Act> {
        assert_eq!(sizes.iter().sum::<usize>(), self.c, "Act::split_channels: sizes");
        let mut at = 0;
        sizes
            .iter()
            .map(|&c| {
                let mut data = vec![0.0f32; self.n * self.h * self.w * c];
                if c > 0 {
                    let len = data.len();
                    for_each_chunk(&mut data, c, len, SERIAL_VALUES, |(px, dst)| {
                        let src = &self.data[px * self.c + at..px * self.c + at + c];
                        dst.copy_from_slice(src);
                    });
                }
                at += c;
                Act { data, c, ..*self }
            })
            .collect()
    }
}

/// Adaptive pooling's input span of each of `out` cells over `len` positions (PyTorch's:
/// `⌊i·len/out⌋ .. ⌈(i+1)·len/out⌉`).
fn adaptive_spans(out: usize, len: usize) -> Vec<[usize; 2]> {
    (0..out)
        .map(|i| [i * len / out, ((i + 1) * len).div_ceil(out)])
        .collect()
}

/// The input positions `[start, end)` that output position `o` of a window covers, clipped to
/// the image.
fn span(o: usize, win: Window, len: usize) -> [usize; 2] {
    let start = (o * win.stride) as isize - win.pad as isize;
    let end = (start + win.k as isize).min(len as isize);
    [start.max(0) as usize, end.max(0) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::act;

    const fn window(k: usize, stride: usize, pad: usize) -> Window {
        Window { k, stride, pad }
    }

    /// The definition of a pooling window, one value at a time.
    fn pool_reference(x: &Act, win: Window, max: bool, include_pad: bool) -> Vec<f32> {
        let (oh, ow) = win.out_hw(x.h, x.w);
        let mut out = Vec::new();
        for n in 0..x.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..x.c {
                        let (mut best, mut sum, mut count) = (f32::NEG_INFINITY, 0.0, 0);
                        for ky in 0..win.k {
                            for kx in 0..win.k {
                                let iy = (oy * win.stride + ky) as isize - win.pad as isize;
                                let ix = (ox * win.stride + kx) as isize - win.pad as isize;
                                if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                    continue;
                                }
                                let v = x.data[((n * x.h + iy as usize) * x.w + ix as usize) * x.c + ch];
                                best = best.max(v);
                                sum += v;
                                count += 1;
                            }
                        }
                        out.push(if max {
                            best
                        } else if include_pad {
                            sum / (win.k * win.k) as f32
                        } else {
                            sum / count as f32
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn pools_match_their_definition_with_padding_and_odd_sizes() {
        let x = act(2, 7, 6, 5, 1);
        for win in [window(2, 2, 0), window(3, 2, 1), window(3, 1, 1), window(3, 2, 0)] {
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-6);
            assert!(
                close(&x.max_pool(win).data, &pool_reference(&x, win, true, false)),
                "{win:?} max"
            );
            for inc in [true, false] {
                let got = x.avg_pool(win, inc);
                assert!(
                    close(&got.data, &pool_reference(&x, win, false, inc)),
                    "{win:?} avg {inc}"
                );
            }
        }
    }

    #[test]
    fn max_pool_argmax_points_at_the_maximum_and_backward_is_its_adjoint() {
        let x = act(2, 7, 6, 3, 9);
        for win in [window(2, 2, 0), window(3, 2, 1)] {
            let (y, arg) = x.max_pool_argmax(win);
            assert_eq!(y.data, x.max_pool(win).data, "{win:?}");
            let len = x.sample_len();
            for (i, (&v, &a)) in y.data.iter().zip(&arg).enumerate() {
                let sample = i / y.sample_len();
                assert_eq!(v, x.data[sample * len + a as usize]);
            }
            // Overlapping windows (3×3 stride 2) sum their gradients: <pool'(x)·d, g> = <d, back(g)>.
            let g = act(y.n, y.h, y.w, y.c, 10);
            let back = g.max_pool_backward(&arg, x.h, x.w);
            let total: f32 = g.data.iter().sum();
            let back_total: f32 = back.data.iter().sum();
            assert!((total - back_total).abs() < 1e-4, "{win:?}: {total} vs {back_total}");
        }
    }

    #[test]
    fn avg_pool_backward_is_the_transpose_and_split_undoes_concat() {
        // <pool(x), g> = <x, pool_backward(g)>: DenseNet's 2×2 transition, a padded 3×3 with and
        // without the padding counted, on odd sizes.
        for (k, stride, pad, include) in [(2, 2, 0, true), (3, 1, 1, true), (3, 2, 1, false)] {
            let win = Window { k, stride, pad };
            let x = act(2, 7, 5, 3, 8);
            let y = x.avg_pool(win, include);
            let g = act(2, y.h, y.w, 3, 9);
            let dx = g.avg_pool_backward(win, include, 7, 5);
            let lhs: f64 = y.data.iter().zip(&g.data).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.data.iter().zip(&dx.data).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{k}/{stride}/{pad}: {lhs} vs {rhs}"
            );
        }
        let (a, b) = (act(2, 3, 3, 4, 1), act(2, 3, 3, 5, 2));
        let parts = Act::concat_channels(&[&a, &b]).split_channels(&[4, 5]);
        assert_eq!((parts[0].data.clone(), parts[1].data.clone()), (a.data, b.data));
    }

    #[test]
    fn adaptive_pool_backward_is_the_transpose() {
        // <pool(x), g> = <x, pool_backward(g)> for every x and g, upsampling (2 → 7) and
        // downsampling (9 → 4) with overlapping spans.
        for (h, w, oh, ow) in [(2, 3, 7, 7), (9, 5, 4, 3)] {
            let x = act(2, h, w, 3, 5);
            let g = act(2, oh, ow, 3, 6);
            let y = x.adaptive_avg_pool(oh, ow);
            let dx = g.adaptive_avg_pool_backward(h, w);
            let lhs: f64 = y.data.iter().zip(&g.data).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.data.iter().zip(&dx.data).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{h}x{w} -> {oh}x{ow}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn adaptive_pool_spans_and_concat() {
        // 5 rows into 3 cells: [0,2), [1,4), [3,5) (PyTorch's spans).
        let x = Act {
            n: 1,
            h: 5,
            w: 1,
            c: 1,
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0],
        };
        assert_eq!(x.adaptive_avg_pool(3, 1).data, vec![1.5, 3.0, 4.5]);
        let a = act(2, 2, 2, 3, 1);
        let b = act(2, 2, 2, 1, 2);
        let c = Act::concat_channels(&[&a, &b]);
        assert_eq!(c.c, 4);
        assert_eq!(&c.data[4..7], &a.data[3..6]);
        assert_eq!(c.data[7], b.data[1]);
    }

    #[test]
    fn affine_and_epilogues() {
        let mut x = Act {
            n: 1,
            h: 1,
            w: 2,
            c: 2,
            data: vec![1.0, -1.0, 4.0, 2.0],
        };
        x.affine(&[2.0, 1.0], &[0.0, -1.0], Epilogue::Relu6);
        assert_eq!(x.data, vec![2.0, 0.0, 6.0, 1.0]);
    }
}

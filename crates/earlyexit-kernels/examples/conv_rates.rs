//! GFLOP/s of single convolutions on the shapes of the zoo's small networks, with the kernel the
//! instruction set selects (`EARLYEXIT_CPU` narrows it) beside im2col + GEMM: where a layer width
//! runs slower per multiply-add than the others, its exits buy less time than their MACs say.
//! Then the time of a plain exit head at batch 1 through the GEMM and as dot products
//! (`Dense::for_inference`).
//!
//! ```text
//! cargo run --release -p earlyexit-kernels --example conv_rates            # the table
//! cargo run --release -p earlyexit-kernels --example conv_rates 8,8,3,1,28,256
//!                                       # one layer: cin,cout,k,stride,side,batch (for perf)
//! ```

use std::time::Instant;

use earlyexit_kernels::{Act, Conv, ConvKernel, Dense, Isa};

/// A `k×k` convolution `cin → cout` with "same" padding on a `side × side` map, batch `n`.
#[derive(Clone, Copy)]
struct Layer {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    side: usize,
    n: usize,
}

/// Best-of-five GFLOP/s of `layer` with `kernel`, and the kernel that ran.
fn rate(l: Layer, kernel: ConvKernel) -> (f64, &'static str) {
    let w: Vec<f32> = (0..l.k * l.k * l.cin * l.cout)
        .map(|i| ((i * 7919) % 13) as f32 * 0.01 - 0.06)
        .collect();
    let conv = Conv::from_host(
        l.cin,
        l.cout,
        l.k,
        l.stride,
        l.k / 2,
        w,
        vec![0.1; l.cout],
        true,
        kernel,
    );
    let x = Act {
        n: l.n,
        h: l.side,
        w: l.side,
        c: l.cin,
        data: (0..l.n * l.side * l.side * l.cin)
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect(),
    };
    let (oh, ow) = conv.out_hw(l.side, l.side);
    let flops = 2.0 * (l.n * oh * ow * l.cout * l.cin * l.k * l.k) as f64;
    for _ in 0..3 {
        std::hint::black_box(conv.forward(&x, None, true));
    }
    let iters = ((2e8 / flops) as usize).clamp(3, 2000);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(conv.forward(&x, None, true));
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    (flops / best / 1e9, conv.kernel_name())
}

fn row(l: Layer) {
    let (a, kernel) = rate(l, ConvKernel::Auto);
    let (g, _) = rate(l, ConvKernel::Gemm);
    println!(
        "n={:<4} {:3}->{:<3} k{} s{} {:2}x{:<2}  {a:6.1} GF/s ({kernel:13})  im2col+gemm {g:6.1}",
        l.n, l.cin, l.cout, l.k, l.stride, l.side, l.side
    );
}

/// `[cin, cout, k, stride, side]` at batch `n`.
fn layer([cin, cout, k, stride, side]: [usize; 5], n: usize) -> Layer {
    Layer {
        cin,
        cout,
        k,
        stride,
        side,
        n,
    }
}

fn main() {
    println!("instruction set: {}", Isa::selected().name());
    if let Some(one) = std::env::args().nth(1) {
        let v: Vec<usize> = one
            .split(',')
            .map(|t| t.parse().expect("cin,cout,k,stride,side,batch"))
            .collect();
        let [cin, cout, k, stride, side, n] = v[..] else {
            panic!("expected cin,cout,k,stride,side,batch, got {one}");
        };
        row(layer([cin, cout, k, stride, side], n));
        return;
    }
    // EENet-8 at width 8 on 1×28×28, then ResNet-20's layers on 3×32×32 and on 1×28×28.
    let shapes = [
        [1, 8, 3, 1, 28],
        [8, 8, 3, 1, 28],
        [8, 16, 3, 2, 28],
        [8, 16, 1, 2, 28],
        [16, 16, 3, 1, 14],
        [16, 32, 3, 2, 14],
        [32, 32, 3, 1, 7],
        [3, 16, 3, 1, 32],
        [16, 16, 3, 1, 32],
        [32, 32, 3, 1, 16],
        [64, 64, 3, 1, 8],
        [1, 16, 3, 1, 28],
        [16, 16, 3, 1, 28],
    ];
    for n in [1, 256] {
        for &s in &shapes {
            row(layer(s, n));
        }
    }
    // A plain head (classifier and confidence branch) on ResNet-20's 16×28×28 features.
    for dout in [10, 1] {
        let din = 16 * 28 * 28;
        let w: Vec<f32> = (0..din * dout).map(|i| ((i * 7919) % 13) as f32 * 0.01).collect();
        let gemm = Dense::from_host(din, dout, w, vec![0.1; dout]);
        let dots = gemm.clone().for_inference();
        let z: Vec<f32> = (0..din).map(|i| (i % 7) as f32 * 0.1).collect();
        let us = |d: &Dense| {
            let best = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..200 {
                        std::hint::black_box(d.forward(&z));
                    }
                    t.elapsed().as_secs_f64() / 200.0
                })
                .fold(f64::MAX, f64::min);
            best * 1e6
        };
        println!(
            "dense {din}->{dout} batch 1: gemm {:.1} us, dot products {:.1} us",
            us(&gemm),
            us(&dots)
        );
    }
}

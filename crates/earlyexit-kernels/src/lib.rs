//! # earlyexit-kernels
//!
//! The CPU kernels under both of earlyexit's CPU paths: the compiled inference network
//! (`earlyexit::infer::CompiledNet`) and the native training pass (`earlyexit::train::native`).
//! Activations are channels-last host buffers ([`Act`]); convolutions carry their BatchNorm folded
//! in ([`Conv`]) and run a direct AVX-512 kernel ([`direct`]) for 16·j output channels where the
//! CPU has AVX-512F, a portable direct kernel ([`lanes`]: AVX2 + FMA or NEON, through `pulp`) for
//! multiples of the vector width, im2col + GEMM ([`matmul`]) for the rest; [`Isa`] says which
//! instruction set runs (`EARLYEXIT_CPU` narrows it), and passes too small for the thread pool
//! run on the caller's thread; depthwise convolutions have a kernel of
//! their own ([`Depthwise`]); pooling, unfoldable BatchNorms ([`Act::affine`]) and channel
//! concatenation are passes over [`Act`]. The backward passes ([`conv_grad`], [`batchnorm`]) and the buffer pool
//! ([`BufferPool`]) serve training.
//!
//! Why a crate of its own: both paths need the same kernels and neither should import the other;
//! with no tensor framework in its dependencies it builds and tests in seconds and cross-compiles
//! alone.
//!
//! ```
//! use earlyexit_kernels::{Act, Conv, ConvKernel};
//!
//! // A 3×3 convolution, 2 → 16 channels, "same" padding, every weight 1, bias 0.5, with ReLU.
//! let conv = Conv::from_host(2, 16, 3, 1, 1, vec![1.0; 9 * 2 * 16], vec![0.5; 16], true, ConvKernel::Auto);
//! let x = Act { n: 1, h: 4, w: 4, c: 2, data: vec![1.0; 4 * 4 * 2] };
//! let y = conv.forward(&x, None, true);
//! assert_eq!((y.n, y.h, y.w, y.c), (1, 4, 4, 16));
//! // The centre pixel sees all 9 taps of both channels: 18 + 0.5.
//! assert_eq!(y.data[(1 * 4 + 1) * 16], 18.5);
//! ```

mod act;
pub mod batchnorm;
mod conv;
pub mod conv_grad;
mod dense;
mod depthwise;
pub mod direct;
mod isa;
pub mod lanes;
pub mod matmul;
mod ops;
mod par;
mod pool;
pub mod simd;
pub mod testing;

pub use act::Act;
pub use conv::{Conv, ConvKernel, oihw_to_taps, taps_to_oihw};
pub use dense::Dense;
pub use depthwise::Depthwise;
pub use gemm::Parallelism;
pub use isa::Isa;
pub use ops::{Epilogue, Window};
pub use pool::BufferPool;

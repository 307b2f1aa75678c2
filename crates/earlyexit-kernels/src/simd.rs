//! Wide vector code for plain Rust loops, chosen at run time.
//!
//! Why: the crate is compiled for the baseline x86-64 (SSE2) so that its binaries run on any
//! x86-64 CPU; the elementwise passes of the CPU paths (BatchNorm, ReLU masks, col2im) would then
//! run four floats at a time. [`wide`] runs a closure inlined into a function compiled for
//! AVX-512 (or AVX2 + FMA) when the CPU has it, so the same loops vectorise 16 (or 8) wide.

/// Runs `f` compiled for the widest vector extension this CPU has. Mark the closure
/// `#[inline(always)]` so that its body is compiled inside the wide function.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: `avx512` is compiled for `avx512f,avx2,fma`. The CPU has AVX-512F (checked
            // just above), and rustc's target-feature model has `avx512f` imply `avx2` and `fma`
            // (`rustc --print cfg -C target-feature=+avx512f` lists both; every AVX-512F CPU has
            // them), so no instruction it may contain is missing. `f` itself is safe code.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: `avx2` is compiled for `avx2,fma`, and the CPU has AVX2 and FMA (both
            // checked just above). `f` itself is safe code.
            return unsafe { avx2(f) };
        }
    }
    f()
}

//! Wide vector code for plain Rust loops, chosen at run time.
//!
//! Why: the crate is compiled for the baseline x86-64 (SSE2) so that its binaries run on any
//! x86-64 CPU; the elementwise passes of the CPU paths (BatchNorm, ReLU masks, col2im) would then
//! run four floats at a time. [`wide`] runs a closure inlined into a function compiled for
//! AVX-512 (or AVX2 + FMA) when [`crate::Isa::selected`] allows it, so the same loops vectorise
//! 16 (or 8) wide.

/// Runs `f` compiled for the widest vector extension selected ([`crate::Isa::selected`]). Mark the closure
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
        // The one choice of instruction set (`EARLYEXIT_CPU` narrows it), not a detection of
        // its own.
        match crate::Isa::selected() {
            crate::Isa::Avx512 => {
                // SAFETY: `avx512` is compiled for `avx512f,avx2,fma`. `Isa::selected()` is at
                // most `Isa::detected()`, which says `Avx512` only when the CPU has AVX-512F
                // (`is_x86_feature_detected!`) and pulp's x86-64-v3 set (AVX2, FMA among it), so
                // no instruction it may contain is missing. `f` itself is safe code.
                return unsafe { avx512(f) };
            }
            crate::Isa::Avx2 => {
                // SAFETY: `avx2` is compiled for `avx2,fma`; `Isa::detected()` says `Avx2` (or
                // `Avx512`, which `selected()` may narrow to `Avx2`) only when pulp's
                // x86-64-v3 set, AVX2 and FMA among it, is available. `f` itself is safe code.
                return unsafe { avx2(f) };
            }
            _ => {}
        }
    }
    f()
}

//! Which instruction set the kernels use: detected once, and narrowed by the `EARLYEXIT_CPU`
//! environment variable for benchmarks and tests.
//!
//! Why an override: to time or test the portable path on a machine that has AVX-512 (and to
//! compare with PyTorch held to the same ISA) without another machine. It can only narrow what the
//! CPU has: asking for AVX-512 on a CPU without it selects the portable path.
//!
//! `EARLYEXIT_CPU=avx512` the direct AVX-512 kernels where the CPU has them (the default);
//! `portable` (alias `avx2`: the `gemm` crate under the portable path picks AVX2/FMA kernels by
//! itself where the CPU has them) im2col + GEMM everywhere.

use std::sync::OnceLock;

/// The environment variable that narrows the instruction set.
pub const ENV: &str = "EARLYEXIT_CPU";

/// An instruction set of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// im2col + GEMM only (the `gemm` crate dispatches its own SIMD).
    Portable,
    /// The direct AVX-512 convolution and weight-gradient kernels.
    Avx512,
}

impl Isa {
    /// The name `EARLYEXIT_CPU` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx512 => "avx512",
        }
    }

    /// The best instruction set this CPU has.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        Isa::Portable
    }

    /// Parses a value of `EARLYEXIT_CPU`.
    ///
    /// # Errors
    /// For a name that is not an instruction set, saying which ones are.
    pub fn parse(value: &str) -> Result<Isa, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "avx512" => Ok(Isa::Avx512),
            "portable" | "avx2" => Ok(Isa::Portable),
            other => Err(format!(
                "{ENV}={other:?} is not an instruction set; expected `avx512`, `avx2` or `portable`"
            )),
        }
    }

    /// What `EARLYEXIT_CPU` asks for (`None` when it is unset or empty).
    ///
    /// # Errors
    /// When it names no instruction set.
    pub fn requested() -> Result<Option<Isa>, String> {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Isa::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// The instruction set the kernels use in this process: the detected one, narrowed by
    /// `EARLYEXIT_CPU` (an invalid value is ignored here; front ends check
    /// [`Isa::requested`] first and report it).
    pub fn selected() -> Isa {
        static SELECTED: OnceLock<Isa> = OnceLock::new();
        *SELECTED.get_or_init(|| narrow(Isa::detected(), Isa::requested().ok().flatten()))
    }
}

/// `detected`, or `requested` where that is a narrower set.
fn narrow(detected: Isa, requested: Option<Isa>) -> Isa {
    requested.map_or(detected, |r| r.min(detected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_requests_only_narrow() {
        assert_eq!(Isa::parse("AVX512"), Ok(Isa::Avx512));
        assert_eq!(Isa::parse(" portable "), Ok(Isa::Portable));
        assert_eq!(Isa::parse("avx2"), Ok(Isa::Portable));
        let e = Isa::parse("sse9").unwrap_err();
        assert!(
            e.contains("EARLYEXIT_CPU") && e.contains("sse9") && e.contains("portable"),
            "{e}"
        );
        assert_eq!(narrow(Isa::Avx512, Some(Isa::Portable)), Isa::Portable);
        assert_eq!(narrow(Isa::Portable, Some(Isa::Avx512)), Isa::Portable);
        assert_eq!(narrow(Isa::Avx512, None), Isa::Avx512);
        assert_eq!(Isa::Portable.name(), "portable");
    }
}

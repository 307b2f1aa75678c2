//! Which instruction set the kernels use: detected once, and narrowed by the `EARLYEXIT_CPU`
//! environment variable for benchmarks and tests.
//!
//! Why an override: to time or test the portable path on a machine that has AVX-512 (and to
//! compare with PyTorch held to the same ISA) without another machine. It can only narrow what the
//! CPU has: asking for AVX-512 on a CPU without it selects the portable path.
//!
//! `EARLYEXIT_CPU=avx512` (the default where the CPU has it), `avx2`, `neon` or `portable`
//! (im2col + GEMM everywhere; the `gemm` crate underneath still picks its own SIMD).

use std::sync::OnceLock;

/// The environment variable that narrows the instruction set.
pub const ENV: &str = "EARLYEXIT_CPU";

/// An instruction set of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// im2col + GEMM only (the `gemm` crate dispatches its own SIMD).
    Portable,
    /// The portable-SIMD direct convolution ([`crate::lanes`]) on AVX2 + FMA, 8 lanes, for
    /// layers with 8·j output channels; im2col + GEMM for the others.
    Avx2,
    /// The same on NEON (aarch64), 4 lanes.
    Neon,
    /// The direct AVX-512 kernels ([`crate::direct`]) for 16·j output channels and the weight
    /// gradient, AVX2 ones for 8·j, im2col + GEMM for the others.
    Avx512,
}

impl Isa {
    /// The name `EARLYEXIT_CPU` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Avx512 => "avx512",
        }
    }

    /// How wide: a request selects the widest instruction set the CPU runs at or below it.
    fn rank(self) -> u8 {
        match self {
            Isa::Portable => 0,
            Isa::Avx2 | Isa::Neon => 1,
            Isa::Avx512 => 2,
        }
    }

    /// Whether a CPU whose best instruction set is `self` runs `other`.
    fn runs(self, other: Isa) -> bool {
        other == Isa::Portable || other == self || (self == Isa::Avx512 && other == Isa::Avx2)
    }

    /// The best instruction set this CPU has.
    pub fn detected() -> Isa {
        let simd = crate::lanes::Lanes::detect().is_some();
        #[cfg(target_arch = "x86_64")]
        {
            if simd && std::arch::is_x86_feature_detected!("avx512f") {
                Isa::Avx512
            } else if simd {
                Isa::Avx2
            } else {
                Isa::Portable
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if simd { Isa::Neon } else { Isa::Portable }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = simd;
            Isa::Portable
        }
    }

    /// Parses a value of `EARLYEXIT_CPU`.
    ///
    /// # Errors
    /// For a name that is not an instruction set, saying which ones are.
    pub fn parse(value: &str) -> Result<Isa, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "avx512" => Ok(Isa::Avx512),
            "avx2" => Ok(Isa::Avx2),
            "neon" => Ok(Isa::Neon),
            "portable" => Ok(Isa::Portable),
            other => Err(format!(
                "{ENV}={other:?} is not an instruction set; expected `avx512`, `avx2`, `neon` or `portable`"
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

/// What a CPU whose best set is `detected` runs for `requested`: that set if it can, else the
/// widest one it runs below it.
fn narrow(detected: Isa, requested: Option<Isa>) -> Isa {
    let Some(r) = requested else { return detected };
    [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Portable]
        .into_iter()
        .filter(|&c| c.rank() <= r.rank() && detected.runs(c))
        .max_by_key(|c| c.rank())
        .unwrap_or(Isa::Portable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_requests_only_narrow() {
        assert_eq!(Isa::parse("AVX512"), Ok(Isa::Avx512));
        assert_eq!(Isa::parse(" portable "), Ok(Isa::Portable));
        assert_eq!(Isa::parse("avx2"), Ok(Isa::Avx2));
        let e = Isa::parse("sse9").unwrap_err();
        assert!(
            e.contains("EARLYEXIT_CPU") && e.contains("sse9") && e.contains("portable"),
            "{e}"
        );
        assert_eq!(narrow(Isa::Avx512, Some(Isa::Portable)), Isa::Portable);
        assert_eq!(narrow(Isa::Avx512, Some(Isa::Avx2)), Isa::Avx2);
        assert_eq!(narrow(Isa::Avx2, Some(Isa::Avx512)), Isa::Avx2);
        assert_eq!(narrow(Isa::Portable, Some(Isa::Avx512)), Isa::Portable);
        // Another architecture's set of the same width: the same width here.
        assert_eq!(narrow(Isa::Avx2, Some(Isa::Neon)), Isa::Avx2);
        assert_eq!(narrow(Isa::Neon, Some(Isa::Avx512)), Isa::Neon);
        assert_eq!(narrow(Isa::Avx512, None), Isa::Avx512);
        assert_eq!(Isa::Portable.name(), "portable");
    }
}

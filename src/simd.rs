//! Wider vectors for the host's hot loops without giving up reproducibility.
//!
//! The crate is built for the x86-64 baseline (SSE2, two f64 per instruction). [`with_avx`]
//! runs a closure compiled for AVX (four f64 per instruction) where the CPU has it. Rust never
//! reassociates or contracts floating-point operations (no FMA unless asked), so the vector
//! code performs the same operations in the same order as the baseline code: the results are
//! bit-identical on every x86-64 CPU, with or without AVX.

/// Runs `f`, compiled for AVX when the CPU has it. `f` should be an `#[inline(always)]`
/// closure whose hot callees are `#[inline(always)]` too: only code inlined into the AVX
/// wrapper gets the wider instructions.
#[inline(always)]
pub(crate) fn with_avx<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            return unsafe { run(f) };
        }
    }
    f()
}

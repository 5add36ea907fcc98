//! Wider vectors for the host's hot loops without giving up reproducibility.
//!
//! The crate is built for the x86-64 baseline (SSE2, two f64 per instruction). [`with_avx`]
//! runs a closure compiled for AVX (four f64 per instruction) where the CPU has it. Rust never
//! reassociates or contracts floating-point operations (no FMA unless asked), so the vector
//! code performs the same operations in the same order as the baseline code: the results are
//! bit-identical on every x86-64 CPU, with or without AVX.
//!
//! Two CPU states that cost speed, not results, are handled here too: [`clear_upper`] after
//! faer's AVX-512 kernels (SSE code is slowed while the upper register halves are in use), and
//! [`with_denormals_flushed`] for the f32 probes (operations on denormals are slow).

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

/// Clears the upper halves of the vector registers (`vzeroupper`) where the CPU has AVX.
/// faer's GEMM kernels can return with them in use (their AVX-512 kernels do), and then, on
/// some Intel CPUs, every SSE instruction that follows is slowed down until the next
/// `vzeroupper`: on a 2-core Sapphire Rapids VM, a loop of scalar `exp` (the sigmoid of the
/// forward pass) ran 28× slower. Called after each of faer's GEMMs and eigensolvers.
#[inline]
pub(crate) fn clear_upper() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn zeroupper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            unsafe { zeroupper() };
        }
    }
}

/// Runs `f` with denormal results and operands flushed to zero (FTZ and DAZ of the SSE control
/// register on x86-64; elsewhere `f` runs unchanged), and restores the previous mode after it,
/// also when `f` panics. For the f32 probes of the power method (`theory::probe`), which only
/// rank the starts: with a peaked η many of their products fall below f32's normal range
/// (1.2e-38), and each such operation can cost over a hundred cycles on Intel CPUs (measured:
/// 20 ms instead of 1 ms per tensor at O = 1000); values that small do not change the ranking.
pub(crate) fn with_denormals_flushed<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        /// FTZ (bit 15) and DAZ (bit 6) of MXCSR.
        const FTZ_DAZ: u32 = 0x8040;
        fn read() -> u32 {
            let mut csr = 0u32;
            // SAFETY: stores the 32-bit MXCSR into a local; SSE is part of x86-64.
            unsafe {
                std::arch::asm!("stmxcsr [{0}]", in(reg) &mut csr as *mut u32,
                    options(nostack, preserves_flags))
            };
            csr
        }
        fn write(csr: u32) {
            // SAFETY: loads a value read from MXCSR with only FTZ/DAZ changed (valid bits).
            unsafe {
                std::arch::asm!("ldmxcsr [{0}]", in(reg) &csr as *const u32,
                    options(nostack, preserves_flags, readonly))
            };
        }
        /// Restores MXCSR when dropped.
        struct Restore(u32);
        impl Drop for Restore {
            fn drop(&mut self) {
                write(self.0);
            }
        }
        let saved = Restore(read());
        write(saved.0 | FTZ_DAZ);
        let r = f();
        drop(saved);
        r
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}

/// Whether the upper halves of the YMM registers are in use (not in their initial state),
/// read from the XINUSE bitmap (`xgetbv` with ECX = 1, bit 2); None where the CPU cannot
/// tell. For the tests of [`clear_upper`] and of its callers.
#[cfg(test)]
pub(crate) fn upper_in_use() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        #[target_feature(enable = "xsave")]
        fn xinuse() -> u64 {
            // SAFETY: only called where CPUID says that XGETBV with ECX = 1 exists.
            unsafe { std::arch::x86_64::_xgetbv(1) }
        }
        // CPUID.(EAX=0DH, ECX=1):EAX[2]: XGETBV with ECX = 1 is supported.
        let supported = __cpuid(0).eax >= 0xD
            && std::arch::is_x86_feature_detected!("xsave")
            && std::arch::is_x86_feature_detected!("avx")
            && __cpuid_count(0xD, 1).eax & 4 != 0;
        if supported {
            // SAFETY: the CPU has XSAVE (checked just above).
            return Some(unsafe { xinuse() } & 4 != 0);
        }
    }
    None
}

/// A floating-point element of [`Lanes`]: f64, or f32 where f32 is accurate enough (the
/// probes of `theory::probe`).
pub(crate) trait Real:
    Copy
    + Default
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
{
    /// 1.
    const ONE: Self;
    /// The baseline lanes of this element.
    type Base: Lanes<Elem = Self>;
    /// The AVX lanes of this element (x86-64).
    #[cfg(target_arch = "x86_64")]
    type Avx: Lanes<Elem = Self>;
    /// √self.
    fn sqrt(self) -> Self;
    /// Whether the value is finite.
    fn is_finite(self) -> bool;
    /// The value as an f64 (exact).
    fn to_f64(self) -> f64;
}

impl Real for f64 {
    const ONE: f64 = 1.0;
    type Base = Base4;
    #[cfg(target_arch = "x86_64")]
    type Avx = avx::Avx4;
    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

impl Real for f32 {
    const ONE: f32 = 1.0;
    type Base = Base8;
    #[cfg(target_arch = "x86_64")]
    type Avx = avx::Avx8;
    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

/// `N` lanes of a [`Real`] with lane-wise IEEE operations (never fused), for loops whose
/// partial sums must keep a fixed order: four f64 or eight f32 (one AVX register). Each has a
/// baseline type (two SSE registers on x86-64, a plain array elsewhere) and, on x86-64 CPUs
/// with AVX, one AVX register; the lanes see the same operations in both, so the results are
/// the same bits. Code generic over `Lanes` runs through [`with_lanes`].
pub(crate) trait Lanes:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// The element type.
    type Elem: Real;
    /// The number of lanes (4 or 8).
    const N: usize;
    /// Every lane `v`.
    fn splat(v: Self::Elem) -> Self;
    /// The first `N` entries of `s` (panics with fewer).
    fn load(s: &[Self::Elem]) -> Self;
    /// Writes the lanes to the first `N` entries of `s` (panics with fewer).
    fn store(self, s: &mut [Self::Elem]);
    /// Every lane 0.
    #[inline(always)]
    fn zero() -> Self {
        Self::splat(Self::Elem::default())
    }
    /// The lanes summed pairwise, in a fixed order: (l₀ + l₁) + (l₂ + l₃) for four lanes,
    /// ((l₀ + l₁) + (l₂ + l₃)) + ((l₄ + l₅) + (l₆ + l₇)) for eight.
    #[inline(always)]
    fn sum(self) -> Self::Elem {
        let mut a = [Self::Elem::default(); 8];
        self.store(&mut a);
        let mut width = Self::N;
        while width > 1 {
            width /= 2;
            for i in 0..width {
                a[i] = a[2 * i] + a[2 * i + 1];
            }
        }
        a[0]
    }
}

/// Code generic over the lanes of one element type, run by [`with_lanes`] (a closure cannot
/// be generic).
pub(crate) trait WithLanes {
    /// The element type.
    type Elem: Real;
    /// What the code returns.
    type Output;
    /// Runs the code with lanes `V`; should be `#[inline(always)]` (it is inlined into the
    /// AVX wrapper).
    fn run<V: Lanes<Elem = Self::Elem>>(self) -> Self::Output;
}

/// Runs `w` with AVX lanes where the CPU has AVX, else with the baseline lanes: the same
/// results.
#[inline(always)]
pub(crate) fn with_lanes<W: WithLanes>(w: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn run<W: WithLanes>(w: W) -> W::Output {
            w.run::<<W::Elem as Real>::Avx>()
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            return unsafe { run(w) };
        }
    }
    w.run::<<W::Elem as Real>::Base>()
}

/// Runs `w` with the baseline lanes whatever the CPU (the tests compare it with
/// [`with_lanes`]).
#[cfg(test)]
pub(crate) fn with_base<W: WithLanes>(w: W) -> W::Output {
    w.run::<<W::Elem as Real>::Base>()
}

/// Lane-wise binary operators of a lane type, each through a function of two values.
macro_rules! lane_ops {
    ($t:ty: $($tr:ident $m:ident $f:expr),*) => {
        $(
            impl std::ops::$tr for $t {
                type Output = $t;
                #[inline(always)]
                fn $m(self, o: $t) -> $t {
                    $f(self, o)
                }
            }
        )*
    };
}

/// A lane type `$name` of `$n` `$elem` in two SSE registers `$reg` (the x86-64 baseline),
/// through the SSE intrinsics `$set1`, `$load`, `$store`, `$add`, `$sub`, `$mul`, `$div`.
#[cfg(target_arch = "x86_64")]
macro_rules! sse_lanes {
    ($(#[$doc:meta])* $name:ident, $elem:ty, $n:literal, $reg:ident,
     $set1:ident, $load:ident, $store:ident, $add:ident, $sub:ident, $mul:ident, $div:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $name([std::arch::x86_64::$reg; 2]);

        // SAFETY (every block below): SSE and SSE2 are part of the x86-64 baseline; the
        // slices have at least `$n` entries (checked by the indexing).
        impl Lanes for $name {
            type Elem = $elem;
            const N: usize = $n;
            #[inline(always)]
            fn splat(v: $elem) -> Self {
                $name(unsafe { [std::arch::x86_64::$set1(v); 2] })
            }
            #[inline(always)]
            fn load(s: &[$elem]) -> Self {
                let s = &s[..$n];
                $name(unsafe {
                    [
                        std::arch::x86_64::$load(s.as_ptr()),
                        std::arch::x86_64::$load(s.as_ptr().add($n / 2)),
                    ]
                })
            }
            #[inline(always)]
            fn store(self, s: &mut [$elem]) {
                let s = &mut s[..$n];
                unsafe {
                    std::arch::x86_64::$store(s.as_mut_ptr(), self.0[0]);
                    std::arch::x86_64::$store(s.as_mut_ptr().add($n / 2), self.0[1]);
                }
            }
        }

        lane_ops!($name:
            Add add |a: $name, b: $name| $name(unsafe {
                [std::arch::x86_64::$add(a.0[0], b.0[0]), std::arch::x86_64::$add(a.0[1], b.0[1])]
            }),
            Sub sub |a: $name, b: $name| $name(unsafe {
                [std::arch::x86_64::$sub(a.0[0], b.0[0]), std::arch::x86_64::$sub(a.0[1], b.0[1])]
            }),
            Mul mul |a: $name, b: $name| $name(unsafe {
                [std::arch::x86_64::$mul(a.0[0], b.0[0]), std::arch::x86_64::$mul(a.0[1], b.0[1])]
            }),
            Div div |a: $name, b: $name| $name(unsafe {
                [std::arch::x86_64::$div(a.0[0], b.0[0]), std::arch::x86_64::$div(a.0[1], b.0[1])]
            })
        );
    };
}

#[cfg(target_arch = "x86_64")]
sse_lanes!(
    /// The baseline four f64 lanes: two SSE2 registers.
    Base4, f64, 4, __m128d,
    _mm_set1_pd, _mm_loadu_pd, _mm_storeu_pd, _mm_add_pd, _mm_sub_pd, _mm_mul_pd, _mm_div_pd
);
#[cfg(target_arch = "x86_64")]
sse_lanes!(
    /// The baseline eight f32 lanes: two SSE registers.
    Base8, f32, 8, __m128,
    _mm_set1_ps, _mm_loadu_ps, _mm_storeu_ps, _mm_add_ps, _mm_sub_ps, _mm_mul_ps, _mm_div_ps
);

/// Lanes as a plain array (the baseline off x86-64).
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArrayLanes<T, const N: usize>([T; N]);

#[cfg(not(target_arch = "x86_64"))]
impl<T: Real, const M: usize> Lanes for ArrayLanes<T, M> {
    type Elem = T;
    const N: usize = M;
    #[inline(always)]
    fn splat(v: T) -> Self {
        ArrayLanes([v; M])
    }
    #[inline(always)]
    fn load(s: &[T]) -> Self {
        ArrayLanes(s[..M].try_into().expect("N lanes"))
    }
    #[inline(always)]
    fn store(self, s: &mut [T]) {
        s[..M].copy_from_slice(&self.0)
    }
}

#[cfg(not(target_arch = "x86_64"))]
macro_rules! array_ops {
    ($($tr:ident $m:ident $op:tt),*) => {
        $(
            impl<T: Real, const M: usize> std::ops::$tr for ArrayLanes<T, M> {
                type Output = Self;
                #[inline(always)]
                fn $m(self, o: Self) -> Self {
                    ArrayLanes(std::array::from_fn(|i| self.0[i] $op o.0[i]))
                }
            }
        )*
    };
}

#[cfg(not(target_arch = "x86_64"))]
array_ops!(Add add +, Sub sub -, Mul mul *, Div div /);

/// The baseline four f64 lanes: a plain array.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type Base4 = ArrayLanes<f64, 4>;
/// The baseline eight f32 lanes: a plain array.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type Base8 = ArrayLanes<f32, 8>;

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::Lanes;

    /// A lane type `$name` of `$n` `$elem` in one AVX register `$reg`. Only created inside
    /// [`super::with_lanes`]'s AVX branch, so every intrinsic runs on a CPU with AVX.
    macro_rules! avx_lanes {
        ($(#[$doc:meta])* $name:ident, $elem:ty, $n:literal, $reg:ident,
         $set1:ident, $load:ident, $store:ident, $add:ident, $sub:ident, $mul:ident,
         $div:ident) => {
            $(#[$doc])*
            #[derive(Clone, Copy, Debug)]
            pub(crate) struct $name(std::arch::x86_64::$reg);

            // SAFETY (every block below): AVX is present (see the macro's comment); the
            // slices have at least `$n` entries (checked by the indexing).
            impl Lanes for $name {
                type Elem = $elem;
                const N: usize = $n;
                #[inline(always)]
                fn splat(v: $elem) -> Self {
                    $name(unsafe { std::arch::x86_64::$set1(v) })
                }
                #[inline(always)]
                fn load(s: &[$elem]) -> Self {
                    $name(unsafe { std::arch::x86_64::$load(s[..$n].as_ptr()) })
                }
                #[inline(always)]
                fn store(self, s: &mut [$elem]) {
                    unsafe { std::arch::x86_64::$store(s[..$n].as_mut_ptr(), self.0) }
                }
            }

            lane_ops!($name:
                Add add |a: $name, b: $name| $name(unsafe { std::arch::x86_64::$add(a.0, b.0) }),
                Sub sub |a: $name, b: $name| $name(unsafe { std::arch::x86_64::$sub(a.0, b.0) }),
                Mul mul |a: $name, b: $name| $name(unsafe { std::arch::x86_64::$mul(a.0, b.0) }),
                Div div |a: $name, b: $name| $name(unsafe { std::arch::x86_64::$div(a.0, b.0) })
            );
        };
    }

    avx_lanes!(
        /// Four f64 lanes in one AVX register.
        Avx4, f64, 4, __m256d,
        _mm256_set1_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_add_pd, _mm256_sub_pd,
        _mm256_mul_pd, _mm256_div_pd
    );
    avx_lanes!(
        /// Eight f32 lanes in one AVX register.
        Avx8, f32, 8, __m256,
        _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_sub_ps,
        _mm256_mul_ps, _mm256_div_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`upper_in_use`] sees a YMM register written by an AVX2 instruction, and
    /// [`clear_upper`] returns the upper halves to their initial state.
    #[test]
    fn clear_upper_resets_the_upper_halves() {
        #[cfg(target_arch = "x86_64")]
        {
            if upper_in_use().is_none() || !std::arch::is_x86_feature_detected!("avx2") {
                eprintln!("skipped: this CPU does not report XINUSE (xgetbv with ECX = 1)");
                return;
            }
            // SAFETY: the CPU has AVX2 (checked above); ymm1 is declared clobbered.
            unsafe { std::arch::asm!("vpcmpeqd ymm1, ymm1, ymm1", out("ymm1") _) };
            assert_eq!(upper_in_use(), Some(true), "an all-ones ymm1 is in use");
            clear_upper();
            assert_eq!(upper_in_use(), Some(false), "vzeroupper clears it");
        }
    }

    /// Inside [`with_denormals_flushed`] a product below f32's normal range is 0 and a
    /// denormal operand reads as 0; before and after, both are the denormals IEEE gives.
    #[test]
    fn denormals_are_flushed_only_inside() {
        use std::hint::black_box;
        let tiny = || black_box(1e-30f32) * black_box(1e-10f32);
        let denormal = black_box(f32::from_bits(1));
        let before = (tiny(), denormal * black_box(1.0f32));
        assert!(
            before.0 > 0.0 && before.1 > 0.0,
            "IEEE denormals by default"
        );
        let inside = with_denormals_flushed(|| (tiny(), denormal * black_box(1.0f32)));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(inside, (0.0, 0.0), "flushed to zero");
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(inside, before);
        assert_eq!(
            (tiny(), denormal * black_box(1.0f32)),
            before,
            "the mode is restored"
        );
    }
}

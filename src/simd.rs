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

/// Four f64 lanes with lane-wise IEEE operations (never fused), for loops whose partial sums
/// must keep a fixed order. Implemented by [`Base4`] (the baseline: two SSE2 registers on
/// x86-64, a plain array elsewhere) and, on x86-64 CPUs with AVX, one AVX register; the lanes
/// see the same operations in both, so the results are the same bits. Code generic over
/// `Lanes4` runs through [`with_lanes4`].
pub(crate) trait Lanes4:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// Every lane `v`.
    fn splat(v: f64) -> Self;
    /// The first four entries of `s` (panics with fewer).
    fn load(s: &[f64]) -> Self;
    /// Writes the lanes to the first four entries of `s` (panics with fewer).
    fn store(self, s: &mut [f64]);
    /// Every lane 0.
    #[inline(always)]
    fn zero() -> Self {
        Self::splat(0.0)
    }
    /// (l₀ + l₁) + (l₂ + l₃): the fixed order of the partial sums.
    #[inline(always)]
    fn sum(self) -> f64 {
        let mut a = [0.0; 4];
        self.store(&mut a);
        (a[0] + a[1]) + (a[2] + a[3])
    }
}

/// Code generic over the lane type, run by [`with_lanes4`] (a closure cannot be generic).
pub(crate) trait WithLanes4 {
    /// What the code returns.
    type Output;
    /// Runs the code with lanes `V`; should be `#[inline(always)]` (it is inlined into the
    /// AVX wrapper).
    fn run<V: Lanes4>(self) -> Self::Output;
}

/// Runs `w` with AVX lanes where the CPU has AVX, else with [`Base4`]: the same results.
#[inline(always)]
pub(crate) fn with_lanes4<W: WithLanes4>(w: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn run<W: WithLanes4>(w: W) -> W::Output {
            w.run::<avx::Avx4>()
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            return unsafe { run(w) };
        }
    }
    w.run::<Base4>()
}

/// Runs `w` with the baseline lanes whatever the CPU (the tests compare it with
/// [`with_lanes4`]).
#[cfg(test)]
pub(crate) fn with_base4<W: WithLanes4>(w: W) -> W::Output {
    w.run::<Base4>()
}

/// Lane-wise binary operators of a four-lane type, each through a function of two values.
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

/// The baseline four lanes: two SSE2 registers on x86-64 (part of its baseline), a plain
/// array elsewhere.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Base4(base::Repr);

#[cfg(target_arch = "x86_64")]
mod base {
    use std::arch::x86_64::{
        _mm_add_pd, _mm_div_pd, _mm_loadu_pd, _mm_mul_pd, _mm_set1_pd, _mm_storeu_pd, _mm_sub_pd,
    };
    pub(super) type Repr = [std::arch::x86_64::__m128d; 2];
    // SAFETY (every block below): SSE2 is part of the x86-64 baseline; the callers pass
    // arrays of exactly four entries.
    #[inline(always)]
    pub(super) fn splat(v: f64) -> Repr {
        unsafe { [_mm_set1_pd(v); 2] }
    }
    #[inline(always)]
    pub(super) fn load(s: &[f64; 4]) -> Repr {
        unsafe { [_mm_loadu_pd(s.as_ptr()), _mm_loadu_pd(s.as_ptr().add(2))] }
    }
    #[inline(always)]
    pub(super) fn store(r: Repr, s: &mut [f64; 4]) {
        unsafe {
            _mm_storeu_pd(s.as_mut_ptr(), r[0]);
            _mm_storeu_pd(s.as_mut_ptr().add(2), r[1]);
        }
    }
    #[inline(always)]
    pub(super) fn add(a: Repr, b: Repr) -> Repr {
        unsafe { [_mm_add_pd(a[0], b[0]), _mm_add_pd(a[1], b[1])] }
    }
    #[inline(always)]
    pub(super) fn sub(a: Repr, b: Repr) -> Repr {
        unsafe { [_mm_sub_pd(a[0], b[0]), _mm_sub_pd(a[1], b[1])] }
    }
    #[inline(always)]
    pub(super) fn mul(a: Repr, b: Repr) -> Repr {
        unsafe { [_mm_mul_pd(a[0], b[0]), _mm_mul_pd(a[1], b[1])] }
    }
    #[inline(always)]
    pub(super) fn div(a: Repr, b: Repr) -> Repr {
        unsafe { [_mm_div_pd(a[0], b[0]), _mm_div_pd(a[1], b[1])] }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod base {
    pub(super) type Repr = [f64; 4];
    #[inline(always)]
    pub(super) fn splat(v: f64) -> Repr {
        [v; 4]
    }
    #[inline(always)]
    pub(super) fn load(s: &[f64; 4]) -> Repr {
        *s
    }
    #[inline(always)]
    pub(super) fn store(r: Repr, s: &mut [f64; 4]) {
        *s = r;
    }
    #[inline(always)]
    pub(super) fn add(a: Repr, b: Repr) -> Repr {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    pub(super) fn sub(a: Repr, b: Repr) -> Repr {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    pub(super) fn mul(a: Repr, b: Repr) -> Repr {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    pub(super) fn div(a: Repr, b: Repr) -> Repr {
        std::array::from_fn(|i| a[i] / b[i])
    }
}

#[inline(always)]
fn four(s: &[f64]) -> &[f64; 4] {
    s[..4].try_into().expect("four lanes")
}

#[inline(always)]
fn four_mut(s: &mut [f64]) -> &mut [f64; 4] {
    (&mut s[..4]).try_into().expect("four lanes")
}

impl Lanes4 for Base4 {
    #[inline(always)]
    fn splat(v: f64) -> Self {
        Base4(base::splat(v))
    }
    #[inline(always)]
    fn load(s: &[f64]) -> Self {
        Base4(base::load(four(s)))
    }
    #[inline(always)]
    fn store(self, s: &mut [f64]) {
        base::store(self.0, four_mut(s))
    }
}

lane_ops!(Base4:
    Add add |a: Base4, b: Base4| Base4(base::add(a.0, b.0)),
    Sub sub |a: Base4, b: Base4| Base4(base::sub(a.0, b.0)),
    Mul mul |a: Base4, b: Base4| Base4(base::mul(a.0, b.0)),
    Div div |a: Base4, b: Base4| Base4(base::div(a.0, b.0))
);

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{four, four_mut, Lanes4};
    use std::arch::x86_64::{
        __m256d, _mm256_add_pd, _mm256_div_pd, _mm256_loadu_pd, _mm256_mul_pd, _mm256_set1_pd,
        _mm256_storeu_pd, _mm256_sub_pd,
    };

    /// Four lanes in one AVX register. Only created inside [`super::with_lanes4`]'s AVX
    /// branch, so every intrinsic below runs on a CPU with AVX.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx4(__m256d);

    // SAFETY (every block below): AVX is present (see the type's comment); the slices have
    // four entries.
    impl Lanes4 for Avx4 {
        #[inline(always)]
        fn splat(v: f64) -> Self {
            Avx4(unsafe { _mm256_set1_pd(v) })
        }
        #[inline(always)]
        fn load(s: &[f64]) -> Self {
            Avx4(unsafe { _mm256_loadu_pd(four(s).as_ptr()) })
        }
        #[inline(always)]
        fn store(self, s: &mut [f64]) {
            unsafe { _mm256_storeu_pd(four_mut(s).as_mut_ptr(), self.0) }
        }
    }

    lane_ops!(Avx4:
        Add add |a: Avx4, b: Avx4| Avx4(unsafe { _mm256_add_pd(a.0, b.0) }),
        Sub sub |a: Avx4, b: Avx4| Avx4(unsafe { _mm256_sub_pd(a.0, b.0) }),
        Mul mul |a: Avx4, b: Avx4| Avx4(unsafe { _mm256_mul_pd(a.0, b.0) }),
        Div div |a: Avx4, b: Avx4| Avx4(unsafe { _mm256_div_pd(a.0, b.0) })
    );
}

/// Eight f32 lanes with lane-wise IEEE operations (never fused): the f32 counterpart of
/// [`Lanes4`], for loops where f32 is accurate enough (the probes of
/// `theory::probe`). [`Base8`]: two SSE registers on x86-64, a plain array elsewhere; on
/// x86-64 CPUs with AVX, one AVX register. The same bits either way.
pub(crate) trait Lanes8:
    Copy + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self>
{
    /// Every lane `v`.
    fn splat(v: f32) -> Self;
    /// The first eight entries of `s` (panics with fewer).
    fn load(s: &[f32]) -> Self;
    /// Writes the lanes to the first eight entries of `s` (panics with fewer).
    fn store(self, s: &mut [f32]);
    /// ((l₀ + l₁) + (l₂ + l₃)) + ((l₄ + l₅) + (l₆ + l₇)).
    #[inline(always)]
    fn sum(self) -> f32 {
        let mut a = [0.0; 8];
        self.store(&mut a);
        ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
    }
}

/// Code generic over the f32 lane type, run by [`with_lanes8`].
pub(crate) trait WithLanes8 {
    /// What the code returns.
    type Output;
    /// Runs the code with lanes `V`; should be `#[inline(always)]`.
    fn run<V: Lanes8>(self) -> Self::Output;
}

/// Runs `w` with AVX lanes where the CPU has AVX, else with [`Base8`]: the same results.
#[inline(always)]
pub(crate) fn with_lanes8<W: WithLanes8>(w: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn run<W: WithLanes8>(w: W) -> W::Output {
            w.run::<avx8::Avx8>()
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            return unsafe { run(w) };
        }
    }
    w.run::<Base8>()
}

/// Runs `w` with the baseline f32 lanes whatever the CPU (the tests compare it with
/// [`with_lanes8`]).
#[cfg(test)]
pub(crate) fn with_base8<W: WithLanes8>(w: W) -> W::Output {
    w.run::<Base8>()
}

/// The baseline eight f32 lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Base8(base8::Repr);

#[cfg(target_arch = "x86_64")]
mod base8 {
    use std::arch::x86_64::{
        __m128, _mm_add_ps, _mm_loadu_ps, _mm_mul_ps, _mm_set1_ps, _mm_storeu_ps, _mm_sub_ps,
    };
    pub(super) type Repr = [__m128; 2];
    // SAFETY (every block below): SSE is part of the x86-64 baseline; the callers pass arrays
    // of exactly eight entries.
    #[inline(always)]
    pub(super) fn splat(v: f32) -> Repr {
        unsafe { [_mm_set1_ps(v); 2] }
    }
    #[inline(always)]
    pub(super) fn load(s: &[f32; 8]) -> Repr {
        unsafe { [_mm_loadu_ps(s.as_ptr()), _mm_loadu_ps(s.as_ptr().add(4))] }
    }
    #[inline(always)]
    pub(super) fn store(r: Repr, s: &mut [f32; 8]) {
        unsafe {
            _mm_storeu_ps(s.as_mut_ptr(), r[0]);
            _mm_storeu_ps(s.as_mut_ptr().add(4), r[1]);
        }
    }
    #[inline(always)]
    pub(super) fn add(a: Repr, b: Repr) -> Repr {
        unsafe { [_mm_add_ps(a[0], b[0]), _mm_add_ps(a[1], b[1])] }
    }
    #[inline(always)]
    pub(super) fn sub(a: Repr, b: Repr) -> Repr {
        unsafe { [_mm_sub_ps(a[0], b[0]), _mm_sub_ps(a[1], b[1])] }
    }
    #[inline(always)]
    pub(super) fn mul(a: Repr, b: Repr) -> Repr {
        unsafe { [_mm_mul_ps(a[0], b[0]), _mm_mul_ps(a[1], b[1])] }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod base8 {
    pub(super) type Repr = [f32; 8];
    #[inline(always)]
    pub(super) fn splat(v: f32) -> Repr {
        [v; 8]
    }
    #[inline(always)]
    pub(super) fn load(s: &[f32; 8]) -> Repr {
        *s
    }
    #[inline(always)]
    pub(super) fn store(r: Repr, s: &mut [f32; 8]) {
        *s = r;
    }
    #[inline(always)]
    pub(super) fn add(a: Repr, b: Repr) -> Repr {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    pub(super) fn sub(a: Repr, b: Repr) -> Repr {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    pub(super) fn mul(a: Repr, b: Repr) -> Repr {
        std::array::from_fn(|i| a[i] * b[i])
    }
}

#[inline(always)]
fn eight(s: &[f32]) -> &[f32; 8] {
    s[..8].try_into().expect("eight lanes")
}

#[inline(always)]
fn eight_mut(s: &mut [f32]) -> &mut [f32; 8] {
    (&mut s[..8]).try_into().expect("eight lanes")
}

impl Lanes8 for Base8 {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Base8(base8::splat(v))
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        Base8(base8::load(eight(s)))
    }
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        base8::store(self.0, eight_mut(s))
    }
}

lane_ops!(Base8:
    Add add |a: Base8, b: Base8| Base8(base8::add(a.0, b.0)),
    Sub sub |a: Base8, b: Base8| Base8(base8::sub(a.0, b.0)),
    Mul mul |a: Base8, b: Base8| Base8(base8::mul(a.0, b.0))
);

#[cfg(target_arch = "x86_64")]
mod avx8 {
    use super::{eight, eight_mut, Lanes8};
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_storeu_ps,
        _mm256_sub_ps,
    };

    /// Eight f32 lanes in one AVX register. Only created inside [`super::with_lanes8`]'s AVX
    /// branch, so every intrinsic below runs on a CPU with AVX.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx8(__m256);

    // SAFETY (every block below): AVX is present (see the type's comment); the slices have
    // eight entries.
    impl Lanes8 for Avx8 {
        #[inline(always)]
        fn splat(v: f32) -> Self {
            Avx8(unsafe { _mm256_set1_ps(v) })
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            Avx8(unsafe { _mm256_loadu_ps(eight(s).as_ptr()) })
        }
        #[inline(always)]
        fn store(self, s: &mut [f32]) {
            unsafe { _mm256_storeu_ps(eight_mut(s).as_mut_ptr(), self.0) }
        }
    }

    lane_ops!(Avx8:
        Add add |a: Avx8, b: Avx8| Avx8(unsafe { _mm256_add_ps(a.0, b.0) }),
        Sub sub |a: Avx8, b: Avx8| Avx8(unsafe { _mm256_sub_ps(a.0, b.0) }),
        Mul mul |a: Avx8, b: Avx8| Avx8(unsafe { _mm256_mul_ps(a.0, b.0) })
    );
}

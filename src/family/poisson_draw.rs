//! Exact Poisson draws from the counter-based RNG (docs/theory.md, "Sampling Poisson
//! labels"): inversion of the CDF for λ < 10, and Hörmann's transformed rejection with squeeze
//! (PTRS, Hörmann 1993, as in NumPy) for λ ≥ 10, with the log-pmf evaluated without
//! cancellation by Loader's saddle-point form.
//!
//! The algorithm is written once, generically over the float type, and mirrored line by line
//! in `shaders/family.wgsl`. Both engines run it in f32 for λ ≤ [`F32_MAX_RATE`], from the
//! same Philox words, so they draw the same labels from the same f32 rate (the only possible
//! differences are draws within a few f32 ulps of an acceptance boundary, where the GPU's
//! `exp`/`log` may round differently from the host's). The CPU engine runs it in f64 above
//! that rate, where the GPU engine refuses.
//!
//! Words: output `a`'s k-th Philox block is at counter (input, sample, a, STREAM_LABELS +
//! 256·k) ([`crate::rng::poisson_block`]); inversion uses word 0 of block 0, PTRS attempt i
//! uses words 2(i mod 2) and 2(i mod 2)+1 of block i/2.

use crate::rng;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// The largest rate the f32 sampler (and so the GPU engine) accepts: 2²⁰, h ≤ 13.86.
pub const F32_MAX_RATE: f64 = 1_048_576.0;
/// Rates below this use inversion, at and above it PTRS.
pub const INVERSION_MAX_RATE: f32 = 10.0;
/// PTRS attempts before giving up (each succeeds with probability > 0.85, so 64 failures
/// have probability < 1e-50); the mode ⌊λ⌋ is returned then.
pub const MAX_ATTEMPTS: u32 = 64;

/// The float operations the sampler needs (f32 mirrors the WGSL kernel; f64 extends the CPU
/// engine's range).
pub trait Real:
    Copy
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// A constant, written as an f32 literal so that both types (and WGSL) start from the
    /// same number.
    fn k(v: f32) -> Self;
    /// From a non-negative integer count.
    fn count(n: u32) -> Self;
    /// exp.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Floor.
    fn floor(self) -> Self;
    /// |x|.
    fn abs(self) -> Self;
    /// The uniform in (0, 1) of a Philox word ([`rng::uniform`], exact in both types).
    fn uniform(w: u32) -> Self;
    /// As f64.
    fn to_f64(self) -> f64;
    /// ln(k!) for k < 10 (f32: the WGSL's literal table; f64: exact to rounding).
    fn ln_fact_small(k: u32) -> Self;
    /// 2π and ½ ln 2π (f32: the WGSL's literals).
    fn two_pi() -> (Self, Self);
}

macro_rules! real {
    ($t:ty, $ln_fact:expr, $two_pi:expr) => {
        impl Real for $t {
            fn ln_fact_small(k: u32) -> Self {
                $ln_fact(k)
            }
            fn two_pi() -> (Self, Self) {
                $two_pi
            }
            fn k(v: f32) -> Self {
                v as $t
            }
            fn count(n: u32) -> Self {
                n as $t
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn uniform(w: u32) -> Self {
                rng::uniform(w) as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    };
}
real!(
    f32,
    |k: u32| LN_FACT[k as usize],
    (6.283_185_5, 0.918_938_5)
);
real!(
    f64,
    |k: u32| (2..=k).map(|i| f64::from(i).ln()).sum(),
    (
        std::f64::consts::TAU,
        0.918_938_533_204_672_8 // ½ ln 2π
    )
);

/// ln(k!) for k < 10 (the f32 literals of the WGSL table, written the same way there).
#[allow(clippy::approx_constant)]
const LN_FACT: [f32; 10] = [
    0.0,
    0.0,
    0.693_147_2,
    1.791_759_5,
    3.178_054,
    4.787_492,
    6.579_251,
    8.525_162,
    10.604_603,
    12.801_827,
];

/// Stirling's error δ(k) = ln k! − [(k + ½) ln k − k + ½ ln 2π] for k ≥ 1 (table below 10,
/// three terms of the series above).
fn stirlerr<T: Real>(k: u32) -> T {
    let n = T::count(k);
    if k < 10 {
        let (_, half_ln_2pi) = T::two_pi();
        T::ln_fact_small(k) - ((n + T::k(0.5)) * n.ln() - n + half_ln_2pi)
    } else {
        let n2 = n * n;
        (T::k(1.0) / T::k(12.0) - (T::k(1.0) / T::k(360.0) - T::k(1.0) / (T::k(1260.0) * n2)) / n2)
            / n
    }
}

/// Loader's bd0(x, m) = x ln(x/m) + m − x ≥ 0, without cancellation for x ≈ m.
fn bd0<T: Real>(x: T, m: T) -> T {
    let d = x - m;
    if d.abs() < T::k(0.1) * (x + m) {
        let v = d / (x + m);
        let mut s = d * v;
        let mut ej = T::k(2.0) * x * v;
        let v2 = v * v;
        for j in 1..64u32 {
            ej = ej * v2;
            let s1 = s + ej / T::count(2 * j + 1);
            if s1 == s {
                break;
            }
            s = s1;
        }
        s
    } else {
        x * (x / m).ln() + m - x
    }
}

/// ln P(K = k) for K ~ Poisson(λ): −λ for k = 0, else −½ ln(2πk) − δ(k) − bd0(k, λ).
pub fn log_pmf<T: Real>(k: u32, lam: T) -> T {
    if k == 0 {
        return -lam;
    }
    let n = T::count(k);
    let (two_pi, _) = T::two_pi();
    -T::k(0.5) * (two_pi * n).ln() - stirlerr::<T>(k) - bd0(n, lam)
}

/// One Poisson(λ) draw of output `a` of (input, sample); λ ≥ 0 finite.
pub fn draw<T: Real>(lam: T, seed: u64, input: u32, sample: u32, a: u32) -> u32 {
    if lam < T::k(INVERSION_MAX_RATE) {
        let u = T::uniform(rng::poisson_block(seed, input, sample, a, 0)[0]);
        let mut k = 0u32;
        let mut p = (-lam).exp();
        let mut f = p;
        // Stop in the far tail (k > λ and P(k) < 1e-9), where the rest of the mass is below
        // the uniform's resolution: f32 sums stall short of 1.
        while u > f && (T::count(k) <= lam || p > T::k(1e-9)) {
            k += 1;
            p = p * lam / T::count(k);
            f = f + p;
        }
        return k;
    }
    let slam = lam.sqrt();
    let b = T::k(0.931) + T::k(2.53) * slam;
    let a_ = T::k(-0.059) + T::k(0.024_83) * b;
    let inv_alpha = T::k(1.123_9) + T::k(1.132_8) / (b - T::k(3.4));
    let vr = T::k(0.927_7) - T::k(3.622_4) / (b - T::k(2.0));
    // λ = L + f with L integral (exact), so that k = L + ⌊g + f + 0.43⌋ keeps the proposal's
    // rounding at the scale of g (≈ √λ), not of λ.
    let whole = lam.floor();
    let frac = lam - whole;
    for i in 0..MAX_ATTEMPTS {
        let w = rng::poisson_block(seed, input, sample, a, i / 2);
        let q = 2 * (i % 2) as usize;
        let u = T::uniform(w[q]) - T::k(0.5);
        let v = T::uniform(w[q + 1]);
        let us = T::k(0.5) - u.abs();
        let g = ((T::k(2.0) * a_ / us + b) * u + frac + T::k(0.43)).floor();
        let kf = whole + g;
        if us >= T::k(0.07) && v <= vr {
            return kf.to_f64() as u32;
        }
        if kf < T::k(0.0) || (us < T::k(0.013) && v > us) {
            continue;
        }
        // Proposals beyond u32 have pmf 0 in any precision.
        if kf.to_f64() > u32::MAX as f64 {
            continue;
        }
        let k = kf.to_f64() as u32;
        if v.ln() + inv_alpha.ln() - (a_ / (us * us) + b).ln() <= log_pmf(k, lam) {
            return k;
        }
    }
    whole.to_f64() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ln P(k) by the direct sum, in f64.
    fn log_pmf_direct(k: u32, lam: f64) -> f64 {
        -lam + f64::from(k) * lam.ln() - (1..=k).map(|i| f64::from(i).ln()).sum::<f64>()
    }

    #[test]
    fn log_pmf_matches_the_direct_formula() {
        for lam in [0.3, 10.0, 47.5, 1e3, 2e5] {
            let mode = lam as u32;
            for k in [
                0,
                1,
                5,
                9,
                10,
                11,
                mode.saturating_sub(3),
                mode,
                mode + 7,
                2 * mode + 1,
            ] {
                let want = log_pmf_direct(k, lam);
                let got = log_pmf::<f64>(k, lam);
                // Stirling's series to 1/(1260 n⁵) is ≈ 1e-9 accurate at n = 10.
                assert!(
                    (got - want).abs() < 1e-8 * (1.0 + want.abs()),
                    "λ {lam} k {k}: {got} vs {want}"
                );
                let got32 = f64::from(log_pmf::<f32>(k, lam as f32));
                assert!(
                    (got32 - want).abs() < 2e-4 * (1.0 + want.abs()),
                    "f32 λ {lam} k {k}"
                );
            }
        }
    }

    /// The draws follow Poisson(λ): a χ² test on the cells with expected count ≥ 20 (at a
    /// 1e-6 false-alarm level), for both float types, across inversion and PTRS.
    #[test]
    fn draws_follow_the_poisson_distribution() {
        let n = 40_000u32;
        for lam in [0.05, 1.3, 9.9, 10.0, 23.0, 310.0, 7.5e4, 3e6] {
            for f32_path in [true, false] {
                if f32_path && lam > F32_MAX_RATE {
                    continue;
                }
                let draws: Vec<u32> = (0..n)
                    .map(|i| {
                        if f32_path {
                            draw(lam as f32, 99, i, 7, 3)
                        } else {
                            draw(lam, 99, i, 7, 3)
                        }
                    })
                    .collect();
                let mean = draws.iter().map(|&k| f64::from(k)).sum::<f64>() / f64::from(n);
                let var = draws
                    .iter()
                    .map(|&k| (f64::from(k) - mean).powi(2))
                    .sum::<f64>()
                    / f64::from(n - 1);
                let se = (lam / f64::from(n)).sqrt();
                assert!(
                    (mean - lam).abs() < 5.0 * se,
                    "λ {lam} f32 {f32_path}: mean {mean}"
                );
                assert!((var / lam - 1.0).abs() < 0.05, "λ {lam}: var {var}");
                // χ² over cells around the mean, merging the tails.
                let width = (lam.sqrt() / 4.0).max(1.0).floor() as u32;
                let lo = (lam - 4.0 * lam.sqrt()).max(0.0) as u32;
                let hi = (lam + 4.0 * lam.sqrt()) as u32 + 1;
                let mut chi2 = 0.0;
                let mut dof = 0;
                let mut k0 = lo;
                while k0 < hi {
                    let k1 = (k0 + width).min(hi);
                    // log_pmf::<f64> is checked against the direct sum above.
                    let p: f64 = (k0..k1).map(|k| log_pmf::<f64>(k, lam).exp()).sum();
                    let e = p * f64::from(n);
                    if e >= 20.0 {
                        let o = draws.iter().filter(|&&k| k >= k0 && k < k1).count() as f64;
                        chi2 += (o - e).powi(2) / e;
                        dof += 1;
                    }
                    k0 = k1;
                }
                // Wilson–Hilferty: χ²_dof exceeds dof + 7.5√(2 dof) + 25 with probability < 1e-6.
                let limit = dof as f64 + 7.5 * (2.0 * dof as f64).sqrt() + 25.0;
                assert!(
                    chi2 < limit,
                    "λ {lam} f32 {f32_path}: χ² {chi2} over {dof} cells"
                );
            }
        }
    }

    /// The f32 and f64 samplers draw the same count from the same words except near an
    /// acceptance boundary (rare), and a draw depends only on its coordinates.
    #[test]
    fn draws_are_pure_functions_of_their_coordinates() {
        let mut same = 0;
        for i in 0..2000u32 {
            let lam = 0.5 + f64::from(i % 50) * 7.3;
            let a = draw(lam as f32, 5, i, 1, 2);
            assert_eq!(a, draw(lam as f32, 5, i, 1, 2));
            same += usize::from(a == draw(f64::from(lam as f32), 5, i, 1, 2));
        }
        assert!(same >= 1990, "f32 and f64 agree on {same}/2000 draws");
    }
}

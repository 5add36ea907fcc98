//! Closed forms of the case studies: Prop. 5.1 (isotropic Gaussian) and Thm 5.2
//! (categorical) (MATH §5.8).

/// Prop. 5.1: the spectral quantities of the Gaussian family with variance σ².
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianSpectrum {
    /// λ_min(C) = λ_max(C) = 1/σ².
    pub lam_c: f64,
    /// λ_min(K − C⊗C) = λ_max(K − C⊗C) = 2/σ⁴.
    pub lam_excess: f64,
    /// λ_min(K) = λ_max(K) = 3/σ⁴.
    pub lam_k: f64,
    /// λ_max(M) = 2/σ⁴ (M = (I + swap)/σ⁴).
    pub lam_max_m: f64,
}

/// Prop. 5.1.
pub fn gaussian(sigma2: f64) -> GaussianSpectrum {
    let s4 = sigma2 * sigma2;
    GaussianSpectrum {
        lam_c: 1.0 / sigma2,
        lam_excess: 2.0 / s4,
        lam_k: 3.0 / s4,
        lam_max_m: 2.0 / s4,
    }
}

/// Thm 5.2: ρ(p) = min{ p_max, 1 − ‖p‖² }, with λ_max(C) ≤ ρ(p) and
/// λ_max(K − C⊗C) ≤ λ_max(K) ≤ 2 λ_max(C) ≤ 2ρ(p).
pub fn rho(p: &[f64]) -> f64 {
    let pmax = p.iter().copied().fold(0.0, f64::max);
    let s2: f64 = p.iter().map(|v| v * v).sum();
    pmax.min(1.0 - s2)
}

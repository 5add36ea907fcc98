//! Closed forms of the case studies: Prop. 5.1 (isotropic Gaussian) and Thm 5.2
//! (categorical) (MATH §5.8), and their parallels for the families with independent outputs
//! (Bernoulli, Poisson; docs/theory.md).

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

/// The spectral quantities of a family with independent outputs (Bernoulli, Poisson) from its
/// per-coordinate moments (docs/theory.md, "Families with independent outputs"). With
/// x = u∘u on the simplex, `K[u⁴] = Σ κ4_a x_a² + 3(cᵀx)²` and
/// `(K − C⊗C)[u⁴] = Σ κ4_a x_a² + 2(cᵀx)²`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndependentSpectrum {
    /// λ_max(C) = max c_a.
    pub lam_max_c: f64,
    /// λ_min(C) = min c_a.
    pub lam_min_c: f64,
    /// `max_a E[s_a⁴]`: λ_max(K) when `convex`, a lower estimate otherwise (u = e_a).
    pub vertex_k: f64,
    /// max_a Var(s_a²): λ_max(K − C⊗C) when `convex`, a lower estimate otherwise.
    pub vertex_v: f64,
    /// Whether every κ4_a ≥ 0 (always for the Poisson family; for the Bernoulli family when
    /// every p_a(1−p_a) ≤ 1/6): both quartic forms are then convex in x, so their maxima over
    /// the simplex sit at a vertex and `vertex_k`, `vertex_v` are exact.
    pub convex: bool,
    /// A certified lower bound on λ_min(K − C⊗C): the larger of 1/Σ_a(1/Var(s_a²)) and, when
    /// `convex`, 1/Σ_a(1/κ4_a) + 2 min_a c_a² (exact when all coordinates are equal).
    pub lam_min_v: f64,
    /// A certified lower bound on λ_min(K): `lam_min_v` + λ_min(C)².
    pub lam_min_k: f64,
    /// λ_max(M) = max(max_a Var(s_a²), 2 c₍₁₎c₍₂₎) (M's block structure), an upper bound on
    /// λ_max(K − C⊗C).
    pub lam_max_m: f64,
}

/// 1/Σ(1/w) = min of Σ w_a x_a² over the simplex (0 if some w_a = 0).
fn harmonic(w: impl Iterator<Item = f64>) -> f64 {
    let mut s = 0.0;
    for w in w {
        if w <= 0.0 {
            return 0.0;
        }
        s += 1.0 / w;
    }
    if s > 0.0 {
        1.0 / s
    } else {
        0.0
    }
}

/// The closed forms of a family with independent outputs.
pub fn independent(ks: &[crate::family::independent::Coord]) -> IndependentSpectrum {
    let fmax = |f: &dyn Fn(&crate::family::independent::Coord) -> f64| {
        ks.iter().map(f).fold(0.0, f64::max)
    };
    let lam_max_c = fmax(&|k| k.c);
    let lam_min_c = ks.iter().map(|k| k.c).fold(f64::INFINITY, f64::min);
    let lam_min_c = if lam_min_c.is_finite() {
        lam_min_c
    } else {
        0.0
    };
    let convex = ks.iter().all(|k| k.kappa4 >= 0.0);
    let mut lam_min_v = harmonic(ks.iter().map(|k| k.var_s2));
    if convex {
        lam_min_v = lam_min_v.max(harmonic(ks.iter().map(|k| k.kappa4)) + 2.0 * lam_min_c.powi(2));
    }
    let (mut c1, mut c2) = (0.0_f64, 0.0_f64);
    for k in ks {
        if k.c > c1 {
            c2 = c1;
            c1 = k.c;
        } else if k.c > c2 {
            c2 = k.c;
        }
    }
    let vertex_v = fmax(&|k| k.var_s2);
    IndependentSpectrum {
        lam_max_c,
        lam_min_c,
        vertex_k: fmax(&|k| k.mu4()),
        vertex_v,
        convex,
        lam_min_v,
        lam_min_k: lam_min_v + lam_min_c * lam_min_c,
        lam_max_m: vertex_v.max(2.0 * c1 * c2),
    }
}

//! The spectral quantities of one input (MATH §5, §7, §9a): eigenvalues of C, extreme
//! Z-eigenvalues of K and of sym(K − C⊗C), the spectrum of M, and the closed forms. They
//! depend on the input only through η, and they give the per-input scalars of the bound
//! channels ([`crate::engine::channels::InputScalar`]).

use super::closed;
use super::eigen::sym_eigen;
use super::moments::{Moments, Runs};
use super::secular;
use super::zeig::{extreme_z_eigenvalue, standard_starts, ExcessMoment, FourthMoment, GeapOptions};
use crate::family::{ExpFamily, FamilyKind};
use crate::Result;

/// Number of random starts of the tensor power method (in addition to the structured ones).
pub const RANDOM_STARTS: usize = 4;
/// Pairs (e_a − e_b)/√2 are started for the this many most probable classes.
pub const PAIR_TOP: usize = 4;

/// Spectral quantities of one input. Lower-bound eigenvalues are ≥ 0 (MATH §9a).
#[derive(Clone, Debug, PartialEq)]
pub struct Spectrum {
    /// The family (and σ² for the Gaussian).
    pub kind: FamilyKind,
    /// Eigenvalues of C, descending, clamped at 0 (categorical: the smallest is exactly 0).
    /// With [`Spectrum::extremes`] = Some(r) (categorical), only the max(r, 3) largest and
    /// max(r, 2) smallest: the others are NaN (not computed).
    pub eig_c: Vec<f64>,
    /// λ_max(C).
    pub lam_max_c: f64,
    /// λ_min(C): 0 for the categorical family (C·1 = 0), 1/σ² for the Gaussian.
    pub lam_min_c: f64,
    /// λ_min of C on 1⊥ (categorical: the second-smallest eigenvalue; MATH §9a).
    pub lam_min_c_perp: f64,
    /// tr(C).
    pub trace_c: f64,
    /// Extreme Z-eigenvalues of K: max by GEAP (categorical) or closed form; min is 0
    /// (categorical, u ∝ 1) or 3/σ⁴.
    pub lam_max_k: f64,
    /// Minimum Z-eigenvalue of K (see `lam_max_k`).
    pub lam_min_k: f64,
    /// Extreme Z-eigenvalues of sym(K − C⊗C): max by GEAP (categorical) or 2/σ⁴; min is 0
    /// (categorical) or 2/σ⁴.
    pub lam_max_v: f64,
    /// Minimum Z-eigenvalue of sym(K − C⊗C) (see `lam_max_v`).
    pub lam_min_v: f64,
    /// Whether `lam_max_k` / `lam_max_v` are exact (closed form) rather than GEAP estimates.
    pub exact_max: bool,
    /// Positive eigenvalues of M = Cov(s⊗s) (O²×O²), descending. With [`Spectrum::extremes`]
    /// = Some(r) (categorical), the max(r, 1) largest, then a run of NaN (not computed).
    pub eig_m: Runs,
    /// λ_max(M): a certified upper bound on λ_max(K − C⊗C) \[X\].
    pub lam_max_m: f64,
    /// tr(M).
    pub trace_m: f64,
    /// B² = sup_y ‖t(y) − η‖² (Prop. 4.3); None if unbounded (Gaussian).
    pub stat_bound2: Option<f64>,
    /// ρ(p) of Thm 5.2 (categorical only).
    pub rho: Option<f64>,
    /// Some(r): the categorical `eig_c` and `eig_m` hold only their r extreme values (the
    /// others are NaN), which is what the per-tensor trace bounds of layers with at most r
    /// units need (Thm C.1 pairs the eigenvalues of C and M with those of Gram matrices of
    /// rank ≤ r; [`crate::theory::input_theory`]). None: every eigenvalue (also what
    /// [`Spectrum::with_extremes`] gives when O is small next to r).
    pub extremes: Option<usize>,
}

impl Spectrum {
    /// The spectral quantities at an input whose mean parameter is `eta`.
    pub fn new(family: &dyn ExpFamily, eta: &[f64]) -> Result<Spectrum> {
        Spectrum::with_options(family, eta, &GeapOptions::default())
    }

    /// As [`Spectrum::new`], with only the `extremes` extreme eigenvalues of C and M where
    /// that is cheaper (categorical; [`Spectrum::extremes`]). r = 0: no per-tensor bounds
    /// will be computed, only the scalars (λ_max, λ_min on 1⊥, traces).
    pub fn with_extremes(family: &dyn ExpFamily, eta: &[f64], extremes: usize) -> Result<Spectrum> {
        Spectrum::build(family, eta, &GeapOptions::default(), false, Some(extremes))
    }

    /// As [`Spectrum::new`], with the GEAP options of the Z-eigenvalue searches.
    pub fn with_options(
        family: &dyn ExpFamily,
        eta: &[f64],
        opts: &GeapOptions,
    ) -> Result<Spectrum> {
        Spectrum::build(family, eta, opts, false, None)
    }

    /// The previous solver, kept as the reference of the tests: the eigenvalues and
    /// eigenvectors of C and the spectrum of M by dense O×O eigensolves (O(O³)), and GEAP with
    /// the adaptive shift (an O×O eigenproblem per shift), whatever `opts.fixed_shift` says.
    pub fn reference(family: &dyn ExpFamily, eta: &[f64], opts: &GeapOptions) -> Result<Spectrum> {
        let opts = GeapOptions {
            fixed_shift: false,
            ..*opts
        };
        Spectrum::build(family, eta, &opts, true, None)
    }

    fn build(
        family: &dyn ExpFamily,
        eta: &[f64],
        opts: &GeapOptions,
        dense: bool,
        extremes: Option<usize>,
    ) -> Result<Spectrum> {
        let m = Moments::new(family, eta);
        let o = m.dim();
        let eig_m = if dense {
            m.m_spectrum_dense()?
        } else {
            m.m_spectrum_extremes(extremes)?
        };
        let trace_m = m.m_trace();
        let trace_c = m.cov_trace();
        let stat_bound2 = m.stat_bound2();
        match m.kind {
            FamilyKind::Gaussian { sigma2 } => {
                let g = closed::gaussian(sigma2);
                Ok(Spectrum {
                    kind: m.kind,
                    eig_c: vec![g.lam_c; o],
                    lam_max_c: g.lam_c,
                    lam_min_c: g.lam_c,
                    lam_min_c_perp: g.lam_c,
                    trace_c,
                    lam_max_k: g.lam_k,
                    lam_min_k: g.lam_k,
                    lam_max_v: g.lam_excess,
                    lam_min_v: g.lam_excess,
                    exact_max: true,
                    lam_max_m: g.lam_max_m,
                    eig_m,
                    trace_m,
                    stat_bound2,
                    rho: None,
                    extremes: None,
                })
            }
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                let ks = m.coords();
                let cf = closed::independent(&ks);
                let mut eig_c: Vec<f64> = ks.iter().map(|k| k.c).collect();
                eig_c.sort_by(|a, b| b.total_cmp(a));
                let (lam_max_k, lam_max_v) = if cf.convex {
                    (cf.vertex_k, cf.vertex_v)
                } else {
                    // Bernoulli with some p_a(1−p_a) > 1/6: the power method from the vertices,
                    // pairs and random starts, capped by the certified bounds.
                    let weights: Vec<f64> = ks.iter().map(|k| k.c).collect();
                    let starts = standard_starts(o, Some(&weights), PAIR_TOP, &[], RANDOM_STARTS);
                    let k = extreme_z_eigenvalue(&FourthMoment(m), &starts, true, opts)?;
                    let v = extreme_z_eigenvalue(&ExcessMoment::new(m), &starts, true, opts)?;
                    let b2 = stat_bound2.unwrap_or(f64::INFINITY);
                    let cap_k = (b2 * cf.lam_max_c).min(cf.lam_max_m + cf.lam_max_c.powi(2));
                    (
                        k.value.max(cf.vertex_k).min(cap_k),
                        v.value.max(cf.vertex_v).min(cf.lam_max_m),
                    )
                };
                Ok(Spectrum {
                    kind: m.kind,
                    eig_c,
                    lam_max_c: cf.lam_max_c,
                    lam_min_c: cf.lam_min_c,
                    lam_min_c_perp: cf.lam_min_c,
                    trace_c,
                    lam_max_k,
                    lam_min_k: cf.lam_min_k,
                    lam_max_v,
                    lam_min_v: cf.lam_min_v,
                    exact_max: cf.convex,
                    eig_m,
                    lam_max_m: cf.lam_max_m,
                    trace_m,
                    stat_bound2,
                    rho: None,
                    extremes: None,
                })
            }
            FamilyKind::Categorical => {
                let (eig_c, vecs) = if dense {
                    let (mut eig_c, vecs) = sym_eigen(o, &m.cov_matrix())?;
                    eig_c.iter_mut().for_each(|v| *v = v.max(0.0));
                    // §9a: C·1 = 0 exactly; do not trust a computed ±1e-17.
                    if let Some(last) = eig_c.last_mut() {
                        *last = 0.0;
                    }
                    (eig_c, vecs)
                } else {
                    // The secular equation of diag(p) − p pᵀ: O(O²), with the eigenvectors of
                    // the three largest eigenvalues (the GEAP starts).
                    secular::categorical_cov(eta, 3, extremes)
                };
                let lam_max_c = eig_c[0];
                let lam_min_c_perp = if o >= 2 { eig_c[o - 2] } else { 0.0 };
                let starts = standard_starts(
                    o,
                    Some(eta),
                    PAIR_TOP,
                    &vecs[..vecs.len().min(3)],
                    RANDOM_STARTS,
                );
                let k = extreme_z_eigenvalue(&FourthMoment(m), &starts, true, opts)?;
                let v = extreme_z_eigenvalue(&ExcessMoment::new(m), &starts, true, opts)?;
                let lam_max_m = eig_m.max();
                let b2 = stat_bound2.unwrap_or(f64::INFINITY);
                let partial =
                    eig_c.iter().any(|v| v.is_nan()) || eig_m.0.iter().any(|r| r.0.is_nan());
                Ok(Spectrum {
                    kind: m.kind,
                    lam_max_c,
                    lam_min_c: 0.0,
                    lam_min_c_perp,
                    trace_c,
                    // Certified caps: λ_max(K) ≤ B² λ_max(C) (Prop. 4.3), λ_max(K−C⊗C) ≤ λ_max(M).
                    lam_max_k: k.value.max(0.0).min(b2 * lam_max_c),
                    lam_min_k: 0.0,
                    lam_max_v: v.value.max(0.0).min(lam_max_m),
                    lam_min_v: 0.0,
                    exact_max: false,
                    eig_c,
                    eig_m,
                    lam_max_m,
                    trace_m,
                    stat_bound2,
                    rho: Some(closed::rho(eta)),
                    extremes: extremes.filter(|_| partial),
                })
            }
        }
    }
}

/// The spectra of many inputs (one η each), in parallel: for engines that compute the
/// per-input scalars on the host after reading back the outputs.
pub fn spectra(family: &dyn ExpFamily, etas: &[Vec<f64>]) -> Result<Vec<Spectrum>> {
    use rayon::prelude::*;
    etas.par_iter()
        .map(|eta| Spectrum::new(family, eta))
        .collect()
}

//! Empirical Fisher and DFIM moments (MATH §5.10, Sec. 6 and App. F of the paper): for a label
//! distribution q(y|x) that need not be the model's, the non-central moments
//! M2 = E_q[(t − η)(t − η)ᵀ] and M4 = E_q[(t − η)^{⊗4}] around the model's η, the DFIM
//! diagonal Ĩ = M2[J_i, J_i] (Eq. 21), the variance of the empirical Fisher
//! `N·Var Î_e = (M4 − M2⊗M2)[J_i⁴]` (Cor. F.1) and its covariances (Lemma 6.1, Eq. 22).

use super::eigen::dot;
use crate::family::{ExpFamily, Label};
use crate::{Error, Result};

/// A discrete label distribution q(y|x) seen through the residuals r_y = t(y) − η.
#[derive(Clone, Debug)]
pub struct DataMoments {
    weights: Vec<f64>,
    residuals: Vec<Vec<f64>>,
}

impl DataMoments {
    /// From labels with probabilities `q` (≥ 0, summing to 1) at an input with output `h`.
    pub fn new(family: &dyn ExpFamily, h: &[f64], q: &[(f64, Label)]) -> Result<DataMoments> {
        if q.is_empty() {
            return Err(Error::Input(
                "the label distribution q(y|x) needs at least one label".into(),
            ));
        }
        let total: f64 = q.iter().map(|(w, _)| w).sum();
        if q.iter().any(|(w, _)| !(w.is_finite() && *w >= 0.0)) || (total - 1.0).abs() > 1e-9 {
            return Err(Error::Input(format!(
                "label probabilities must be finite, ≥ 0 and sum to 1 (they sum to {total})"
            )));
        }
        let eta = family.eta(h);
        let mut residuals = Vec::with_capacity(q.len());
        for (_, y) in q {
            let mut r = vec![0.0; h.len()];
            family.residual(h, &eta, y, &mut r)?;
            residuals.push(r);
        }
        Ok(DataMoments {
            weights: q.iter().map(|(w, _)| *w).collect(),
            residuals,
        })
    }

    /// M2 (O×O, row-major).
    pub fn m2(&self) -> Vec<f64> {
        let o = self.residuals[0].len();
        let mut m = vec![0.0; o * o];
        for (w, r) in self.weights.iter().zip(&self.residuals) {
            for a in 0..o {
                for b in 0..o {
                    m[a * o + b] += w * r[a] * r[b];
                }
            }
        }
        m
    }

    /// The DFIM entry Ĩ(u, v) = uᵀ M2 v (Eq. 21 with u = v = J_i).
    pub fn dfim(&self, u: &[f64], v: &[f64]) -> f64 {
        self.weights
            .iter()
            .zip(&self.residuals)
            .map(|(w, r)| w * dot(u, r) * dot(v, r))
            .sum()
    }

    /// M4[u, u, v, v] = E_q[(uᵀr)² (vᵀr)²].
    pub fn m4(&self, u: &[f64], v: &[f64]) -> f64 {
        self.weights
            .iter()
            .zip(&self.residuals)
            .map(|(w, r)| w * (dot(u, r) * dot(v, r)).powi(2))
            .sum()
    }

    /// `N·Cov(Î_e(u), Î_e(v)) = M4[u,u,v,v] − Ĩ(u,u) Ĩ(v,v)` (Lemma 6.1, Eq. 22).
    pub fn ef_cov(&self, u: &[f64], v: &[f64]) -> f64 {
        let (iu, iv) = (self.dfim(u, u), self.dfim(v, v));
        self.weights
            .iter()
            .zip(&self.residuals)
            .map(|(w, r)| w * (dot(u, r).powi(2) - iu) * (dot(v, r).powi(2) - iv))
            .sum()
    }

    /// `N·Var Î_e(u) = (M4 − M2⊗M2)[u⁴]` (Cor. F.1), centred before squaring.
    pub fn ef_var(&self, u: &[f64]) -> f64 {
        self.ef_cov(u, u)
    }

    /// The KL gradient direction `g = uᵀ(η − η_q) = −E_q[uᵀr]`, so that Ĩ(u,u) = uᵀ Cov_q u + g²
    /// (MATH §5.10: Ĩ = J Cov_q Jᵀ + g gᵀ with g = ∇_θ KL(q‖p_θ)).
    pub fn kl_gradient(&self, u: &[f64]) -> f64 {
        -self
            .weights
            .iter()
            .zip(&self.residuals)
            .map(|(w, r)| w * dot(u, r))
            .sum::<f64>()
    }
}

/// Gaussian family with data q = N(μ_q, s_q² I), d = μ_q − h (MATH §5.10):
/// `Ĩ(u) = ((uᵀd)² + s_q²‖u‖²)/σ⁴` and `N·Var Î_e(u) = M4[u⁴] − Ĩ²` with
/// `M4[u⁴] = (m⁴ + 6m²v + 3v²)/σ⁸`, m = uᵀd, v = s_q²‖u‖², so N·Var Î_e = (4m²v + 2v²)/σ⁸.
/// Returns (Ĩ, N·Var Î_e).
pub fn gaussian_ef(u: &[f64], d: &[f64], s_q2: f64, sigma2: f64) -> (f64, f64) {
    let m = dot(u, d);
    let v = s_q2 * dot(u, u);
    let s4 = sigma2 * sigma2;
    let i = (m * m + v) / s4;
    (i, (4.0 * m * m * v + 2.0 * v * v) / (s4 * s4))
}

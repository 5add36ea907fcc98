//! Exponential families p(y|x,θ) = π(y)·exp(t(y)ᵀh − F(h)) with the network output h as
//! natural parameter (MATH §1–§2). Every contraction of C, K and K − C⊗C with a vector
//! costs O(O): no O⁴ tensor is ever built.

mod bernoulli;
mod categorical;
mod gaussian;
pub mod independent;
mod poisson;
pub mod poisson_draw;

pub use bernoulli::Bernoulli;
pub use categorical::Categorical;
pub use gaussian::Gaussian;
pub use poisson::{check_log_rates, max_log_rate_f32, Poisson, MAX_LOG_RATE};

use crate::{Error, Result};
use std::fmt;

/// One label y: a class index (categorical) or a vector of O numbers (Gaussian targets,
/// Bernoulli 0/1 indicators, Poisson counts).
#[derive(Clone, Debug, PartialEq)]
pub enum Label {
    /// A class index in 0..O (categorical).
    Class(usize),
    /// A vector of length O: real targets (Gaussian), 0/1 indicators (Bernoulli) or
    /// non-negative whole counts (Poisson).
    Target(Vec<f64>),
}

/// Which concrete family a trait object is (the GPU engine compiles a kernel per family).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FamilyKind {
    /// Softmax over the logits h.
    Categorical,
    /// Isotropic Gaussian N(h, σ²I).
    Gaussian {
        /// The fixed noise variance σ².
        sigma2: f64,
    },
    /// O independent Bernoulli outputs (multi-label), η = σ(h).
    Bernoulli,
    /// O independent Poisson counts, η = λ = exp(h).
    Poisson,
}

impl FamilyKind {
    /// The family's name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FamilyKind::Categorical => "categorical",
            FamilyKind::Gaussian { .. } => "gaussian",
            FamilyKind::Bernoulli => "bernoulli",
            FamilyKind::Poisson => "poisson",
        }
    }

    /// The per-coordinate moments of the families with independent outputs (None for the
    /// categorical and Gaussian families).
    pub fn coord(self) -> Option<fn(f64) -> independent::Coord> {
        match self {
            FamilyKind::Bernoulli => Some(independent::Coord::bernoulli),
            FamilyKind::Poisson => Some(independent::Coord::poisson),
            FamilyKind::Categorical | FamilyKind::Gaussian { .. } => None,
        }
    }
}

/// The interface the engines and the theory layer need from an output family.
///
/// `eta` is η = ∇F(h) = E[t(y)]; all moments are of the centred statistic s = t(y) − η.
///
/// The trait is sealed: the GPU engine compiles a kernel per family, so only the families of
/// this crate ([`Family`]) implement it.
pub trait ExpFamily: sealed::Sealed + Send + Sync + fmt::Debug {
    /// Short name, as on the command line.
    fn name(&self) -> &'static str;
    /// The concrete family, for engines that specialise on it.
    fn kind(&self) -> FamilyKind;
    /// Checks that the family fits a model with `outputs` outputs.
    fn check_outputs(&self, outputs: usize) -> Result<()>;
    /// Checks one input's output h before η is formed (the Poisson family refuses log-rates
    /// whose moments would overflow); the default accepts every finite h.
    fn check_output(&self, _h: &[f64]) -> Result<()> {
        Ok(())
    }
    /// η = ∂F/∂h (MATH §2).
    fn eta(&self, h: &[f64]) -> Vec<f64>;
    /// C·u, with C = Cov(t) = ∇²F(h).
    fn cov_apply(&self, eta: &[f64], u: &[f64]) -> Vec<f64>;
    /// `C[u,u] = E[(uᵀs)²]`.
    fn cov_quad(&self, eta: &[f64], u: &[f64]) -> f64;
    /// [`ExpFamily::cov_quad`] of every row of `rows` (row-major, `eta.len()` columns), into
    /// `out` (one value per row): the same values as one call per row. Families may override
    /// it to work on several rows at once.
    fn cov_quad_rows(&self, eta: &[f64], rows: &[f64], out: &mut [f64]) {
        for (q, u) in out.iter_mut().zip(rows.chunks_exact(eta.len().max(1))) {
            *q = self.cov_quad(eta, u);
        }
    }
    /// `K[u⁴] = E[(uᵀs)⁴]`.
    fn kurt_quad(&self, eta: &[f64], u: &[f64]) -> f64;
    /// `(K − C⊗C)[u⁴] = Var[(uᵀs)²] ≥ 0`, computed without cancellation.
    fn kurt_excess_quad(&self, eta: &[f64], u: &[f64]) -> f64;
    /// Third central moment contraction E[(uᵀs)²(vᵀs)].
    fn third_central(&self, eta: &[f64], u: &[f64], v: &[f64]) -> f64;
    /// `C[e_j, e_j]`, [`ExpFamily::cov_quad`] at the unit vector e_j (a head unit: its Δ row
    /// is e_j). The default forms e_j; families override it with a closed form.
    fn cov_diag(&self, eta: &[f64], j: usize) -> f64 {
        let mut u = vec![0.0; eta.len()];
        u[j] = 1.0;
        self.cov_quad(eta, &u)
    }
    /// `(K − C⊗C)[e_j⁴]`, [`ExpFamily::kurt_excess_quad`] at e_j (see
    /// [`ExpFamily::cov_diag`]).
    fn kurt_excess_diag(&self, eta: &[f64], j: usize) -> f64 {
        let mut u = vec![0.0; eta.len()];
        u[j] = 1.0;
        self.kurt_excess_quad(eta, &u)
    }
    /// log p(y|h), including the base measure.
    fn log_lik(&self, h: &[f64], y: &Label) -> Result<f64>;
    /// Residual r = t(y) − η of a given label, written to `r`.
    fn residual(&self, h: &[f64], eta: &[f64], y: &Label, r: &mut [f64]) -> Result<()>;
    /// Draws the label of (input, sample) with the counter-based RNG (`crate::rng`), writes
    /// its residual to `r` and returns the label.
    fn sample(
        &self,
        h: &[f64],
        eta: &[f64],
        seed: u64,
        input: u32,
        sample: u32,
        r: &mut [f64],
    ) -> Label;
}

mod sealed {
    /// Implemented by the crate's families only.
    pub trait Sealed {}
    impl Sealed for super::Categorical {}
    impl Sealed for super::Gaussian {}
    impl Sealed for super::Bernoulli {}
    impl Sealed for super::Poisson {}
    impl Sealed for super::Family {}
}

/// The families selectable by name (CLI, summaries). A `&Family` can be passed wherever a
/// `&dyn ExpFamily` is expected (it implements the trait by delegating to the family it
/// holds), so `as_dyn()` is optional.
#[derive(Clone, Debug, PartialEq)]
pub enum Family {
    /// Classification: softmax over the logits.
    Categorical(Categorical),
    /// Regression: isotropic Gaussian with fixed σ².
    Gaussian(Gaussian),
    /// Multi-label classification: independent sigmoids over the logits.
    Bernoulli(Bernoulli),
    /// Count regression: independent Poisson counts with log-rates h.
    Poisson(Poisson),
}

impl Family {
    /// The families' CLI names.
    pub const NAMES: [&'static str; 4] = ["categorical", "gaussian", "bernoulli", "poisson"];

    /// Builds a family from its CLI name; `sigma2` is used by the Gaussian only.
    pub fn from_name(name: &str, sigma2: f64) -> Result<Family> {
        match name.trim().to_ascii_lowercase().as_str() {
            "categorical" => Ok(Family::Categorical(Categorical)),
            "gaussian" => Ok(Family::Gaussian(Gaussian::new(sigma2)?)),
            "bernoulli" => Ok(Family::Bernoulli(Bernoulli)),
            "poisson" => Ok(Family::Poisson(Poisson)),
            other => Err(Error::Input(format!(
                "unknown family '{other}': use 'categorical' (classification, logits), \
                 'gaussian' (regression), 'bernoulli' (multi-label, logits) or 'poisson' \
                 (counts, log-rates)"
            ))),
        }
    }

    /// The family of a kind.
    pub fn from_kind(kind: FamilyKind) -> Result<Family> {
        Ok(match kind {
            FamilyKind::Categorical => Family::Categorical(Categorical),
            FamilyKind::Gaussian { sigma2 } => Family::Gaussian(Gaussian::new(sigma2)?),
            FamilyKind::Bernoulli => Family::Bernoulli(Bernoulli),
            FamilyKind::Poisson => Family::Poisson(Poisson),
        })
    }

    /// The concrete family as a trait object.
    pub fn as_dyn(&self) -> &dyn ExpFamily {
        match self {
            Family::Categorical(c) => c,
            Family::Gaussian(g) => g,
            Family::Bernoulli(b) => b,
            Family::Poisson(p) => p,
        }
    }
}

impl ExpFamily for Family {
    fn name(&self) -> &'static str {
        self.as_dyn().name()
    }
    fn kind(&self) -> FamilyKind {
        self.as_dyn().kind()
    }
    fn check_outputs(&self, outputs: usize) -> Result<()> {
        self.as_dyn().check_outputs(outputs)
    }
    fn check_output(&self, h: &[f64]) -> Result<()> {
        self.as_dyn().check_output(h)
    }
    fn eta(&self, h: &[f64]) -> Vec<f64> {
        self.as_dyn().eta(h)
    }
    fn cov_apply(&self, eta: &[f64], u: &[f64]) -> Vec<f64> {
        self.as_dyn().cov_apply(eta, u)
    }
    fn cov_quad(&self, eta: &[f64], u: &[f64]) -> f64 {
        self.as_dyn().cov_quad(eta, u)
    }
    fn cov_quad_rows(&self, eta: &[f64], rows: &[f64], out: &mut [f64]) {
        self.as_dyn().cov_quad_rows(eta, rows, out)
    }
    fn cov_diag(&self, eta: &[f64], j: usize) -> f64 {
        self.as_dyn().cov_diag(eta, j)
    }
    fn kurt_excess_diag(&self, eta: &[f64], j: usize) -> f64 {
        self.as_dyn().kurt_excess_diag(eta, j)
    }
    fn kurt_quad(&self, eta: &[f64], u: &[f64]) -> f64 {
        self.as_dyn().kurt_quad(eta, u)
    }
    fn kurt_excess_quad(&self, eta: &[f64], u: &[f64]) -> f64 {
        self.as_dyn().kurt_excess_quad(eta, u)
    }
    fn third_central(&self, eta: &[f64], u: &[f64], v: &[f64]) -> f64 {
        self.as_dyn().third_central(eta, u, v)
    }
    fn log_lik(&self, h: &[f64], y: &Label) -> Result<f64> {
        self.as_dyn().log_lik(h, y)
    }
    fn residual(&self, h: &[f64], eta: &[f64], y: &Label, r: &mut [f64]) -> Result<()> {
        self.as_dyn().residual(h, eta, y, r)
    }
    fn sample(
        &self,
        h: &[f64],
        eta: &[f64],
        seed: u64,
        input: u32,
        sample: u32,
        r: &mut [f64],
    ) -> Label {
        self.as_dyn().sample(h, eta, seed, input, sample, r)
    }
}

pub(crate) fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Input(format!(
            "{what} has {got} entries but the model has {want} outputs"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod diag_tests {
    use super::*;

    /// `cov_quad_rows` gives every row the bits of `cov_quad` (each family, row counts around
    /// the categorical family's blocks of four, rows with signed zeros and a unit vector).
    #[test]
    fn cov_quad_rows_matches_one_row_at_a_time() {
        for name in Family::NAMES {
            let family = Family::from_name(name, 0.7).unwrap();
            for o in [1, 3, 10] {
                let h: Vec<f64> = (0..o).map(|a| 0.9 * a as f64 - 1.1).collect();
                let eta = family.eta(&h);
                for n in [0, 1, 4, 7, 9] {
                    let mut rows: Vec<f64> = (0..n * o)
                        .map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0)
                        .collect();
                    if n > 1 {
                        rows[..o].fill(-0.0);
                        rows[o..2 * o].fill(0.0);
                        rows[o] = 1.0;
                    }
                    let mut got = vec![f64::NAN; n];
                    family.cov_quad_rows(&eta, &rows, &mut got);
                    for (j, (g, u)) in got.iter().zip(rows.chunks_exact(o)).enumerate() {
                        let want = family.cov_quad(&eta, u);
                        assert_eq!(g.to_bits(), want.to_bits(), "{name} O={o} n={n} row {j}");
                    }
                }
            }
        }
    }

    /// The closed forms at a unit vector agree with the general contractions at e_j, for
    /// every family and for peaked, flat and ordinary outputs (to 1e-14 of max(1, value): at a
    /// peaked softmax both lose digits to 1 − p_j ≈ 1e-4).
    #[test]
    fn unit_vector_forms_match_the_general_ones() {
        let outputs: [&[f64]; 4] = [
            &[0.3, -1.2, 2.5, 0.0, 0.7],
            &[12.0, -9.0, 0.5, 3.0, -2.0],
            &[0.0; 5],
            &[1e-3, -4.0, 4.0, 0.2, -0.2],
        ];
        for name in Family::NAMES {
            let family = Family::from_name(name, 0.7).unwrap();
            for h in outputs {
                let eta = family.eta(h);
                for j in 0..h.len() {
                    let mut u = vec![0.0; h.len()];
                    u[j] = 1.0;
                    for (got, want, what) in [
                        (family.cov_diag(&eta, j), family.cov_quad(&eta, &u), "C"),
                        (
                            family.kurt_excess_diag(&eta, j),
                            family.kurt_excess_quad(&eta, &u),
                            "K − C⊗C",
                        ),
                    ] {
                        assert!(
                            (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                            "{name} {what} at e_{j} of {h:?}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

//! Isotropic Gaussian with known variance σ²: h is the mean, t(y) = y/σ², η = h/σ²,
//! C = I/σ², K by Isserlis' theorem (MATH §2.1).

use super::{check_len, ExpFamily, Label};
use crate::{rng, Error, Result};

/// Regression with y ~ N(h, σ² I).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gaussian {
    sigma2: f64,
}

fn norm2(u: &[f64]) -> f64 {
    u.iter().map(|v| v * v).sum()
}

impl Gaussian {
    /// A Gaussian family with variance `sigma2` (finite and > 0).
    pub fn new(sigma2: f64) -> Result<Gaussian> {
        if !(sigma2.is_finite() && sigma2 > 0.0) {
            return Err(Error::Input(format!(
                "the Gaussian variance σ² must be finite and > 0, got {sigma2}"
            )));
        }
        Ok(Gaussian { sigma2 })
    }

    /// σ².
    pub fn sigma2(&self) -> f64 {
        self.sigma2
    }
}

impl ExpFamily for Gaussian {
    fn name(&self) -> &'static str {
        "gaussian"
    }

    fn kind(&self) -> super::FamilyKind {
        super::FamilyKind::Gaussian {
            sigma2: self.sigma2,
        }
    }

    fn check_outputs(&self, outputs: usize) -> Result<()> {
        if outputs == 0 {
            return Err(Error::Input("the model has no outputs".into()));
        }
        Ok(())
    }

    fn eta(&self, h: &[f64]) -> Vec<f64> {
        h.iter().map(|v| v / self.sigma2).collect()
    }

    fn cov_apply(&self, _eta: &[f64], u: &[f64]) -> Vec<f64> {
        u.iter().map(|v| v / self.sigma2).collect()
    }

    fn cov_quad(&self, _eta: &[f64], u: &[f64]) -> f64 {
        norm2(u) / self.sigma2
    }

    fn kurt_quad(&self, _eta: &[f64], u: &[f64]) -> f64 {
        3.0 * norm2(u).powi(2) / (self.sigma2 * self.sigma2)
    }

    fn kurt_excess_quad(&self, _eta: &[f64], u: &[f64]) -> f64 {
        2.0 * norm2(u).powi(2) / (self.sigma2 * self.sigma2)
    }

    fn third_central(&self, _eta: &[f64], _u: &[f64], _v: &[f64]) -> f64 {
        0.0 // odd moments of a centred Gaussian vanish
    }

    fn log_lik(&self, h: &[f64], y: &Label) -> Result<f64> {
        let t = target(y, h.len())?;
        let d2: f64 = t.iter().zip(h).map(|(t, h)| (t - h).powi(2)).sum();
        let o = h.len() as f64;
        Ok(-d2 / (2.0 * self.sigma2) - 0.5 * o * (std::f64::consts::TAU * self.sigma2).ln())
    }

    fn residual(&self, h: &[f64], _eta: &[f64], y: &Label, r: &mut [f64]) -> Result<()> {
        check_len("residual buffer", r.len(), h.len())?;
        let t = target(y, h.len())?;
        for (r, (t, h)) in r.iter_mut().zip(t.iter().zip(h)) {
            *r = (t - h) / self.sigma2;
        }
        Ok(())
    }

    fn sample(
        &self,
        h: &[f64],
        _eta: &[f64],
        seed: u64,
        input: u32,
        sample: u32,
        r: &mut [f64],
    ) -> Label {
        // y = h + σ ε, so r = (y − h)/σ² = ε/σ.
        rng::label_normals(seed, input, sample, r);
        let sigma = self.sigma2.sqrt();
        let mut y = Vec::with_capacity(h.len());
        for (r, h) in r.iter_mut().zip(h) {
            y.push(h + sigma * *r);
            *r /= sigma;
        }
        Label::Target(y)
    }
}

fn target(y: &Label, outputs: usize) -> Result<&[f64]> {
    match y {
        Label::Target(t) if t.len() == outputs => Ok(t),
        Label::Target(t) => Err(Error::Input(format!(
            "a Gaussian target has {} entries but the model has {outputs} outputs",
            t.len()
        ))),
        Label::Class(_) => Err(Error::Input(
            "the Gaussian family needs real-valued targets, got a class index".into(),
        )),
    }
}

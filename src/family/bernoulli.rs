//! Bernoulli family (multi-label): O independent binary outputs, logits h, t(y) = y ∈ {0,1}^O,
//! η = σ(h), C = diag(η(1−η)) (docs/theory.md, "Families with independent outputs").

use super::independent::{independent_moments, label_vector, Coord};
use super::{check_len, ExpFamily, Label};
use crate::{rng, Error, Result};

/// Multi-label classification: output a is 1 with probability σ(h_a), independently.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bernoulli;

/// σ(h), stable for both signs.
pub fn sigmoid(h: f64) -> f64 {
    if h >= 0.0 {
        1.0 / (1.0 + (-h).exp())
    } else {
        let e = h.exp();
        e / (1.0 + e)
    }
}

/// log(1 + e^h), stable for both signs.
fn softplus(h: f64) -> f64 {
    h.max(0.0) + (-h.abs()).exp().ln_1p()
}

/// The 0/1 label vector of `y`, or an error naming the first bad entry.
fn indicators(y: &Label, outputs: usize) -> Result<&[f64]> {
    label_vector(
        y,
        outputs,
        "Bernoulli",
        "0/1 labels",
        |v| v == 0.0 || v == 1.0,
        "multi-label targets must be 0 or 1",
    )
}

impl ExpFamily for Bernoulli {
    fn name(&self) -> &'static str {
        "bernoulli"
    }

    fn kind(&self) -> super::FamilyKind {
        super::FamilyKind::Bernoulli
    }

    fn check_outputs(&self, outputs: usize) -> Result<()> {
        if outputs == 0 {
            return Err(Error::Input("the model has no outputs".into()));
        }
        Ok(())
    }

    fn eta(&self, h: &[f64]) -> Vec<f64> {
        h.iter().map(|&v| sigmoid(v)).collect()
    }

    independent_moments!(Coord::bernoulli);

    fn log_lik(&self, h: &[f64], y: &Label) -> Result<f64> {
        let t = indicators(y, h.len())?;
        Ok(t.iter().zip(h).map(|(t, &h)| t * h - softplus(h)).sum())
    }

    fn residual(&self, h: &[f64], eta: &[f64], y: &Label, r: &mut [f64]) -> Result<()> {
        check_len("residual buffer", r.len(), h.len())?;
        let t = indicators(y, h.len())?;
        for (r, (t, p)) in r.iter_mut().zip(t.iter().zip(eta)) {
            *r = t - p;
        }
        Ok(())
    }

    fn sample(
        &self,
        _h: &[f64],
        eta: &[f64],
        seed: u64,
        input: u32,
        sample: u32,
        r: &mut [f64],
    ) -> Label {
        // y_a = 1 iff u_a < η_a: the comparison is exact in f32 and f64 alike for the GPU's
        // f32 η (rng::label_uniforms).
        rng::label_uniforms(seed, input, sample, r);
        let mut y = Vec::with_capacity(eta.len());
        for (r, &p) in r.iter_mut().zip(eta) {
            let t = if *r < p { 1.0 } else { 0.0 };
            y.push(t);
            *r = t - p;
        }
        Label::Target(y)
    }
}

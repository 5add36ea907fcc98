//! Poisson family (counts): O independent counts, log-rates h, t(y) = y ∈ ℕ^O, η = λ = exp(h),
//! C = diag(λ), fourth central moment λ + 3λ² (docs/theory.md, "Families with independent
//! outputs").

use super::independent::{independent_moments, label_vector, Coord};
use super::poisson_draw::{self, F32_MAX_RATE};
use super::{check_len, ExpFamily, Label};
use crate::{Error, Result};

/// Count regression: output a is Poisson(exp(h_a)), independently.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Poisson;

/// The largest log-rate the f64 CPU engine accepts: λ = e⁸⁰ ≈ 5.5e34 keeps λ⁴ (in the
/// variances' fourth powers) finite.
pub const MAX_LOG_RATE: f64 = 80.0;

/// The largest log-rate of the f32 GPU engine (λ ≤ 2²⁰: its f32 sampler's range).
pub fn max_log_rate_f32() -> f64 {
    F32_MAX_RATE.ln()
}

/// The count vector of `y`, or an error naming the first bad entry.
fn counts(y: &Label, outputs: usize) -> Result<&[f64]> {
    label_vector(
        y,
        outputs,
        "Poisson",
        "counts",
        |v| v.is_finite() && v >= 0.0 && v.fract() == 0.0,
        "counts must be non-negative whole numbers",
    )
}

/// ln(y!) for a whole y ≥ 0 (Stirling's series with its error term beyond 20).
fn ln_factorial(y: f64) -> f64 {
    if y < 20.0 {
        (2..=y as u64).map(|k| (k as f64).ln()).sum()
    } else {
        let y2 = y * y;
        (y + 0.5) * y.ln() - y
            + 0.5 * std::f64::consts::TAU.ln()
            + (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * y2)) / y2) / y
    }
}

impl ExpFamily for Poisson {
    fn name(&self) -> &'static str {
        "poisson"
    }

    fn kind(&self) -> super::FamilyKind {
        super::FamilyKind::Poisson
    }

    fn check_outputs(&self, outputs: usize) -> Result<()> {
        if outputs == 0 {
            return Err(Error::Input("the model has no outputs".into()));
        }
        Ok(())
    }

    fn check_output(&self, h: &[f64]) -> Result<()> {
        check_log_rates(h, MAX_LOG_RATE, "")
    }

    fn eta(&self, h: &[f64]) -> Vec<f64> {
        h.iter().map(|v| v.exp()).collect()
    }

    independent_moments!(Coord::poisson);

    fn log_lik(&self, h: &[f64], y: &Label) -> Result<f64> {
        let t = counts(y, h.len())?;
        Ok(t.iter()
            .zip(h)
            .map(|(&t, &h)| t * h - h.exp() - ln_factorial(t))
            .sum())
    }

    fn residual(&self, h: &[f64], lam: &[f64], y: &Label, r: &mut [f64]) -> Result<()> {
        check_len("residual buffer", r.len(), h.len())?;
        let t = counts(y, h.len())?;
        for (r, (t, l)) in r.iter_mut().zip(t.iter().zip(lam)) {
            *r = t - l;
        }
        Ok(())
    }

    fn sample(
        &self,
        _h: &[f64],
        lam: &[f64],
        seed: u64,
        input: u32,
        sample: u32,
        r: &mut [f64],
    ) -> Label {
        // The f32 sampler (the GPU engine's) wherever the GPU could run; f64 beyond.
        let mut y = Vec::with_capacity(lam.len());
        for (a, (r, &l)) in r.iter_mut().zip(lam).enumerate() {
            let k = if l <= F32_MAX_RATE {
                poisson_draw::draw(l as f32, seed, input, sample, a as u32)
            } else {
                poisson_draw::draw(l, seed, input, sample, a as u32)
            };
            let k = f64::from(k);
            y.push(k);
            *r = k - l;
        }
        Label::Target(y)
    }
}

/// Refuses log-rates above `max` (or not finite), naming the first and the limit; `engine`
/// adds a hint.
pub fn check_log_rates(h: &[f64], max: f64, hint: &str) -> Result<()> {
    if let Some((a, v)) = h.iter().enumerate().find(|(_, v)| v.is_nan() || **v > max) {
        return Err(Error::Input(format!(
            "Poisson log-rate h[{a}] = {v} exceeds {max:.2} (rate e^h = {:.3e}): the moments \
             would overflow{hint}; scale the model's last layer down or check the model",
            v.exp()
        )));
    }
    Ok(())
}

//! Categorical family: logits h, one-hot statistic t(y) = e_y, η = softmax(h) (MATH §2.2).

use super::{check_len, ExpFamily, Label};
use crate::{rng, Error, Result};

/// Classification with softmax probabilities p = η.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Categorical;

/// ū = Σ_y p_y u_y, the mean of u under p.
fn mean(p: &[f64], u: &[f64]) -> f64 {
    p.iter().zip(u).map(|(p, u)| p * u).sum()
}

/// Numerically stable log Σ exp(h).
pub fn log_sum_exp(h: &[f64]) -> f64 {
    let m = h.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + h.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

impl ExpFamily for Categorical {
    fn name(&self) -> &'static str {
        "categorical"
    }

    fn kind(&self) -> super::FamilyKind {
        super::FamilyKind::Categorical
    }

    fn check_outputs(&self, outputs: usize) -> Result<()> {
        if outputs < 2 {
            return Err(Error::Input(format!(
                "the categorical family needs at least 2 outputs (logits), the model has {outputs}"
            )));
        }
        Ok(())
    }

    fn eta(&self, h: &[f64]) -> Vec<f64> {
        let lse = log_sum_exp(h);
        h.iter().map(|v| (v - lse).exp()).collect()
    }

    fn cov_apply(&self, p: &[f64], u: &[f64]) -> Vec<f64> {
        let ub = mean(p, u);
        p.iter().zip(u).map(|(p, u)| p * (u - ub)).collect()
    }

    fn cov_quad(&self, p: &[f64], u: &[f64]) -> f64 {
        let ub = mean(p, u);
        p.iter().zip(u).map(|(p, u)| p * (u - ub).powi(2)).sum()
    }

    fn cov_quad_rows(&self, p: &[f64], rows: &[f64], out: &mut [f64]) {
        // Four rows side by side: each row gets the operations of `cov_quad`, in its order
        // (the same bits), with four independent chains of additions in flight.
        const R: usize = 4;
        let o = p.len();
        if o == 0 {
            out.fill(0.0);
            return;
        }
        let mut blocks = rows.chunks_exact(R * o);
        let mut outs = out.chunks_exact_mut(R);
        for (u, q) in (&mut blocks).zip(&mut outs) {
            let mut ub = [-0.0f64; R];
            for (a, &pa) in p.iter().enumerate() {
                for (r, ub) in ub.iter_mut().enumerate() {
                    *ub += pa * u[r * o + a];
                }
            }
            let mut acc = [-0.0f64; R];
            for (a, &pa) in p.iter().enumerate() {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let d = u[r * o + a] - ub[r];
                    *acc += pa * (d * d);
                }
            }
            q.copy_from_slice(&acc);
        }
        let rest = blocks.remainder().chunks_exact(o);
        for (q, u) in outs.into_remainder().iter_mut().zip(rest) {
            *q = self.cov_quad(p, u);
        }
    }

    fn kurt_quad(&self, p: &[f64], u: &[f64]) -> f64 {
        let ub = mean(p, u);
        p.iter().zip(u).map(|(p, u)| p * (u - ub).powi(4)).sum()
    }

    fn kurt_excess_quad(&self, p: &[f64], u: &[f64]) -> f64 {
        // Var_y[(u_y − ū)²], centred before squaring.
        let ub = mean(p, u);
        let m2 = self.cov_quad(p, u);
        p.iter()
            .zip(u)
            .map(|(p, u)| p * ((u - ub).powi(2) - m2).powi(2))
            .sum()
    }

    fn cov_diag(&self, p: &[f64], j: usize) -> f64 {
        // Var(s_j) with s_j ~ Bernoulli(p_j).
        p[j] * (1.0 - p[j])
    }

    fn kurt_excess_diag(&self, p: &[f64], j: usize) -> f64 {
        // Var[(s_j − p_j)²]: (1 − p)² with probability p, p² otherwise.
        let pj = p[j];
        let d = 1.0 - 2.0 * pj;
        pj * (1.0 - pj) * d * d
    }

    fn third_central(&self, p: &[f64], u: &[f64], v: &[f64]) -> f64 {
        let (ub, vb) = (mean(p, u), mean(p, v));
        p.iter()
            .zip(u.iter().zip(v))
            .map(|(p, (u, v))| p * (u - ub).powi(2) * (v - vb))
            .sum()
    }

    fn log_lik(&self, h: &[f64], y: &Label) -> Result<f64> {
        match y {
            Label::Class(c) if *c < h.len() => Ok(h[*c] - log_sum_exp(h)),
            other => Err(label_error(other, h.len())),
        }
    }

    fn residual(&self, h: &[f64], p: &[f64], y: &Label, r: &mut [f64]) -> Result<()> {
        check_len("residual buffer", r.len(), h.len())?;
        match y {
            Label::Class(c) if *c < h.len() => {
                for (a, (r, p)) in r.iter_mut().zip(p).enumerate() {
                    *r = if a == *c { 1.0 - p } else { -p };
                }
                Ok(())
            }
            other => Err(label_error(other, h.len())),
        }
    }

    fn sample(
        &self,
        h: &[f64],
        p: &[f64],
        seed: u64,
        input: u32,
        sample: u32,
        r: &mut [f64],
    ) -> Label {
        // Inverse CDF: the first class whose cumulative probability exceeds u.
        let u = rng::label_uniform(seed, input, sample);
        let mut cum = 0.0;
        let mut y = p.len() - 1;
        for (a, pa) in p.iter().enumerate() {
            cum += pa;
            if u < cum {
                y = a;
                break;
            }
        }
        let label = Label::Class(y);
        // The label is in range by construction.
        let _ = self.residual(h, p, &label, r);
        label
    }
}

fn label_error(y: &Label, classes: usize) -> Error {
    match y {
        Label::Class(c) => Error::Input(format!(
            "class label {c} is out of range: the model has {classes} classes (0..{})",
            classes - 1
        )),
        Label::Target(_) => Error::Input(
            "the categorical family needs integer class labels, got a real-valued target".into(),
        ),
    }
}

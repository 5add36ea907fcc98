//! The probes of the power method's starts for the categorical tensors, in f32 (docs/theory.md,
//! "Spectra that scale in O").
//!
//! [`super::zeig::extreme_z_eigenvalue`] runs a few fixed-shift steps from each of its O + 14
//! starts only to rank them; the best few are then run again, in f64, to convergence. At
//! O = 1000 the probes are almost all of the method's steps (≈ 6,000 per input). A probe's
//! value only decides the ranking, so it is computed in f32: eight lanes per AVX register
//! instead of four, half the bytes. The kept starts are re-run from scratch in f64, so f32
//! changes the result only where two probe values agree to about 1e-6 and their starts lead to
//! different local maxima.

use super::moments::{categorical_step, categorical_unit_terms};
use super::zeig::ShiftedIterate;

/// The f32 iterate of the fixed-shift power method on the categorical K (`excess` false) or
/// sym(K − C⊗C) (true): x, g = T x³ and the candidate xn, gn of
/// [`super::moments::categorical_step`] in f32 (eight lanes per AVX register).
pub(crate) struct CategoricalProbe {
    p: Vec<f32>,
    excess: bool,
    x: Vec<f32>,
    g: Vec<f32>,
    xn: Vec<f32>,
    gn: Vec<f32>,
}

impl CategoricalProbe {
    /// The probe of the tensor at class probabilities `p`.
    pub(crate) fn new(p: &[f64], excess: bool) -> CategoricalProbe {
        let o = p.len();
        CategoricalProbe {
            p: p.iter().map(|&v| v as f32).collect(),
            excess,
            x: vec![0.0; o],
            g: vec![0.0; o],
            xn: vec![0.0; o],
            gn: vec![0.0; o],
        }
    }

    /// Starts at the unit vector e_a: x = e_a, g = T e_a³ by the closed form of
    /// [`super::moments::categorical_unit`]; returns T\[e_a⁴\].
    pub(crate) fn start_unit(&mut self, p: &[f64], a: usize) -> f64 {
        let [c, ga, value] = categorical_unit_terms(p[a], self.excess);
        let c = c as f32;
        for ((g, x), p) in self.g.iter_mut().zip(&mut self.x).zip(&self.p) {
            *g = p * c;
            *x = 0.0;
        }
        self.g[a] = ga as f32;
        self.x[a] = 1.0;
        value
    }

    /// Starts at `x0` (non-zero): x = x0/‖x0‖ and g = T x³ by one step with β = 0, α = 1;
    /// returns T\[x⁴\], or None when x0 is zero or not finite in f32.
    pub(crate) fn start_vector(&mut self, x0: &[f64]) -> Option<f64> {
        for (x, v) in self.x.iter_mut().zip(x0) {
            *x = *v as f32;
        }
        // x stands in for g (β = 0).
        self.g.copy_from_slice(&self.x);
        let value = self.candidate(0.0, 1.0)?;
        self.accept();
        Some(value)
    }
}

impl ShiftedIterate for CategoricalProbe {
    fn candidate(&mut self, beta: f64, alpha: f64) -> Option<f64> {
        categorical_step(
            &self.p,
            [&self.x, &self.g],
            beta as f32,
            alpha as f32,
            self.excess,
            &mut self.xn,
            &mut self.gn,
        )
    }

    fn accept(&mut self) {
        std::mem::swap(&mut self.x, &mut self.xn);
        std::mem::swap(&mut self.g, &mut self.gn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theory::moments::tests::softmax;

    /// The f32 steps follow the f64 steps ([`categorical_step`]) to f32 accuracy, from unit and
    /// dense starts, for both tensors, at sizes with and without a tail.
    #[test]
    fn probe_follows_the_f64_steps() {
        for (o, seed) in [(1usize, 1u64), (5, 2), (16, 3), (37, 4), (1000, 5)] {
            let p = softmax(o, seed, 2.0);
            for excess in [false, true] {
                let mut probe = CategoricalProbe::new(&p, excess);
                for start in 0..2 {
                    let mut x = vec![0.0; o];
                    let mut g = vec![0.0; o];
                    let mut value = if start == 0 {
                        let a = o / 2;
                        x[a] = 1.0;
                        crate::theory::moments::categorical_unit(&p, a, excess, &mut g);
                        probe.start_unit(&p, a)
                    } else {
                        let x0: Vec<f64> = (0..o).map(|k| 1.0 + (k % 7) as f64).collect();
                        let (mut xn, mut gn) = (vec![0.0; o], vec![0.0; o]);
                        let v =
                            categorical_step(&p, [&x0, &x0], 0.0, 1.0, excess, &mut xn, &mut gn)
                                .unwrap();
                        (x, g) = (xn, gn);
                        let got = probe.start_vector(&x0).unwrap();
                        assert!((got - v).abs() <= 1e-5 * v.abs().max(1e-30), "{got} vs {v}");
                        v
                    };
                    for (beta, alpha) in [(1.0, 0.3), (1.0, 0.05), (-1.0, 2.0)] {
                        let (mut xn, mut gn) = (vec![0.0; o], vec![0.0; o]);
                        let want =
                            categorical_step(&p, [&x, &g], beta, alpha, excess, &mut xn, &mut gn)
                                .unwrap();
                        let got = probe.candidate(beta, alpha).unwrap();
                        probe.accept();
                        assert!(
                            (got - want).abs() <= 1e-5 * want.abs().max(value.abs()),
                            "o {o} excess {excess} start {start}: {got} vs {want}"
                        );
                        for (k, (a, b)) in probe.x.iter().zip(&xn).enumerate() {
                            assert!((f64::from(*a) - b).abs() <= 1e-5, "x[{k}]");
                        }
                        (x, g, value) = (xn, gn, want);
                    }
                }
            }
        }
    }
}

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

use super::zeig::ShiftedIterate;
use crate::simd::{Lanes8, WithLanes8};

/// Lanes of the f32 loops ([`Lanes8`]); the sums keep two such accumulators, so that the loops
/// are not bound by the latency of the additions.
const L: usize = 8;

/// The f32 iterate of the fixed-shift power method on the categorical K (`excess` false) or
/// sym(K − C⊗C) (true): x, g = T x³ and the candidate xn, gn (as
/// [`super::moments::categorical_step`], in f32).
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
        let pa = p[a];
        let qa = 1.0 - pa;
        let m2 = pa * qa;
        let m3 = m2 * (1.0 - 2.0 * pa);
        let m4 = pa * qa.powi(4) + qa * pa.powi(4);
        let q = if self.excess { m2 } else { 0.0 };
        let c = (-(pa * pa * pa) - m3 + q * pa) as f32;
        for ((g, x), p) in self.g.iter_mut().zip(&mut self.x).zip(&self.p) {
            *g = p * c;
            *x = 0.0;
        }
        self.g[a] = (pa * (qa * qa * qa - m3 - q * qa)) as f32;
        self.x[a] = 1.0;
        m4 - q * m2
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
        let step = Step {
            p: &self.p,
            x: &self.x,
            g: &self.g,
            beta: beta as f32,
            alpha: alpha as f32,
            excess: self.excess,
            xn: &mut self.xn,
            gn: &mut self.gn,
        };
        crate::simd::with_lanes8(step)
    }

    fn accept(&mut self) {
        std::mem::swap(&mut self.x, &mut self.xn);
        std::mem::swap(&mut self.g, &mut self.gn);
    }
}

/// One f32 step: xn = (βg + αx)/‖βg + αx‖, gn = T xn³ (three passes, as the f64 step).
struct Step<'a> {
    p: &'a [f32],
    x: &'a [f32],
    g: &'a [f32],
    beta: f32,
    alpha: f32,
    excess: bool,
    xn: &'a mut [f32],
    gn: &'a mut [f32],
}

impl WithLanes8 for Step<'_> {
    type Output = Option<f64>;
    #[inline(always)]
    fn run<V: Lanes8>(self) -> Option<f64> {
        let Step {
            p,
            x,
            g,
            beta,
            alpha,
            excess,
            xn,
            gn,
        } = self;
        let o = p.len();
        let (x, g, xn, gn) = (&x[..o], &g[..o], &mut xn[..o], &mut gn[..o]);
        let body = o - o % (2 * L);
        let total = |s: [V; 2], t: f32| (s[0] + s[1]).sum() + t;
        let (beta8, alpha8) = (V::splat(beta), V::splat(alpha));
        // βg + αx, its squared norm and pᵀ(βg + αx).
        let (mut n2, mut s1) = ([V::splat(0.0); 2], [V::splat(0.0); 2]);
        for (((xn, g), x), p) in xn[..body]
            .chunks_exact_mut(2 * L)
            .zip(g.chunks_exact(2 * L))
            .zip(x.chunks_exact(2 * L))
            .zip(p.chunks_exact(2 * L))
        {
            for h in 0..2 {
                let i = h * L;
                let v = beta8 * V::load(&g[i..]) + alpha8 * V::load(&x[i..]);
                v.store(&mut xn[i..]);
                n2[h] = n2[h] + v * v;
                s1[h] = s1[h] + V::load(&p[i..]) * v;
            }
        }
        let (mut n2t, mut s1t) = (0.0f32, 0.0f32);
        for k in body..o {
            let v = beta * g[k] + alpha * x[k];
            xn[k] = v;
            n2t += v * v;
            s1t += p[k] * v;
        }
        let n = total(n2, n2t).sqrt();
        if !(n.is_finite() && n > 0.0) {
            return None;
        }
        let inv = 1.0 / n;
        let xb = total(s1, s1t) * inv;
        // w = x − x̄: Σ p w², Σ p w³, Σ p w⁴, and gn = p w³ before the rank-one terms.
        let (inv8, xb8) = (V::splat(inv), V::splat(xb));
        let zero = [V::splat(0.0); 2];
        let (mut m2, mut m3, mut m4) = (zero, zero, zero);
        for ((xn, gn), p) in xn[..body]
            .chunks_exact_mut(2 * L)
            .zip(gn.chunks_exact_mut(2 * L))
            .zip(p.chunks_exact(2 * L))
        {
            for h in 0..2 {
                let i = h * L;
                let v = V::load(&xn[i..]) * inv8;
                v.store(&mut xn[i..]);
                let w = v - xb8;
                let pw2 = V::load(&p[i..]) * (w * w);
                let t = pw2 * w;
                t.store(&mut gn[i..]);
                m2[h] = m2[h] + pw2;
                m3[h] = m3[h] + t;
                m4[h] = m4[h] + t * w;
            }
        }
        let (mut m2t, mut m3t, mut m4t) = (0.0f32, 0.0f32, 0.0f32);
        for k in body..o {
            let v = xn[k] * inv;
            xn[k] = v;
            let w = v - xb;
            let pw2 = p[k] * (w * w);
            let t = pw2 * w;
            gn[k] = t;
            m2t += pw2;
            m3t += t;
            m4t += t * w;
        }
        let (m2, m3, m4) = (total(m2, m2t), total(m3, m3t), total(m4, m4t));
        // gn −= p (m3 + q w): K x³ (q = 0) or (K − C⊗C) x³ (q = Σ p w²).
        let q = if excess { m2 } else { 0.0 };
        let (m3_8, q8) = (V::splat(m3), V::splat(q));
        let body = o - o % L;
        for ((gn, p), xn) in gn[..body]
            .chunks_exact_mut(L)
            .zip(p.chunks_exact(L))
            .zip(xn.chunks_exact(L))
        {
            let (p8, w) = (V::load(p), V::load(xn) - xb8);
            (V::load(gn) - (p8 * m3_8 + q8 * (p8 * w))).store(gn);
        }
        for k in body..o {
            gn[k] -= p[k] * m3 + q * (p[k] * (xn[k] - xb));
        }
        Some(f64::from(m4 - q * m2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theory::moments::categorical_step;
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
                        // The baseline lanes give the bits of the dispatched (AVX) ones.
                        let (mut xb, mut gb) = (vec![0.0f32; o], vec![0.0f32; o]);
                        let base = crate::simd::with_base8(Step {
                            p: &probe.p,
                            x: &probe.x,
                            g: &probe.g,
                            beta: beta as f32,
                            alpha: alpha as f32,
                            excess,
                            xn: &mut xb,
                            gn: &mut gb,
                        })
                        .unwrap();
                        let got = probe.candidate(beta, alpha).unwrap();
                        assert_eq!(base.to_bits(), got.to_bits());
                        assert_eq!(xb, probe.xn);
                        assert_eq!(gb, probe.gn);
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

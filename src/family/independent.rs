//! Families whose O sufficient statistics are independent given h (Bernoulli, Poisson;
//! docs/theory.md, "Families with independent outputs"). Every moment of s = t(y) − η is a
//! sum over coordinates of four per-coordinate numbers ([`Coord`]), so every contraction
//! costs O(O) and none cancels:
//!
//! * C = diag(c), `C[u,u] = Σ c_a u_a²`;
//! * `E[(uᵀs)²(vᵀs)] = Σ μ3_a u_a² v_a`;
//! * `(K − C⊗C)[u⁴] = Var[(uᵀs)²] = Σ_a vs_a u_a⁴ + 4 Σ_{a<b} w_a w_b`, w_a = c_a u_a²,
//!   vs_a = Var(s_a²) = κ4_a + 2c_a² ≥ 0;
//! * `K[u⁴] = (K − C⊗C)[u⁴] + C[u,u]²`.

/// The central moments of one coordinate s_a = t_a − η_a.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coord {
    /// c = Var(s_a), the diagonal of C.
    pub c: f64,
    /// μ3 = `E[s_a³]`.
    pub mu3: f64,
    /// κ4 = `E[s_a⁴]` − 3c², the fourth cumulant (may be negative: Bernoulli).
    pub kappa4: f64,
    /// vs = Var(s_a²) = `E[s_a⁴]` − c² = κ4 + 2c² ≥ 0, computed without cancellation.
    pub var_s2: f64,
}

impl Coord {
    /// The Bernoulli coordinate with mean p = σ(h): c = p(1−p), μ3 = c(1−2p),
    /// κ4 = c(1−6c), Var(s²) = c(1−2p)².
    pub fn bernoulli(p: f64) -> Coord {
        let c = p * (1.0 - p);
        let d = 1.0 - 2.0 * p;
        Coord {
            c,
            mu3: c * d,
            kappa4: c * (1.0 - 6.0 * c),
            var_s2: c * d * d,
        }
    }

    /// The Poisson coordinate with rate λ = exp(h): c = μ3 = κ4 = λ, Var(s²) = λ + 2λ².
    pub fn poisson(lam: f64) -> Coord {
        Coord {
            c: lam,
            mu3: lam,
            kappa4: lam,
            var_s2: lam + 2.0 * lam * lam,
        }
    }

    /// `E[s_a⁴]` = κ4 + 3c² = Var(s²) + c².
    pub fn mu4(&self) -> f64 {
        self.var_s2 + self.c * self.c
    }
}

/// The per-coordinate moments of an independent family at η.
pub fn coords(eta: &[f64], coord: fn(f64) -> Coord) -> Vec<Coord> {
    eta.iter().map(|&e| coord(e)).collect()
}

/// `C[u,u] = Σ c_a u_a²`.
pub fn cov_quad(eta: &[f64], coord: fn(f64) -> Coord, u: &[f64]) -> f64 {
    eta.iter().zip(u).map(|(&e, u)| coord(e).c * u * u).sum()
}

/// `Σ_{a<b} w_a w_b` for w ≥ 0 by running sums (no cancellation).
pub fn pair_sum(w: impl Iterator<Item = f64>) -> f64 {
    let (mut prefix, mut pairs) = (0.0, 0.0);
    for w in w {
        pairs += w * prefix;
        prefix += w;
    }
    pairs
}

/// `(K − C⊗C)[u⁴] = Σ vs_a u_a⁴ + 4 Σ_{a<b} w_a w_b` (w_a = c_a u_a²), a sum of
/// non-negative terms.
pub fn kurt_excess_quad(eta: &[f64], coord: fn(f64) -> Coord, u: &[f64]) -> f64 {
    let m: Vec<(Coord, f64)> = eta.iter().zip(u).map(|(&e, &u)| (coord(e), u)).collect();
    let diag: f64 = m.iter().map(|(k, u)| k.var_s2 * u.powi(4)).sum();
    diag + 4.0 * pair_sum(m.iter().map(|(k, u)| k.c * u * u))
}

/// `E[(uᵀs)²(vᵀs)] = Σ μ3_a u_a² v_a` (only equal indices survive independence).
pub fn third_central(eta: &[f64], coord: fn(f64) -> Coord, u: &[f64], v: &[f64]) -> f64 {
    eta.iter()
        .zip(u.iter().zip(v))
        .map(|(&e, (u, v))| coord(e).mu3 * u * u * v)
        .sum()
}

/// The label vector of `y` for a family with independent outputs (`family`: its name in
/// messages), or an error naming the first entry that fails `valid` (`rule` says what a valid
/// entry is, `what` what the vector holds).
pub fn label_vector<'a>(
    y: &'a crate::family::Label,
    outputs: usize,
    family: &str,
    what: &str,
    valid: fn(f64) -> bool,
    rule: &str,
) -> crate::Result<&'a [f64]> {
    use crate::{family::Label, Error};
    match y {
        Label::Target(t) if t.len() == outputs => {
            if let Some((a, v)) = t.iter().enumerate().find(|(_, v)| !valid(**v)) {
                return Err(Error::Input(format!(
                    "{family} label entry {a} is {v}: {rule}"
                )));
            }
            Ok(t)
        }
        Label::Target(t) => Err(Error::Input(format!(
            "a {family} label has {} entries but the model has {outputs} outputs",
            t.len()
        ))),
        Label::Class(_) => Err(Error::Input(format!(
            "the {family} family needs a vector of O {what} per input, got a class index"
        ))),
    }
}

/// The moment methods of [`crate::ExpFamily`] for a family with independent outputs whose
/// per-coordinate moments are `$coord` (a `fn(f64) -> Coord` of η_a): C u, C[u,u], K[u⁴],
/// (K − C⊗C)[u⁴] and the third-moment contraction, by the functions of this module.
macro_rules! independent_moments {
    ($coord:expr) => {
        fn cov_apply(&self, eta: &[f64], u: &[f64]) -> Vec<f64> {
            eta.iter().zip(u).map(|(&e, u)| $coord(e).c * u).collect()
        }
        fn cov_quad(&self, eta: &[f64], u: &[f64]) -> f64 {
            $crate::family::independent::cov_quad(eta, $coord, u)
        }
        fn kurt_quad(&self, eta: &[f64], u: &[f64]) -> f64 {
            self.kurt_excess_quad(eta, u) + self.cov_quad(eta, u).powi(2)
        }
        fn kurt_excess_quad(&self, eta: &[f64], u: &[f64]) -> f64 {
            $crate::family::independent::kurt_excess_quad(eta, $coord, u)
        }
        fn third_central(&self, eta: &[f64], u: &[f64], v: &[f64]) -> f64 {
            $crate::family::independent::third_central(eta, $coord, u, v)
        }
    };
}
pub(crate) use independent_moments;

#[cfg(test)]
mod tests {
    use super::*;

    /// The coordinates' moments from the definition: enumeration (Bernoulli) and a long
    /// truncated series (Poisson).
    #[test]
    fn coordinate_moments_match_their_definitions() {
        let central = |pmf: &dyn Fn(u64) -> f64, mean: f64, top: u64| {
            let mut m = [0.0; 5];
            for y in 0..=top {
                let d = y as f64 - mean;
                for (k, m) in m.iter_mut().enumerate() {
                    *m += pmf(y) * d.powi(k as i32);
                }
            }
            m
        };
        for p in [1e-3, 0.2, 0.5, 0.77, 0.999] {
            let m = central(&|y| if y == 1 { p } else { 1.0 - p }, p, 1);
            let k = Coord::bernoulli(p);
            assert!((k.c - m[2]).abs() < 1e-15);
            assert!((k.mu3 - m[3]).abs() < 1e-15);
            assert!((k.mu4() - m[4]).abs() < 1e-15);
            assert!((k.kappa4 - (m[4] - 3.0 * m[2] * m[2])).abs() < 1e-15);
        }
        for lam in [0.01f64, 0.7, 3.0, 12.5] {
            // pmf by the recurrence P(y) = P(y−1)·λ/y; the tail beyond 200 is < 1e-100.
            let pmf = |y: u64| (1..=y).fold((-lam).exp(), |p, k| p * lam / k as f64);
            let m = central(&pmf, lam, 200);
            let k = Coord::poisson(lam);
            let tol = 1e-12 * (1.0 + lam * lam);
            assert!((k.c - m[2]).abs() < tol);
            assert!((k.mu3 - m[3]).abs() < tol);
            assert!((k.mu4() - m[4]).abs() < tol, "{} vs {}", k.mu4(), m[4]);
        }
    }

    #[test]
    fn pair_sum_is_the_sum_over_pairs() {
        let w = [0.5, 2.0, 0.0, 3.0];
        let brute: f64 = (0..4)
            .flat_map(|a| (a + 1..4).map(move |b| (a, b)))
            .map(|(a, b)| w[a] * w[b])
            .sum();
        assert_eq!(pair_sum(w.iter().copied()), brute);
    }
}

//! Moments of the centred sufficient statistic s = t(y) − η as matrices and tensor oracles
//! (MATH §2, §5.6, §7): the dense O×O covariance C, the matrix-free contractions K x³ and K x²
//! of the fourth moment K, the bound B² = sup_y ‖s(y)‖² of Prop. 4.3, tr(M) and the spectrum
//! of M = Cov(s⊗s) (reshaped K − C⊗C, O²×O²) from its O×O Gram matrix.

use super::eigen::{dot, sym_eigenvalues};
use crate::family::independent::{pair_sum, Coord};
use crate::family::{ExpFamily, FamilyKind};
use crate::simd::{Lanes, Real, WithLanes};
use crate::Result;

/// The moments of one input: the family and its η (for the categorical family η = p).
#[derive(Clone, Copy, Debug)]
pub struct Moments<'a> {
    /// The family (and σ² for the Gaussian).
    pub kind: FamilyKind,
    /// η = E[t(y)] at the input: the class probabilities p (categorical) or h/σ² (Gaussian).
    pub eta: &'a [f64],
}

/// A spectrum given as runs of equal eigenvalues, in descending order (value, multiplicity).
/// The entries after the listed ones are zeros, up to the matrix size.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Runs(pub Vec<(f64, usize)>);

impl Runs {
    /// From plain eigenvalues, sorted descending; values ≤ 0 (round-off of a PSD matrix) and
    /// the zero tail are dropped.
    pub fn from_values(mut v: Vec<f64>) -> Runs {
        v.sort_by(|a, b| b.total_cmp(a));
        Runs(v.into_iter().filter(|x| *x > 0.0).map(|x| (x, 1)).collect())
    }
    /// From eigenvalues in descending order in which NaN marks values that were not computed
    /// (the middle of a partial spectrum, [`super::secular::RankOne::extremes`]): the NaN
    /// form one run of value NaN, and everything from the first value ≤ 0 on is dropped.
    pub fn from_descending(v: Vec<f64>) -> Runs {
        let mut runs: Vec<(f64, usize)> = Vec::new();
        for x in v.into_iter().take_while(|x| x.is_nan() || *x > 0.0) {
            match runs.last_mut() {
                Some(last) if x.is_nan() && last.0.is_nan() => last.1 += 1,
                _ => runs.push((x, 1)),
            }
        }
        Runs(runs)
    }
    /// Number of listed (positive) eigenvalues.
    pub fn len(&self) -> usize {
        self.0.iter().map(|r| r.1).sum()
    }
    /// Whether no positive eigenvalue is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The k-th largest eigenvalue (0 beyond the listed ones).
    pub fn get(&self, mut k: usize) -> f64 {
        for &(v, m) in &self.0 {
            if k < m {
                return v;
            }
            k -= m;
        }
        0.0
    }
    /// The largest eigenvalue (0 if none is listed).
    pub fn max(&self) -> f64 {
        self.0.first().map_or(0.0, |r| r.0)
    }
    /// Sum of the eigenvalues.
    pub fn sum(&self) -> f64 {
        self.0.iter().map(|&(v, m)| v * m as f64).sum()
    }
    /// The same spectrum times `c` ≥ 0.
    pub fn scaled(&self, c: f64) -> Runs {
        Runs(self.0.iter().map(|&(v, m)| (v * c, m)).collect())
    }
}

/// g_a = p_a (x_a − x̄)³ with x̄ = pᵀx; returns (x̄, Σ_a p_a (x_a − x̄)³, Σ_a p_a (x_a − x̄)²).
/// Four partial sums of each, so that the loop is not bound by the latency of one chain.
fn categorical_x3(p: &[f64], x: &[f64], g: &mut [f64]) -> (f64, f64, f64) {
    let xb = dot(p, x);
    let (mut m3, mut m2) = ([0.0f64; 4], [0.0f64; 4]);
    let (mut t3, mut t2) = (0.0, 0.0);
    let (mut gc, pc, xc) = (g.chunks_exact_mut(4), p.chunks_exact(4), x.chunks_exact(4));
    for ((g, p), x) in (&mut gc).zip(pc.clone()).zip(xc.clone()) {
        for k in 0..4 {
            let w = x[k] - xb;
            let pw2 = p[k] * (w * w);
            let t = p[k] * (w * w * w);
            g[k] = t;
            m3[k] += t;
            m2[k] += pw2;
        }
    }
    for ((g, p), x) in gc
        .into_remainder()
        .iter_mut()
        .zip(pc.remainder())
        .zip(xc.remainder())
    {
        let w = x - xb;
        let t = p * (w * w * w);
        *g = t;
        t3 += t;
        t2 += p * (w * w);
    }
    let sum = |s: [f64; 4], t: f64| (s[0] + s[1]) + (s[2] + s[3]) + t;
    (xb, sum(m3, t3), sum(m2, t2))
}

/// One step of the fixed-shift power method (MATH §7) on the categorical K (`excess` false) or
/// sym(K − C⊗C) (`excess` true) at probabilities `p`, in three passes over the classes: `xn`
/// = (βg + αx)/‖βg + αx‖, `gn` = T xn³, and the return value T\[xn⁴\] from the same sums
/// (K\[x⁴\] = Σ p w⁴ and (K − C⊗C)\[x⁴\] = Σ p w⁴ − (Σ p w²)², w = x − pᵀx). None when βg + αx
/// is zero or not finite, or when a vector is shorter than `p`. β = 0, α = 1 normalises x and
/// contracts it. In f64, or in f32 for the probes of `theory::probe`; every sum has two lanes'
/// worth of partial sums (eight f64, sixteen f32) in a fixed order, and AVX where the CPU has
/// it gives the same results.
pub(crate) fn categorical_step<T: Real>(
    p: &[T],
    [x, g]: [&[T]; 2],
    beta: T,
    alpha: T,
    excess: bool,
    xn: &mut [T],
    gn: &mut [T],
) -> Option<f64> {
    if [x.len(), g.len(), xn.len(), gn.len()]
        .iter()
        .any(|&n| n < p.len())
    {
        return None;
    }
    crate::simd::with_lanes(CategoricalStep {
        p,
        x,
        g,
        beta,
        alpha,
        excess,
        xn,
        gn,
    })
}

/// g = T e_a³ and T\[e_a⁴\] for the categorical K (`excess` false) or sym(K − C⊗C) (`excess`
/// true) in closed form (Σ p = 1): with w = e_a − p_a 1, Σ p w² = p_a(1 − p_a),
/// Σ p w³ = p_a(1 − p_a)(1 − 2p_a), Σ p w⁴ = p_a(1 − p_a)⁴ + (1 − p_a)p_a⁴, and
/// g_b = p_b (w_b³ − Σ p w³ − q w_b) with q = Σ p w² (excess) or 0 (as [`categorical_step`]).
pub(crate) fn categorical_unit(p: &[f64], a: usize, excess: bool, g: &mut [f64]) -> f64 {
    let [c, ga, value] = categorical_unit_terms(p[a], excess);
    for (g, p) in g.iter_mut().zip(p) {
        *g = p * c;
    }
    g[a] = ga;
    value
}

/// The scalars of [`categorical_unit`] at p_a: [c, g_a, T\[e_a⁴\]], where g_b = p_b·c off a.
pub(crate) fn categorical_unit_terms(pa: f64, excess: bool) -> [f64; 3] {
    let qa = 1.0 - pa;
    let m2 = pa * qa;
    let m3 = m2 * (1.0 - 2.0 * pa);
    let m4 = pa * qa.powi(4) + qa * pa.powi(4);
    let q = if excess { m2 } else { 0.0 };
    // w_b = −p_a off a: g_b = p_b·c.
    let c = -(pa * pa * pa) - m3 + q * pa;
    [c, pa * (qa * qa * qa - m3 - q * qa), m4 - q * m2]
}

/// The arguments of [`categorical_step`].
struct CategoricalStep<'a, T> {
    p: &'a [T],
    x: &'a [T],
    g: &'a [T],
    beta: T,
    alpha: T,
    excess: bool,
    xn: &'a mut [T],
    gn: &'a mut [T],
}

impl<T: Real> WithLanes for CategoricalStep<'_, T> {
    type Elem = T;
    type Output = Option<f64>;
    #[inline(always)]
    fn run<V: Lanes<Elem = T>>(self) -> Option<f64> {
        let CategoricalStep {
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
        // Chunks of two registers: twice the lanes' partial sums per sum, so that the passes
        // are not bound by the latency of the additions.
        let (n, chunk) = (V::N, 2 * V::N);
        let body = o - o % chunk;
        let total = |s: [V; 2], t: T| (s[0] + s[1]).sum() + t;
        let (beta_v, alpha_v) = (V::splat(beta), V::splat(alpha));
        // βg + αx, its squared norm and pᵀ(βg + αx).
        let (mut n2, mut s1) = ([V::zero(); 2], [V::zero(); 2]);
        for (((xn, g), x), p) in xn[..body]
            .chunks_exact_mut(chunk)
            .zip(g.chunks_exact(chunk))
            .zip(x.chunks_exact(chunk))
            .zip(p.chunks_exact(chunk))
        {
            for h in 0..2 {
                let i = n * h;
                let v = beta_v * V::load(&g[i..]) + alpha_v * V::load(&x[i..]);
                v.store(&mut xn[i..]);
                n2[h] = n2[h] + v * v;
                s1[h] = s1[h] + V::load(&p[i..]) * v;
            }
        }
        let (mut n2t, mut s1t) = (T::default(), T::default());
        for k in body..o {
            let v = beta * g[k] + alpha * x[k];
            xn[k] = v;
            n2t += v * v;
            s1t += p[k] * v;
        }
        let norm = total(n2, n2t).sqrt();
        if !(norm.is_finite() && norm > T::default()) {
            return None;
        }
        let inv = T::ONE / norm;
        let xb = total(s1, s1t) * inv;
        // w = x − x̄: Σ p w², Σ p w³, Σ p w⁴, and gn = p w³ before the rank-one terms.
        let (inv_v, xb_v) = (V::splat(inv), V::splat(xb));
        let (mut m2, mut m3, mut m4) = ([V::zero(); 2], [V::zero(); 2], [V::zero(); 2]);
        for ((xn, gn), p) in xn[..body]
            .chunks_exact_mut(chunk)
            .zip(gn.chunks_exact_mut(chunk))
            .zip(p.chunks_exact(chunk))
        {
            for h in 0..2 {
                let i = n * h;
                let v = V::load(&xn[i..]) * inv_v;
                v.store(&mut xn[i..]);
                let w = v - xb_v;
                let pw2 = V::load(&p[i..]) * (w * w);
                let t = pw2 * w;
                t.store(&mut gn[i..]);
                m2[h] = m2[h] + pw2;
                m3[h] = m3[h] + t;
                m4[h] = m4[h] + t * w;
            }
        }
        let (mut m2t, mut m3t, mut m4t) = (T::default(), T::default(), T::default());
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
        // gn −= p (m3 + q w): the rank-one terms of K x³ (q = 0) or (K − C⊗C) x³ (q = Σ p w²).
        let q = if excess { m2 } else { T::default() };
        let (m3_v, q_v) = (V::splat(m3), V::splat(q));
        let body = o - o % n;
        for ((gn, p), xn) in gn[..body]
            .chunks_exact_mut(n)
            .zip(p.chunks_exact(n))
            .zip(xn.chunks_exact(n))
        {
            let (p_v, w) = (V::load(p), V::load(xn) - xb_v);
            (V::load(gn) - (p_v * m3_v + q_v * (p_v * w))).store(gn);
        }
        for k in body..o {
            gn[k] -= p[k] * m3 + q * (p[k] * (xn[k] - xb));
        }
        Some((m4 - q * m2).to_f64())
    }
}

impl<'a> Moments<'a> {
    /// The moments of `family` at η = `eta`.
    pub fn new(family: &dyn ExpFamily, eta: &'a [f64]) -> Moments<'a> {
        Moments {
            kind: family.kind(),
            eta,
        }
    }

    /// O, the number of outputs.
    pub fn dim(&self) -> usize {
        self.eta.len()
    }

    /// The per-coordinate moments of a family with independent outputs (empty otherwise).
    pub fn coords(&self) -> Vec<Coord> {
        self.kind
            .coord()
            .map_or_else(Vec::new, |f| self.eta.iter().map(|&e| f(e)).collect())
    }

    /// C (O×O, row-major).
    pub fn cov_matrix(&self) -> Vec<f64> {
        let o = self.dim();
        let mut c = vec![0.0; o * o];
        match self.kind {
            FamilyKind::Categorical => {
                let p = self.eta;
                for a in 0..o {
                    for b in 0..o {
                        c[a * o + b] = if a == b { p[a] } else { 0.0 } - p[a] * p[b];
                    }
                }
            }
            FamilyKind::Gaussian { sigma2 } => {
                for a in 0..o {
                    c[a * o + a] = 1.0 / sigma2;
                }
            }
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                for (a, k) in self.coords().iter().enumerate() {
                    c[a * o + a] = k.c;
                }
            }
        }
        c
    }

    /// C u.
    pub fn cov_apply(&self, u: &[f64]) -> Vec<f64> {
        match self.kind {
            FamilyKind::Categorical => {
                let ub = dot(self.eta, u);
                self.eta.iter().zip(u).map(|(p, u)| p * (u - ub)).collect()
            }
            FamilyKind::Gaussian { sigma2 } => u.iter().map(|v| v / sigma2).collect(),
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                self.coords().iter().zip(u).map(|(k, u)| k.c * u).collect()
            }
        }
    }

    /// g = K x³, g_a = E[s_a (xᵀs)³] (MATH §7).
    pub fn kurt_x3(&self, x: &[f64], g: &mut [f64]) {
        match self.kind {
            FamilyKind::Categorical => {
                let (_, m3, _) = categorical_x3(self.eta, x, g);
                for (g, p) in g.iter_mut().zip(self.eta) {
                    *g -= p * m3;
                }
            }
            FamilyKind::Gaussian { sigma2 } => {
                let c = 3.0 * dot(x, x) / (sigma2 * sigma2);
                for (g, x) in g.iter_mut().zip(x) {
                    *g = c * x;
                }
            }
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                // K[x⁴] = Σ κ4_a x_a⁴ + 3 q², q = Σ c_a x_a²: g_a = κ4_a x_a³ + 3 q c_a x_a.
                self.independent_x3(x, g, 3.0);
            }
        }
    }

    /// g = (K − C⊗C) x³ = K x³ − (xᵀCx) C x, the contraction of [`super::zeig::ExcessMoment`];
    /// one pass over the classes for the categorical family.
    pub fn excess_x3(&self, x: &[f64], g: &mut [f64]) {
        match self.kind {
            FamilyKind::Categorical => {
                // With w = x − x̄: g_a = p_a w_a³ − p_a Σ p w³ − (Σ p w²) p_a w_a.
                let p = self.eta;
                let (xb, m3, q) = categorical_x3(p, x, g);
                for ((g, p), x) in g.iter_mut().zip(p).zip(x) {
                    *g -= p * m3 + q * (p * (x - xb));
                }
            }
            // K x³ − q C x = κ4 ∘ x³ + 2 q c ∘ x.
            FamilyKind::Bernoulli | FamilyKind::Poisson => self.independent_x3(x, g, 2.0),
            FamilyKind::Gaussian { .. } => {
                self.kurt_x3(x, g);
                let cx = self.cov_apply(x);
                let q: f64 = cx.iter().zip(x).map(|(c, x)| c * x).sum();
                for (g, c) in g.iter_mut().zip(&cx) {
                    *g -= q * c;
                }
            }
        }
    }

    /// g_a = κ4_a x_a³ + w q c_a x_a with q = Σ c_a x_a², for the families with independent
    /// outputs (w = 3: K x³; w = 2: (K − C⊗C) x³), without allocating: the per-coordinate
    /// moments are recomputed from η in each pass.
    fn independent_x3(&self, x: &[f64], g: &mut [f64], w: f64) {
        fn run(eta: &[f64], x: &[f64], g: &mut [f64], w: f64, f: impl Fn(f64) -> Coord) {
            let q: f64 = eta.iter().zip(x).map(|(&e, x)| f(e).c * x * x).sum();
            for ((g, &e), x) in g.iter_mut().zip(eta).zip(x) {
                let k = f(e);
                *g = k.kappa4 * x * x * x + w * q * k.c * x;
            }
        }
        // A direct call per family, so that the per-coordinate moments are inlined.
        match self.kind {
            FamilyKind::Bernoulli => run(self.eta, x, g, w, Coord::bernoulli),
            FamilyKind::Poisson => run(self.eta, x, g, w, Coord::poisson),
            FamilyKind::Categorical | FamilyKind::Gaussian { .. } => {}
        }
    }

    /// G = K x² (O×O, row-major), G_ab = E[(xᵀs)² s_a s_b] (MATH §7).
    pub fn kurt_x2(&self, x: &[f64], gm: &mut [f64]) {
        let o = self.dim();
        match self.kind {
            FamilyKind::Categorical => {
                // Σ_y p_y w_y² (e_y − p)(e_y − p)ᵀ with w = x − (xᵀp)1.
                let p = self.eta;
                let xb = dot(p, x);
                let q: Vec<f64> = p.iter().zip(x).map(|(p, x)| p * (x - xb).powi(2)).collect();
                let sq: f64 = q.iter().sum();
                for a in 0..o {
                    for b in 0..o {
                        let d = if a == b { q[a] } else { 0.0 };
                        gm[a * o + b] = d - q[a] * p[b] - p[a] * q[b] + sq * p[a] * p[b];
                    }
                }
            }
            FamilyKind::Gaussian { sigma2 } => {
                // (‖x‖² I + 2 x xᵀ)/σ⁴ (Isserlis).
                let s4 = sigma2 * sigma2;
                let n2 = dot(x, x);
                for a in 0..o {
                    for b in 0..o {
                        let d = if a == b { n2 } else { 0.0 };
                        gm[a * o + b] = (d + 2.0 * x[a] * x[b]) / s4;
                    }
                }
            }
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                // diag(κ4 x² + q c) + 2 (c∘x)(c∘x)ᵀ.
                let ks = self.coords();
                let q: f64 = ks.iter().zip(x).map(|(k, x)| k.c * x * x).sum();
                let cx: Vec<f64> = ks.iter().zip(x).map(|(k, x)| k.c * x).collect();
                for a in 0..o {
                    for b in 0..o {
                        gm[a * o + b] = 2.0 * cx[a] * cx[b];
                    }
                    gm[a * o + a] += ks[a].kappa4 * x[a] * x[a] + q * ks[a].c;
                }
            }
        }
    }

    /// B² = sup_y ‖t(y) − η‖² (Prop. 4.3), or None if the statistic is unbounded (Gaussian).
    /// Categorical: max_y ‖e_y − p‖² = 1 − 2 min_y p_y + ‖p‖² ≤ 2 (MATH §5.4).
    pub fn stat_bound2(&self) -> Option<f64> {
        match self.kind {
            FamilyKind::Categorical => {
                let p = self.eta;
                let pmin = p.iter().copied().fold(f64::INFINITY, f64::min);
                Some(1.0 - 2.0 * pmin + dot(p, p))
            }
            // Bernoulli: Σ_a max(p_a, 1 − p_a)² (each y_a picks the farther end).
            FamilyKind::Bernoulli => Some(self.eta.iter().map(|p| p.max(1.0 - p).powi(2)).sum()),
            FamilyKind::Gaussian { .. } | FamilyKind::Poisson => None,
        }
    }

    /// ‖C‖_F².
    pub fn cov_frobenius2(&self) -> f64 {
        match self.kind {
            FamilyKind::Categorical => {
                let p = self.eta;
                let (s2, s3): (f64, f64) = (dot(p, p), p.iter().map(|v| v * v * v).sum());
                s2 - 2.0 * s3 + s2 * s2
            }
            FamilyKind::Gaussian { sigma2 } => self.dim() as f64 / (sigma2 * sigma2),
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                self.coords().iter().map(|k| k.c * k.c).sum()
            }
        }
    }

    /// tr C.
    pub fn cov_trace(&self) -> f64 {
        match self.kind {
            FamilyKind::Categorical => 1.0 - dot(self.eta, self.eta),
            FamilyKind::Gaussian { sigma2 } => self.dim() as f64 / sigma2,
            FamilyKind::Bernoulli | FamilyKind::Poisson => self.coords().iter().map(|k| k.c).sum(),
        }
    }

    /// tr M = E‖s‖⁴ − ‖C‖_F² (MATH §5.6).
    pub fn m_trace(&self) -> f64 {
        match self.kind {
            FamilyKind::Categorical => {
                let p = self.eta;
                let s2 = dot(p, p);
                let e4: f64 = p.iter().map(|py| py * (1.0 - 2.0 * py + s2).powi(2)).sum();
                (e4 - self.cov_frobenius2()).max(0.0)
            }
            FamilyKind::Gaussian { sigma2 } => {
                let o = self.dim() as f64;
                (o * o + o) / (sigma2 * sigma2)
            }
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                // M is block diagonal (see m_spectrum): tr M = Σ vs_a + 2 Σ_{a<b} c_a c_b.
                let ks = self.coords();
                ks.iter().map(|k| k.var_s2).sum::<f64>() + 2.0 * pair_sum(ks.iter().map(|k| k.c))
            }
        }
    }

    /// An upper bound on λ_max(C) in O(O): ρ(p) = min{p_max, 1 − ‖p‖²} (Thm 5.2) for the
    /// categorical family, exact for the others.
    pub fn cov_max_bound(&self) -> f64 {
        match self.kind {
            FamilyKind::Categorical => super::closed::rho(self.eta),
            FamilyKind::Gaussian { sigma2 } => 1.0 / sigma2,
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                self.coords().iter().map(|k| k.c).fold(0.0, f64::max)
            }
        }
    }

    /// The positive eigenvalues of M = Cov(s⊗s) (O²×O²), descending. Categorical: those of
    /// the O×O Gram matrix `Π (diag(p∘(1 + 4a)) + 2 (√p∘a)(√p∘a)ᵀ) Π`, Π = I − √p√pᵀ,
    /// a = ‖p‖²/2 − p, by two secular equations in O(O²) ([`super::secular::categorical_m`];
    /// [`Moments::m_spectrum_dense`] is the previous dense route). Gaussian: M = (I + swap)/σ⁴,
    /// so 2/σ⁴ with multiplicity O(O+1)/2.
    pub fn m_spectrum(&self) -> Result<Runs> {
        self.m_spectrum_extremes(None)
    }

    /// As [`Moments::m_spectrum`]; categorical with `extremes` = Some(r): only the max(r, 1)
    /// largest eigenvalues, then a run of NaN for those not computed (O(O²) still, a third
    /// less: [`super::secular::categorical_m`]).
    pub fn m_spectrum_extremes(&self, extremes: Option<usize>) -> Result<Runs> {
        match self.kind {
            FamilyKind::Categorical => {
                if let Some(index) = self.eta.iter().position(|v| !v.is_finite()) {
                    return Err(crate::Error::NonFinite {
                        what: "a matrix of the theory layer (the model's outputs overflow)".into(),
                        index,
                    });
                }
                Ok(Runs::from_descending(super::secular::categorical_m(
                    self.eta, extremes,
                )))
            }
            _ => self.m_spectrum_dense(),
        }
    }

    /// As [`Moments::m_spectrum`], with the categorical spectrum from the dense O×O Gram
    /// G̃_yz = √(p_y p_z)[(S_yᵀS_z)² − S_yᵀCS_y − S_zᵀCS_z + ‖C‖_F²], S_y = e_y − p
    /// (MATH §7), O(O³): the previous route, kept as the reference of the tests.
    pub fn m_spectrum_dense(&self) -> Result<Runs> {
        let o = self.dim();
        match self.kind {
            FamilyKind::Categorical => {
                let p = self.eta;
                let s2 = dot(p, p);
                // S_yᵀS_z = δ_yz − p_y − p_z + ‖p‖²; S_yᵀCS_y = Σ_a p_a (S_y[a] − S̄_y)².
                let cq: Vec<f64> = (0..o)
                    .map(|y| {
                        let s: Vec<f64> = (0..o)
                            .map(|a| if a == y { 1.0 } else { 0.0 } - p[a])
                            .collect();
                        let sb = dot(p, &s);
                        p.iter().zip(&s).map(|(p, s)| p * (s - sb).powi(2)).sum()
                    })
                    .collect();
                let f2 = self.cov_frobenius2();
                let mut g = vec![0.0; o * o];
                for y in 0..o {
                    for z in 0..o {
                        let d = if y == z { 1.0 } else { 0.0 };
                        let ss = d - p[y] - p[z] + s2;
                        g[y * o + z] = (p[y] * p[z]).sqrt() * (ss * ss - cq[y] - cq[z] + f2);
                    }
                }
                Ok(Runs::from_values(sym_eigenvalues(o, &g)?))
            }
            FamilyKind::Gaussian { sigma2 } => {
                Ok(Runs(vec![(2.0 / (sigma2 * sigma2), o * (o + 1) / 2)]))
            }
            FamilyKind::Bernoulli | FamilyKind::Poisson => {
                // Cov(s_a s_b, s_c s_d) vanishes unless {c,d} = {a,b}: M is diag(Var(s_a²))
                // on the (a,a) entries plus, per pair a<b, the block c_a c_b [[1,1],[1,1]] on
                // {(a,b),(b,a)} (eigenvalues 2c_a c_b and 0).
                let ks = self.coords();
                let mut v: Vec<f64> = ks.iter().map(|k| k.var_s2).collect();
                for (a, ka) in ks.iter().enumerate() {
                    v.extend(ks[a + 1..].iter().map(|kb| 2.0 * ka.c * kb.c));
                }
                Ok(Runs::from_values(v))
            }
        }
    }
}
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs of a partial spectrum: NaN merged into one run, cut at the first value ≤ 0.
    #[test]
    fn runs_from_descending() {
        let nan = f64::NAN;
        let r = Runs::from_descending(vec![3.0, 2.0, nan, nan, nan, 1.0, 0.5, 0.0]);
        assert_eq!(r.len(), 7);
        assert_eq!(
            [r.get(0), r.get(1), r.get(5), r.get(6), r.get(7)],
            [3.0, 2.0, 1.0, 0.5, 0.0]
        );
        assert!(r.get(2).is_nan() && r.get(4).is_nan());
        let r = Runs::from_descending(vec![3.0, 0.0, nan, nan]);
        assert_eq!(r, Runs(vec![(3.0, 1)]));
        let v = vec![4.0, 2.0, 2.0, 1e-300, 0.0, -1e-17];
        assert_eq!(Runs::from_descending(v.clone()), Runs::from_values(v));
    }

    /// A softmax of `scale` times standard normal logits (also used by `theory::probe`).
    pub(crate) fn softmax(o: usize, seed: u64, scale: f64) -> Vec<f64> {
        let h: Vec<f64> = (0..o)
            .map(|k| {
                let w = crate::rng::block(seed, 21, k as u32, 0, 0);
                scale * crate::rng::box_muller(w[0], w[1]).0
            })
            .collect();
        let m = h.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = h.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    fn vector(o: usize, seed: u64) -> Vec<f64> {
        (0..o)
            .map(|k| {
                let w = crate::rng::block(seed, 22, k as u32, 0, 0);
                crate::rng::box_muller(w[0], w[1]).0
            })
            .collect()
    }

    /// The fused categorical step against the same step through `kurt_x3` / `excess_x3` (and
    /// T[x⁴] as gᵀx), for lengths around the chunk of eight and both tensors; and the
    /// baseline lanes against the AVX lanes, bit for bit.
    #[test]
    fn categorical_step_matches_the_contractions() {
        for (o, seed) in [(1, 1), (3, 2), (8, 3), (13, 4), (17, 5), (1000, 6)] {
            let p = softmax(o, seed, 1.5);
            let m = Moments {
                kind: FamilyKind::Categorical,
                eta: &p,
            };
            let x = vector(o, seed + 10);
            let g = vector(o, seed + 20);
            for (beta, alpha) in [(1.0, 0.7), (-1.0, 2.5), (0.0, 1.0)] {
                for excess in [false, true] {
                    let (mut xn, mut gn) = (vec![0.0; o], vec![0.0; o]);
                    let value =
                        categorical_step(&p, [&x, &g], beta, alpha, excess, &mut xn, &mut gn)
                            .unwrap();
                    // The plain route.
                    let mut want_x: Vec<f64> = g
                        .iter()
                        .zip(&x)
                        .map(|(g, x)| beta * g + alpha * x)
                        .collect();
                    let n = want_x.iter().map(|v| v * v).sum::<f64>().sqrt();
                    want_x.iter_mut().for_each(|v| *v /= n);
                    let mut want_g = vec![0.0; o];
                    if excess {
                        m.excess_x3(&want_x, &mut want_g);
                    } else {
                        m.kurt_x3(&want_x, &mut want_g);
                    }
                    let want_value: f64 = want_g.iter().zip(&want_x).map(|(g, x)| g * x).sum();
                    let gscale = want_g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                    for k in 0..o {
                        assert!((xn[k] - want_x[k]).abs() <= 1e-14, "o {o}: x[{k}]");
                        assert!(
                            (gn[k] - want_g[k]).abs() <= 1e-12 * gscale,
                            "o {o} excess {excess}: g[{k}] {} vs {}",
                            gn[k],
                            want_g[k]
                        );
                    }
                    assert!(
                        (value - want_value).abs() <= 1e-12 * want_value.abs().max(1e-300),
                        "o {o} excess {excess}: {value} vs {want_value}"
                    );
                    // The baseline lanes give the same bits as the dispatched (AVX) ones.
                    let (mut xb, mut gb) = (vec![0.0; o], vec![0.0; o]);
                    let base = crate::simd::with_base(CategoricalStep {
                        p: &p,
                        x: &x,
                        g: &g,
                        beta,
                        alpha,
                        excess,
                        xn: &mut xb,
                        gn: &mut gb,
                    })
                    .unwrap();
                    assert_eq!(base.to_bits(), value.to_bits());
                    assert!(xb.iter().zip(&xn).all(|(a, b)| a.to_bits() == b.to_bits()));
                    assert!(gb.iter().zip(&gn).all(|(a, b)| a.to_bits() == b.to_bits()));
                    // The same for the f32 step (eight lanes).
                    let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
                    let (p32, x32, g32) = (f(&p), f(&x), f(&g));
                    let (b32, a32) = (beta as f32, alpha as f32);
                    let mut out = [(); 2].map(|_| (vec![0.0f32; o], vec![0.0f32; o]));
                    let mut values = [0.0f64; 2];
                    for (k, (xn, gn)) in out.iter_mut().enumerate() {
                        let step = CategoricalStep {
                            p: &p32,
                            x: &x32,
                            g: &g32,
                            beta: b32,
                            alpha: a32,
                            excess,
                            xn,
                            gn,
                        };
                        values[k] = if k == 0 {
                            crate::simd::with_lanes(step)
                        } else {
                            crate::simd::with_base(step)
                        }
                        .unwrap();
                    }
                    assert_eq!(values[0].to_bits(), values[1].to_bits());
                    assert_eq!(out[0], out[1]);
                }
            }
        }
        // The closed form at the unit vectors against the fused step from e_a.
        for (o, seed, scale) in [(1, 1, 1.0), (2, 2, 1.0), (9, 3, 4.0), (40, 4, 0.3)] {
            let p = softmax(o, seed, scale);
            for a in 0..o {
                let mut e = vec![0.0; o];
                e[a] = 1.0;
                for excess in [false, true] {
                    let (mut xn, mut gn, mut g) = (vec![0.0; o], vec![0.0; o], vec![0.0; o]);
                    let want =
                        categorical_step(&p, [&e, &e], 0.0, 1.0, excess, &mut xn, &mut gn).unwrap();
                    let got = categorical_unit(&p, a, excess, &mut g);
                    assert!((got - want).abs() <= 1e-14, "o {o} a {a}: {got} vs {want}");
                    for (x, y) in g.iter().zip(&gn) {
                        assert!((x - y).abs() <= 1e-14, "o {o} a {a}: g {x} vs {y}");
                    }
                }
            }
        }
        // A zero or non-finite βg + αx is refused.
        let p = softmax(5, 1, 1.0);
        let (mut xn, mut gn) = (vec![0.0; 5], vec![0.0; 5]);
        let zero = vec![0.0; 5];
        assert!(categorical_step(&p, [&zero, &zero], 1.0, 1.0, true, &mut xn, &mut gn).is_none());
        let mut bad = vector(5, 3);
        bad[4] = f64::NAN;
        assert!(categorical_step(&p, [&bad, &bad], 0.0, 1.0, false, &mut xn, &mut gn).is_none());
        // Vectors shorter than p are refused, not a panic.
        let short = vector(4, 3);
        assert!(
            categorical_step(&p, [&short, &short], 0.0, 1.0, false, &mut xn, &mut gn).is_none()
        );
    }
}

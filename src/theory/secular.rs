//! Eigenvalues of a diagonal matrix changed by rank one, by the secular equation (docs/theory.md,
//! "Spectra that scale in O"): `diag(d) + σ z zᵀ` (σ = 1/ρ) and the compression of `diag(d)`
//! onto z⊥ (ρ = 0). Every eigenvalue that is not a deflated pole is the root in one interval
//! between consecutive poles of `F(x) = ρ + Σ_j z_j²/(d_j − x)`, which is increasing there
//! from −∞ to +∞; the roots are found with a bracket, the two-pole rational model of
//! Bunch–Nielsen–Sorensen (quadratic convergence) and bisection as the safeguard, each root
//! relative to its nearer pole (x = d_k + τ), so that d_j − x is formed without cancellation.
//! O(O) per iteration, a few iterations per root: O(O²) for the whole spectrum.

/// Machine epsilon.
const EPS: f64 = f64::EPSILON;

/// One secular root: x = `pole` + `tau`, where `pole` is the nearer active pole (so that
/// d_j − x = (d_j − pole) − tau up to one rounding).
#[derive(Clone, Copy, Debug)]
struct Root {
    pole: f64,
    tau: f64,
}

impl Root {
    fn value(&self) -> f64 {
        self.pole + self.tau
    }
}

/// The eigen-decomposition of `diag(d) + σ z zᵀ` (`rho` = 1/σ ≠ 0) or of `diag(d)` compressed
/// to z⊥ (`rho` = 0; then there is one eigenvalue fewer than entries, the direction z).
#[derive(Clone, Debug)]
pub struct RankOne {
    /// The poles of each original index (merged ties share one value).
    deff: Vec<f64>,
    /// z (original order).
    z: Vec<f64>,
    /// The active (merged, non-zero weight) poles, ascending.
    poles: Vec<f64>,
    /// Tie groups of original indices whose pole was merged into an active pole (two or more
    /// members; each gives m − 1 deflated eigenvalues at the pole).
    groups: Vec<Vec<usize>>,
    /// Indices with z_j = 0 (eigenvalue d_j, eigenvector e_j).
    zeros: Vec<usize>,
    /// The secular roots (one per interval, plus the exterior root when ρ ≠ 0), ascending;
    /// when only the extreme ones were asked for ([`RankOne::extremes`]), `skipped` roots in
    /// the middle are not computed.
    roots: Vec<Root>,
    skipped: usize,
}

/// Σ_j w_j/(p_j − x) and its derivative over a run of poles, at x = `base` + `tau`, one
/// division per pole, four partial sums (so that the loop vectorises).
fn sums(poles: &[f64], w: &[f64], base: f64, tau: f64) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            return unsafe { sums_avx(poles, w, base, tau) };
        }
    }
    sums_generic(poles, w, base, tau)
}

/// [`sums`] with AVX: four poles per instruction (the same operations in the same order per
/// lane as [`sums_generic`], so the same results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn sums_avx(poles: &[f64], w: &[f64], base: f64, tau: f64) -> (f64, f64) {
    use std::arch::x86_64::*;
    let n = poles.len().min(w.len());
    let m = n - n % 4;
    let (mut s, mut ds) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let (vb, vt, one) = (
        _mm256_set1_pd(base),
        _mm256_set1_pd(tau),
        _mm256_set1_pd(1.0),
    );
    let mut k = 0;
    while k < m {
        // SAFETY: k + 4 ≤ m ≤ n, within both slices.
        let (d, wv) = unsafe {
            (
                _mm256_loadu_pd(poles.as_ptr().add(k)),
                _mm256_loadu_pd(w.as_ptr().add(k)),
            )
        };
        let del = _mm256_sub_pd(_mm256_sub_pd(d, vb), vt);
        let inv = _mm256_div_pd(one, del);
        let t = _mm256_mul_pd(wv, inv);
        s = _mm256_add_pd(s, t);
        ds = _mm256_add_pd(ds, _mm256_mul_pd(t, inv));
        k += 4;
    }
    let (mut sa, mut da) = ([0.0f64; 4], [0.0f64; 4]);
    // SAFETY: four f64 to arrays of four.
    unsafe {
        _mm256_storeu_pd(sa.as_mut_ptr(), s);
        _mm256_storeu_pd(da.as_mut_ptr(), ds);
    }
    let (ts, tds) = sums_generic(&poles[m..n], &w[m..n], base, tau);
    (
        (sa[0] + sa[1]) + (sa[2] + sa[3]) + ts,
        (da[0] + da[1]) + (da[2] + da[3]) + tds,
    )
}

#[inline(always)]
fn sums_generic(poles: &[f64], w: &[f64], base: f64, tau: f64) -> (f64, f64) {
    let (mut s, mut ds) = ([0.0f64; 4], [0.0f64; 4]);
    let (pc, wc) = (poles.chunks_exact(4), w.chunks_exact(4));
    let (mut ts, mut tds) = (0.0, 0.0);
    for (&d, &w) in pc.remainder().iter().zip(wc.remainder()) {
        let inv = 1.0 / ((d - base) - tau);
        let t = w * inv;
        ts += t;
        tds += t * inv;
    }
    for (d, w) in pc.zip(wc) {
        let del: [f64; 4] = std::array::from_fn(|k| (d[k] - base) - tau);
        let inv: [f64; 4] = std::array::from_fn(|k| 1.0 / del[k]);
        let t: [f64; 4] = std::array::from_fn(|k| w[k] * inv[k]);
        for k in 0..4 {
            s[k] += t[k];
            ds[k] += t[k] * inv[k];
        }
    }
    (
        (s[0] + s[1]) + (s[2] + s[3]) + ts,
        (ds[0] + ds[1]) + (ds[2] + ds[3]) + tds,
    )
}

/// The sums over the active poles at x = poles\[org\] + tau, the first `nleft` poles on the
/// left (ψ < 0 inside an interval) and the others on the right (φ > 0): (ψ, ψ', φ, φ').
fn eval(poles: &[f64], w: &[f64], org: usize, tau: f64, nleft: usize) -> [f64; 4] {
    let base = poles[org];
    let (psi, dpsi) = sums(&poles[..nleft], &w[..nleft], base, tau);
    let (phi, dphi) = sums(&poles[nleft..], &w[nleft..], base, tau);
    [psi, dpsi, phi, dphi]
}

/// Which root of F(x) = ρ + Σ w_j/(p_j − x) to find.
#[derive(Clone, Copy)]
enum Kind {
    /// The root in (p_i, p_{i+1}).
    Interior(usize),
    /// The root above the last pole (ρ > 0).
    Upper,
    /// The root below the first pole (ρ < 0).
    Lower,
}

/// One root of F (the poles ascending and distinct, the weights positive).
fn solve(poles: &[f64], w: &[f64], rho: f64, kind: Kind) -> Root {
    let n = poles.len();
    // Σ w, for the exterior roots' brackets only (an O(O) chain of additions: not per root).
    let wsum = || w.iter().sum::<f64>();
    // The values at the midpoint of an interval (the first iterate there).
    let mut first = None;
    // Origin, bracket of τ, the poles on the left, and the poles next to the root relative
    // to the origin (±∞ for none).
    let (org, mut lo, mut hi, nleft, e1, e2) = match kind {
        Kind::Interior(i) => {
            let gap = poles[i + 1] - poles[i];
            let at = eval(poles, w, i, 0.5 * gap, i + 1);
            first = Some(at);
            if rho + at[0] + at[2] >= 0.0 {
                (i, 0.0, 0.5 * gap, i + 1, 0.0, gap)
            } else {
                (i + 1, -0.5 * gap, 0.0, i + 1, -gap, 0.0)
            }
        }
        // F(x) ≥ ρ − Σw/(x − p_n) above the last pole, ≤ ρ + Σw/(p_1 − x) below the first.
        Kind::Upper => (n - 1, 0.0, wsum() / rho, n, 0.0, f64::INFINITY),
        Kind::Lower => (0, wsum() / rho, 0.0, 0, f64::NEG_INFINITY, 0.0),
    };
    // Start at the midpoint of the interval (the end of the bracket next to the other pole).
    let mut tau = match first {
        Some(_) if org == nleft => lo,
        Some(_) => hi,
        None => 0.5 * (lo + hi),
    };
    for _ in 0..200 {
        let [psi, dpsi, phi, dphi] = match first.take() {
            Some(at) => at,
            None => eval(poles, w, org, tau, nleft),
        };
        let f = rho + psi + phi;
        // Σ|terms| = φ − ψ: each term is evaluated to a few ulps.
        if f == 0.0 || f.abs() <= 2.0 * EPS * (n as f64 + 2.0) * (rho.abs() + phi - psi) {
            break;
        }
        if f < 0.0 {
            lo = lo.max(tau);
        } else {
            hi = hi.min(tau);
        }
        if hi - lo <= 2.0 * EPS * lo.abs().max(hi.abs()) {
            break;
        }
        // The model ρ + A + B1/(e1 − t) + B2/(e2 − t), exact in value and slope at τ (a pole
        // at ±∞ drops out).
        let b1 = if e1.is_finite() {
            dpsi * (e1 - tau).powi(2)
        } else {
            0.0
        };
        let b2 = if e2.is_finite() {
            dphi * (e2 - tau).powi(2)
        } else {
            0.0
        };
        let t1 = if e1.is_finite() { b1 / (e1 - tau) } else { 0.0 };
        let t2 = if e2.is_finite() { b2 / (e2 - tau) } else { 0.0 };
        let a = f - t1 - t2;
        let next = match (e1.is_finite(), e2.is_finite()) {
            (true, true) => {
                // a t² − (a(e1 + e2) + b1 + b2) t + (a e1 e2 + b1 e2 + b2 e1) = 0.
                let c1 = -(a * (e1 + e2) + b1 + b2);
                let c0 = a * e1 * e2 + b1 * e2 + b2 * e1;
                let disc = (c1 * c1 - 4.0 * a * c0).max(0.0).sqrt();
                let q = -0.5 * (c1 + disc.copysign(c1));
                [q / a, c0 / q]
                    .into_iter()
                    .find(|t| t.is_finite() && *t > lo && *t < hi)
                    .unwrap_or(f64::NAN)
            }
            // a + b1/(e1 − t) = 0 with e1 = 0, or a + b2/(e2 − t) = 0 with e2 = 0.
            (true, false) => b1 / a,
            (false, true) => b2 / a,
            (false, false) => f64::NAN,
        };
        if next.is_finite() && next > lo && next < hi {
            // The model is exact in value and slope (and has the two nearest poles), so the
            // error after a step is of the order of (step/τ)²·|τ|: a step below 1e-8·|τ| leaves
            // the root to rounding.
            let done = (next - tau).abs() <= 1e-8 * next.abs();
            tau = next;
            if done {
                break;
            }
        } else {
            tau = 0.5 * (lo + hi);
        }
    }
    Root {
        pole: poles[org],
        tau,
    }
}

/// ‖q‖² and qᵀv for the unnormalised eigenvector q_j = z_j/((d_j − pole) − τ) of a root, with
/// eight partial sums per sum (AVX where the CPU has it: the same results).
struct EigenvectorSums<'a> {
    d: &'a [f64],
    z: &'a [f64],
    v: &'a [f64],
    root: Root,
}

impl crate::simd::WithLanes for EigenvectorSums<'_> {
    type Elem = f64;
    type Output = [f64; 2];
    #[inline(always)]
    fn run<V: crate::simd::Lanes<Elem = f64>>(self) -> [f64; 2] {
        let EigenvectorSums { d, z, v, root } = self;
        let n = d.len();
        let body = n - n % 8;
        let (pole, tau) = (V::splat(root.pole), V::splat(root.tau));
        let (mut n2, mut qv) = ([V::zero(); 2], [V::zero(); 2]);
        for ((d, z), v) in d[..body]
            .chunks_exact(8)
            .zip(z.chunks_exact(8))
            .zip(v.chunks_exact(8))
        {
            for h in 0..2 {
                let i = 4 * h;
                let q = V::load(&z[i..]) / ((V::load(&d[i..]) - pole) - tau);
                n2[h] = n2[h] + q * q;
                qv[h] = qv[h] + q * V::load(&v[i..]);
            }
        }
        let (mut n2t, mut qvt) = (0.0, 0.0);
        for k in body..n {
            let q = z[k] / ((d[k] - root.pole) - root.tau);
            n2t += q * q;
            qvt += q * v[k];
        }
        [(n2[0] + n2[1]).sum() + n2t, (qv[0] + qv[1]).sum() + qvt]
    }
}

impl RankOne {
    /// The decomposition of `diag(d) + (1/rho) z zᵀ` (`rho` ≠ 0) or of `diag(d)` on z⊥
    /// (`rho` = 0). Exact zeros of z and poles equal up to a few ulps are deflated.
    pub fn new(d: &[f64], z: &[f64], rho: f64) -> RankOne {
        RankOne::extremes(d, z, rho, None)
    }

    /// As [`RankOne::new`]; with `Some([lo, hi])`, only the `lo` smallest and the `hi` largest
    /// secular roots are computed (the others are [`RankOne::skipped`]).
    pub fn extremes(d: &[f64], z: &[f64], rho: f64, wanted: Option<[usize; 2]>) -> RankOne {
        let n = d.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| d[a].total_cmp(&d[b]));
        let scale = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let tol = 4.0 * EPS * scale;
        let mut deff = d.to_vec();
        let (mut poles, mut w, mut groups, mut zeros) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut members: Vec<usize> = Vec::new();
        let flush = |members: &mut Vec<usize>,
                     poles: &mut Vec<f64>,
                     w: &mut Vec<f64>,
                     groups: &mut Vec<Vec<usize>>,
                     deff: &mut Vec<f64>| {
            if members.is_empty() {
                return;
            }
            let pole = d[members[0]];
            let wt: f64 = members.iter().map(|&j| z[j] * z[j]).sum();
            for &j in members.iter() {
                deff[j] = pole;
            }
            poles.push(pole);
            w.push(wt);
            if members.len() > 1 {
                groups.push(std::mem::take(members));
            } else {
                members.clear();
            }
        };
        for &j in &order {
            if z[j] == 0.0 {
                zeros.push(j);
                continue;
            }
            if let Some(&first) = members.first() {
                if d[j] - d[first] > tol {
                    flush(&mut members, &mut poles, &mut w, &mut groups, &mut deff);
                }
            }
            members.push(j);
        }
        flush(&mut members, &mut poles, &mut w, &mut groups, &mut deff);
        let m = poles.len();
        let mut kinds: Vec<Kind> = Vec::with_capacity(m + 1);
        if m > 0 && rho < 0.0 {
            kinds.push(Kind::Lower);
        }
        kinds.extend((0..m.saturating_sub(1)).map(Kind::Interior));
        if m > 0 && rho > 0.0 {
            kinds.push(Kind::Upper);
        }
        let count = kinds.len();
        let [lo, hi] = match wanted {
            Some([lo, hi]) if lo + hi < count => [lo, hi],
            _ => [count, 0],
        };
        let roots = kinds[..lo]
            .iter()
            .chain(&kinds[count - hi..])
            .map(|&k| solve(&poles, &w, rho, k))
            .collect();
        RankOne {
            deff,
            z: z.to_vec(),
            poles,
            groups,
            zeros,
            roots,
            skipped: count - lo - hi,
        }
    }

    /// The number of secular roots not computed ([`RankOne::extremes`]).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The known eigenvalues ([`RankOne::values`] without the skipped roots) with the index of
    /// their secular root (None for a deflated one), and the skipped count.
    fn known(&self) -> (Vec<(f64, Option<usize>)>, usize) {
        let mut vals: Vec<(f64, Option<usize>)> = self
            .roots
            .iter()
            .enumerate()
            .map(|(k, root)| (root.value(), Some(k)))
            .collect();
        vals.extend(self.zeros.iter().map(|&j| (self.deff[j], None)));
        for g in &self.groups {
            vals.extend(std::iter::repeat_n((self.deff[g[0]], None), g.len() - 1));
        }
        (vals, self.skipped)
    }

    /// Every eigenvalue (unordered): the secular roots, the poles of z_j = 0 and m − 1 copies
    /// of each merged pole of m entries.
    pub fn values(&self) -> Vec<f64> {
        debug_assert_eq!(self.skipped, 0, "every root is needed");
        let mut v: Vec<f64> = self.roots.iter().map(Root::value).collect();
        v.extend(self.zeros.iter().map(|&j| self.deff[j]));
        for g in &self.groups {
            v.extend(std::iter::repeat_n(self.deff[g[0]], g.len() - 1));
        }
        v
    }

    /// The unit eigenvector of secular root `k` (in the order of [`RankOne::secular_values`]):
    /// q_j ∝ z_j/(d_j − x).
    pub fn vector(&self, k: usize) -> Vec<f64> {
        let r = self.roots[k];
        let mut q: Vec<f64> = self
            .deff
            .iter()
            .zip(&self.z)
            .map(|(&d, &z)| {
                if z == 0.0 {
                    0.0
                } else {
                    z / ((d - r.pole) - r.tau)
                }
            })
            .collect();
        let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
        q.iter_mut().for_each(|v| *v /= n);
        q
    }

    /// The secular roots, in ascending order.
    pub fn secular_values(&self) -> Vec<f64> {
        self.roots.iter().map(Root::value).collect()
    }

    /// Every eigenvalue with the coordinate of `v` along its eigenvector, for an orthonormal
    /// eigenbasis chosen so that within each deflated group only one vector has a non-zero
    /// coordinate (the part of v in the group orthogonal to z). O(O²).
    pub fn coordinates(&self, v: &[f64]) -> Vec<(f64, f64)> {
        debug_assert_eq!(self.skipped, 0, "every root is needed");
        // The entries with z_j ≠ 0, gathered once.
        let (mut d, mut z, mut va) = (Vec::new(), Vec::new(), Vec::new());
        for ((&dj, &zj), &vj) in self.deff.iter().zip(&self.z).zip(v) {
            if zj != 0.0 {
                d.push(dj);
                z.push(zj);
                va.push(vj);
            }
        }
        let mut out: Vec<(f64, f64)> = self
            .roots
            .iter()
            .map(|r| {
                // q_j = z_j/(d_j − x): ‖q‖² and qᵀv in one pass.
                let [n2, qv] = crate::simd::with_lanes(EigenvectorSums {
                    d: &d,
                    z: &z,
                    v: &va,
                    root: *r,
                });
                (r.value(), qv / n2.sqrt())
            })
            .collect();
        out.extend(self.zeros.iter().map(|&j| (self.deff[j], v[j])));
        for g in &self.groups {
            let zz: f64 = g.iter().map(|&j| self.z[j] * self.z[j]).sum();
            let zv: f64 = g.iter().map(|&j| self.z[j] * v[j]).sum();
            let c = zv / zz;
            let norm = g
                .iter()
                .map(|&j| (v[j] - c * self.z[j]).powi(2))
                .sum::<f64>()
                .sqrt();
            let pole = self.deff[g[0]];
            out.push((pole, norm));
            out.extend(std::iter::repeat_n((pole, 0.0), g.len() - 2));
        }
        out
    }

    /// Number of active (non-deflated) poles.
    pub fn active(&self) -> usize {
        self.poles.len()
    }
}

/// The eigenvalues of a spectrum of `known.len() + skipped` values, descending, of which
/// `known` (unordered) holds every value but `skipped` secular roots in the middle, and the
/// `lo` smallest and `hi` largest roots: then the `hi` largest and `lo` smallest of `known`
/// are those of the whole spectrum (a value among them is either one of those roots or
/// deflated, hence known), and the `skipped` values between them are NaN (not computed).
fn extremes_of(mut known: Vec<f64>, skipped: usize, [lo, hi]: [usize; 2]) -> Vec<f64> {
    known.sort_by(|a, b| b.total_cmp(a));
    if skipped == 0 {
        return known;
    }
    let n = known.len();
    let mut out = known[..hi].to_vec();
    out.extend(std::iter::repeat_n(f64::NAN, n + skipped - hi - lo));
    out.extend(&known[n - lo..]);
    out
}

/// Eigenvalues of the categorical covariance C = diag(p) − p pᵀ, descending, with the unit
/// eigenvectors of the `vectors` largest ones (fewer if one of them is deflated), in O(O²).
/// With Σ p = 1, C = D^½ Π D^½ (D = diag(p), Π = I − √p√pᵀ) has the spectrum of Π D Π: 0 (the
/// direction 1) and the roots of `Σ_j p_j/(p_j − λ) = 0`, one between consecutive distinct
/// p's, with eigenvectors x_j ∝ p_j/(p_j − λ). This form has no cancellation, unlike
/// `1 = Σ_j p_j²/(p_j − λ)`, or the dense C, whose entry p_a − p_a² loses the relative accuracy
/// of 1 − p_a when p_a is close to 1. It is the spectrum of the C of p/Σp (a computed softmax
/// sums to 1 up to rounding).
///
/// `extremes` = Some(r): only the max(r, 2) smallest and the max(r, `vectors`) largest
/// eigenvalues are computed, the others are NaN ([`RankOne::extremes`]): O(r·O).
pub fn categorical_cov(
    p: &[f64],
    vectors: usize,
    extremes: Option<usize>,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let r: Vec<f64> = p.iter().map(|v| v.sqrt()).collect();
    let wanted = extremes.map(|r| [r.max(2), r.max(vectors)]);
    let dec = RankOne::extremes(p, &r, 0.0, wanted);
    let (mut vals, skipped) = dec.known();
    // The direction √p of Π D Π (the vector 1 of C).
    vals.push((0.0, None));
    vals.sort_by(|a, b| b.0.total_cmp(&a.0));
    let vecs = vals
        .iter()
        .take(vectors)
        .map_while(|(_, k)| {
            k.map(|k| {
                let root = dec.roots[k];
                let mut x: Vec<f64> = dec
                    .deff
                    .iter()
                    .zip(p)
                    .map(|(&d, &p)| {
                        if p == 0.0 {
                            0.0
                        } else {
                            p / ((d - root.pole) - root.tau)
                        }
                    })
                    .collect();
                let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                x.iter_mut().for_each(|v| *v /= n);
                x
            })
        })
        .collect();
    let known = vals.into_iter().map(|v| v.0.max(0.0)).collect();
    (extremes_of(known, skipped, wanted.unwrap_or([0, 0])), vecs)
}

/// The eigenvalues of the O×O Gram matrix of M = Cov(s⊗s) for the categorical family
/// (docs/theory.md), descending: with r = √p (a unit vector), Π = I − r rᵀ,
/// a_y = ‖p‖²/2 − p_y, `G̃ = Π (diag(p∘(1 + 4a)) + 2 (r∘a)(r∘a)ᵀ) Π`. Its spectrum is that of
/// the compression of the diagonal onto r⊥ (one secular equation) changed by the rank-one
/// term (a second one): O(O²) in all. `extremes` = Some(r): only the max(r, 1) largest roots
/// of the second equation are computed, the other values are NaN.
pub fn categorical_m(p: &[f64], extremes: Option<usize>) -> Vec<f64> {
    let s2: f64 = super::eigen::dot(p, p);
    let r: Vec<f64> = p.iter().map(|v| v.sqrt()).collect();
    let a: Vec<f64> = p.iter().map(|v| 0.5 * s2 - v).collect();
    let lam: Vec<f64> = p.iter().zip(&a).map(|(p, a)| p * (1.0 + 4.0 * a)).collect();
    let v: Vec<f64> = r.iter().zip(&a).map(|(r, a)| r * a).collect();
    let step1 = RankOne::new(&lam, &r, 0.0);
    let coords = step1.coordinates(&v);
    let (mu, zc): (Vec<f64>, Vec<f64>) = coords.into_iter().unzip();
    let wanted = extremes.map(|r| [0, r.max(1)]);
    let (known, skipped) = RankOne::extremes(&mu, &zc, 0.5, wanted).known();
    extremes_of(
        known.into_iter().map(|v| v.0).collect(),
        skipped,
        wanted.unwrap_or([0, 0]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theory::eigen::sym_eigenvalues;

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(|a, b| b.total_cmp(a));
        v
    }

    fn normal(seed: u64, k: u32) -> f64 {
        let w = crate::rng::block(seed, 77, k, 0, 0);
        crate::rng::box_muller(w[0], w[1]).0
    }

    /// Only the extreme roots: the same bits as the full decomposition at the computed
    /// positions, NaN between them, the spectrum's size kept; the categorical C and M the same
    /// way, with ties and zero probabilities (deflated values among the extremes).
    #[test]
    fn extremes_are_the_full_spectrum_at_its_ends() {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for n in [2usize, 5, 9, 40] {
            for seed in 0..6u64 {
                let mut d: Vec<f64> = (0..n).map(|k| normal(seed, k as u32)).collect();
                let z: Vec<f64> = (0..n).map(|k| normal(seed + 100, k as u32)).collect();
                if seed % 2 == 1 && n > 3 {
                    d[n - 1] = d[0];
                }
                for rho in [0.7, -1.3, 0.0] {
                    let full = sorted(RankOne::new(&d, &z, rho).values());
                    for wanted in [[0, 1], [1, 0], [2, 3], [n, n]] {
                        let r = RankOne::extremes(&d, &z, rho, Some(wanted));
                        let (known, skipped) = r.known();
                        let got = extremes_of(known.iter().map(|v| v.0).collect(), skipped, wanted);
                        assert_eq!(got.len(), full.len(), "n {n} seed {seed} rho {rho}");
                        let [lo, hi] = wanted;
                        let roots = full.len()
                            - r.zeros.len()
                            - r.groups.iter().map(|g| g.len() - 1).sum::<usize>();
                        let want = if lo + hi < roots { roots - lo - hi } else { 0 };
                        assert_eq!(skipped, want, "n {n} seed {seed} rho {rho}");
                        let m = got.len();
                        let (top, bottom) = if skipped == 0 { (m, 0) } else { (hi, lo) };
                        assert_eq!(bits(&got[..top]), bits(&full[..top]), "n {n} seed {seed}");
                        assert_eq!(bits(&got[m - bottom..]), bits(&full[m - bottom..]));
                        assert!(got[top..m - bottom].iter().all(|v| v.is_nan()));
                    }
                }
            }
        }
        for (o, ties) in [(30usize, false), (30, true), (200, true)] {
            let mut p: Vec<f64> = (0..o).map(|k| normal(7, k as u32).exp()).collect();
            if ties {
                // Equal largest probabilities (a deflated top value) and exact zeros.
                p[1] = p[0];
                p[2] = p[0];
                p[o - 1] = 0.0;
            }
            let s: f64 = p.iter().sum();
            p.iter_mut().for_each(|v| *v /= s);
            let (full, vecs) = categorical_cov(&p, 3, None);
            let full_m = categorical_m(&p, None);
            for r in [0usize, 1, 4] {
                let (got, got_vecs) = categorical_cov(&p, 3, Some(r));
                assert_eq!(got.len(), o);
                let (hi, lo) = (r.max(3), r.max(2));
                assert_eq!(bits(&got[..hi]), bits(&full[..hi]), "o {o} r {r}");
                assert_eq!(bits(&got[o - lo..]), bits(&full[o - lo..]), "o {o} r {r}");
                assert!(got[hi..o - lo].iter().all(|v| v.is_nan()), "o {o} r {r}");
                assert_eq!(got_vecs, vecs);
                let got_m = categorical_m(&p, Some(r));
                assert_eq!(got_m.len(), full_m.len());
                let hi = r.max(1);
                assert_eq!(bits(&got_m[..hi]), bits(&full_m[..hi]), "o {o} r {r}");
                assert!(got_m[hi..].iter().any(|v| v.is_nan()), "o {o} r {r}");
            }
        }
    }

    /// Rank-one updates and compressions against the dense solver, with ties, zero weights
    /// and poles of both signs.
    #[test]
    fn rank_one_matches_dense() {
        for n in [1usize, 2, 3, 5, 9, 30] {
            for seed in 0..12u64 {
                let mut d: Vec<f64> = (0..n).map(|k| normal(seed, k as u32)).collect();
                let mut z: Vec<f64> = (0..n).map(|k| normal(seed + 100, k as u32)).collect();
                if seed % 3 == 1 && n > 2 {
                    d[1] = d[0];
                    d[n - 1] = d[0];
                    z[2] = 0.0;
                }
                if seed % 4 == 3 {
                    z.iter_mut().for_each(|v| *v *= 1e-5);
                }
                for rho in [0.7, -1.3, 0.0] {
                    let r = RankOne::new(&d, &z, rho);
                    let mut a = vec![0.0; n * n];
                    let zn2: f64 = z.iter().map(|v| v * v).sum();
                    for i in 0..n {
                        for j in 0..n {
                            let dij = if i == j { d[i] } else { 0.0 };
                            a[i * n + j] = if rho != 0.0 {
                                dij + z[i] * z[j] / rho
                            } else {
                                // Π D Π with Π = I − z zᵀ/‖z‖², plus a large multiple of the
                                // projector on z (moved out of the way).
                                let pi = |a: usize, b: usize| {
                                    f64::from(u8::from(a == b)) - z[a] * z[b] / zn2
                                };
                                (0..n).map(|k| pi(i, k) * d[k] * pi(k, j)).sum::<f64>()
                                    + 1e3 * z[i] * z[j] / zn2
                            };
                        }
                    }
                    let mut want = sym_eigenvalues(n, &a).unwrap();
                    if rho == 0.0 {
                        want.remove(0);
                    }
                    let got = sorted(r.values());
                    assert_eq!(got.len(), want.len(), "n {n} seed {seed} rho {rho}");
                    let scale = want.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-12 * scale,
                            "n {n} seed {seed} rho {rho}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }
}

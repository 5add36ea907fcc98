//! Symmetric eigenvalue problems on the host: faer's self-adjoint eigensolver (eigenvectors, and
//! the fallback), and Householder tridiagonalisation with implicit QL or Laguerre's method for
//! the eigenvalues of the theory layer's small matrices (faster for n ≲ 100).

use crate::simd::Lanes;
use crate::{Error, Result};
use faer::{Mat, Side};

pub(super) fn check(n: usize, a: &[f64]) -> Result<()> {
    if a.len() != n * n {
        return Err(Error::Internal(format!(
            "a {n}×{n} matrix needs {} entries, got {}",
            n * n,
            a.len()
        )));
    }
    if let Some(index) = a.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "a matrix of the theory layer (the model's outputs overflow)".into(),
            index,
        });
    }
    Ok(())
}

fn to_mat(n: usize, a: &[f64]) -> Mat<f64> {
    // Symmetrise, so that round-off asymmetry of the caller does not matter.
    Mat::from_fn(n, n, |i, j| 0.5 * (a[i * n + j] + a[j * n + i]))
}

fn no_convergence(n: usize) -> Error {
    Error::Input(format!(
        "the symmetric eigensolver did not converge on a {n}×{n} matrix of the theory layer"
    ))
}

/// Eigenvalues of the symmetric n×n matrix `a` (row-major), in descending order.
pub fn sym_eigenvalues(n: usize, a: &[f64]) -> Result<Vec<f64>> {
    check(n, a)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let e = to_mat(n, a)
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|_| no_convergence(n));
    crate::simd::clear_upper();
    let mut e = e?;
    e.reverse();
    Ok(e)
}

/// Eigenvalues (descending) and unit eigenvectors (`vectors[k]` belongs to `values[k]`) of the
/// symmetric n×n matrix `a` (row-major).
pub fn sym_eigen(n: usize, a: &[f64]) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    check(n, a)?;
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let evd = to_mat(n, a)
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| no_convergence(n));
    crate::simd::clear_upper();
    let evd = evd?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    let values: Vec<f64> = (0..n).rev().map(|k| s[k]).collect();
    let vectors = (0..n)
        .rev()
        .map(|k| (0..n).map(|i| u[(i, k)]).collect())
        .collect();
    Ok((values, vectors))
}

/// Smallest eigenvalue of the symmetric n×n matrix `a` (row-major), for the small matrices of
/// the tensor power method's shift: Householder tridiagonalisation, then Laguerre's method on
/// the characteristic polynomial of each unreduced block (implicit QL, then faer, are the
/// fallbacks if it does not converge, and QL is used for n > [`SMALL`]); several times faster
/// than a general solver for n ≲ 20. Allocation-free for n ≤ [`SMALL`].
pub fn sym_min_eigenvalue(n: usize, a: &[f64]) -> Result<f64> {
    check(n, a)?;
    if n == 0 {
        return Ok(0.0);
    }
    let ql = with_work(n, |z, d, e| {
        tridiagonalise(n, a, z, d, e);
        (n <= SMALL)
            .then(|| tridiagonal_min(d, e))
            .flatten()
            .or_else(|| implicit_ql(d, e).then(|| d.iter().copied().fold(f64::INFINITY, f64::min)))
    });
    match ql {
        Some(v) => Ok(v),
        None => Ok(sym_eigenvalues(n, a)?.last().copied().unwrap_or(0.0)),
    }
}

/// Eigenvalues of the symmetric n×n matrix `a` (row-major), in descending order, by Householder
/// tridiagonalisation and the root-free QL iteration (Pal, Walker and Kahan; implicit QL, then
/// faer, are the fallbacks if it does not converge). The same values as [`sym_eigenvalues`] up to round-off (both are backward
/// stable), several times faster for the n ≲ 100 matrices of the theory layer.
pub fn sym_eigenvalues_ql(n: usize, a: &[f64]) -> Result<Vec<f64>> {
    check(n, a)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let ql = with_work(n, |z, d, e| {
        tridiagonalise(n, a, z, d, e);
        // The root-free iteration on a copy; implicit QL if it does not converge.
        let (d0, e0) = (d.to_vec(), e.to_vec());
        if root_free_ql(d, e) {
            return Some(d.to_vec());
        }
        d.copy_from_slice(&d0);
        e.copy_from_slice(&e0);
        implicit_ql(d, e).then(|| d.to_vec())
    });
    match ql {
        Some(mut v) => {
            v.sort_by(|x, y| y.total_cmp(x));
            Ok(v)
        }
        None => sym_eigenvalues(n, a),
    }
}

/// Smallest eigenvalue of the symmetric tridiagonal matrix (d, e) (layout of [`implicit_ql`])
/// by Laguerre's method on det(T_b − x I) of each unreduced block T_b (split where QL would
/// deflate), started at the Gershgorin lower bound. For a polynomial with only real roots,
/// Laguerre iterates from the left of the smallest root increase monotonically to it, cubically
/// for a simple root; a Sturm check (all leading minors of T_b − x I positive) keeps every
/// iterate certified below λ_min, with bisection if round-off overshoots. The block is scaled
/// by a power of two (exact) so that the recurrences cannot overflow. None if an iteration
/// cap is reached.
fn tridiagonal_min(d: &[f64], e: &[f64]) -> Option<f64> {
    let n = d.len();
    let mut best = f64::INFINITY;
    let mut start = 0;
    for k in 0..n {
        let split = k + 1 == n || e[k].abs() <= f64::EPSILON * (d[k].abs() + d[k + 1].abs());
        if split {
            best = best.min(block_min(&d[start..=k], &e[start..k])?);
            start = k + 1;
        }
    }
    Some(best)
}

/// [`tridiagonal_min`] of one unreduced block: diagonal `d` (m), off-diagonal `e` (m − 1).
fn block_min(d: &[f64], e: &[f64]) -> Option<f64> {
    let m = d.len();
    if m == 1 {
        return Some(d[0]);
    }
    let big = d.iter().chain(e).fold(0.0f64, |s, v| s.max(v.abs()));
    if big == 0.0 {
        return Some(0.0);
    }
    // Exact scaling by 2^−⌈log₂ big⌉: entries ≤ 1 in magnitude.
    let sc = 2f64.powi(-(big.log2().ceil() as i32));
    let at = |k: usize| d[k] * sc;
    let off2 = |k: usize| (e[k] * sc) * (e[k] * sc);
    let off = |k: usize| (e[k] * sc).abs();
    let mut lo = f64::INFINITY;
    let mut hi = f64::INFINITY;
    for k in 0..m {
        let r = if k > 0 { off(k - 1) } else { 0.0 } + if k + 1 < m { off(k) } else { 0.0 };
        lo = lo.min(at(k) - r);
        hi = hi.min(at(k));
    }
    let tol = 4.0 * f64::EPSILON;
    let mf = m as f64;
    let mut x = lo;
    for _ in 0..100 {
        // q_k = det(T_k − x I) and its first two derivatives in x, by the three-term recurrence.
        let (mut q0, mut q1) = (1.0, at(0) - x);
        let (mut d0, mut d1) = (0.0, -1.0);
        let (mut s0, mut s1) = (0.0, 0.0);
        let mut definite = q1 > 0.0;
        for k in 1..m {
            let (a, b) = (at(k) - x, off2(k - 1));
            let q2 = a * q1 - b * q0;
            let d2 = -q1 + a * d1 - b * d0;
            let s2 = -2.0 * d1 + a * s1 - b * s0;
            (q0, q1, d0, d1, s0, s1) = (q1, q2, d1, d2, s1, s2);
            definite &= q1 > 0.0;
            // Only the ratios q'/q, q''/q and the signs matter: keep q in range (clusters of
            // many eigenvalues near x make q tiny).
            let mag = q1.abs();
            if mag != 0.0 && !(1e-100..=1e100).contains(&mag) {
                let f = 1.0 / mag;
                (q0, q1, d0, d1, s0, s1) = (q0 * f, q1 * f, d0 * f, d1 * f, s0 * f, s1 * f);
            }
        }
        if !definite {
            // x ≥ λ_min: round-off overshoot; bisect the certified bracket [lo, x].
            hi = hi.min(x);
            if hi - lo <= tol * (1.0 + lo.abs().max(hi.abs())) {
                return Some(lo / sc);
            }
            x = 0.5 * (lo + hi);
            continue;
        }
        lo = x;
        // S₁ = Σ 1/(λ_i − x) = −q'/q, S₂ = Σ 1/(λ_i − x)² = S₁² − q''/q.
        let s1n = -d1 / q1;
        let s2n = s1n * s1n - s1 / q1;
        let root = ((mf - 1.0) * (mf * s2n - s1n * s1n)).max(0.0).sqrt();
        let step = mf / (s1n + root);
        if !(step.is_finite() && step >= 0.0) {
            return None;
        }
        let xn = (x + step).min(hi);
        if xn - x <= tol * (1.0 + x.abs()) {
            return Some(xn / sc);
        }
        x = xn;
    }
    None
}

/// Σ_k a_k b_k with four partial sums (so that the loop vectorises and is not bound by the
/// latency of one chain of additions).
#[inline(always)]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut s = [0.0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..4 {
            s[k] += x[k] * y[k];
        }
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// [`dot`] of four vectors with one `b`, computed together on lanes `V`: four chains of
/// additions in flight and `b` loaded once (the same bits as four calls).
#[inline(always)]
pub(crate) fn dot4<V: Lanes<Elem = f64>>(a: [&[f64]; 4], b: &[f64]) -> [f64; 4] {
    let n = b.len();
    let a = a.map(|a| &a[..n]);
    let chunks = n / 4 * 4;
    let mut s = [V::zero(); 4];
    let mut j = 0;
    while j < chunks {
        let y = V::load(&b[j..]);
        for (s, a) in s.iter_mut().zip(&a) {
            *s = *s + V::load(&a[j..]) * y;
        }
        j += 4;
    }
    let mut out = [0.0; 4];
    for ((o, s), a) in out.iter_mut().zip(s).zip(a) {
        let t: f64 = a[chunks..]
            .iter()
            .zip(&b[chunks..])
            .map(|(x, y)| x * y)
            .sum();
        *o = s.sum() + t;
    }
    out
}

/// Largest n served from stack buffers by [`sym_min_eigenvalue`] and [`sym_eigenvalues_ql`].
pub const SMALL: usize = 16;

/// Runs `f` with an n×n work matrix and two n-vectors, on the stack for n ≤ [`SMALL`].
fn with_work<R>(n: usize, f: impl FnOnce(&mut [f64], &mut [f64], &mut [f64]) -> R) -> R {
    if n <= SMALL {
        let mut z = [0.0; SMALL * SMALL];
        let mut d = [0.0; SMALL];
        let mut e = [0.0; SMALL];
        f(&mut z[..n * n], &mut d[..n], &mut e[..n])
    } else {
        let mut z = vec![0.0; n * n];
        let mut d = vec![0.0; n];
        let mut e = vec![0.0; n];
        f(&mut z, &mut d, &mut e)
    }
}

/// Householder reduction of the symmetric part of `a` (n×n, row-major) to tridiagonal form:
/// on return `d` holds the diagonal and `e[k]` the entry (k, k+1) (`e[n−1] = 0`), the layout of
/// [`implicit_ql`]. `z` (n×n) is work space. The trailing block is kept in full symmetric
/// storage, so that every inner loop runs over contiguous rows. With AVX where the CPU has it
/// ([`crate::simd::with_avx`]: the same results).
pub(super) fn tridiagonalise(n: usize, a: &[f64], z: &mut [f64], d: &mut [f64], e: &mut [f64]) {
    crate::simd::with_avx(
        #[inline(always)]
        || tridiagonalise_body(n, a, z, d, e),
    )
}

/// The body of [`tridiagonalise`].
#[inline(always)]
fn tridiagonalise_body(n: usize, a: &[f64], z: &mut [f64], d: &mut [f64], e: &mut [f64]) {
    for i in 0..n {
        for j in 0..n {
            z[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    // v and w of the reflection live in d[k+1..] and e[k+1..] while step k runs.
    for k in 0..n.saturating_sub(2) {
        let m = n - k - 1;
        let row = k * n + k + 1;
        let scale = z[row..row + m].iter().fold(0.0f64, |s, v| s.max(v.abs()));
        let tail = z[row + 1..row + m].iter().any(|v| *v != 0.0);
        d[k] = z[k * n + k];
        if scale == 0.0 || !tail {
            e[k] = z[row];
            continue;
        }
        // x = z[k, k+1..] (= column k below the diagonal); H = I − β v vᵀ with
        // v = x − α e₁, α = −sign(x₀)‖x‖, β = 2/(vᵀv), and H x = α e₁. Outside
        // [1e-150, 1e150], v is taken in units of `scale` (the same H), so that neither β nor
        // A v over- or underflows (into NaN, which only the slower fallbacks caught).
        let inv = if (1e-150..=1e150).contains(&scale) {
            1.0
        } else {
            1.0 / scale
        };
        let norm_s = z[row..row + m]
            .iter()
            .map(|v| (v * inv) * (v * inv))
            .sum::<f64>()
            .sqrt();
        let norm = norm_s / inv;
        let x0 = z[row];
        let alpha = if x0 >= 0.0 { -norm } else { norm };
        let (vs, ws) = (&mut d[k + 1..], &mut e[k + 1..]);
        if inv == 1.0 {
            vs.copy_from_slice(&z[row..row + m]);
            vs[0] = x0 - alpha;
        } else {
            for (v, x) in vs.iter_mut().zip(&z[row..row + m]) {
                *v = x * inv;
            }
            let alpha_s = if x0 >= 0.0 { -norm_s } else { norm_s };
            vs[0] = x0 * inv - alpha_s;
        }
        // vᵀv = 2‖x‖(‖x‖ + |x₀|) (in units of `scale`).
        let beta = 1.0 / (norm_s * (norm_s + (x0 * inv).abs()));
        // p = β A₂₂ v, K = β vᵀp / 2, w = p − K v.
        let base = (k + 1) * n + k + 1;
        let mut vp = 0.0;
        for (i, w) in ws.iter_mut().enumerate() {
            let r = &z[base + i * n..base + i * n + m];
            *w = beta * dot(r, vs);
            vp += vs[i] * *w;
        }
        let kk = 0.5 * beta * vp;
        for (w, v) in ws.iter_mut().zip(vs.iter()) {
            *w -= kk * v;
        }
        // A₂₂ ← A₂₂ − v wᵀ − w vᵀ.
        for i in 0..m {
            let (vi, wi) = (vs[i], ws[i]);
            let r = &mut z[base + i * n..base + i * n + m];
            for ((a, v), w) in r.iter_mut().zip(vs.iter()).zip(ws.iter()) {
                *a -= vi * w + wi * v;
            }
        }
        e[k] = alpha;
    }
    if n >= 2 {
        d[n - 2] = z[(n - 2) * n + n - 2];
        e[n - 2] = z[(n - 2) * n + n - 1];
    }
    d[n - 1] = z[n * n - 1];
    e[n - 1] = 0.0;
}

/// 2^k with big·2^k in [1, 2): the exact scaling of the root-free iteration.
pub(super) fn scale_exponent(big: f64) -> f64 {
    2f64.powi(-big.log2().floor() as i32)
}

/// √(a² + b²), without overflow for large arguments (faster than `f64::hypot`).
pub(super) fn norm2(a: f64, b: f64) -> f64 {
    let m = a.abs().max(b.abs());
    if m > 1e150 {
        m * ((a / m).powi(2) + (b / m).powi(2)).sqrt()
    } else {
        (a * a + b * b).sqrt()
    }
}

/// The previous implementation, kept as the test oracle: eigenvalues (unordered) of a symmetric
/// matrix by tred2-style Householder reduction (lower triangle, strided access, three
/// allocations) and the implicit QL method. None if QL needs more than 30 iterations for an
/// eigenvalue.
#[cfg(test)]
fn tridiagonal_ql(n: usize, a: &[f64]) -> Option<Vec<f64>> {
    let mut z: Vec<f64> = (0..n * n)
        .map(|k| 0.5 * (a[k] + a[(k % n) * n + k / n]))
        .collect();
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    for i in (1..n).rev() {
        let l = i - 1;
        let mut h = 0.0;
        if l > 0 {
            let scale: f64 = (0..i).map(|k| z[i * n + k].abs()).sum();
            if scale == 0.0 {
                e[i] = z[i * n + l];
            } else {
                for k in 0..i {
                    z[i * n + k] /= scale;
                    h += z[i * n + k] * z[i * n + k];
                }
                let f = z[i * n + l];
                let g = if f >= 0.0 { -h.sqrt() } else { h.sqrt() };
                e[i] = scale * g;
                h -= f * g;
                z[i * n + l] = f - g;
                let mut f = 0.0;
                for j in 0..i {
                    let mut g = 0.0;
                    for k in 0..=j {
                        g += z[j * n + k] * z[i * n + k];
                    }
                    for k in j + 1..i {
                        g += z[k * n + j] * z[i * n + k];
                    }
                    e[j] = g / h;
                    f += e[j] * z[i * n + j];
                }
                let hh = f / (h + h);
                for j in 0..i {
                    let f = z[i * n + j];
                    let g = e[j] - hh * f;
                    e[j] = g;
                    for k in 0..=j {
                        z[j * n + k] -= f * e[k] + g * z[i * n + k];
                    }
                }
            }
        } else {
            e[i] = z[i * n + l];
        }
        d[i] = h;
    }
    e[0] = 0.0;
    for (i, d) in d.iter_mut().enumerate() {
        *d = z[i * n + i];
    }
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    implicit_ql(&mut d, &mut e).then_some(d)
}

/// The end m ≥ l of the unreduced block of (d, e) that starts at l: the first m with
/// `negligible(e[m], |d_m| + |d_{m+1}|)`, or n − 1.
#[inline(always)]
fn block_end(d: &[f64], e: &[f64], l: usize, negligible: impl Fn(f64, f64) -> bool) -> usize {
    let n = d.len();
    let mut m = l;
    while m < n - 1 && !negligible(e[m], d[m].abs() + d[m + 1].abs()) {
        m += 1;
    }
    m
}

/// Eigenvalues (unordered, in `d`) of the symmetric tridiagonal matrix (d, e) (layout of
/// [`implicit_ql`]) by the root-free QL iteration of Pal, Walker and Kahan (LAPACK's `dsterf`):
/// it works on the squares e_k², with one square root per iteration instead of one per
/// rotation, so each QL sweep is about half the cost. The matrix is first scaled by a power of
/// two (exact) so that the squares neither overflow nor underflow needlessly. Same deflation
/// test as [`implicit_ql`] (|e_m| ≤ ε·(|d_m| + |d_{m+1}|), on squares). `e` is overwritten.
/// False if an eigenvalue needs more than 30 iterations or is not finite.
pub(super) fn root_free_ql(d: &mut [f64], e: &mut [f64]) -> bool {
    let n = d.len();
    let big = d.iter().chain(e.iter()).fold(0.0f64, |m, v| m.max(v.abs()));
    if big == 0.0 || !big.is_finite() {
        return big == 0.0;
    }
    let scale = scale_exponent(big);
    for v in d.iter_mut() {
        *v *= scale;
    }
    for v in e.iter_mut() {
        *v = (*v * scale) * (*v * scale);
    }
    let eps2 = f64::EPSILON * f64::EPSILON;
    for l in 0..n {
        let mut iter = 0;
        loop {
            // (e holds squares: the test of implicit QL, squared.)
            let m = block_end(d, e, l, |e, dd| e <= eps2 * dd * dd);
            if m == l {
                break;
            }
            iter += 1;
            if iter > 30 {
                return false;
            }
            // Wilkinson-like shift from the leading 2×2 block, as in implicit QL.
            let rte = e[l].sqrt();
            let sigma = (d[l + 1] - d[l]) / (2.0 * rte);
            let r = norm2(sigma, 1.0);
            let sigma = d[l] - rte / (sigma + r.copysign(sigma));
            let (mut c, mut s) = (1.0, 0.0);
            let mut gamma = d[m] - sigma;
            let mut p = gamma * gamma;
            for i in (l..m).rev() {
                let bb = e[i];
                let r = p + bb;
                if i + 1 != m {
                    e[i + 1] = s * r;
                }
                let oldc = c;
                c = p / r;
                s = bb / r;
                let oldgam = gamma;
                let alpha = d[i];
                gamma = c * (alpha - sigma) - s * oldgam;
                d[i + 1] = oldgam + (alpha - gamma);
                p = if c != 0.0 {
                    gamma * gamma / c
                } else {
                    oldc * bb
                };
            }
            e[l] = s * p;
            d[l] = sigma + gamma;
        }
    }
    for v in d.iter_mut() {
        *v /= scale;
    }
    d.iter().all(|v| v.is_finite())
}

/// Eigenvalues (unordered, in `d`) of the symmetric tridiagonal matrix with diagonal `d` and
/// off-diagonal `e[k]` = entry (k, k+1), `e[n−1]` = 0, by the implicit QL method (tqli without
/// eigenvectors). False if QL needs more than 30 iterations for an eigenvalue or an eigenvalue
/// is not finite.
fn implicit_ql(d: &mut [f64], e: &mut [f64]) -> bool {
    let n = d.len();
    for l in 0..n {
        let mut iter = 0;
        loop {
            let m = block_end(d, e, l, |e, dd| e.abs() <= f64::EPSILON * dd);
            if m == l {
                break;
            }
            iter += 1;
            if iter > 30 {
                return false;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = norm2(g, 1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut underflow = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = norm2(f, g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    d.iter().all(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_by_two() {
        let (v, u) = sym_eigen(2, &[2.0, 1.0, 1.0, 2.0]).unwrap();
        assert!((v[0] - 3.0).abs() < 1e-14 && (v[1] - 1.0).abs() < 1e-14);
        assert!((u[0][0].abs() - 0.5f64.sqrt()).abs() < 1e-14);
        assert!((u[0][0] - u[0][1]).abs() < 1e-14);
        assert_eq!(sym_eigenvalues(0, &[]).unwrap(), Vec::<f64>::new());
        assert!(sym_eigenvalues(2, &[1.0, f64::NAN, 0.0, 1.0]).is_err());
        assert!(sym_eigenvalues(2, &[1.0]).is_err());
    }

    #[test]
    fn ql_matches_faer() {
        for n in [1usize, 2, 3, 5, 10, 17] {
            for r in 0..20u32 {
                let mut a = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..=i {
                        let w = crate::rng::block(u64::from(r), 5, i as u32, j as u32, 0);
                        let v = crate::rng::box_muller(w[0], w[1]).0;
                        a[i * n + j] = v;
                        a[j * n + i] = v;
                    }
                }
                if r == 1 && n > 2 {
                    // A matrix with a repeated eigenvalue and zero rows.
                    a.iter_mut().for_each(|v| *v = 0.0);
                    a[0] = 2.0;
                    a[n * n - 1] = 2.0;
                }
                let want = *sym_eigenvalues(n, &a).unwrap().last().unwrap();
                let mut d = tridiagonal_ql(n, &a).unwrap();
                d.sort_by(f64::total_cmp);
                let mut all = sym_eigenvalues(n, &a).unwrap();
                all.reverse();
                for (x, y) in d.iter().zip(&all) {
                    assert!((x - y).abs() < 1e-12 * (1.0 + y.abs()), "n {n}: {x} vs {y}");
                }
                let got = sym_min_eigenvalue(n, &a).unwrap();
                assert!(
                    (got - want).abs() < 1e-12 * (1.0 + want.abs()),
                    "n {n}: {got} vs {want}"
                );
            }
        }
    }

    /// The allocation-free tridiagonalisation against the previous tred2 implementation and
    /// faer, on random, graded, low-rank, diagonal and badly scaled matrices.
    #[test]
    fn new_ql_matches_previous_and_faer() {
        for n in [1usize, 2, 3, 4, 7, 10, 16, 17, 30, 55] {
            for r in 0..12u32 {
                let mut a = vec![0.0; n * n];
                let rank = if r % 3 == 2 { 1 + n / 3 } else { n };
                let rows: Vec<f64> = (0..rank * n)
                    .map(|k| {
                        let w = crate::rng::block(u64::from(r) + 99, 6, k as u32, n as u32, 0);
                        crate::rng::box_muller(w[0], w[1]).0
                    })
                    .collect();
                for i in 0..n {
                    for j in 0..n {
                        a[i * n + j] = match r % 3 {
                            0 => rows[i.min(j) * n + i.max(j)],
                            _ => (0..rank).map(|k| rows[k * n + i] * rows[k * n + j]).sum(),
                        };
                    }
                }
                let scale = [1.0, 1e-120, 1e120, 3.0e-5][(r / 3) as usize % 4];
                a.iter_mut().for_each(|v| *v *= scale);
                if r == 11 {
                    // Diagonal (every column already reduced).
                    for i in 0..n {
                        for j in 0..n {
                            a[i * n + j] = if i == j { (i as f64) - 2.5 } else { 0.0 };
                        }
                    }
                }
                let norm = a.iter().fold(0.0f64, |m, v| m.max(v.abs())) * n as f64;
                let faer = sym_eigenvalues(n, &a).unwrap();
                let new = sym_eigenvalues_ql(n, &a).unwrap();
                let Some(mut old) = tridiagonal_ql(n, &a) else {
                    panic!("old QL fails: n {n} r {r}");
                };
                old.sort_by(|x, y| y.total_cmp(x));
                for ((x, y), z) in new.iter().zip(&old).zip(&faer) {
                    let tol = 1e-13 * norm.max(f64::MIN_POSITIVE);
                    assert!((x - y).abs() <= tol, "n {n} r {r}: {x} vs old {y}");
                    assert!((x - z).abs() <= tol, "n {n} r {r}: {x} vs faer {z}");
                }
                let min = sym_min_eigenvalue(n, &a).unwrap();
                let want = *new.last().unwrap();
                assert!(
                    (min - want).abs() <= 1e-14 * norm.max(f64::MIN_POSITIVE),
                    "n {n} r {r}: {min} vs {want}"
                );
            }
        }
    }

    /// Matrices scaled by tiny and huge powers of ten reduce to tridiagonal forms whose
    /// eigenvalues are the scaled eigenvalues of the unscaled matrix, with no fallback: the
    /// reflections are computed in units of the column's scale (otherwise β = 2/vᵀv or A v
    /// over- or underflow into NaN, at 1e-200 and 1e160 alike).
    #[test]
    fn tridiagonalisation_survives_extreme_scales() {
        let n = 12;
        let g = |k: usize| {
            let w = crate::rng::block(41, 2, k as u32, 0, 0);
            crate::rng::box_muller(w[0], w[1]).0
        };
        let a: Vec<f64> = (0..n * n).map(g).collect();
        let want = sym_eigenvalues(n, &a).unwrap();
        let norm = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for scale in [1e-200, 1e-160, 1e-100, 1.0, 1e100, 1e160, 1e200] {
            let b: Vec<f64> = a.iter().map(|v| v * scale).collect();
            let (mut z, mut d, mut e) = (vec![0.0; n * n], vec![0.0; n], vec![0.0; n]);
            tridiagonalise(n, &b, &mut z, &mut d, &mut e);
            assert!(d.iter().chain(&e).all(|v| v.is_finite()), "scale {scale:e}");
            assert!(
                root_free_ql(&mut d, &mut e),
                "scale {scale:e}: no convergence"
            );
            d.sort_by(|x, y| y.total_cmp(x));
            for (x, y) in d.iter().zip(&want) {
                assert!(
                    (x / scale - y).abs() <= 1e-13 * norm,
                    "scale {scale:e}: {x:e} vs {y:e}·scale"
                );
            }
        }
    }

    /// The root-free QL iteration converges by itself (no fallback) and agrees with faer (on
    /// the matrix scaled to norm 1) on random, graded, clustered and badly scaled tridiagonal
    /// matrices, where implicit QL loses digits (the graded case at 1e-140 scale).
    #[test]
    fn root_free_ql_matches_faer() {
        for n in [1usize, 2, 3, 8, 30, 55, 120] {
            for r in 0..10u32 {
                let g = |k: usize, s: u32| {
                    let w = crate::rng::block(u64::from(r) + 7, s, k as u32, n as u32, 0);
                    crate::rng::box_muller(w[0], w[1]).0
                };
                let scale = [1.0, 1e-140, 1e140, 0.75][(r % 4) as usize];
                let mut d: Vec<f64> = (0..n).map(|k| scale * g(k, 1)).collect();
                let mut e: Vec<f64> = (0..n).map(|k| scale * g(k, 2)).collect();
                if r == 5 {
                    // Graded: entries spanning 40 orders of magnitude.
                    for k in 0..n {
                        let f = 10f64.powi(-(k as i32 * 40 / n as i32));
                        d[k] *= f;
                        e[k] *= f;
                    }
                }
                if r == 6 {
                    // Clustered: a repeated diagonal with tiny couplings, and a split.
                    d.iter_mut().for_each(|v| *v = 1.0);
                    e.iter_mut().for_each(|v| *v *= 1e-9);
                    e[n / 2] = 0.0;
                }
                e[n - 1] = 0.0;
                let norm = d.iter().chain(&e).fold(0.0f64, |m, v| m.max(v.abs()));
                let mut t = vec![0.0; n * n];
                for k in 0..n {
                    t[k * n + k] = d[k] / norm;
                    if k + 1 < n {
                        t[k * n + k + 1] = e[k] / norm;
                        t[(k + 1) * n + k] = e[k] / norm;
                    }
                }
                let mut want = sym_eigenvalues(n, &t).unwrap();
                want.reverse();
                let (mut got, mut work) = (d.clone(), e.clone());
                assert!(
                    root_free_ql(&mut got, &mut work),
                    "n {n} r {r}: no convergence"
                );
                got.sort_by(f64::total_cmp);
                for (x, y) in got.iter().zip(&want) {
                    assert!(
                        (x / norm - y).abs() <= 1e-13,
                        "n {n} r {r}: {x} vs {y}·{norm}"
                    );
                }
            }
        }
    }

    /// Laguerre's smallest eigenvalue against QL on random, low-rank, clustered and
    /// degenerate matrices, including GEAP-like Hessians with repeated eigenvalues.
    #[test]
    fn laguerre_min_matches_ql() {
        let mut cases: Vec<(usize, Vec<f64>)> = Vec::new();
        for n in [2usize, 3, 5, 10, 16] {
            for r in 0..30u32 {
                let mut a = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..=i {
                        let w = crate::rng::block(u64::from(r) + 7, 8, i as u32, j as u32, 0);
                        let v = crate::rng::box_muller(w[0], w[1]).0;
                        let v = match r % 5 {
                            // Diagonal plus a constant (eigenvalue of multiplicity n − 1).
                            1 => f64::from(u8::from(i == j)) + 0.3,
                            // Two equal diagonal blocks (every eigenvalue repeated).
                            2 if (i < n / 2) != (j < n / 2) => 0.0,
                            2 => ((i % (n / 2).max(1)) as f64 - (j % (n / 2).max(1)) as f64).cos(),
                            // Clustered: tiny perturbation of the identity.
                            3 => f64::from(u8::from(i == j)) + 1e-9 * v,
                            _ => v * [1.0, 1e-30, 1e40][(r / 5) as usize % 3],
                        };
                        a[i * n + j] = v;
                        a[j * n + i] = v;
                    }
                }
                cases.push((n, a));
            }
        }
        for (n, a) in cases {
            let norm = a.iter().fold(0.0f64, |m, v| m.max(v.abs())) * n as f64;
            let mut want = tridiagonal_ql(n, &a).unwrap();
            want.sort_by(f64::total_cmp);
            let got = sym_min_eigenvalue(n, &a).unwrap();
            let lag = with_work(n, |z, d, e| {
                tridiagonalise(n, &a, z, d, e);
                tridiagonal_min(d, e)
            });
            assert!(lag.is_some(), "n {n}: Laguerre did not converge");
            assert!(
                (got - want[0]).abs() <= 1e-14 * norm,
                "n {n}: {got} vs {} ({norm})",
                want[0]
            );
        }
    }
}

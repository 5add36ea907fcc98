//! The root-free QL iteration of [`super::eigen`] on up to four symmetric tridiagonal matrices
//! at once, one per vector lane (docs/theory.md §8).
//!
//! A QL sweep is one long chain of dependent divisions, so on one matrix the CPU waits on the
//! divider's latency. Run in lock-step, four matrices fill the same instructions and the
//! divider's pipeline for about the cost of one. Each lane keeps its own deflation point `l`,
//! block end `m`, shift and iteration count, exactly as the one-matrix iteration would: a step
//! changes lane k only where `l_k ≤ i < m_k`, and starts or ends lane k's sweep where the
//! one-matrix sweep starts or ends. So each lane performs the same operations in the same
//! order as [`super::eigen`]'s one-matrix iteration: the eigenvalues are the same bits.

use super::eigen::{check, norm2, scale_exponent, sym_eigenvalues_ql, tridiagonalise};
use crate::Result;

/// Lanes per batch.
pub const LANES: usize = 4;

/// Iterations allowed per eigenvalue (as in the one-matrix iteration).
const MAX_ITER: usize = 30;

/// Where lane k stands.
#[derive(Clone, Copy, Default)]
struct Lane {
    /// Size of the lane's matrix (0: unused lane).
    n: usize,
    /// The deflation point: d[..l] are eigenvalues.
    l: usize,
    /// End of the unreduced block of the current sweep.
    m: usize,
    /// Iterations at this l.
    iter: usize,
    /// The sweep's shift.
    sigma: f64,
    /// Whether the lane still has a sweep to run.
    busy: bool,
    /// Whether the iteration failed (cap reached or not finite).
    failed: bool,
}

/// Eigenvalues (unordered, in `d[k]`) of up to [`LANES`] symmetric tridiagonal matrices
/// (d\[k\], e\[k\]) in the layout of the one-matrix iteration (`e[k][i]` = entry (i, i+1),
/// last entry 0), by the root-free QL iteration of Pal, Walker and Kahan run in lock-step.
/// The matrices may differ in size. Returns, per matrix, whether it converged (as the
/// one-matrix iteration: false after 30 iterations on one eigenvalue, or for values
/// that are not finite); `e` is overwritten.
pub(crate) fn root_free_ql_lanes(d: &mut [&mut [f64]], e: &mut [&mut [f64]]) -> Vec<bool> {
    assert!(
        d.len() <= LANES && d.len() == e.len(),
        "at most four matrices"
    );
    crate::simd::with_avx(
        #[inline(always)]
        || run(d, e),
    )
}

#[inline(always)]
fn run(d: &mut [&mut [f64]], e: &mut [&mut [f64]]) -> Vec<bool> {
    let count = d.len();
    let size = d.iter().map(|d| d.len()).max().unwrap_or(0);
    let mut lanes = [Lane::default(); LANES];
    let mut scales = [1.0; LANES];
    // Interleaved copies, lane-major within an index: dv[i][k] = d[k][i].
    let mut dv = vec![[0.0; LANES]; size];
    let mut ev = vec![[0.0; LANES]; size];
    for k in 0..count {
        let n = d[k].len();
        assert_eq!(e[k].len(), n, "d and e of a matrix have the same length");
        let big = d[k]
            .iter()
            .chain(e[k].iter())
            .fold(0.0f64, |m, v| m.max(v.abs()));
        if big == 0.0 || !big.is_finite() {
            // All zero (the eigenvalues are d), or not finite (failed).
            lanes[k].failed = big != 0.0;
            continue;
        }
        let scale = scale_exponent(big);
        scales[k] = scale;
        lanes[k].n = n;
        for i in 0..n {
            dv[i][k] = d[k][i] * scale;
            ev[i][k] = (e[k][i] * scale) * (e[k][i] * scale);
        }
    }
    let eps2 = f64::EPSILON * f64::EPSILON;
    let negligible = |e: f64, dd: f64| e <= eps2 * dd * dd;
    loop {
        // Each lane to its next sweep: deflate, then the shift of its leading 2×2 block.
        let (mut lo, mut hi) = (usize::MAX, 0);
        for (k, lane) in lanes.iter_mut().enumerate() {
            lane.busy = false;
            while !lane.failed && lane.l < lane.n {
                // The end of the unreduced block from l, as in the one-matrix iteration.
                let mut m = lane.l;
                while m + 1 < lane.n && !negligible(ev[m][k], dv[m][k].abs() + dv[m + 1][k].abs()) {
                    m += 1;
                }
                if m == lane.l {
                    lane.l += 1;
                    lane.iter = 0;
                    continue;
                }
                lane.iter += 1;
                if lane.iter > MAX_ITER {
                    lane.failed = true;
                    break;
                }
                let l = lane.l;
                let rte = ev[l][k].sqrt();
                let sigma = (dv[l + 1][k] - dv[l][k]) / (2.0 * rte);
                let r = norm2(sigma, 1.0);
                lane.sigma = dv[l][k] - rte / (sigma + r.copysign(sigma));
                lane.m = m;
                lane.busy = true;
                (lo, hi) = (lo.min(l), hi.max(m));
                break;
            }
        }
        if hi == 0 {
            break;
        }
        sweep(&mut dv, &mut ev, &lanes, lo, hi);
    }
    let mut converged = vec![false; count];
    for k in 0..count {
        let lane = &lanes[k];
        if lane.failed {
            continue;
        }
        for i in 0..lane.n {
            d[k][i] = dv[i][k] / scales[k];
        }
        converged[k] = d[k].iter().all(|v| v.is_finite());
    }
    converged
}

/// One QL sweep of every busy lane, in lock-step over i = hi − 1, …, lo: lane k steps where
/// `l_k ≤ i < m_k`, starting at i = m_k − 1 and ending at i = l_k as the one-matrix sweep does.
#[inline(always)]
fn sweep(
    dv: &mut [[f64; LANES]],
    ev: &mut [[f64; LANES]],
    lanes: &[Lane; LANES],
    lo: usize,
    hi: usize,
) {
    let mut l = [0usize; LANES];
    let mut m = [0usize; LANES];
    let mut sigma = [0.0; LANES];
    for k in 0..LANES {
        // An idle lane never steps (l = m = 0) and computes on benign values.
        if lanes[k].busy {
            (l[k], m[k], sigma[k]) = (lanes[k].l, lanes[k].m, lanes[k].sigma);
        }
    }
    let (mut c, mut s, mut gamma, mut p) = ([1.0; LANES], [0.0; LANES], [1.0; LANES], [1.0; LANES]);
    for i in (lo..hi).rev() {
        let (d_i, d_next) = (dv[i], dv[i + 1]);
        let (e_i, e_next) = (ev[i], ev[i + 1]);
        let (mut nd_i, mut nd_next, mut ne_i, mut ne_next) = (d_i, d_next, e_i, e_next);
        for k in 0..LANES {
            let active = l[k] <= i && i < m[k];
            if i + 1 == m[k] {
                // The sweep of lane k starts: γ = d_m − σ, p = γ².
                c[k] = 1.0;
                s[k] = 0.0;
                gamma[k] = d_next[k] - sigma[k];
                p[k] = gamma[k] * gamma[k];
            }
            let bb = if active { e_i[k] } else { 1.0 };
            let r = p[k] + bb;
            if active && i + 1 != m[k] {
                ne_next[k] = s[k] * r;
            }
            let oldc = c[k];
            let cn = p[k] / r;
            let sn = bb / r;
            let oldgam = gamma[k];
            let alpha = d_i[k];
            let gn = cn * (alpha - sigma[k]) - sn * oldgam;
            let pn = if cn != 0.0 { gn * gn / cn } else { oldc * bb };
            if active {
                nd_next[k] = oldgam + (alpha - gn);
                (c[k], s[k], gamma[k], p[k]) = (cn, sn, gn, pn);
                if i == l[k] {
                    // The sweep of lane k ends.
                    ne_i[k] = sn * pn;
                    nd_i[k] = sigma[k] + gn;
                }
            }
        }
        (dv[i], dv[i + 1], ev[i], ev[i + 1]) = (nd_i, nd_next, ne_i, ne_next);
    }
}

/// Eigenvalues (descending) of each symmetric matrix `(n, a)` (n×n, row-major), the values of
/// [`sym_eigenvalues_ql`] bit for bit: Householder tridiagonalisation of each, then the
/// root-free QL iteration on four at a time (matrices of similar size share a batch). A matrix
/// whose iteration does not converge takes [`sym_eigenvalues_ql`]'s fallbacks.
pub fn sym_eigenvalues_ql_many(mats: &[(usize, &[f64])]) -> Result<Vec<Vec<f64>>> {
    for (n, a) in mats {
        check(*n, a)?;
    }
    let mut tri: Vec<(Vec<f64>, Vec<f64>)> = mats
        .iter()
        .map(|&(n, a)| {
            let (mut z, mut d, mut e) = (vec![0.0; n * n], vec![0.0; n], vec![0.0; n]);
            if n > 0 {
                tridiagonalise(n, a, &mut z, &mut d, &mut e);
            }
            (d, e)
        })
        .collect();
    // Largest first, so that a batch holds matrices of similar size.
    let mut order: Vec<usize> = (0..mats.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(mats[k].0));
    let mut converged = vec![false; mats.len()];
    for batch in order.chunks(LANES) {
        let mut group: Vec<(Vec<f64>, Vec<f64>)> =
            batch.iter().map(|&k| std::mem::take(&mut tri[k])).collect();
        let (mut d, mut e): (Vec<&mut [f64]>, Vec<&mut [f64]>) = group
            .iter_mut()
            .map(|(d, e)| (d.as_mut_slice(), e.as_mut_slice()))
            .unzip();
        let ok = root_free_ql_lanes(&mut d, &mut e);
        for ((&k, t), ok) in batch.iter().zip(group).zip(ok) {
            (tri[k], converged[k]) = (t, ok);
        }
    }
    mats.iter()
        .zip(tri)
        .zip(converged)
        .map(|(((n, a), (mut v, _)), ok)| {
            if !ok {
                // Rare: the one-matrix route and its fallbacks (implicit QL, then faer).
                return sym_eigenvalues_ql(*n, a);
            }
            v.sort_by(|x, y| y.total_cmp(x));
            Ok(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theory::eigen::root_free_ql;

    /// Random, graded, clustered, split and all-zero tridiagonal matrices of different sizes in
    /// the same batch: every lane gives the one-matrix iteration's eigenvalues bit for bit.
    #[test]
    fn lanes_match_the_one_matrix_iteration() {
        let g = |seed: u64, k: usize, s: u32| {
            let w = crate::rng::block(seed, s, k as u32, 0, 0);
            crate::rng::box_muller(w[0], w[1]).0
        };
        let matrix = |seed: u64, n: usize| -> (Vec<f64>, Vec<f64>) {
            let mut d: Vec<f64> = (0..n).map(|k| g(seed, k, 1)).collect();
            let mut e: Vec<f64> = (0..n).map(|k| g(seed, k, 2)).collect();
            match seed % 6 {
                1 => {
                    for k in 0..n {
                        let f = 10f64.powi(-(k as i32 * 40 / n.max(1) as i32));
                        d[k] *= f;
                        e[k] *= f;
                    }
                }
                2 => {
                    d.iter_mut().for_each(|v| *v = 1.0);
                    e.iter_mut().for_each(|v| *v *= 1e-9);
                    e[n / 2] = 0.0;
                }
                3 => {
                    d.iter_mut().for_each(|v| *v *= 1e-140);
                    e.iter_mut().for_each(|v| *v *= 1e-140);
                }
                4 => {
                    d.iter_mut().for_each(|v| *v = 0.0);
                    e.iter_mut().for_each(|v| *v = 0.0);
                }
                _ => {}
            }
            e[n - 1] = 0.0;
            (d, e)
        };
        for batch in 0..24u64 {
            let count = 1 + (batch as usize % LANES);
            let sizes: Vec<usize> = (0..count)
                .map(|k| [1, 2, 3, 8, 30, 55, 64][(batch as usize + 3 * k) % 7])
                .collect();
            let mats: Vec<(Vec<f64>, Vec<f64>)> = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| matrix(batch * 7 + k as u64, n))
                .collect();
            let mut d: Vec<Vec<f64>> = mats.iter().map(|m| m.0.clone()).collect();
            let mut e: Vec<Vec<f64>> = mats.iter().map(|m| m.1.clone()).collect();
            let mut dr: Vec<&mut [f64]> = d.iter_mut().map(|v| v.as_mut_slice()).collect();
            let mut er: Vec<&mut [f64]> = e.iter_mut().map(|v| v.as_mut_slice()).collect();
            let ok = root_free_ql_lanes(&mut dr, &mut er);
            for (k, (d0, e0)) in mats.iter().enumerate() {
                let (mut dw, mut ew) = (d0.clone(), e0.clone());
                let want_ok = root_free_ql(&mut dw, &mut ew);
                assert_eq!(ok[k], want_ok, "batch {batch} lane {k}");
                assert!(ok[k], "batch {batch} lane {k}: no convergence");
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&d[k]),
                    bits(&dw),
                    "batch {batch} lane {k} (n {})",
                    sizes[k]
                );
            }
        }
    }

    /// The batched eigenvalues are [`sym_eigenvalues_ql`]'s, bit for bit, for Gram matrices of
    /// mixed sizes (several batches, one partly filled) and the empty matrix; a matrix with a
    /// NaN is an error, not a panic.
    #[test]
    fn many_matches_one_at_a_time() {
        let g = |seed: u64, k: usize| {
            let w = crate::rng::block(seed, 9, k as u32, 0, 0);
            crate::rng::box_muller(w[0], w[1]).0
        };
        let gram = |seed: u64, n: usize| -> Vec<f64> {
            let rows = n + 3;
            let p: Vec<f64> = (0..rows * n).map(|k| g(seed, k)).collect();
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] = (0..rows).map(|r| p[r * n + i] * p[r * n + j]).sum();
                }
            }
            a
        };
        let sizes = [55usize, 10, 55, 0, 10, 55, 1, 10, 55, 55, 3, 10];
        let mats: Vec<Vec<f64>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| gram(k as u64, n))
            .collect();
        let refs: Vec<(usize, &[f64])> = sizes
            .iter()
            .zip(&mats)
            .map(|(&n, a)| (n, a.as_slice()))
            .collect();
        let got = sym_eigenvalues_ql_many(&refs).unwrap();
        for ((&n, a), v) in sizes.iter().zip(&mats).zip(&got) {
            let want = sym_eigenvalues_ql(n, a).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(v), bits(&want), "n {n}");
        }
        let mut bad = mats[1].clone();
        bad[3] = f64::NAN;
        assert!(sym_eigenvalues_ql_many(&[(10, &mats[1]), (10, &bad)]).is_err());
        assert!(sym_eigenvalues_ql_many(&[(10, &mats[1][..99])]).is_err());
    }

    /// A lane whose values are not finite fails alone; the others still converge.
    #[test]
    fn a_failing_lane_does_not_disturb_the_others() {
        let mut d = [vec![2.0, 1.0, 3.0], vec![1.0, f64::NAN], vec![4.0, 1.0]];
        let mut e = [vec![0.5, 0.25, 0.0], vec![1.0, 0.0], vec![2.0, 0.0]];
        let mut dr: Vec<&mut [f64]> = d.iter_mut().map(|v| v.as_mut_slice()).collect();
        let mut er: Vec<&mut [f64]> = e.iter_mut().map(|v| v.as_mut_slice()).collect();
        assert_eq!(
            root_free_ql_lanes(&mut dr, &mut er),
            vec![true, false, true]
        );
        let mut v = d[2].clone();
        v.sort_by(f64::total_cmp);
        // [[4, 2], [2, 1]]: eigenvalues 0 and 5.
        assert!(v[0].abs() < 1e-14 && (v[1] - 5.0).abs() < 1e-14, "{v:?}");
    }
}

//! Symmetric eigenvalue problems on the host, through faer's self-adjoint eigensolver.

use crate::{Error, Result};
use faer::{Mat, Side};

fn check(n: usize, a: &[f64]) -> Result<()> {
    if a.len() != n * n {
        return Err(Error::Input(format!(
            "internal: a {n}×{n} matrix needs {} entries, got {}",
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
    let mut e = to_mat(n, a)
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|_| no_convergence(n))?;
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
        .map_err(|_| no_convergence(n))?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    let values: Vec<f64> = (0..n).rev().map(|k| s[k]).collect();
    let vectors = (0..n)
        .rev()
        .map(|k| (0..n).map(|i| u[(i, k)]).collect())
        .collect();
    Ok((values, vectors))
}

/// Smallest eigenvalue of the symmetric n×n matrix `a` (row-major), for the small matrices of
/// the tensor power method's shift: Householder tridiagonalisation and implicit QL
/// (eigenvalues only), which for n ≲ 20 is several times faster than a general solver; faer
/// is the fallback if QL does not converge.
pub fn sym_min_eigenvalue(n: usize, a: &[f64]) -> Result<f64> {
    check(n, a)?;
    if n == 0 {
        return Ok(0.0);
    }
    match tridiagonal_ql(n, a) {
        Some(d) => Ok(d.into_iter().fold(f64::INFINITY, f64::min)),
        None => Ok(sym_eigenvalues(n, a)?.last().copied().unwrap_or(0.0)),
    }
}

/// √(a² + b²), without overflow for large arguments (faster than `f64::hypot`).
fn norm2(a: f64, b: f64) -> f64 {
    let m = a.abs().max(b.abs());
    if m > 1e150 {
        m * ((a / m).powi(2) + (b / m).powi(2)).sqrt()
    } else {
        (a * a + b * b).sqrt()
    }
}

/// Eigenvalues (unordered) of a symmetric matrix by Householder reduction to tridiagonal form
/// and the implicit QL method (tred2/tqli without eigenvectors). None if QL needs more than
/// 30 iterations for an eigenvalue.
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
    // Implicit QL on the tridiagonal matrix (d, e).
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m < n - 1 {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 30 {
                return None;
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
    d.iter().all(|v| v.is_finite()).then_some(d)
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
}

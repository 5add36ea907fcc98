//! The spectral layer (MATH §5.1, §7, Prop. 5.1, Thm 5.2) against dense tensors built from
//! their definitions, a Jacobi eigensolver and a brute-force search over the sphere:
//! * the matrix-free oracles K x³, K x², sym(K − C⊗C) x³ / x², C, tr M, ‖C‖_F², B² and the
//!   spectrum of M (O×O Gram route) equal their dense counterparts;
//! * the GEAP multi-start solver finds the extreme Z-eigenvalues of random symmetric tensors
//!   and of the family tensors (max and min) found by the brute force;
//! * Thm 5.2, Prop. 4.3, Jensen and the certified cap on 48 random softmax vectors;
//! * Prop. 5.1 closed forms, and the closed forms and bounds of the Bernoulli and Poisson
//!   families.

#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use diagfim::theory::moments::Moments;
use diagfim::theory::zeig::{
    extreme_z_eigenvalue, geap, standard_starts, Dense4, ExcessMoment, FourthMoment, GeapOptions,
    Starts, SymTensor4,
};
use diagfim::theory::Spectrum;
use diagfim::Family;

fn cat() -> Family {
    Family::from_name("categorical", 1.0).unwrap()
}

fn logits(o: usize, temp: f64, seed: u64) -> Vec<f64> {
    (0..o)
        .map(|a| {
            let w = diagfim::rng::block(seed, 31, a as u32, 0, 0);
            temp * diagfim::rng::box_muller(w[0], w[1]).0
        })
        .collect()
}

fn random_vec(o: usize, seed: u32) -> Vec<f64> {
    (0..o)
        .map(|a| {
            let w = diagfim::rng::block(5, 32, seed, a as u32, 0);
            diagfim::rng::box_muller(w[0], w[1]).0
        })
        .collect()
}

/// Dense sym(K − C⊗C) from the dense moments.
fn dense_excess(mom: &DenseMoments) -> Vec<f64> {
    let o = mom.o;
    let c = |a: usize, b: usize| mom.c[[a, b]];
    let mut t = vec![0.0; o * o * o * o];
    for a in 0..o {
        for b in 0..o {
            for cc in 0..o {
                for d in 0..o {
                    t[((a * o + b) * o + cc) * o + d] = mom.kk(a, b, cc, d)
                        - (c(a, b) * c(cc, d) + c(a, cc) * c(b, d) + c(a, d) * c(b, cc)) / 3.0;
                }
            }
        }
    }
    t
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    let err = rel_err(got, want);
    assert!(
        err < tol,
        "{what}: rel err {err:e}\n got {got:?}\nwant {want:?}"
    );
}

#[test]
fn matrix_free_oracles_match_dense_tensors() {
    for (fi, (family, o)) in [
        (cat(), 3),
        (cat(), 5),
        (cat(), 7),
        (Family::from_name("gaussian", 0.6).unwrap(), 3),
        (Family::from_name("gaussian", 1.7).unwrap(), 4),
        (Family::from_name("bernoulli", 1.0).unwrap(), 3),
        (Family::from_name("bernoulli", 1.0).unwrap(), 4),
        (Family::from_name("poisson", 1.0).unwrap(), 2),
        (Family::from_name("poisson", 1.0).unwrap(), 4),
    ]
    .into_iter()
    .enumerate()
    {
        let h = logits(o, 1.5, fi as u64);
        let eta = family.as_dyn().eta(&h);
        let mom = family_moments(&family, &h);
        let m = Moments::new(family.as_dyn(), &eta);
        let cflat: Vec<f64> = mom.c.iter().copied().collect();
        assert_close(&m.cov_matrix(), &cflat, 1e-14, "C");
        let k = Dense4::new(o, &mom.k).unwrap();
        let v = Dense4::new(o, &dense_excess(&mom)).unwrap();
        let (mk, mv) = (FourthMoment(m), ExcessMoment::new(m));
        for s in 0..4 {
            let x = random_vec(o, s);
            let cx: Vec<f64> = (0..o)
                .map(|a| (0..o).map(|b| mom.c[[a, b]] * x[b]).sum())
                .collect();
            assert_close(&m.cov_apply(&x), &cx, 1e-14, "C x");
            for (name, dense, free) in [
                ("K", &k as &dyn SymTensor4, &mk as &dyn SymTensor4),
                ("sym(K−C⊗C)", &v, &mv),
            ] {
                let (mut g1, mut g2) = (vec![0.0; o], vec![0.0; o]);
                dense.apply3(&x, &mut g1);
                free.apply3(&x, &mut g2);
                assert_close(&g2, &g1, 1e-12, &format!("{name} x³"));
                let (mut h1, mut h2) = (vec![0.0; o * o], vec![0.0; o * o]);
                dense.apply2(&x, &mut h1);
                free.apply2(&x, &mut h2);
                assert_close(&h2, &h1, 1e-12, &format!("{name} x²"));
            }
            // The quartic form of sym(K − C⊗C) is Var[(xᵀs)²] (MATH §5.1).
            let want = family.as_dyn().kurt_excess_quad(&eta, &x);
            assert!((mv.value(&x) - want).abs() < 1e-12 * want.abs().max(1e-300));
        }
        // M = Cov(s⊗s): trace, ‖C‖_F² and spectrum (Gram route) against the dense O²×O².
        let dm = dense_m(&mom);
        let oo = o * o;
        let trace: f64 = (0..oo).map(|i| dm[i * oo + i]).sum();
        assert!((m.m_trace() - trace).abs() < 1e-12 * trace, "tr M");
        let fro: f64 = cflat.iter().map(|v| v * v).sum();
        assert!((m.cov_frobenius2() - fro).abs() < 1e-13 * fro, "‖C‖_F²");
        let tr_c: f64 = (0..o).map(|a| mom.c[[a, a]]).sum();
        assert!((m.cov_trace() - tr_c).abs() < 1e-13 * tr_c);
        let eig = jacobi_eigenvalues(oo, &dm);
        let spec = m.m_spectrum().unwrap();
        let top = eig[0];
        let positive: Vec<f64> = eig.into_iter().filter(|v| *v > 1e-12 * top).collect();
        let got: Vec<f64> = (0..positive.len()).map(|k| spec.get(k)).collect();
        assert_close(&got, &positive, 1e-10, "spectrum of M");
        assert!(
            spec.get(positive.len()) <= 1e-12 * top,
            "no extra eigenvalue"
        );
        // B² = sup_y ‖t(y) − η‖².
        match &family {
            Family::Categorical(_) => {
                let b2 = (0..o)
                    .map(|y| {
                        (0..o)
                            .map(|a| (if a == y { 1.0 } else { 0.0 } - eta[a]).powi(2))
                            .sum::<f64>()
                    })
                    .fold(0.0, f64::max);
                assert!((m.stat_bound2().unwrap() - b2).abs() < 1e-14);
            }
            Family::Bernoulli(_) => {
                let b2 = (0..1usize << o)
                    .map(|bits| {
                        (0..o)
                            .map(|a| (((bits >> a) & 1) as f64 - eta[a]).powi(2))
                            .sum::<f64>()
                    })
                    .fold(0.0, f64::max);
                assert!((m.stat_bound2().unwrap() - b2).abs() < 1e-14);
            }
            Family::Gaussian(_) | Family::Poisson(_) => assert!(m.stat_bound2().is_none()),
        }
    }
}

/// A random symmetric 4-tensor (symmetrised by Dense4).
fn random_tensor(o: usize, seed: u32) -> Dense4 {
    let data: Vec<f64> = (0..o * o * o * o)
        .map(|k| {
            let w = diagfim::rng::block(9, 33, seed, k as u32, 0);
            diagfim::rng::box_muller(w[0], w[1]).0
        })
        .collect();
    Dense4::new(o, &data).unwrap()
}

#[test]
fn z_eigenvalues_match_brute_force_sphere_search() {
    let opts = GeapOptions::default();
    for o in [2usize, 3, 4] {
        for seed in 0..6u32 {
            let t = random_tensor(o, seed * 10 + o as u32);
            let f = |u: &[f64]| t.value(u);
            let starts = standard_starts(o, None, o, &[], 16);
            let max = extreme_z_eigenvalue(&t, &starts, true, &opts).unwrap();
            let min = extreme_z_eigenvalue(&t, &starts, false, &opts).unwrap();
            let (bmax, bmin) = (sphere_max(o, &f), -sphere_max(o, &|u| -f(u)));
            let scale = bmax.abs().max(bmin.abs());
            assert!(
                (max.value - bmax).abs() < 1e-7 * scale,
                "O={o} seed {seed}: max {} vs {bmax}",
                max.value
            );
            assert!(
                (min.value - bmin).abs() < 1e-7 * scale,
                "O={o} seed {seed}: min {} vs {bmin}",
                min.value
            );
            // The returned pairs are Z-eigenpairs: T x³ = λ x, ‖x‖ = 1.
            for z in [&max, &min] {
                let mut g = vec![0.0; o];
                t.apply3(&z.vector, &mut g);
                let res: f64 = g
                    .iter()
                    .zip(&z.vector)
                    .map(|(g, x)| (g - z.value * x).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!(res < 1e-6 * scale && z.converged, "O={o}: residual {res:e}");
            }
        }
    }
    // The family tensors at the spectra's own starts (what the analysis uses).
    for (i, temp) in [0.3, 1.0, 2.5, 6.0].into_iter().enumerate() {
        for o in [2usize, 3, 4] {
            let h = logits(o, temp, 100 + i as u64 * 7 + o as u64);
            let eta = cat().as_dyn().eta(&h);
            let s = Spectrum::new(cat().as_dyn(), &eta).unwrap();
            let mom = categorical_moments(&h);
            let k4 = |u: &[f64]| dense_k_uvuv(&mom, u, u);
            let bk = sphere_max(o, &k4);
            let bv = sphere_max(o, &|u| k4(u) - mom.quad(u).powi(2));
            assert!(
                (s.lam_max_k - bk).abs() < 1e-7 * bk,
                "λ_max(K) {} vs {bk}",
                s.lam_max_k
            );
            assert!(
                (s.lam_max_v - bv).abs() < 1e-7 * bk,
                "λ_max(K−C⊗C) {} vs {bv}",
                s.lam_max_v
            );
        }
    }
}

#[test]
fn power_method_rejects_bad_starts() {
    let t = random_tensor(3, 1);
    let opts = GeapOptions::default();
    assert!(geap(&t, &[0.0, 0.0, 0.0], true, &opts, 10).is_err());
    assert!(geap(&t, &[1.0, 0.0], true, &opts, 10).is_err());
    assert!(geap(&t, &[f64::NAN, 1.0, 0.0], true, &opts, 10).is_err());
    assert!(extreme_z_eigenvalue(&t, &Starts::from(vec![vec![0.0; 3]]), true, &opts).is_err());
    assert!(extreme_z_eigenvalue(&t, &Starts::from(vec![vec![1.0; 2]]), true, &opts).is_err());
    // The family tensors' closed forms refuse an index or a buffer that does not fit.
    let p = [0.2, 0.3, 0.5];
    let m = Moments {
        kind: diagfim::family::FamilyKind::Categorical,
        eta: &p,
    };
    for k in [&FourthMoment(m) as &dyn SymTensor4, &ExcessMoment::new(m)] {
        assert!(k.unit_contraction(3, &mut [0.0; 3]).is_none());
        assert!(k.unit_contraction(0, &mut [0.0; 2]).is_none());
        assert!(k.unit_contraction(2, &mut [0.0; 3]).is_some());
        let (x, mut xn, mut gn) = ([1.0, 0.0], [0.0; 3], [0.0; 3]);
        assert!(k.step([&x, &x], [0.0, 1.0], [&mut xn, &mut gn]).is_none());
    }
    assert!(Dense4::new(3, &[0.0; 10]).is_err());
}

/// Thm 5.2, Prop. 4.3 / Cor. Q.1, Jensen and the certified cap, on 48 random softmax vectors
/// with O from 2 to 6 and temperatures from flat to peaked.
#[test]
fn categorical_theorem_5_2_on_random_probabilities() {
    for k in 0..48u64 {
        let o = 2 + (k % 5) as usize;
        let temp = [0.2, 1.0, 3.0, 8.0][(k / 5 % 4) as usize];
        let h = logits(o, temp, 1000 + k);
        let p = cat().as_dyn().eta(&h);
        let s = Spectrum::new(cat().as_dyn(), &p).unwrap();
        let mom = categorical_moments(&h);
        let cflat: Vec<f64> = mom.c.iter().copied().collect();
        let eig = jacobi_eigenvalues(o, &cflat);
        let tol = 1e-12;
        assert!((s.lam_max_c - eig[0]).abs() < tol, "λ_max(C)");
        assert!(
            (s.lam_min_c_perp - eig[o - 2].max(0.0)).abs() < tol,
            "λ_min(C|1⊥)"
        );
        let rho = s.rho.unwrap();
        let pmax = p.iter().copied().fold(0.0, f64::max);
        let s2: f64 = p.iter().map(|v| v * v).sum();
        assert!((rho - pmax.min(1.0 - s2)).abs() < 1e-15);
        let b2 = s.stat_bound2.unwrap();
        assert!(
            s.lam_max_c <= rho + tol && s.lam_max_c <= 0.5 + tol,
            "λ_max(C) ≤ ρ, ≤ 1/2"
        );
        assert!(s.lam_max_v <= s.lam_max_k + tol, "λ_max(K−C⊗C) ≤ λ_max(K)");
        assert!(s.lam_max_k <= b2 * s.lam_max_c + tol, "Prop. 4.3");
        assert!(
            b2 <= 2.0 + tol && s.lam_max_k <= 2.0 * rho + tol,
            "Cor. Q.1 / Thm 5.2"
        );
        assert!(s.lam_max_k >= s.lam_max_c.powi(2) - tol, "Jensen");
        assert!(s.lam_max_v <= s.lam_max_m + tol, "certified cap");
        assert!(
            (s.trace_m - s.eig_m.sum()).abs() < 1e-10 * s.trace_m.max(1e-300),
            "tr M = Σ λ(M)"
        );
    }
}

#[test]
fn gaussian_proposition_5_1() {
    for (s2, o) in [(1.0, 2usize), (0.4, 3), (2.5, 4)] {
        let g = Family::from_name("gaussian", s2).unwrap();
        let h = logits(o, 1.0, 7);
        let eta = g.as_dyn().eta(&h);
        let s = Spectrum::new(g.as_dyn(), &eta).unwrap();
        let s4 = s2 * s2;
        assert_eq!(s.eig_c, vec![1.0 / s2; o]);
        assert_eq!((s.lam_max_c, s.lam_min_c), (1.0 / s2, 1.0 / s2));
        assert_eq!((s.lam_max_k, s.lam_min_k), (3.0 / s4, 3.0 / s4));
        assert_eq!((s.lam_max_v, s.lam_min_v), (2.0 / s4, 2.0 / s4));
        assert!(s.exact_max && s.rho.is_none() && s.stat_bound2.is_none());
        // Against the brute force on the dense Isserlis tensor.
        let mom = gaussian_moments(&h, s2);
        let k4 = |u: &[f64]| dense_k_uvuv(&mom, u, u);
        assert!((sphere_max(o, &k4) - 3.0 / s4).abs() < 1e-9);
        assert!((-sphere_max(o, &|u| -k4(u)) - 3.0 / s4).abs() < 1e-9);
        let dm = dense_m(&mom);
        let eig = jacobi_eigenvalues(o * o, &dm);
        assert!((eig[0] - s.lam_max_m).abs() < 1e-12);
        let m = Moments::new(g.as_dyn(), &eta).m_spectrum().unwrap();
        for (k, e) in eig.iter().enumerate() {
            assert!((m.get(k) - e).abs() < 1e-12, "eigenvalue {k} of M");
        }
    }
}

/// Degenerate and extreme inputs: a one-hot p (C = 0), a uniform p, huge logits, and a
/// non-finite η (an error, not a panic); the parallel batch equals the one-by-one spectra.
#[test]
fn degenerate_probabilities() {
    let f = cat();
    let onehot = Spectrum::new(f.as_dyn(), &[1.0, 0.0, 0.0]).unwrap();
    assert_eq!(
        (onehot.lam_max_c, onehot.lam_max_k, onehot.lam_max_v),
        (0.0, 0.0, 0.0)
    );
    assert_eq!(
        (onehot.lam_max_m, onehot.trace_m, onehot.rho),
        (0.0, 0.0, Some(0.0))
    );
    // Uniform p over O classes: λ(C) = 1/O (multiplicity O − 1) and ρ = 1/O.
    for o in [2usize, 5] {
        let p = vec![1.0 / o as f64; o];
        let s = Spectrum::new(f.as_dyn(), &p).unwrap();
        assert!((s.lam_max_c - 1.0 / o as f64).abs() < 1e-15);
        assert!((s.lam_min_c_perp - 1.0 / o as f64).abs() < 1e-15);
        assert!((s.rho.unwrap() - 1.0 / o as f64).abs() < 1e-15);
        if o == 2 {
            // (u_y − ū)² is the same for both classes: Var Î1 ≡ 0 (MATH §9a).
            assert!(s.lam_max_v.abs() < 1e-15);
        }
    }
    let p = f.as_dyn().eta(&[700.0, -700.0, 0.0, 1.0]);
    let s = Spectrum::new(f.as_dyn(), &p).unwrap();
    assert!(s.lam_max_k.is_finite() && s.lam_max_v >= 0.0);
    assert!(Spectrum::new(f.as_dyn(), &[f64::NAN, 0.5, 0.5]).is_err());
    let etas: Vec<Vec<f64>> = (0..6)
        .map(|k| f.as_dyn().eta(&logits(4, 1.0, 300 + k)))
        .collect();
    let batch = diagfim::theory::spectrum::spectra(f.as_dyn(), &etas).unwrap();
    for (b, eta) in batch.iter().zip(&etas) {
        assert_eq!(b, &Spectrum::new(f.as_dyn(), eta).unwrap());
    }
}

/// The closed forms of the families with independent outputs (docs/theory.md) against the
/// brute-force sphere search on the dense tensors built from the label distributions:
/// λ(C) exactly; λ_max(K), λ_max(K − C⊗C) exact at a vertex when every κ4 ≥ 0 (Poisson
/// always), and by the power method otherwise (Bernoulli near p = 1/2); the certified lower
/// bounds on λ_min below the true minima (equal at equal coordinates when every κ4 ≥ 0);
/// λ_max(M) above
/// λ_max(K − C⊗C); Prop. 4.3 for the Bernoulli family.
#[test]
fn independent_families_closed_forms() {
    let bern = Family::from_name("bernoulli", 1.0).unwrap();
    let pois = Family::from_name("poisson", 1.0).unwrap();
    let mut nonconvex = 0;
    for k in 0..24u64 {
        let o = 2 + (k % 3) as usize;
        let temp = [0.3, 1.0, 2.0, 4.0][(k / 3 % 4) as usize];
        for family in [&bern, &pois] {
            let mut h = logits(o, temp, 2000 + k);
            if k % 8 == 7 {
                // Equal coordinates: the lower bounds are attained.
                h = vec![h[0]; o];
            }
            let eta = family.as_dyn().eta(&h);
            let s = Spectrum::new(family.as_dyn(), &eta).unwrap();
            let mom = family_moments(family, &h);
            let cflat: Vec<f64> = mom.c.iter().copied().collect();
            let eig = jacobi_eigenvalues(o, &cflat);
            // The truncated series sums O(λ) terms: ≈ 1e-12 relative at λ ≈ 350.
            let tol = 1e-10 * (1.0 + eig[0]);
            assert!(
                (s.lam_max_c - eig[0]).abs() < tol && (s.lam_min_c - eig[o - 1]).abs() < tol,
                "{k}: λ(C) {} {} vs {eig:?}",
                s.lam_max_c,
                s.lam_min_c
            );
            let k4 = |u: &[f64]| dense_k_uvuv(&mom, u, u);
            let v4 = |u: &[f64]| k4(u) - mom.quad(u).powi(2);
            let (bk, bv) = (sphere_max(o, &k4), sphere_max(o, &v4));
            let (mk, mv) = (-sphere_max(o, &|u| -k4(u)), -sphere_max(o, &|u| -v4(u)));
            let scale = bk.max(1e-300);
            assert!(
                (s.lam_max_k - bk).abs() < 1e-7 * scale,
                "{k} λ_max(K) {} vs {bk}",
                s.lam_max_k
            );
            assert!(
                (s.lam_max_v - bv).abs() < 1e-7 * scale,
                "{k} λ_max(V) {} vs {bv}",
                s.lam_max_v
            );
            assert!(s.lam_min_k <= mk * (1.0 + 1e-9) && s.lam_min_v <= mv * (1.0 + 1e-9));
            assert!(s.lam_min_v >= 0.0 && s.lam_max_v <= s.lam_max_m * (1.0 + 1e-12));
            if k % 8 == 7 && s.exact_max {
                assert!(
                    (s.lam_min_k - mk).abs() < 1e-7 * scale,
                    "equal: λ_min(K) {} vs {mk}",
                    s.lam_min_k
                );
                assert!(
                    (s.lam_min_v - mv).abs() < 1e-7 * scale,
                    "equal: λ_min(V) {} vs {mv}",
                    s.lam_min_v
                );
            }
            if matches!(family, Family::Poisson(_)) {
                assert!(s.exact_max && s.stat_bound2.is_none());
                let vertex = eta.iter().map(|l| l + 3.0 * l * l).fold(0.0, f64::max);
                assert!((s.lam_max_k - vertex).abs() < 1e-14 * vertex);
            } else {
                nonconvex += usize::from(!s.exact_max);
                let b2 = s.stat_bound2.unwrap();
                assert!(s.lam_max_k <= b2 * s.lam_max_c * (1.0 + 1e-12), "Prop. 4.3");
                assert!(s.lam_max_c <= 0.25 && s.lam_max_m <= 0.125 + 1e-15);
            }
            assert!(
                (s.trace_m - s.eig_m.sum()).abs() < 1e-10 * s.trace_m.max(1e-300),
                "tr M = Σ λ(M)"
            );
        }
    }
    assert!(
        nonconvex >= 5,
        "the power-method branch was exercised {nonconvex} times"
    );
}

/// Largest relative difference between two spectra, each quantity relative to its own scale
/// (eigenvalues of C to λ_max(C), of M to λ_max(M), the Z-eigenvalues to λ_max(K)), less an
/// absolute allowance of 1e-14 (the entries of η are at most about 1 and carry rounding errors
/// of ≈ 1e-16, e.g. in p_a − p_a² of the dense C when p_a is close to 1).
fn spectrum_difference(a: &Spectrum, b: &Spectrum) -> (f64, String) {
    let rel = |x: f64, y: f64, scale: f64| {
        if x == y {
            0.0
        } else {
            ((x - y).abs() - 1e-14).max(0.0)
                / scale.max(x.abs()).max(y.abs()).max(f64::MIN_POSITIVE)
        }
    };
    let mut worst = (0.0f64, String::new());
    let mut see = |what: &str, x: f64, y: f64, scale: f64| {
        let r = rel(x, y, scale);
        if r > worst.0 || r.is_nan() {
            worst = (r, format!("{what}: {x:e} vs {y:e}"));
        }
    };
    let sc = a.lam_max_c.max(b.lam_max_c);
    assert_eq!(a.eig_c.len(), b.eig_c.len());
    for (k, (x, y)) in a.eig_c.iter().zip(&b.eig_c).enumerate() {
        see(&format!("λ_{k}(C)"), *x, *y, sc);
    }
    see("λ_max(C)", a.lam_max_c, b.lam_max_c, 0.0);
    see("λ_min(C|1⊥)", a.lam_min_c_perp, b.lam_min_c_perp, sc);
    see("tr C", a.trace_c, b.trace_c, 0.0);
    let sk = a.lam_max_k.max(b.lam_max_k);
    see("λ_max(K)", a.lam_max_k, b.lam_max_k, 0.0);
    see("λ_max(K−C⊗C)", a.lam_max_v, b.lam_max_v, sk);
    see("λ_min(K)", a.lam_min_k, b.lam_min_k, sk);
    see("λ_min(K−C⊗C)", a.lam_min_v, b.lam_min_v, sk);
    let sm = a.lam_max_m.max(b.lam_max_m);
    see("λ_max(M)", a.lam_max_m, b.lam_max_m, 0.0);
    see("tr M", a.trace_m, b.trace_m, 0.0);
    for k in 0..a.eig_m.len().max(b.eig_m.len()) {
        see(&format!("λ_{k}(M)"), a.eig_m.get(k), b.eig_m.get(k), sm);
    }
    see(
        "B²",
        a.stat_bound2.unwrap_or(0.0),
        b.stat_bound2.unwrap_or(0.0),
        0.0,
    );
    see("ρ", a.rho.unwrap_or(0.0), b.rho.unwrap_or(0.0), 0.0);
    assert_eq!(a.exact_max, b.exact_max);
    worst
}

/// The O(O²) spectra (secular equations for λ(C) and λ(M), GEAP with one fixed shift) against
/// the previous dense solver (O×O eigensolves, adaptive shifts), for O from 3 to 40 and
/// peaked, ordinary and flat softmax vectors, and for the Bernoulli family near p = 1/2 (its
/// power-method branch).
#[test]
fn fast_spectrum_matches_reference_solver() {
    let opts = GeapOptions::default();
    let mut worst = (0.0f64, String::new());
    let mut cases = 0;
    for o in [3usize, 4, 5, 7, 10, 13, 20, 29, 40] {
        for (k, temp) in [0.02, 0.3, 1.0, 2.5, 6.0, 15.0].into_iter().enumerate() {
            let mut h = logits(o, temp, 5000 + 31 * o as u64 + k as u64);
            if k == 2 {
                // Two exactly equal top classes (a tied eigenvalue of C).
                h[1] = h[0] + 3.0;
                h[2] = h[0] + 3.0;
            }
            let p = cat().as_dyn().eta(&h);
            let fast = Spectrum::new(cat().as_dyn(), &p).unwrap();
            let reference = Spectrum::reference(cat().as_dyn(), &p, &opts).unwrap();
            let d = spectrum_difference(&fast, &reference);
            if d.0 > worst.0 || d.0.is_nan() {
                worst = (d.0, format!("O {o} temp {temp}: {}", d.1));
            }
            cases += 1;
        }
    }
    println!(
        "categorical: {cases} inputs, largest relative difference {:e} ({})",
        worst.0, worst.1
    );
    // Near p = 1/2 the maximum of the Bernoulli excess tensor can be nearly degenerate: both
    // solvers then need more than the default 5000 iterations to converge.
    let opts = GeapOptions {
        max_iter: 200_000,
        ..opts
    };
    let bern = Family::from_name("bernoulli", 1.0).unwrap();
    for o in [3usize, 6, 12, 25] {
        for seed in 0..4u64 {
            let h = logits(o, 0.4, 7000 + seed);
            let eta = bern.as_dyn().eta(&h);
            let fast = Spectrum::with_options(bern.as_dyn(), &eta, &opts).unwrap();
            let reference = Spectrum::reference(bern.as_dyn(), &eta, &opts).unwrap();
            let d = spectrum_difference(&fast, &reference);
            if d.0 > worst.0 || d.0.is_nan() {
                worst = (d.0, format!("bernoulli O {o} seed {seed}: {}", d.1));
            }
            cases += 1;
        }
    }
    println!(
        "{cases} inputs, largest relative difference {:e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 <= 1e-10, "{}: {}", worst.0, worst.1);
}

/// `Spectrum::with_extremes` (what the engines compute) is `Spectrum::new` bit for bit, except
/// the middle of λ(C) and the tail of λ(M), which it leaves NaN (not computed); families other
/// than the categorical get the full spectrum.
#[test]
fn partial_spectrum_is_the_full_one_at_its_ends() {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for o in [10usize, 40, 300] {
        for (k, temp) in [0.3, 2.5, 12.0].into_iter().enumerate() {
            let p = cat()
                .as_dyn()
                .eta(&logits(o, temp, 9100 + 7 * o as u64 + k as u64));
            let full = Spectrum::new(cat().as_dyn(), &p).unwrap();
            for r in [0usize, 2, 6] {
                let part = Spectrum::with_extremes(cat().as_dyn(), &p, r).unwrap();
                let ctx = format!("O {o} temp {temp} r {r}");
                let m_nan = (0..part.eig_m.len()).any(|j| part.eig_m.get(j).is_nan());
                let partial = part.eig_c.iter().any(|v| v.is_nan()) || m_nan;
                assert_eq!(part.extremes, partial.then_some(r), "{ctx}");
                assert!(partial || o < 300, "{ctx}");
                // Every scalar is the same.
                let strip = |s: &Spectrum| Spectrum {
                    eig_c: vec![],
                    eig_m: Default::default(),
                    extremes: None,
                    ..s.clone()
                };
                assert_eq!(strip(&part), strip(&full), "{ctx}");
                let (hi, lo) = (r.max(3), r.max(2));
                let (hi, lo) = if hi + lo <= o { (hi, lo) } else { (o, 0) };
                assert_eq!(part.eig_c.len(), o, "{ctx}");
                assert_eq!(bits(&part.eig_c[..hi]), bits(&full.eig_c[..hi]), "{ctx}");
                assert_eq!(
                    bits(&part.eig_c[o - lo..]),
                    bits(&full.eig_c[o - lo..]),
                    "{ctx}"
                );
                // The middle is NaN, or (when the ends cover it) the full spectrum.
                let mid = |v: &[f64]| {
                    v[hi..o - lo]
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>()
                };
                let nan_mid = part.eig_c[hi..o - lo].iter().all(|v| v.is_nan());
                assert!(nan_mid || mid(&part.eig_c) == mid(&full.eig_c), "{ctx}");
                assert!(nan_mid || o < 300, "{ctx}");
                for j in 0..full.eig_m.len() {
                    let (x, y) = (part.eig_m.get(j), full.eig_m.get(j));
                    assert!(
                        x.to_bits() == y.to_bits() || (j >= r.max(1) && x.is_nan()),
                        "{ctx}"
                    );
                }
                assert!(m_nan || o < 300, "{ctx}");
            }
        }
    }
    for name in ["gaussian", "bernoulli", "poisson"] {
        let fam = Family::from_name(name, 0.7).unwrap();
        let eta = fam.as_dyn().eta(&logits(12, 0.5, 77));
        let part = Spectrum::with_extremes(fam.as_dyn(), &eta, 1).unwrap();
        assert_eq!(part, Spectrum::new(fam.as_dyn(), &eta).unwrap(), "{name}");
    }
}

/// The fixed GEAP shifts are valid: at random unit x, λ_min(T x²) ≥ −c for c =
/// `shift_bound(true)` of K and of sym(K − C⊗C), for every family (dense T x² and a Jacobi
/// eigensolve), and the bound of sym(K − C⊗C) is attained up to a factor of a few somewhere
/// (it is not vacuous).
#[test]
fn fixed_shift_bounds_hold() {
    let families = [
        cat(),
        Family::from_name("bernoulli", 1.0).unwrap(),
        Family::from_name("poisson", 1.0).unwrap(),
        Family::from_name("gaussian", 0.7).unwrap(),
    ];
    let mut tightest = 0.0f64;
    for family in &families {
        for (k, temp) in [0.05, 0.5, 1.5, 4.0].into_iter().enumerate() {
            for o in [2usize, 3, 5, 8] {
                let h = logits(o, temp, 9000 + 17 * k as u64 + o as u64);
                let eta = family.as_dyn().eta(&h);
                let m = Moments::new(family.as_dyn(), &eta);
                let (kt, vt) = (FourthMoment(m), ExcessMoment::new(m));
                let tensors: [(&dyn SymTensor4, &str); 2] = [(&kt, "K"), (&vt, "K − C⊗C")];
                for (t, name) in tensors {
                    let c = t.shift_bound(true).expect("a fixed shift");
                    assert!(c >= 0.0 && t.shift_bound(false).is_none());
                    for seed in 0..40u32 {
                        let mut x = random_vec(o, seed + 1000 * o as u32);
                        let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                        x.iter_mut().for_each(|v| *v /= n);
                        let mut gm = vec![0.0; o * o];
                        t.apply2(&x, &mut gm);
                        let lmin = *jacobi_eigenvalues(o, &gm).last().unwrap();
                        let scale = c.max(gm.iter().fold(0.0f64, |a, v| a.max(v.abs())));
                        assert!(
                            lmin >= -c - 1e-12 * scale,
                            "{} {name}, O {o}: λ_min(T x²) = {lmin:e} < −{c:e}",
                            family.as_dyn().name()
                        );
                        if c > 0.0 {
                            tightest = tightest.max(-lmin / c);
                        }
                    }
                }
            }
        }
    }
    assert!(tightest > 0.1, "the bounds are loose by {tightest}");
}

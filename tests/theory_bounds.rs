//! The per-parameter bounds of the theory layer (docs/theory.md) on random models of both
//! families and several activations, per input, against an independent oracle: hyper-dual J
//! and D, dense C and K tensors, a Jacobi eigensolver and a brute-force sphere search.
//! * every bound sandwiches the exact value (Eqs. 10–12, 14–16, Thm 5.2, certified λ_max(M),
//!   the centred lower bound, Lemma 4.8);
//! * closed-form bounds agree with the oracle to 1e-6, GEAP-based ones with the brute force;
//! * Gaussian equalities (Prop. 5.1); categorical λ_min = 0 (MATH §9a);
//! * cov12, w_opt, var_opt, var_x, var_ef and ef_bias against their definitions.

#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use diagfim::engine::{analyze, AnalysisOptions, EngineKind, Request};
use diagfim::{Activation, Family, Key, Label, Mlp, Report};
use Activation::*;

struct Case {
    widths: &'static [usize],
    acts: &'static [Activation],
    gaussian: Option<f64>,
    scale: f64,
}

const CASES: &[Case] = &[
    Case {
        widths: &[3, 5, 4, 3],
        acts: &[Tanh, Sigmoid],
        gaussian: None,
        scale: 1.0,
    },
    Case {
        widths: &[3, 6, 4],
        acts: &[Softplus],
        gaussian: None,
        scale: 1.6,
    },
    Case {
        widths: &[2, 5, 2],
        acts: &[LogSigmoid],
        gaussian: None,
        scale: 1.2,
    },
    Case {
        widths: &[3, 4, 3],
        acts: &[Relu],
        gaussian: None,
        scale: 1.1,
    },
    Case {
        widths: &[4, 5, 3, 2],
        acts: &[LogSigmoid, Tanh],
        gaussian: Some(0.7),
        scale: 0.9,
    },
    Case {
        widths: &[3, 4, 3],
        acts: &[Sigmoid],
        gaussian: Some(1.3),
        scale: 1.0,
    },
];

const B: usize = 4;

fn family_of(c: &Case) -> Family {
    match c.gaussian {
        Some(s2) => Family::from_name("gaussian", s2).unwrap(),
        None => Family::from_name("categorical", 1.0).unwrap(),
    }
}

fn labels_of(c: &Case, b: usize, o: usize) -> Vec<Label> {
    (0..b)
        .map(|i| match c.gaussian {
            Some(_) => Label::Target(
                (0..o)
                    .map(|a| ((i * 3 + a) % 4) as f64 * 0.5 - 0.7)
                    .collect(),
            ),
            None => Label::Class((i * 2 + 1) % o),
        })
        .collect()
}

fn run(
    model: &Mlp,
    family: &Family,
    x: &ndarray::Array2<f64>,
    labels: &[Label],
    per_input: bool,
) -> Report {
    analyze(&Request {
        model,
        family: family.as_dyn(),
        inputs: x.view(),
        labels: Some(labels),
        options: AnalysisOptions {
            samples: 3,
            seed: 1,
            per_input,
            engine: EngineKind::Cpu,
            ..Default::default()
        },
        progress: None,
    })
    .unwrap()
}

/// Everything the oracle knows about one input.
struct Oracle {
    fisher: Vec<f64>,
    var1: Vec<f64>,
    var2: Vec<f64>,
    cov12: Vec<f64>,
    ef: Vec<f64>,
    /// ‖J_i‖², ‖J̃_i‖² (centred), ‖D_i‖².
    jn2: Vec<f64>,
    jcn2: Vec<f64>,
    dn2: Vec<f64>,
    lam_max_c: f64,
    lam_min_c: f64,
    lam2_c: f64,
    lam_max_k: f64,
    lam_min_k: f64,
    lam_max_v: f64,
    lam_max_m: f64,
    b2: Option<f64>,
    rho: Option<f64>,
}

fn oracle(model: &Mlp, c: &Case, x: &[f64], label: &Label) -> Oracle {
    let h = output(model, x);
    let mom = match c.gaussian {
        Some(s2) => gaussian_moments(&h, s2),
        None => categorical_moments(&h),
    };
    let o = mom.o;
    let base = oracle_input(model, c.gaussian, x, Some(label));
    let (j, d) = jac_and_diag_hess(model, x);
    let cflat: Vec<f64> = mom.c.iter().copied().collect();
    let eig_c = jacobi_eigenvalues(o, &cflat);
    // Third moment E[(Jᵀs)²(Dᵀs)]: enumeration (categorical), 0 (Gaussian, odd moment).
    let cov12: Vec<f64> = (0..j.nrows())
        .map(|i| match c.gaussian {
            Some(_) => 0.0,
            None => (0..o)
                .map(|y| {
                    let s: Vec<f64> = (0..o)
                        .map(|a| if a == y { 1.0 } else { 0.0 } - mom.eta[a])
                        .collect();
                    let js: f64 = (0..o).map(|a| j[[i, a]] * s[a]).sum();
                    let ds: f64 = (0..o).map(|a| d[[i, a]] * s[a]).sum();
                    -mom.eta[y] * js * js * ds
                })
                .sum(),
        })
        .collect();
    let n2 = |v: Vec<f64>| v.iter().map(|x| x * x).sum::<f64>();
    let jn2: Vec<f64> = (0..j.nrows()).map(|i| n2(j.row(i).to_vec())).collect();
    let jcn2: Vec<f64> = (0..j.nrows())
        .map(|i| {
            let m = j.row(i).sum() / o as f64;
            n2(j.row(i).iter().map(|v| v - m).collect())
        })
        .collect();
    let dn2: Vec<f64> = (0..d.nrows()).map(|i| n2(d.row(i).to_vec())).collect();
    let k4 = |u: &[f64]| dense_k_uvuv(&mom, u, u);
    let (lam_max_k, lam_min_k, lam_max_v) = if o <= 4 {
        (
            sphere_max(o, &|u| k4(u)),
            -sphere_max(o, &|u| -k4(u)),
            sphere_max(o, &|u| k4(u) - mom.quad(u).powi(2)),
        )
    } else {
        (f64::NAN, f64::NAN, f64::NAN)
    };
    let lam_max_m = jacobi_eigenvalues(o * o, &dense_m(&mom))[0];
    let (b2, rho) = match c.gaussian {
        Some(_) => (None, None),
        None => {
            let p = &mom.eta;
            let b2 = (0..o)
                .map(|y| {
                    (0..o)
                        .map(|a| (if a == y { 1.0 } else { 0.0 } - p[a]).powi(2))
                        .sum::<f64>()
                })
                .fold(0.0, f64::max);
            let pmax = p.iter().copied().fold(0.0, f64::max);
            (
                Some(b2),
                Some(pmax.min(1.0 - p.iter().map(|v| v * v).sum::<f64>())),
            )
        }
    };
    Oracle {
        fisher: base.fisher,
        var1: base.var1,
        var2: base.var2,
        ef: base.ef,
        cov12,
        jn2,
        jcn2,
        dn2,
        lam_max_c: eig_c[0],
        lam_min_c: eig_c[o - 1],
        lam2_c: if o >= 2 { eig_c[o - 2] } else { eig_c[0] },
        lam_max_k,
        lam_min_k,
        lam_max_v,
        lam_max_m,
        b2,
        rho,
    }
}

/// lo ≤ hi up to round-off relative to the scale of the values.
fn le(lo: f64, hi: f64, scale: f64) -> bool {
    lo <= hi + 1e-9 * hi.abs() + 1e-13 * scale
}

fn close(got: f64, want: f64, tol: f64, scale: f64) -> bool {
    (got - want).abs() <= tol * want.abs() + 1e-12 * scale
}

#[test]
fn per_parameter_bounds_sandwich_and_match_the_oracle() {
    for (ci, c) in CASES.iter().enumerate() {
        let model = random_model(c.widths, c.acts, c.scale, 500 + ci as u64, true);
        let family = family_of(c);
        let x = random_inputs(B, c.widths[0], 600 + ci as u64);
        let labels = labels_of(c, B, model.output_dim());
        let report = run(&model, &family, &x, &labels, true);
        let cat = c.gaussian.is_none();
        let key = |k: Key, i: usize| per_input_flat(&report, k, i);
        for i in 0..B {
            let or = oracle(&model, c, x.row(i).as_slice().unwrap(), &labels[i]);
            let sf = or.fisher.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let s1 = or.var1.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let s2 = or.var2.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(s1);
            let (ubf, lbf, ub1, lb1, ub2, lb2) = (
                key(Key::UbFisher, i),
                key(Key::LbFisher, i),
                key(Key::UbVar1, i),
                key(Key::LbVar1, i),
                key(Key::UbVar2, i),
                key(Key::LbVar2, i),
            );
            let (ub42, lb42, cert) = (
                key(Key::UbVar1Cor42, i),
                key(Key::LbVar1Cor42, i),
                key(Key::UbVar1Cert, i),
            );
            let (cov12, w, vopt) = (key(Key::Cov12, i), key(Key::WOpt, i), key(Key::VarOpt, i));
            for p in 0..or.fisher.len() {
                let ctx = format!("case {ci} input {i} param {p}");
                // Sandwiches (Eqs. 10–12, 14–15, certified λ_max(M)).
                assert!(
                    le(lbf[p], or.fisher[p], sf) && le(or.fisher[p], ubf[p], sf),
                    "{ctx}: fisher {} ∉ [{}, {}]",
                    or.fisher[p],
                    lbf[p],
                    ubf[p]
                );
                assert!(
                    le(lb1[p], or.var1[p], s1) && le(or.var1[p], ub1[p], s1),
                    "{ctx}: var1 {} ∉ [{}, {}]",
                    or.var1[p],
                    lb1[p],
                    ub1[p]
                );
                assert!(
                    le(lb2[p], or.var2[p], s2) && le(or.var2[p], ub2[p], s2),
                    "{ctx}: var2 {} ∉ [{}, {}]",
                    or.var2[p],
                    lb2[p],
                    ub2[p]
                );
                assert!(
                    le(lb42[p], or.var1[p], s1) && le(or.var1[p], ub42[p], s1),
                    "{ctx}: Cor 4.2"
                );
                assert!(le(ub1[p], cert[p], s1), "{ctx}: λ_max(K−C⊗C) ≤ λ_max(M)");
                assert!(
                    lbf[p] >= 0.0 && lb1[p] >= 0.0 && lb2[p] >= 0.0 && lb42[p] >= 0.0,
                    "{ctx}: clamped"
                );
                // Closed forms against the oracle (1e-6).
                assert!(
                    close(ubf[p], or.jn2[p] * or.lam_max_c, 1e-6, sf),
                    "{ctx}: ub_fisher"
                );
                assert!(
                    close(lbf[p], or.jn2[p] * or.lam_min_c.max(0.0), 1e-6, sf),
                    "{ctx}: lb_fisher"
                );
                assert!(
                    close(ub2[p], or.dn2[p] * or.lam_max_c, 1e-6, s2),
                    "{ctx}: ub_var2"
                );
                assert!(
                    close(lb2[p], or.dn2[p] * or.lam_min_c.max(0.0), 1e-6, s2),
                    "{ctx}: lb_var2"
                );
                assert!(
                    close(cert[p], or.jn2[p].powi(2) * or.lam_max_m, 1e-6, s1),
                    "{ctx}: ub_var1_cert"
                );
                // GEAP values against the brute-force sphere search (small O).
                if or.lam_max_v.is_finite() {
                    let j4 = or.jn2[p].powi(2);
                    assert!(
                        close(ub1[p], j4 * or.lam_max_v, 1e-6, s1),
                        "{ctx}: ub_var1 {} vs {}",
                        ub1[p],
                        j4 * or.lam_max_v
                    );
                    let want42 = j4 * (or.lam_max_k - or.lam_min_c.max(0.0).powi(2));
                    assert!(
                        close(ub42[p], want42, 1e-6, s1),
                        "{ctx}: ub_var1_cor42 {} vs {want42}",
                        ub42[p]
                    );
                    let want_lb42 = j4 * (or.lam_min_k - or.lam_max_c.powi(2)).max(0.0);
                    assert!(close(lb42[p], want_lb42, 1e-6, s1), "{ctx}: lb_var1_cor42");
                }
                // cov12 = −E[(J_iᵀs)²(D_iᵀs)] and the optimal combination.
                assert!(
                    close(cov12[p], or.cov12[p], 1e-8, s2),
                    "{ctx}: cov12 {} vs {}",
                    cov12[p],
                    or.cov12[p]
                );
                let (v1, v2, c12) = (or.var1[p], or.var2[p], or.cov12[p]);
                let direct =
                    w[p] * w[p] * v1 + (1.0 - w[p]).powi(2) * v2 + 2.0 * w[p] * (1.0 - w[p]) * c12;
                assert!(
                    close(vopt[p], direct.max(0.0), 1e-6, s2),
                    "{ctx}: var_opt {} vs {direct}",
                    vopt[p]
                );
                assert!(le(vopt[p], v1.min(v2), s2), "{ctx}: var_opt ≤ min");
                // No w does better (the optimum is a minimum of a convex quadratic).
                for dw in [-0.3, -0.01, 0.01, 0.3] {
                    let w2 = w[p] + dw;
                    let other =
                        w2 * w2 * v1 + (1.0 - w2).powi(2) * v2 + 2.0 * w2 * (1.0 - w2) * c12;
                    assert!(le(vopt[p], other, s2), "{ctx}: w_opt not optimal");
                }
                let ef_bias = key(Key::EfBias, i);
                assert!(
                    close(ef_bias[p], or.ef[p] - or.fisher[p], 1e-8, sf.max(1.0)),
                    "{ctx}: ef_bias"
                );
            }
            if cat {
                let (lbc, p43, t52f, t521, t522) = (
                    key(Key::LbFisherCentred, i),
                    key(Key::UbVar1Prop43, i),
                    key(Key::UbFisherThm52, i),
                    key(Key::UbVar1Thm52, i),
                    key(Key::UbVar2Thm52, i),
                );
                let (b2, rho) = (or.b2.unwrap(), or.rho.unwrap());
                for p in 0..or.fisher.len() {
                    let ctx = format!("case {ci} input {i} param {p}");
                    assert!(le(lbc[p], or.fisher[p], sf), "{ctx}: centred lower bound");
                    assert!(
                        close(lbc[p], or.jcn2[p] * or.lam2_c, 1e-6, sf),
                        "{ctx}: lb_fisher_centred"
                    );
                    assert!(
                        le(or.var1[p], p43[p], s1) && le(p43[p], t521[p], s1),
                        "{ctx}: Prop 4.3 / Thm 5.2"
                    );
                    assert!(
                        close(p43[p], or.jn2[p].powi(2) * b2 * or.lam_max_c, 1e-6, s1),
                        "{ctx}: ub_var1_prop43"
                    );
                    assert!(le(ubf[p], t52f[p], sf), "{ctx}: λ_max(C) ≤ ρ(p)");
                    assert!(
                        close(t52f[p], or.jn2[p] * rho, 1e-6, sf) && le(or.fisher[p], t52f[p], sf),
                        "{ctx}: ub_fisher_thm52"
                    );
                    assert!(
                        close(t521[p], or.jn2[p].powi(2) * 2.0 * rho, 1e-6, s1),
                        "{ctx}: ub_var1_thm52"
                    );
                    assert!(
                        close(t522[p], or.dn2[p] * rho, 1e-6, s2) && le(or.var2[p], t522[p], s2),
                        "{ctx}: ub_var2_thm52"
                    );
                }
            }
        }
    }
}

/// The keys that describe the whole input set: Var_x I (Thm 4.7's input term), Lemma 4.8's
/// bound on it, and the data-set variance of the empirical Fisher (Cor. F.1/F.2).
#[test]
fn input_set_keys_match_the_oracle() {
    for (ci, c) in CASES.iter().enumerate() {
        let model = random_model(c.widths, c.acts, c.scale, 700 + ci as u64, true);
        let family = family_of(c);
        let b = 6;
        let x = random_inputs(b, c.widths[0], 800 + ci as u64);
        let labels = labels_of(c, b, model.output_dim());
        let report = run(&model, &family, &x, &labels, false);
        let per: Vec<Oracle> = (0..b)
            .map(|i| oracle(&model, c, x.row(i).as_slice().unwrap(), &labels[i]))
            .collect();
        let np = per[0].fisher.len();
        let mean = |f: &dyn Fn(&Oracle, usize) -> f64, p: usize| {
            per.iter().map(|o| f(o, p)).sum::<f64>() / b as f64
        };
        let popvar = |f: &dyn Fn(&Oracle, usize) -> f64, p: usize| {
            let m = mean(f, p);
            per.iter().map(|o| (f(o, p) - m).powi(2)).sum::<f64>() / b as f64
        };
        let var_x: Vec<f64> = (0..np).map(|p| popvar(&|o, p| o.fisher[p], p)).collect();
        let ub_var_x: Vec<f64> = (0..np)
            .map(|p| mean(&|o, p| o.jn2[p].powi(2) * o.lam_max_c.powi(2), p))
            .collect();
        let var_ef: Vec<f64> = (0..np).map(|p| popvar(&|o, p| o.ef[p], p)).collect();
        for (key, want) in [
            (Key::VarX, &var_x),
            (Key::UbVarX, &ub_var_x),
            (Key::VarEf, &var_ef),
        ] {
            let got = flat(&report, key);
            let err = max_rel_elementwise(&got, want, 1e-9);
            assert!(err < 1e-7, "case {ci}: {} rel err {err:e}", key.name());
        }
        // Lemma 4.8: Var_x I ≤ E_x[‖J‖⁴ λ_max(C)²], per parameter.
        let scale = var_x.iter().fold(0.0f64, |m, v| m.max(*v));
        for p in 0..np {
            assert!(
                le(var_x[p], ub_var_x[p], scale),
                "case {ci} param {p}: Lemma 4.8"
            );
        }
        // The data-set variance is not trivially zero.
        assert!(var_ef.iter().any(|v| *v > 1e-10), "case {ci}");
    }
}

/// Prop. 5.1: for the Gaussian family, Eqs. 10–12 and 14–15 hold with equality, and the
/// certified λ_max(M) = 2/σ⁴ is exact too; Î1 and Î2 are uncorrelated (cov12 = 0).
#[test]
fn gaussian_bounds_are_equalities() {
    for (s2, acts) in [(0.6, [Tanh, Softplus]), (2.0, [Sigmoid, LogSigmoid])] {
        let model = random_model(&[3, 5, 4, 3], &acts, 1.0, 901, true);
        let family = Family::from_name("gaussian", s2).unwrap();
        let x = random_inputs(3, 3, 902);
        let labels = vec![Label::Target(vec![0.1, 0.2, 0.3]); 3];
        let r = run(&model, &family, &x, &labels, true);
        let f = |k| flat(&r, k);
        for (exact, bounds) in [
            (Key::Fisher, vec![Key::UbFisher, Key::LbFisher]),
            (
                Key::Var1,
                vec![
                    Key::UbVar1,
                    Key::LbVar1,
                    Key::UbVar1Cor42,
                    Key::LbVar1Cor42,
                    Key::UbVar1Cert,
                ],
            ),
            (Key::Var2, vec![Key::UbVar2, Key::LbVar2]),
        ] {
            let want = f(exact);
            assert!(want.iter().any(|v| *v > 1e-6), "{}", exact.name());
            for k in bounds {
                let err = max_rel_elementwise(&f(k), &want, 1e-12);
                assert!(
                    err < 1e-12,
                    "σ² = {s2}: {} vs {}: {err:e}",
                    k.name(),
                    exact.name()
                );
            }
        }
        assert!(f(Key::Cov12).iter().all(|v| *v == 0.0));
        // With cov12 = 0 the optimal weight is v2/(v1 + v2).
        let (v1, v2, w) = (f(Key::Var1), f(Key::Var2), f(Key::WOpt));
        for i in 0..w.len() {
            if v1[i] + v2[i] > 0.0 {
                assert!((w[i] - v2[i] / (v1[i] + v2[i])).abs() < 1e-12);
            }
        }
        // The categorical-only keys are absent.
        for k in [
            Key::LbFisherCentred,
            Key::UbVar1Prop43,
            Key::UbFisherThm52,
            Key::UbVar1Thm52,
            Key::UbVar2Thm52,
        ] {
            assert!(
                r.params.iter().all(|p| !p.values.contains_key(&k)),
                "{}",
                k.name()
            );
        }
    }
}

/// MATH §9a: with the one-hot statistic, λ_min of C, K and K − C⊗C are exactly 0, so every
/// Thm 4.1 / Cor. 4.2 lower bound is exactly 0; the centred bound is not.
#[test]
fn categorical_lower_bounds_are_zero() {
    let model = random_model(&[3, 6, 5, 4], &[Tanh, Softplus], 1.2, 911, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(5, 3, 912);
    let labels: Vec<Label> = (0..5).map(|i| Label::Class(i % 4)).collect();
    let r = run(&model, &family, &x, &labels, true);
    for k in [Key::LbFisher, Key::LbVar1, Key::LbVar2, Key::LbVar1Cor42] {
        assert!(flat(&r, k).iter().all(|v| *v == 0.0), "{}", k.name());
    }
    let (lbc, fi) = (flat(&r, Key::LbFisherCentred), flat(&r, Key::Fisher));
    assert!(lbc.iter().zip(&fi).filter(|(l, _)| **l > 0.0).count() > fi.len() / 2);
    // The spectrum reports exact zeros, and the power method agrees with the brute force
    // that min_u K[u⁴] = 0 (attained at u ∝ 1).
    let h = [0.3, -1.0, 0.8, 0.1];
    let eta = family.as_dyn().eta(&h);
    let s = diagfim::theory::Spectrum::new(family.as_dyn(), &eta).unwrap();
    assert_eq!((s.lam_min_c, s.lam_min_k, s.lam_min_v), (0.0, 0.0, 0.0));
    assert!(s.lam_min_c_perp > 0.0 && s.lam_min_c_perp < s.lam_max_c);
    let mom = categorical_moments(&h);
    let brute = -sphere_max(4, &|u| -dense_k_uvuv(&mom, u, u));
    assert!(brute.abs() < 1e-12, "{brute}");
    use diagfim::theory::moments::Moments;
    use diagfim::theory::zeig::{extreme_z_eigenvalue, standard_starts, FourthMoment, GeapOptions};
    let m = Moments::new(family.as_dyn(), &eta);
    let starts = standard_starts(4, None, 4, &[], 8);
    let min =
        extreme_z_eigenvalue(&FourthMoment(m), &starts, false, &GeapOptions::default()).unwrap();
    assert!(min.value.abs() < 1e-12, "{}", min.value);
}

/// The accumulator adds inputs in fixed chunks (GEMMs): results are bit-identical for any
/// batch size and thread count across several chunks, and the averaged keys equal the means
/// of the per-input values.
#[test]
fn chunked_accumulation_is_deterministic_and_consistent() {
    let model = random_model(&[3, 5, 4], &[Tanh], 1.0, 921, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let b = 150;
    let x = random_inputs(b, 3, 922);
    let labels: Vec<Label> = (0..b).map(|i| Label::Class(i % 4)).collect();
    let go = |batch_size: usize, threads: usize, per_input: bool| {
        analyze(&Request {
            model: &model,
            family: family.as_dyn(),
            inputs: x.view(),
            labels: Some(&labels),
            options: AnalysisOptions {
                samples: 3,
                seed: 4,
                per_input,
                batch_size,
                threads,
                engine: EngineKind::Cpu,
                bounds: diagfim::Bounds::All,
                keys: diagfim::KeySet::ALL,
                input_offset: 0,
                gpu: None,
            },
            progress: None,
        })
        .unwrap()
    };
    let base = go(256, 1, false);
    for (bs, th) in [(1, 2), (7, 1), (64, 2), (150, 0)] {
        let other = go(bs, th, false);
        for ((n1, a1), (n2, a2)) in base.tensors().zip(other.tensors()) {
            assert_eq!(n1, n2);
            assert!(a1 == a2, "{n1} differs at batch {bs}, threads {th}");
        }
        for (p, q) in base.params.iter().zip(&other.params) {
            assert_eq!(p.bounds, q.bounds, "{}", p.info.name);
        }
    }
    let per = go(13, 2, true);
    for (p, q) in base.params.iter().zip(&per.params) {
        for (key, mean) in &p.values {
            let arr = &q.values[key];
            let b = arr.shape()[0] as f64;
            let want: Vec<f64> = if matches!(key, Key::McVar1Se | Key::McVar2Se) {
                // se = √(Σ_x se_x²)/B (no clamping with N = 3: the plug-in Var(s²) is ≥ 0).
                arr.mapv(|v| v * v)
                    .sum_axis(ndarray::Axis(0))
                    .iter()
                    .map(|v| v.sqrt() / b)
                    .collect()
            } else if key.is_per_input() && !matches!(key, Key::WOpt | Key::VarOpt) {
                arr.mean_axis(ndarray::Axis(0))
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            } else if key.is_per_input() {
                continue; // non-linear in the inputs: per input vs from the means
            } else {
                arr.iter().copied().collect()
            };
            let got: Vec<f64> = mean.iter().copied().collect();
            let err = max_rel_elementwise(&got, &want, 1e-12);
            assert!(err < 1e-12, "{} {}: {err:e}", key.name(), p.info.name);
        }
    }
}

//! Per-tensor results of the theory layer (SUMMARY.json): Cor. 4.6 (Eqs. 17–19) and Thm C.1
//! (Eqs. 29–31) from the per-input hook, for every family, against dense A_S, B_S, G_S and M built from the
//! hyper-dual oracle's J and D and a Jacobi eigensolver; the sandwiches of the exact sums;
//! the skip of Thm C.1 for a large eigenproblem; and the summary's Lemma 4.8, log-ratios,
//! recommendation, Chebyshev sample size and budget split.

#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use diagfim::engine::cpu::derivatives;
use diagfim::engine::{analyze, AnalysisOptions, EngineKind, Request};
use diagfim::report::{SummaryOptions, COMBINATION_GAIN};
use diagfim::theory::layer::{ruhe, RUHE_MAX_SIZE};
use diagfim::theory::moments::Runs;
use diagfim::theory::{input_theory, trace_bound_extremes, LayerData, Spectrum, TensorBounds};
use diagfim::{Activation, Family, Key, Mlp, Report};
use Activation::*;

fn analyze_cpu(model: &Mlp, family: &Family, x: &ndarray::Array2<f64>, samples: usize) -> Report {
    analyze(&Request {
        model,
        family: family.as_dyn(),
        inputs: x.view(),
        labels: None,
        options: AnalysisOptions {
            samples,
            engine: EngineKind::Cpu,
            ..Default::default()
        },
        progress: None,
    })
    .unwrap()
}

/// Σ_k α_k β_k and Σ_k α_k β_{n+1−k} by definition (full spectra, descending).
fn ruhe_dense(alpha: &[f64], beta: &[f64]) -> (f64, f64) {
    let n = alpha.len();
    let hi = (0..n).map(|k| alpha[k] * beta[k]).sum();
    let lo = (0..n).map(|k| alpha[k] * beta[n - 1 - k]).sum();
    (lo, hi)
}

/// Σ_{i∈S} v_i v_iᵀ (n×n, row-major) for the rows v_i.
fn gram_of(rows: &[Vec<f64>], n: usize) -> Vec<f64> {
    let mut g = vec![0.0; n * n];
    for v in rows {
        for a in 0..n {
            for b in 0..n {
                g[a * n + b] += v[a] * v[b];
            }
        }
    }
    g
}

fn trace(m: &[f64], n: usize) -> f64 {
    (0..n).map(|i| m[i * n + i]).sum()
}

/// The oracle's per-tensor quantities of one input, tensor = rows `range` of flat J, D.
struct TensorOracle {
    fisher: f64,
    var1: f64,
    var2: f64,
    cor46: [f64; 6],
    ruhe: [f64; 6],
}

fn tensor_oracle(
    mom: &DenseMoments,
    j: &ndarray::Array2<f64>,
    d: &ndarray::Array2<f64>,
    per: &OracleInput,
    range: std::ops::Range<usize>,
) -> TensorOracle {
    let o = mom.o;
    let oo = o * o;
    let jr: Vec<Vec<f64>> = range.clone().map(|i| j.row(i).to_vec()).collect();
    let dr: Vec<Vec<f64>> = range.clone().map(|i| d.row(i).to_vec()).collect();
    let kron: Vec<Vec<f64>> = jr
        .iter()
        .map(|v| (0..oo).map(|ab| v[ab / o] * v[ab % o]).collect())
        .collect();
    let (a_s, b_s, g_s) = (gram_of(&jr, o), gram_of(&dr, o), gram_of(&kron, oo));
    let cflat: Vec<f64> = mom.c.iter().copied().collect();
    let (ec, ea, eb) = (
        jacobi_eigenvalues(o, &cflat),
        jacobi_eigenvalues(o, &a_s),
        jacobi_eigenvalues(o, &b_s),
    );
    let dm = dense_m(mom);
    let (em, eg) = (jacobi_eigenvalues(oo, &dm), jacobi_eigenvalues(oo, &g_s));
    let tr_c = trace(&cflat, o);
    let tr_m = trace(&dm, oo);
    let j4: f64 = jr
        .iter()
        .map(|v| v.iter().map(|x| x * x).sum::<f64>().powi(2))
        .sum();
    let k4 = |u: &[f64]| dense_k_uvuv(mom, u, u) - mom.quad(u).powi(2);
    let lam_v = sphere_max(o, &k4);
    let (rf, r1, r2) = (
        ruhe_dense(&ec, &ea),
        ruhe_dense(&em, &eg),
        ruhe_dense(&ec, &eb),
    );
    TensorOracle {
        fisher: range.clone().map(|i| per.fisher[i]).sum(),
        var1: range.clone().map(|i| per.var1[i]).sum(),
        var2: range.clone().map(|i| per.var2[i]).sum(),
        cor46: [
            ec[0] * trace(&a_s, o),
            tr_c * ea[0],
            lam_v * j4,
            tr_m * eg[0],
            ec[0] * trace(&b_s, o),
            tr_c * eb[0],
        ],
        ruhe: [rf.0, rf.1, r1.0, r1.1, r2.0, r2.1],
    }
}

fn bounds_array(t: &TensorBounds) -> ([f64; 6], [f64; 6]) {
    (
        [
            t.fisher_frob,
            t.fisher_spec,
            t.var1_frob,
            t.var1_spec,
            t.var2_frob,
            t.var2_spec,
        ],
        [
            t.ruhe_fisher_lo,
            t.ruhe_fisher_hi,
            t.ruhe_var1_lo,
            t.ruhe_var1_hi,
            t.ruhe_var2_lo,
            t.ruhe_var2_hi,
        ],
    )
}

#[test]
fn corollary_4_6_and_theorem_c1_match_the_oracle_and_sandwich() {
    let fam = |name: &str| Family::from_name(name, 0.6).unwrap();
    let cases: Vec<(Mlp, Family)> = vec![
        (
            random_model(&[3, 5, 4, 3], &[Tanh, Sigmoid], 1.1, 21, true),
            fam("categorical"),
        ),
        (
            random_model(&[2, 6, 4], &[Softplus], 1.4, 22, true),
            fam("categorical"),
        ),
        (
            random_model(&[3, 4, 3, 2], &[LogSigmoid, Tanh], 0.9, 23, true),
            fam("gaussian"),
        ),
        // n_l > O(O+1)/2: G_S's spectrum from the symmetric subspace, not the n_l×n_l Gram.
        (
            random_model(&[2, 7, 5, 2], &[Tanh, Softplus], 1.0, 25, true),
            fam("categorical"),
        ),
        (
            random_model(&[3, 5, 4, 3], &[Sigmoid, Tanh], 1.2, 26, true),
            fam("bernoulli"),
        ),
        (
            random_model(&[3, 4, 2], &[Softplus], 0.7, 27, true),
            fam("poisson"),
        ),
        // O ≫ n_l: the engines' spectra hold only the extreme eigenvalues of C and M
        // (`Spectrum::with_extremes`), and the head's Thm C.1 terms come from tr C and tr M.
        (
            random_model(&[3, 2, 7], &[Tanh], 1.3, 28, true),
            fam("categorical"),
        ),
        (
            random_model(&[4, 3, 2, 8], &[Sigmoid, Softplus], 1.1, 29, true),
            fam("categorical"),
        ),
    ];
    for (ci, (model, family)) in cases.iter().enumerate() {
        let x = random_inputs(3, model.input_dim(), 24 + ci as u64);
        let mut mean_hook: Vec<TensorBounds> = vec![TensorBounds::default(); model.params().len()];
        for i in 0..x.nrows() {
            let xi = x.row(i);
            let d = derivatives(model, family.as_dyn(), xi);
            let extremes = trace_bound_extremes(&model.widths());
            let spec = Spectrum::with_extremes(family.as_dyn(), &d.eta, extremes).unwrap();
            let layers: Vec<LayerData> = (0..d.delta.len())
                .map(|l| LayerData {
                    delta: d.delta[l].view(),
                    hd: d.hd[l].view(),
                    layer_input: d.layer_inputs[l].view(),
                    // The last layer is the head: the closed forms, checked by the oracle.
                    head: l + 1 == d.delta.len(),
                })
                .collect();
            let th = input_theory(&spec, &layers).unwrap();
            // The same bounds from every eigenvalue; too few extremes are an error.
            let all = Spectrum::new(family.as_dyn(), &d.eta).unwrap();
            let th_all = input_theory(&all, &layers).unwrap();
            for (a, b) in th.layers.iter().zip(&th_all.layers) {
                for (a, b) in [(&a.weight, &b.weight), (&a.bias, &b.bias)] {
                    let (a, b) = (bounds_array(a), bounds_array(b));
                    assert!(rel_err(&a.0, &b.0) < 1e-13 && rel_err(&a.1, &b.1) < 1e-13);
                }
            }
            if family.as_dyn().kind() == diagfim::family::FamilyKind::Categorical && extremes > 0 {
                let few = Spectrum::with_extremes(family.as_dyn(), &d.eta, 0).unwrap();
                let partial = few.extremes.is_some();
                assert_eq!(input_theory(&few, &layers).is_err(), partial, "case {ci}");
                assert!(partial || ci < 6, "case {ci}: partial spectra");
                if ci >= 6 {
                    assert!(
                        spec.eig_c.iter().any(|v| v.is_nan()),
                        "case {ci}: λ(C) in part"
                    );
                }
            }
            let xs = xi.as_slice().unwrap();
            let h = output(model, xs);
            let mom = family_moments(family, &h);
            let (jm, dm) = jac_and_diag_hess(model, xs);
            let per = oracle_input_family(model, family, xs, None);
            let mut off = 0;
            for (pi, p) in model.params().iter().enumerate() {
                let range = off..off + p.numel();
                off += p.numel();
                let t = if p.is_bias {
                    th.layers[p.layer].bias
                } else {
                    th.layers[p.layer].weight
                };
                mean_hook[pi].add(&t);
                let or = tensor_oracle(&mom, &jm, &dm, &per, range);
                let ctx = format!("case {ci} input {i} {}", p.name);
                assert!(t.ruhe && t.gram_exact, "{ctx}: {t:?}");
                let (c46, ru) = bounds_array(&t);
                let scale = [or.fisher, or.fisher, or.var1, or.var1, or.var2, or.var2];
                for k in 0..6 {
                    let tol = 1e-8 * or.cor46[k].abs().max(scale[k]) + 1e-15;
                    assert!(
                        (c46[k] - or.cor46[k]).abs() <= tol,
                        "{ctx}: Cor 4.6 term {k}: {} vs {}",
                        c46[k],
                        or.cor46[k]
                    );
                    let tol = 1e-8 * or.ruhe[k].abs().max(scale[k]) + 1e-15;
                    assert!(
                        (ru[k] - or.ruhe[k]).abs() <= tol,
                        "{ctx}: Thm C.1 term {k}: {} vs {}",
                        ru[k],
                        or.ruhe[k]
                    );
                }
                let le = |a: f64, b: f64| a <= b * (1.0 + 1e-9) + 1e-14;
                for (exact, lo, hi, min, derived) in [
                    (
                        or.fisher,
                        t.ruhe_fisher_lo,
                        t.ruhe_fisher_hi,
                        t.fisher_min,
                        true,
                    ),
                    (or.var1, t.ruhe_var1_lo, t.ruhe_var1_hi, t.var1_min, false),
                    (or.var2, t.ruhe_var2_lo, t.ruhe_var2_hi, t.var2_min, true),
                ] {
                    assert!(
                        le(lo, exact) && le(exact, hi) && le(exact, min),
                        "{ctx}: {lo} ≤ {exact} ≤ {hi}, ≤ {min}"
                    );
                    // For I and Var Î2 both Cor. 4.6 terms follow from Thm C.1, so its upper
                    // bound is at least as tight (for Var Î1 the first term uses
                    // λ_max(K−C⊗C) ≤ λ_max(M) and can be tighter).
                    if derived {
                        assert!(le(hi, min), "{ctx}");
                    }
                }
            }
        }
        // The report holds the means over inputs of the hook's bounds.
        let report = analyze_cpu(model, family, &x, 2);
        for (p, m) in report.params.iter().zip(mean_hook.iter_mut()) {
            m.scale(1.0 / x.nrows() as f64);
            let got = p.bounds.unwrap();
            let (a, b) = (bounds_array(&got), bounds_array(m));
            assert!(
                rel_err(&a.0, &b.0) < 1e-12 && rel_err(&a.1, &b.1) < 1e-12,
                "{}",
                p.info.name
            );
        }
    }
}

#[test]
fn ruhe_sandwiches_traces_of_random_psd_matrices() {
    for seed in 0..20u32 {
        let n = 2 + (seed % 5) as usize;
        let rank = 1 + (seed % 3) as usize;
        let rows = |s: u32, r: usize| -> Vec<Vec<f64>> {
            (0..r)
                .map(|k| {
                    (0..n)
                        .map(|a| {
                            let w = diagfim::rng::block(3, 44, s * 10 + k as u32, a as u32, 0);
                            diagfim::rng::box_muller(w[0], w[1]).0
                        })
                        .collect()
                })
                .collect()
        };
        let a = gram_of(&rows(seed, n), n);
        let b = gram_of(&rows(seed + 100, rank), n);
        let tr: f64 = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * b[j * n + i])
            .sum();
        let (ea, eb) = (jacobi_eigenvalues(n, &a), jacobi_eigenvalues(n, &b));
        let (lo, hi) = ruhe(
            &Runs::from_values(ea.clone()),
            &Runs::from_values(eb.clone()),
            n,
        );
        let (dlo, dhi) = ruhe_dense(&ea, &eb);
        assert!(
            (lo - dlo).abs() < 1e-10 * dhi && (hi - dhi).abs() < 1e-10 * dhi,
            "seed {seed}"
        );
        assert!(
            lo <= tr * (1.0 + 1e-12) && tr <= hi * (1.0 + 1e-12),
            "seed {seed}: {lo} ≤ {tr} ≤ {hi}"
        );
    }
    // Run-length spectra: α = (2, 2, 2, 0, 0), β = (3, 1, 0, 0, 0).
    let alpha = Runs(vec![(2.0, 3)]);
    let beta = Runs::from_values(vec![3.0, 1.0, 0.0]);
    assert_eq!(ruhe(&alpha, &beta, 5), (0.0, 8.0));
    assert_eq!(ruhe(&alpha, &beta, 3), (2.0 * 1.0 + 2.0 * 3.0, 8.0));
}

#[test]
fn theorem_c1_is_skipped_for_large_eigenproblems() {
    // Layer 0 has n_l = 300 units and O(O+1)/2 = 276: the G_S spectrum needs a 276×276
    // problem.
    let model = random_model(&[2, 300, 23], &[Tanh], 0.3, 31, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(2, 2, 32);
    let report = analyze_cpu(&model, &family, &x, 2);
    let summary = report.summary();
    for (p, s) in report.params.iter().zip(&summary.layers) {
        let t = p.bounds.unwrap();
        let exact = s.theory.exact;
        if p.info.layer == 0 {
            assert!(!t.ruhe && !t.gram_exact && t.gram_size == 276 && 276 > RUHE_MAX_SIZE);
            assert!(s.theory.thm_c1.is_none());
            let why = s.theory.thm_c1_skipped.as_deref().unwrap();
            assert!(why.contains("276") && why.contains("256"), "{why}");
            assert!(!s.theory.cor46.unwrap().var1_spec_exact);
        } else {
            assert!(t.ruhe && s.theory.thm_c1.is_some() && s.theory.thm_c1_skipped.is_none());
        }
        // Cor. 4.6 (with Schur's bound where the spectrum is skipped) still holds.
        let c = s.theory.cor46.unwrap();
        let exact = (
            exact.fisher.unwrap(),
            exact.var1.unwrap(),
            exact.var2.unwrap(),
        );
        assert!(exact.0 <= c.fisher.bound * (1.0 + 1e-9));
        assert!(exact.1 <= c.var1.bound * (1.0 + 1e-9) && c.var1.bound > 0.0);
        assert!(exact.2 <= c.var2.bound * (1.0 + 1e-9) + 1e-300);
    }
}

#[test]
fn summary_lemma_4_8_ratios_recommendation_and_budget() {
    let model = random_model(&[3, 6, 5, 4], &[Sigmoid, Tanh], 1.3, 41, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(8, 3, 42);
    let report = analyze_cpu(&model, &family, &x, 5);
    let opts = SummaryOptions {
        eps: 0.2,
        delta: 0.1,
        input_cost: 3.0,
    };
    let summary = report.summary_with(&opts);
    let mut kinds = std::collections::BTreeSet::new();
    for (p, s) in report.params.iter().zip(&summary.layers) {
        let t = &s.theory;
        let sum = |k: Key| p.values[&k].sum();
        let ctx = &p.info.name;
        // Exact sums and Lemma 4.8.
        assert!(
            (t.exact.fisher.unwrap() - sum(Key::Fisher)).abs() <= 1e-12 * t.exact.fisher.unwrap()
        );
        assert!(
            (t.exact.var_x.unwrap() - sum(Key::VarX)).abs()
                <= 1e-12 * t.exact.var_x.unwrap().max(1e-300)
        );
        let (bound, tight) = (t.lemma48.bound.unwrap(), t.lemma48.bound_tight.unwrap());
        assert!((bound - sum(Key::UbVarX)).abs() <= 1e-12 * bound);
        assert!(t.lemma48.var_x.unwrap() <= tight * (1.0 + 1e-9), "{ctx}");
        assert!(tight <= bound * (1.0 + 1e-12), "{ctx}");
        // Log-ratios of Thm 4.1's upper bounds (Fig. 1 bottom): ≥ 0 since UB ≥ exact.
        let lr = t.log_ratio;
        let want = (sum(Key::UbVar1) / sum(Key::Var1)).ln();
        assert!(
            (lr.var1.unwrap() - want).abs() < 1e-12 && want >= -1e-12,
            "{ctx}"
        );
        assert!(lr.fisher.unwrap() >= -1e-12);
        match lr.var2 {
            Some(v) => assert!(v >= -1e-12 && p.info.layer < 2),
            None => assert!(p.info.layer == 2 && sum(Key::Var2) == 0.0, "{ctx}"),
        }
        // Recommendation and Chebyshev sample sizes.
        let (v1, v2, vo) = (
            t.exact.var1.unwrap(),
            t.exact.var2.unwrap(),
            t.exact.var_opt.unwrap(),
        );
        let rec = t.recommendation.as_ref().unwrap();
        let budget = t.budget.unwrap();
        let want = if vo < COMBINATION_GAIN * v1.min(v2) {
            "combination"
        } else if v2 <= v1 {
            "i2"
        } else {
            "i1"
        };
        assert_eq!(rec.estimator, want, "{ctx}");
        kinds.insert(want);
        let f2: f64 = p.values[&Key::Fisher].iter().map(|v| v * v).sum();
        let n1 = (v1 / (opts.delta * opts.eps * opts.eps * f2))
            .ceil()
            .max(1.0);
        assert_eq!(rec.n_i1, Some(n1), "{ctx}");
        assert!(rec.n_combination.unwrap() <= rec.n_i1.unwrap().min(rec.n_i2.unwrap()));
        // Budget split: brute force over integer N_y of (c + N_y)(v_x + v_y/N_y).
        for (split, vy) in [(budget.i1, v1), (budget.i2, v2)] {
            let cost = |ny: f64| (opts.input_cost + ny) * (t.exact.var_x.unwrap() + vy / ny);
            let best = (1..5000)
                .map(|n| n as f64)
                .min_by(|a, b| cost(*a).total_cmp(&cost(*b)))
                .unwrap();
            assert_eq!(split.ny_opt, best, "{ctx}");
            let total = x.nrows() as f64 * (opts.input_cost + 5.0);
            assert!(
                (split.nx_same_cost * (opts.input_cost + split.ny_opt) - total).abs()
                    < 1e-9 * total
            );
            assert!(
                split.var_opt_split <= split.var_current * (1.0 + 1e-12),
                "{ctx}"
            );
            let vj = if vy == v1 {
                sum(Key::VarJoint1)
            } else {
                sum(Key::VarJoint2)
            };
            assert!(
                (split.var_current - vj).abs() <= 1e-10 * vj.max(1e-300),
                "{ctx}"
            );
        }
    }
    // The last layer recommends Î2 (exact there); the others are not all the same.
    assert!(kinds.len() >= 2, "{kinds:?}");
    // The JSON has the documented fields.
    let json = serde_json::to_value(&summary).unwrap();
    let l0 = &json["layers"][0]["theory"];
    for f in [
        "exact",
        "cor46",
        "thm_c1",
        "lemma48",
        "log_ratio",
        "recommendation",
        "budget",
    ] {
        assert!(!l0[f].is_null(), "{f}");
    }
    assert_eq!(json["options"]["input_cost"], 3.0);
    assert!(SummaryOptions { eps: 0.0, ..opts }.validate().is_err());
    assert!(SummaryOptions { delta: 1.0, ..opts }.validate().is_err());
    assert!(SummaryOptions {
        input_cost: -1.0,
        ..opts
    }
    .validate()
    .is_err());
}

/// Without bounds (`Bounds::None`) the summary says so: no per-tensor bounds, no Lemma 4.8
/// bounds, no log-ratios; the exact sums and the recommendation are those of a full run.
#[test]
fn summary_without_bounds_has_no_bound_values() {
    let model = random_model(&[4, 6, 3], &[Tanh], 1.0, 61, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(5, 4, 62);
    let run = |bounds| {
        let options = AnalysisOptions {
            samples: 6,
            engine: EngineKind::Cpu,
            bounds,
            ..Default::default()
        };
        analyze_opts(&model, family.as_dyn(), x.view(), None, options)
    };
    let (none, all) = (run(diagfim::Bounds::None), run(diagfim::Bounds::All));
    assert!(none
        .params
        .iter()
        .all(|p| p.values.keys().all(|k| !k.is_bound())));
    for (a, b) in none.summary().layers.iter().zip(&all.summary().layers) {
        let (t, u) = (&a.theory, &b.theory);
        assert_eq!(
            (t.lemma48.bound, t.lemma48.bound_tight),
            (None, None),
            "{}",
            a.name
        );
        assert!(u.lemma48.bound.is_some());
        assert_eq!(
            (t.log_ratio.fisher, t.log_ratio.var1, t.log_ratio.var2),
            (None, None, None)
        );
        assert!(t.cor46.is_none() && t.thm_c1.is_none());
        assert_eq!(t.exact.fisher, u.exact.fisher);
        assert_eq!(
            t.recommendation.as_ref().unwrap().estimator,
            u.recommendation.as_ref().unwrap().estimator
        );
    }
}

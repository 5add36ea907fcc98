//! The Bernoulli (multi-label) and Poisson (count) families end to end on the CPU engine
//! (docs/theory.md, "Families with independent outputs"), against independent oracles:
//! * every per-parameter bound sandwiches the exact value (hyper-dual J and D, dense C and K
//!   from enumeration over {0,1}^O or truncated Poisson series), and cov12 equals the label
//!   expectation of the per-sample products;
//! * label files of every accepted dtype, and the rate guard of the Poisson family;
//! * shards merge to the full run; the report's keys, recommendation and planner.

#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use diagfim::engine::cpu::sample_derivatives;
use diagfim::engine::{analyze, analyze_partial, AnalysisOptions, EngineKind, Request};
use diagfim::partial::Partial;
use diagfim::{Activation, Family, Key, Label, Mlp, Report};
use ndarray::{Array1, Array2};
use Activation::*;

fn fam(name: &str) -> Family {
    Family::from_name(name, 1.0).unwrap()
}

/// Data labels that are not the model's own: 0/1 indicators or small counts.
fn labels(family: &Family, b: usize, o: usize) -> Vec<Label> {
    (0..b)
        .map(|i| {
            Label::Target(
                (0..o)
                    .map(|a| match family {
                        Family::Bernoulli(_) => ((i + a) % 2) as f64,
                        _ => ((i * 3 + a) % 5) as f64,
                    })
                    .collect(),
            )
        })
        .collect()
}

fn options(per_input: bool) -> AnalysisOptions {
    AnalysisOptions {
        samples: 3,
        seed: 5,
        per_input,
        engine: EngineKind::Cpu,
        ..Default::default()
    }
}

fn run(model: &Mlp, family: &Family, x: &Array2<f64>, y: &[Label], per_input: bool) -> Report {
    analyze(&Request {
        model,
        family: family.as_dyn(),
        inputs: x.view(),
        labels: Some(y),
        options: options(per_input),
        progress: None,
    })
    .unwrap()
}

fn le(lo: f64, hi: f64, scale: f64) -> bool {
    lo <= hi + 1e-9 * hi.abs() + 1e-13 * scale
}

fn cases() -> Vec<(Mlp, Family)> {
    vec![
        (
            random_model(&[3, 5, 4, 3], &[Tanh, Sigmoid], 1.2, 71, true),
            fam("bernoulli"),
        ),
        (
            random_model(&[3, 6, 2], &[Softplus], 1.5, 72, true),
            fam("bernoulli"),
        ),
        (
            random_model(&[2, 5, 3], &[Relu], 0.4, 73, true),
            fam("bernoulli"),
        ),
        (
            random_model(&[3, 4, 3, 2], &[LogSigmoid, Identity], 0.6, 74, true),
            fam("poisson"),
        ),
        (
            random_model(&[3, 5, 2], &[Tanh], 0.8, 75, true),
            fam("poisson"),
        ),
    ]
}

#[test]
fn bounds_sandwich_the_exact_values() {
    let b = 3;
    for (ci, (model, family)) in cases().iter().enumerate() {
        let x = random_inputs(b, model.input_dim(), 80 + ci as u64);
        let y = labels(family, b, model.output_dim());
        let report = run(model, family, &x, &y, true);
        let key = |k: Key, i: usize| per_input_flat(&report, k, i);
        let bernoulli = matches!(family, Family::Bernoulli(_));
        for i in 0..b {
            let xi = x.row(i);
            let xs = xi.as_slice().unwrap();
            let or = oracle_input_family(model, family, xs, Some(&y[i]));
            let h = output(model, xs);
            let mom = family_moments(family, &h);
            let (j, _) = jac_and_diag_hess(model, xs);
            let c: Vec<f64> = (0..mom.o).map(|a| mom.c[[a, a]]).collect();
            let (cmax, cmin) = (
                c.iter().copied().fold(0.0, f64::max),
                c.iter().copied().fold(f64::INFINITY, f64::min),
            );
            // cov12 = Cov(score², neg_hess) over the label distribution.
            let quad = label_quadrature(family, &h);
            let p = model.num_params();
            let (mut s2h, mut s2, mut nh) = (vec![0.0; p], vec![0.0; p], vec![0.0; p]);
            for (w, lab) in &quad {
                let sd = sample_derivatives(model, family.as_dyn(), xi, lab).unwrap();
                let sc: Vec<f64> = sd.score.iter().flatten().copied().collect();
                let ng: Vec<f64> = sd.neg_hess.iter().flatten().copied().collect();
                for k in 0..p {
                    s2h[k] += w * sc[k] * sc[k] * ng[k];
                    s2[k] += w * sc[k] * sc[k];
                    nh[k] += w * ng[k];
                }
            }
            let scale = |v: &[f64]| v.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let (sf, s1) = (scale(&or.fisher), scale(&or.var1));
            let s2s = scale(&or.var2).max(s1);
            let got = |k| key(k, i);
            let (ubf, lbf, ub1, lb1) = (
                got(Key::UbFisher),
                got(Key::LbFisher),
                got(Key::UbVar1),
                got(Key::LbVar1),
            );
            let (ub2, lb2, ub42, lb42) = (
                got(Key::UbVar2),
                got(Key::LbVar2),
                got(Key::UbVar1Cor42),
                got(Key::LbVar1Cor42),
            );
            let (cert, cov12) = (got(Key::UbVar1Cert), got(Key::Cov12));
            for k in 0..p {
                let ctx = format!("case {ci} input {i} param {k}");
                let jn2: f64 = j.row(k).iter().map(|v| v * v).sum();
                assert!(
                    le(lbf[k], or.fisher[k], sf) && le(or.fisher[k], ubf[k], sf),
                    "{ctx}: fisher"
                );
                assert!(
                    (ubf[k] - jn2 * cmax).abs() <= 1e-9 * sf,
                    "{ctx}: ub_fisher closed form"
                );
                assert!(
                    (lbf[k] - jn2 * cmin).abs() <= 1e-9 * sf,
                    "{ctx}: lb_fisher closed form"
                );
                assert!(
                    le(lb1[k], or.var1[k], s1) && le(or.var1[k], ub1[k], s1),
                    "{ctx}: var1 {} ∉ [{}, {}]",
                    or.var1[k],
                    lb1[k],
                    ub1[k]
                );
                assert!(
                    le(lb2[k], or.var2[k], s2s) && le(or.var2[k], ub2[k], s2s),
                    "{ctx}: var2"
                );
                assert!(
                    le(lb42[k], or.var1[k], s1) && le(or.var1[k], ub42[k], s1),
                    "{ctx}: Cor 4.2"
                );
                assert!(le(ub1[k], cert[k], s1), "{ctx}: certified cap");
                let want = s2h[k] - s2[k] * nh[k];
                assert!(
                    (cov12[k] - want).abs() <= 1e-8 * (want.abs() + s2s),
                    "{ctx}: cov12 {} vs {want}",
                    cov12[k]
                );
                if bernoulli {
                    let p43 = got(Key::UbVar1Prop43);
                    assert!(le(or.var1[k], p43[k], s1), "{ctx}: Prop. 4.3");
                }
            }
            // The lower bounds are informative somewhere (λ_min(C) > 0 for these families).
            assert!(
                lbf.iter().any(|v| *v > 0.0) && lb1.iter().any(|v| *v > 0.0),
                "case {ci}: trivial lower bounds"
            );
        }
        // Which keys exist for the family.
        let p0 = &report.params[0].values;
        assert_eq!(
            p0.contains_key(&Key::UbVar1Prop43),
            bernoulli,
            "case {ci}: Prop. 4.3 key"
        );
        assert!(!p0.contains_key(&Key::UbFisherThm52) && !p0.contains_key(&Key::LbFisherCentred));
        assert_eq!(report.run.family, family.as_dyn().name());
        // The recommendation and the planner work unchanged.
        for layer in report.summary().layers {
            let r = layer.theory.recommendation.unwrap();
            assert!(
                r.n_i1.is_some_and(|n| n.is_finite() && n > 0.0),
                "case {ci}: planner {r:?}"
            );
        }
    }
}

#[test]
fn label_files_of_every_accepted_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("y.npy");
    let bern = fam("bernoulli");
    let want: Vec<Label> = vec![
        Label::Target(vec![1.0, 0.0]),
        Label::Target(vec![0.0, 0.0]),
        Label::Target(vec![1.0, 1.0]),
    ];
    let grid = [[true, false], [false, false], [true, true]];
    let b = Array2::from_shape_fn((3, 2), |(i, a)| grid[i][a]);
    ndarray_npy::write_npy(&path, &b).unwrap();
    assert_eq!(
        diagfim::io::read_labels(&path, bern.as_dyn(), 3, 2).unwrap(),
        want
    );
    ndarray_npy::write_npy(&path, &b.mapv(u8::from)).unwrap();
    assert_eq!(
        diagfim::io::read_labels(&path, bern.as_dyn(), 3, 2).unwrap(),
        want
    );
    ndarray_npy::write_npy(&path, &b.mapv(|v| v as i64)).unwrap();
    assert_eq!(
        diagfim::io::read_labels(&path, bern.as_dyn(), 3, 2).unwrap(),
        want
    );
    ndarray_npy::write_npy(&path, &b.mapv(|v| f32::from(u8::from(v)))).unwrap();
    assert_eq!(
        diagfim::io::read_labels(&path, bern.as_dyn(), 3, 2).unwrap(),
        want
    );
    let pois = fam("poisson");
    let counts = Array2::from_shape_vec((2, 2), vec![0u8, 7, 255, 1]).unwrap();
    let want: Vec<Label> = vec![
        Label::Target(vec![0.0, 7.0]),
        Label::Target(vec![255.0, 1.0]),
    ];
    ndarray_npy::write_npy(&path, &counts).unwrap();
    assert_eq!(
        diagfim::io::read_labels(&path, pois.as_dyn(), 2, 2).unwrap(),
        want
    );
    ndarray_npy::write_npy(&path, &counts.mapv(i32::from)).unwrap();
    assert_eq!(
        diagfim::io::read_labels(&path, pois.as_dyn(), 2, 2).unwrap(),
        want
    );
    ndarray_npy::write_npy(&path, &counts.mapv(f64::from)).unwrap();
    assert_eq!(
        diagfim::io::read_labels(&path, pois.as_dyn(), 2, 2).unwrap(),
        want
    );
    // [B] for one output.
    ndarray_npy::write_npy(&path, &Array1::from(vec![3i64, 0])).unwrap();
    assert_eq!(
        diagfim::io::read_labels(&path, pois.as_dyn(), 2, 1).unwrap(),
        vec![Label::Target(vec![3.0]), Label::Target(vec![0.0])]
    );
}

/// Log-rates beyond 80 would overflow the fourth moments: a clear error, not inf/NaN.
#[test]
fn poisson_log_rates_beyond_80_are_refused() {
    let mut model = random_model(&[2, 3, 2], &[Tanh], 0.5, 90, true);
    let x = random_inputs(2, 2, 91);
    let pois = fam("poisson");
    let ok = run(&model, &pois, &x, &labels(&pois, 2, 2), false);
    assert!(flat(&ok, Key::Fisher).iter().all(|v| v.is_finite()));
    let last = model.layers().len() - 1;
    model.layers_mut()[last].bias.as_mut().unwrap()[1] = 85.0;
    let err = analyze(&Request {
        model: &model,
        family: pois.as_dyn(),
        inputs: x.view(),
        labels: None,
        options: options(false),
        progress: None,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("log-rate h[1]") && err.contains("exceeds 80"),
        "{err}"
    );
}

/// Shards with their global offsets merge to the full run (≤ 1e-12), through bytes too.
#[test]
fn shards_merge_to_the_full_run() {
    for (model, family) in cases().into_iter().step_by(2) {
        let x = random_inputs(6, model.input_dim(), 95);
        let y = labels(&family, 6, model.output_dim());
        let full = run(&model, &family, &x, &y, false);
        let part = |lo: usize, hi: usize| {
            let xs = x.slice(ndarray::s![lo..hi, ..]).to_owned();
            analyze_partial(&Request {
                model: &model,
                family: family.as_dyn(),
                inputs: xs.view(),
                labels: Some(&y[lo..hi]),
                options: AnalysisOptions {
                    input_offset: lo as u64,
                    ..options(false)
                },
                progress: None,
            })
            .unwrap()
        };
        let (a, b) = (part(0, 4), part(4, 6));
        let b = Partial::from_bytes(&b.to_bytes().unwrap()).unwrap();
        let merged = Partial::merge_all([b, a]).unwrap().finish().unwrap();
        for k in [
            Key::Fisher,
            Key::Var1,
            Key::Var2,
            Key::Mc1,
            Key::McVar2,
            Key::Ef,
            Key::VarX,
        ] {
            let (g, w) = (flat(&merged, k), flat(&full, k));
            let err = max_rel_elementwise(&g, &w, 1e-12);
            assert!(
                err < 1e-12,
                "{} {}: {err:e}",
                family.as_dyn().name(),
                k.name()
            );
        }
        assert_eq!(merged.run.family, family.as_dyn().name());
    }
}

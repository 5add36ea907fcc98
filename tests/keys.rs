//! Key selection (`AnalysisOptions::keys`, `--keys`): every computed key of a subset run is bit
//! for bit the full run's on the CPU engine (means and per-input values, every family), keys
//! not computed are absent from the report and null in SUMMARY.json, partials of different
//! key sets refuse to merge, and the GPU engine computes the same subsets.

mod common;
use common::*;
use diagfim::engine::{analyze_partial, AnalysisOptions, Bounds, EngineKind, KeySet, Request};
use diagfim::{Activation, Family, Key, Label, Mlp, Report};
use ndarray::Array2;

struct Case {
    name: &'static str,
    family: Family,
    model: Mlp,
    x: Array2<f64>,
    labels: Vec<Label>,
}

fn cases() -> Vec<Case> {
    use Activation::*;
    let x = random_inputs(7, 5, 31);
    let target = |o: usize, f: &dyn Fn(usize, usize) -> f64| -> Vec<Label> {
        (0..7)
            .map(|i| Label::Target((0..o).map(|a| f(i, a)).collect()))
            .collect()
    };
    vec![
        Case {
            name: "categorical",
            family: Family::from_name("categorical", 1.0).unwrap(),
            model: random_model(&[5, 6, 4, 3], &[Tanh, Sigmoid], 0.8, 1, true),
            x: x.clone(),
            labels: (0..7).map(|i| Label::Class(i % 3)).collect(),
        },
        Case {
            name: "gaussian",
            family: Family::from_name("gaussian", 0.5).unwrap(),
            model: random_model(&[5, 4, 2], &[Softplus], 0.7, 2, false),
            x: x.clone(),
            labels: target(2, &|i, a| (i + a) as f64 * 0.1),
        },
        Case {
            name: "bernoulli",
            family: Family::from_name("bernoulli", 1.0).unwrap(),
            model: random_model(&[5, 5, 3], &[LogSigmoid], 0.8, 3, true),
            x: x.clone(),
            labels: target(3, &|i, a| ((i + a) % 2) as f64),
        },
        Case {
            name: "poisson",
            family: Family::from_name("poisson", 1.0).unwrap(),
            model: random_model(&[5, 4, 2], &[Tanh], 0.5, 4, true),
            x,
            labels: target(2, &|i, a| ((i * 3 + a) % 4) as f64),
        },
    ]
}

fn run(case: &Case, keys: KeySet, per_input: bool, engine: EngineKind) -> diagfim::Result<Report> {
    diagfim::analyze(&Request {
        model: &case.model,
        family: case.family.as_dyn(),
        inputs: case.x.view(),
        labels: Some(&case.labels),
        options: AnalysisOptions {
            samples: 6,
            seed: 11,
            per_input,
            batch_size: 3,
            engine,
            keys,
            ..Default::default()
        },
        progress: None,
    })
}

/// Every key alone, and a few combinations, against the full run: the same arrays bit for
/// bit, and nothing else in the report.
#[test]
fn cpu_key_subsets_are_bit_identical_to_the_full_run() {
    for case in cases() {
        for per_input in [false, true] {
            let full = run(&case, KeySet::ALL, per_input, EngineKind::Cpu).unwrap();
            let available: Vec<Key> = full.params[0].values.keys().copied().collect();
            let mut subsets: Vec<KeySet> = available
                .iter()
                .map(|&k| [k].into_iter().collect())
                .collect();
            subsets.push(
                [Key::Fisher, Key::Var1, Key::Var2, Key::VarOpt]
                    .into_iter()
                    .collect(),
            );
            subsets.push([Key::Mc1, Key::McVar2Se, Key::EfBias].into_iter().collect());
            subsets.push(
                [Key::VarJoint2, Key::UbVar1, Key::Cov12]
                    .into_iter()
                    .collect(),
            );
            for keys in subsets {
                let ctx = format!("{} per_input={per_input} keys={keys:?}", case.name);
                let sub = run(&case, keys, per_input, EngineKind::Cpu).unwrap();
                for (p, q) in sub.params.iter().zip(&full.params) {
                    let got: Vec<Key> = p.values.keys().copied().collect();
                    let want: Vec<Key> = keys.iter().collect();
                    assert_eq!(got, want, "{ctx}: keys of {}", p.info.name);
                    for (k, a) in &p.values {
                        let b = &q.values[k];
                        assert_eq!(a.shape(), b.shape(), "{ctx}");
                        let same = a
                            .iter()
                            .zip(b.iter())
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(
                            same,
                            "{ctx}: {}/{} differs from the full run: {a:?} vs {b:?}",
                            k.name(),
                            p.info.name
                        );
                    }
                }
                assert_eq!(
                    sub.run.keys,
                    keys.iter()
                        .map(|k| k.name().to_string())
                        .collect::<Vec<_>>(),
                    "{ctx}"
                );
            }
        }
    }
}

/// SUMMARY.json lists the keys computed; the keys of the family that were not selected are
/// null in the means, and so are the trace sums, the recommendation and the budget that need
/// them. The full run has no nulls.
#[test]
fn summary_marks_keys_not_computed_as_null() {
    let case = &cases()[0];
    let full = run(case, KeySet::ALL, false, EngineKind::Cpu).unwrap();
    let json = |r: &Report| -> serde_json::Value {
        serde_json::from_slice(&r.summary_bytes(&Default::default()).unwrap()).unwrap()
    };
    let f = json(&full);
    assert_eq!(f["skipped_keys"].as_array().unwrap().len(), 0);
    let layer = &f["layers"][0];
    assert!(layer["means"]
        .as_object()
        .unwrap()
        .values()
        .all(|v| v.is_f64()));
    assert!(layer["theory"]["recommendation"]["estimator"].is_string());
    assert!(layer["theory"]["cor46"].is_object());

    let sub = run(
        case,
        KeySet::parse("fisher").unwrap(),
        false,
        EngineKind::Cpu,
    )
    .unwrap();
    let s = json(&sub);
    assert_eq!(s["keys"], serde_json::json!(["fisher"]));
    let layer = &s["layers"][0];
    let means = layer["means"].as_object().unwrap();
    assert_eq!(
        means.len(),
        f["layers"][0]["means"].as_object().unwrap().len()
    );
    assert_eq!(means["fisher"], f["layers"][0]["means"]["fisher"]);
    assert!(means["var1"].is_null() && means["ef"].is_null());
    assert!(layer["theory"]["exact"]["var1"].is_null());
    assert_eq!(
        layer["theory"]["exact"]["fisher"],
        f["layers"][0]["theory"]["exact"]["fisher"]
    );
    assert!(layer["theory"]["recommendation"].is_null() && layer["theory"]["budget"].is_null());
    // No bound key: no spectra, no trace bounds, no theory time.
    assert!(layer["theory"]["cor46"].is_null());
    assert!(s["theory_s"].is_null() && f["theory_s"].as_f64().unwrap() > 0.0);
    // The table prints what exists.
    assert!(sub.table().contains("fisher") && !sub.table().contains("var1"));
}

/// A selected key that the run cannot compute is an error that says why.
#[test]
fn selections_that_cannot_be_computed_are_errors() {
    let case = &cases()[1]; // gaussian
    let err = |keys: &str, bounds: Bounds, labels: bool| -> String {
        diagfim::analyze(&Request {
            model: &case.model,
            family: case.family.as_dyn(),
            inputs: case.x.view(),
            labels: labels.then_some(&case.labels[..]),
            options: AnalysisOptions {
                keys: KeySet::parse(keys).unwrap(),
                bounds,
                engine: EngineKind::Cpu,
                ..Default::default()
            },
            progress: None,
        })
        .unwrap_err()
        .to_string()
    };
    assert!(err("fisher,ef", Bounds::All, false).contains("--labels"));
    assert!(err("ub_fisher_thm52", Bounds::All, true).contains("gaussian family"));
    assert!(err("ub_var1", Bounds::None, true).contains("--bounds none"));
    let e = KeySet::parse("fisher,vr1").unwrap_err().to_string();
    assert!(e.contains("'vr1'") && e.contains("ub_var1_cert"), "{e}");
}

/// Partials of different key sets do not merge; partials of one subset merge to the subset of
/// the full run.
#[test]
fn partials_of_a_subset_merge_and_other_subsets_are_refused() {
    let case = &cases()[0];
    let part = |keys: KeySet, rows: std::ops::Range<usize>| {
        analyze_partial(&Request {
            model: &case.model,
            family: case.family.as_dyn(),
            inputs: case.x.slice(ndarray::s![rows.clone(), ..]),
            labels: Some(&case.labels[rows.clone()]),
            options: AnalysisOptions {
                samples: 6,
                seed: 11,
                batch_size: 3,
                engine: EngineKind::Cpu,
                keys,
                input_offset: rows.start as u64,
                ..Default::default()
            },
            progress: None,
        })
        .unwrap()
    };
    let keys = KeySet::parse("fisher,var_x,mc2").unwrap();
    let mut a = part(keys, 0..4);
    let b = part(keys, 4..7);
    let other = part(KeySet::parse("fisher").unwrap(), 4..7);
    let e = a.clone().merge(&other).unwrap_err().to_string();
    assert!(e.contains("keys computed"), "{e}");
    // Through the file format too.
    let a2 = diagfim::Partial::from_bytes(&a.to_bytes().unwrap()).unwrap();
    a.merge(&b).unwrap();
    let merged = a.finish().unwrap();
    let full = run(case, KeySet::ALL, false, EngineKind::Cpu).unwrap();
    for k in keys.iter() {
        let err = rel_err(&flat(&merged, k), &flat(&full, k));
        assert!(err <= 1e-12, "{}: {err:e}", k.name());
    }
    assert_eq!(merged.params[0].values.len(), 3);
    let mut a2 = a2;
    a2.merge(&b).unwrap();
    assert_eq!(
        flat(&a2.finish().unwrap(), Key::VarX),
        flat(&merged, Key::VarX)
    );
}

/// The GPU engine computes the same subsets: each key equals the full GPU run's to f32
/// accuracy and holds nothing else.
#[cfg(feature = "gpu")]
#[test]
fn gpu_key_subsets_match_the_full_gpu_run() {
    if !gpu_available() {
        return;
    }
    for case in cases() {
        let full = run(&case, KeySet::ALL, false, EngineKind::Gpu).unwrap();
        for keys in [
            "fisher",
            "fisher,var_x",
            "mc1,mc2,mc_var1_se",
            "var_opt,ub_var1,ef_bias",
        ] {
            let keys = KeySet::parse(keys).unwrap();
            let ctx = format!("{} keys={keys:?}", case.name);
            let sub = run(&case, keys, false, EngineKind::Gpu).unwrap();
            assert_eq!(
                sub.params[0].values.keys().copied().collect::<Vec<_>>(),
                keys.iter().collect::<Vec<_>>(),
                "{ctx}"
            );
            for k in keys.iter() {
                let err = rel_err(&flat(&sub, k), &flat(&full, k));
                assert!(err <= 1e-6, "{ctx}: {}: {err:e}", k.name());
            }
        }
    }
}

/// Whether a GPU adapter exists; `DIAGFIM_REQUIRE_GPU=1` (CI) makes its absence a failure.
#[cfg(feature = "gpu")]
fn gpu_available() -> bool {
    match diagfim::engine::GpuContext::shared() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var("DIAGFIM_REQUIRE_GPU").as_deref() != Ok("1"),
                "DIAGFIM_REQUIRE_GPU=1 but no GPU adapter: {e}"
            );
            eprintln!("skipping: no GPU adapter ({e})");
            false
        }
    }
}

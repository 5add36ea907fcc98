//! Partial results (docs/scale-out.md): shards analysed with their global input offset and
//! merged equal the analysis of all inputs on every key (CPU ≤ 1e-12 relative, GPU ≤ 2e-3),
//! with the same recommendations and sample sizes; the file round trip is exact; partials of
//! different models or options are refused with the field that differs.

mod common;
use common::*;
use diagfim::{
    analyze_partial, Activation, AnalysisOptions, Bounds, EngineKind, ExpFamily, Family, Key,
    Label, Mlp, Partial, Report, Request,
};
use ndarray::{s, Array2};

fn request<'a>(
    model: &'a Mlp,
    family: &'a dyn ExpFamily,
    x: ndarray::ArrayView2<'a, f64>,
    labels: Option<&'a [Label]>,
    options: AnalysisOptions,
) -> Request<'a> {
    Request {
        model,
        family,
        inputs: x,
        labels,
        options,
        progress: None,
    }
}

/// Partials of the shards [cuts[i], cuts[i+1]) of `x`, each analysed with its offset.
fn shards(
    model: &Mlp,
    family: &dyn ExpFamily,
    x: &Array2<f64>,
    labels: Option<&[Label]>,
    options: &AnalysisOptions,
    cuts: &[usize],
) -> Vec<Partial> {
    cuts.windows(2)
        .map(|w| {
            let opts = AnalysisOptions {
                input_offset: w[0] as u64,
                ..options.clone()
            };
            let xs = x.slice(s![w[0]..w[1], ..]);
            let ls = labels.map(|l| &l[w[0]..w[1]]);
            analyze_partial(&request(model, family, xs, ls, opts)).unwrap()
        })
        .collect()
}

/// Every key of `got` against `want`: |a − b| ≤ tol·(|b| + mean |b| of the tensor), so
/// entries far below their tensor's scale (signed keys near 0) are held to the tensor's scale;
/// with `summary`, also SUMMARY.json's recommendations (equal) and sample sizes (≤ tol).
fn assert_reports_close(got: &Report, want: &Report, tol: f64, summary: bool, what: &str) {
    assert_eq!(got.params.len(), want.params.len());
    for (g, w) in got.params.iter().zip(&want.params) {
        assert_eq!(g.info, w.info);
        let gk: Vec<_> = g.values.keys().collect();
        let wk: Vec<_> = w.values.keys().collect();
        assert_eq!(gk, wk, "{what}: keys of {}", w.info.name);
        for (key, wv) in &w.values {
            let gv = &g.values[key];
            assert_eq!(gv.shape(), wv.shape());
            let scale = wv.iter().map(|v| v.abs()).sum::<f64>() / wv.len() as f64;
            let err = gv
                .iter()
                .zip(wv.iter())
                .map(|(a, b)| (a - b).abs() / (b.abs() + scale + 1e-300))
                .fold(0.0, f64::max);
            assert!(
                err <= tol,
                "{what}: {}/{} differs by {err:e} (tolerance {tol:e})",
                key.name(),
                w.info.name
            );
        }
        match (&g.bounds, &w.bounds) {
            (Some(_), Some(_)) if !summary => {}
            (Some(gb), Some(wb)) => {
                let gs = serde_json::to_value(gb).unwrap();
                let ws = serde_json::to_value(wb).unwrap();
                for (k, v) in ws.as_object().unwrap() {
                    if let (Some(x), Some(y)) = (gs[k].as_f64(), v.as_f64()) {
                        assert!(
                            (x - y).abs() <= tol * y.abs().max(1e-300),
                            "{what}: bound {k} of {}: {x} vs {y}",
                            w.info.name
                        );
                    } else {
                        assert_eq!(&gs[k], v, "{what}: bound flag {k}");
                    }
                }
            }
            (None, None) => {}
            _ => panic!("{what}: bounds present in one report only"),
        }
    }
    assert_eq!(got.run.inputs, want.run.inputs);
    assert_eq!(got.run.samples, want.run.samples);
    assert_eq!(got.run.family, want.run.family);
    if !summary {
        return;
    }
    // SUMMARY.json's per-layer recommendations and Chebyshev sample sizes.
    let (gs, ws) = (got.summary(), want.summary());
    for (g, w) in gs.layers.iter().zip(&ws.layers) {
        let (gr, wr) = (
            g.theory.recommendation.as_ref().unwrap(),
            w.theory.recommendation.as_ref().unwrap(),
        );
        assert_eq!(
            gr.estimator, wr.estimator,
            "{what}: recommendation of {}",
            w.name
        );
        for (x, y) in [
            (gr.n_i1, wr.n_i1),
            (gr.n_i2, wr.n_i2),
            (gr.n_combination, wr.n_combination),
        ] {
            match (x, y) {
                (Some(x), Some(y)) => assert!(
                    (x - y).abs() <= tol * y.abs(),
                    "{what}: sample size of {}: {x} vs {y}",
                    w.name
                ),
                (x, y) => assert_eq!(x, y, "{what}: sample size of {}", w.name),
            }
        }
    }
}

fn categorical_setup() -> (Mlp, Family, Array2<f64>, Vec<Label>) {
    let model = random_model(
        &[5, 7, 6, 4],
        &[Activation::Tanh, Activation::Sigmoid],
        0.8,
        11,
        true,
    );
    let x = random_inputs(64, 5, 3);
    let labels = (0..64).map(|i| Label::Class((i * 7) % 4)).collect();
    (
        model,
        Family::from_name("categorical", 1.0).unwrap(),
        x,
        labels,
    )
}

fn cpu_options(bounds: Bounds) -> AnalysisOptions {
    AnalysisOptions {
        samples: 8,
        seed: 5,
        engine: EngineKind::Cpu,
        bounds,
        batch_size: 16,
        ..Default::default()
    }
}

#[test]
fn cpu_shards_merge_to_the_full_run() {
    let (model, family, x, labels) = categorical_setup();
    for bounds in [Bounds::All, Bounds::None] {
        let opts = cpu_options(bounds);
        let full = analyze_opts(
            &model,
            family.as_dyn(),
            x.view(),
            Some(&labels),
            opts.clone(),
        );
        let parts = shards(
            &model,
            family.as_dyn(),
            &x,
            Some(&labels),
            &opts,
            &[0, 13, 40, 41, 64],
        );
        // Merge in a scrambled order and grouping: ((p3 + p1) + (p0 + p2)).
        let mut left = parts[3].clone();
        left.merge(&parts[1]).unwrap();
        let mut right = parts[0].clone();
        right.merge(&parts[2]).unwrap();
        left.merge(&right).unwrap();
        assert_eq!(left.inputs(), 64);
        assert_eq!(left.ranges(), &[(0, 64)]);
        assert_reports_close(&left.finish().unwrap(), &full, 1e-12, true, "cpu shards");
        // One partial of everything is the full run, bit for bit.
        let whole = analyze_partial(&request(
            &model,
            family.as_dyn(),
            x.view(),
            Some(&labels),
            opts.clone(),
        ))
        .unwrap();
        let report = whole.finish().unwrap();
        for key in [
            Key::Fisher,
            Key::Mc1,
            Key::McVar2Se,
            Key::VarJoint1,
            Key::VarEf,
        ] {
            assert_eq!(flat(&report, key), flat(&full, key), "{}", key.name());
        }
    }
}

#[test]
fn gaussian_shards_merge_through_files() {
    let model = random_model(&[4, 6, 3], &[Activation::Softplus], 0.7, 21, true);
    let family = Family::from_name("gaussian", 0.5).unwrap();
    let x = random_inputs(30, 4, 8);
    let opts = cpu_options(Bounds::Keys);
    let full = analyze_opts(&model, family.as_dyn(), x.view(), None, opts.clone());
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = shards(&model, family.as_dyn(), &x, None, &opts, &[0, 9, 10, 30])
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = dir.path().join(format!("part{i}.safetensors"));
            p.save(&path).unwrap();
            // The file round trip is exact.
            let back = Partial::load(&path).unwrap();
            assert_eq!(
                flat(&back.finish().unwrap(), Key::Var1),
                flat(&p.finish().unwrap(), Key::Var1)
            );
            path
        })
        .collect();
    let merged = Partial::merge_all(paths.iter().rev().map(|p| Partial::load(p).unwrap())).unwrap();
    assert_reports_close(
        &merged.finish().unwrap(),
        &full,
        1e-12,
        true,
        "gaussian files",
    );
    // In-memory bytes equal the file.
    let bytes = merged.to_bytes().unwrap();
    let again = Partial::from_bytes(&bytes).unwrap();
    assert_eq!(
        flat(&again.finish().unwrap(), Key::McVar1),
        flat(&merged.finish().unwrap(), Key::McVar1)
    );
}

/// A shard analysed with its offset draws the whole run's labels: its per-input Monte-Carlo
/// values equal the whole run's rows for those inputs, bit for bit.
#[test]
fn input_offset_draws_the_global_labels() {
    let (model, family, x, _) = categorical_setup();
    let per_input = AnalysisOptions {
        per_input: true,
        ..cpu_options(Bounds::None)
    };
    let full = analyze_opts(&model, family.as_dyn(), x.view(), None, per_input.clone());
    let shard = analyze_opts(
        &model,
        family.as_dyn(),
        x.slice(s![20..30, ..]),
        None,
        AnalysisOptions {
            input_offset: 20,
            ..per_input.clone()
        },
    );
    let unshifted = analyze_opts(
        &model,
        family.as_dyn(),
        x.slice(s![20..30, ..]),
        None,
        per_input,
    );
    for i in 0..10 {
        for key in [Key::Mc1, Key::Mc2, Key::McVar1] {
            assert_eq!(
                per_input_flat(&shard, key, i),
                per_input_flat(&full, key, 20 + i)
            );
        }
    }
    // Without the offset the labels differ (the test can fail).
    assert_ne!(
        per_input_flat(&unshifted, Key::Mc1, 0),
        per_input_flat(&full, Key::Mc1, 20)
    );
}

#[test]
fn mismatched_partials_are_refused_with_the_field() {
    let (model, family, x, labels) = categorical_setup();
    let opts = cpu_options(Bounds::None);
    let fam = family.as_dyn();
    let part = |m: &Mlp, f: &dyn ExpFamily, l: Option<&[Label]>, o: AnalysisOptions| {
        analyze_partial(&request(m, f, x.slice(s![0..4, ..]), l.map(|l| &l[..4]), o)).unwrap()
    };
    let base = part(&model, fam, None, opts.clone());
    let at = |k: u64| AnalysisOptions {
        input_offset: k,
        ..opts.clone()
    };
    let other_model = random_model(
        &[5, 7, 6, 4],
        &[Activation::Tanh, Activation::Sigmoid],
        0.8,
        12,
        true,
    );
    let gaussian = Family::from_name("gaussian", 1.0).unwrap();
    let cases: Vec<(Partial, &str)> = vec![
        (part(&other_model, fam, None, at(4)), "model"),
        (part(&model, gaussian.as_dyn(), None, at(4)), "family"),
        (
            part(&model, fam, None, AnalysisOptions { seed: 6, ..at(4) }),
            "seed",
        ),
        (
            part(
                &model,
                fam,
                None,
                AnalysisOptions {
                    samples: 9,
                    ..at(4)
                },
            ),
            "N (--samples)",
        ),
        (
            part(
                &model,
                fam,
                None,
                AnalysisOptions {
                    bounds: Bounds::Keys,
                    ..at(4)
                },
            ),
            "bounds mode",
        ),
        (part(&model, fam, Some(&labels), at(4)), "data labels"),
        (part(&model, fam, None, at(2)), "overlap"),
    ];
    for (other, field) in cases {
        let err = base.clone().merge(&other).unwrap_err().to_string();
        assert!(err.contains(field), "'{field}' not named in: {err}");
    }
    // The same options at a disjoint offset merge.
    base.clone().merge(&part(&model, fam, None, at(4))).unwrap();
    // σ² of the Gaussian family is compared too.
    let g1 = part(&model, gaussian.as_dyn(), None, opts.clone());
    let g2 = Family::from_name("gaussian", 2.0).unwrap();
    let err = g1
        .clone()
        .merge(&part(&model, g2.as_dyn(), None, at(4)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("σ²"), "{err}");
}

#[test]
fn per_input_partials_and_bad_files_are_refused() {
    let (model, family, x, _) = categorical_setup();
    let err = analyze_partial(&request(
        &model,
        family.as_dyn(),
        x.view(),
        None,
        AnalysisOptions {
            per_input: true,
            ..cpu_options(Bounds::None)
        },
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("per-input"), "{err}");
    // Offsets past the RNG's 2³² input counter.
    let err = analyze_partial(&request(
        &model,
        family.as_dyn(),
        x.view(),
        None,
        AnalysisOptions {
            input_offset: u32::MAX as u64,
            ..cpu_options(Bounds::None)
        },
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("2³²"), "{err}");

    let part = analyze_partial(&request(
        &model,
        family.as_dyn(),
        x.slice(s![0..3, ..]),
        None,
        cpu_options(Bounds::None),
    ))
    .unwrap();
    let bytes = part.to_bytes().unwrap();
    for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
        let err = Partial::from_bytes(&bytes[..cut]).unwrap_err().to_string();
        assert!(err.contains("not a valid diagfim partial"), "{err}");
    }
    // A RESULT file is not a partial.
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("result.safetensors");
    part.finish().unwrap().save(&result).unwrap();
    let err = Partial::load(&result).unwrap_err().to_string();
    assert!(
        err.contains("diagfim_partial") && err.contains("result.safetensors"),
        "{err}"
    );
    // Another format version (same length, so the header stays valid).
    let needle = b"\\\"format_version\\\":1";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the version is in the header");
    let mut other = bytes.clone();
    other[at + needle.len() - 1] = b'9';
    let err = Partial::from_bytes(&other).unwrap_err().to_string();
    assert!(err.contains("format version"), "{err}");
    assert!(Partial::merge_all(Vec::new()).is_err());
}

/// The GPU engine's shards merge to its full run (≤ 2e-3) and to the CPU engine's.
#[cfg(feature = "gpu")]
#[test]
fn gpu_shards_merge_to_the_full_run() {
    if diagfim::engine::gpu::GpuContext::shared().is_err() {
        assert!(
            !std::env::var("DIAGFIM_REQUIRE_GPU").is_ok_and(|v| v == "1"),
            "DIAGFIM_REQUIRE_GPU=1 but no adapter"
        );
        eprintln!("skipping GPU test: no adapter");
        return;
    }
    let (model, family, x, labels) = categorical_setup();
    let opts = AnalysisOptions {
        engine: EngineKind::Gpu,
        ..cpu_options(Bounds::All)
    };
    let full = analyze_opts(
        &model,
        family.as_dyn(),
        x.view(),
        Some(&labels),
        opts.clone(),
    );
    let parts = shards(
        &model,
        family.as_dyn(),
        &x,
        Some(&labels),
        &opts,
        &[0, 17, 50, 64],
    );
    assert!(parts.iter().all(|p| p.engine() == "gpu"));
    let merged = Partial::merge_all(parts).unwrap().finish().unwrap();
    assert_reports_close(&merged, &full, 2e-3, true, "gpu shards");
    let cpu = analyze_opts(
        &model,
        family.as_dyn(),
        x.view(),
        Some(&labels),
        cpu_options(Bounds::All),
    );
    assert_reports_close(&merged, &cpu, 2e-3, false, "gpu shards vs cpu");
    // GPU and CPU partials are not mixed.
    let cpu_part = analyze_partial(&request(
        &model,
        family.as_dyn(),
        x.slice(s![0..4, ..]),
        None,
        cpu_options(Bounds::All),
    ))
    .unwrap();
    let gpu_part = analyze_partial(&request(
        &model,
        family.as_dyn(),
        x.slice(s![4..8, ..]),
        None,
        AnalysisOptions {
            input_offset: 4,
            ..opts
        },
    ))
    .unwrap();
    let err = cpu_part.clone().merge(&gpu_part).unwrap_err().to_string();
    assert!(err.contains("engine"), "{err}");
}

//! Model and array file formats: safetensors round trips, the Python-written fixtures of
//! tests/fixtures (make_fixtures.py), .npy labels, and the `diagfim` CLI end to end
//! (RESULT.safetensors layout, SUMMARY.json, `diagfim info`). The CLI tests need the `cli`
//! feature (the binary); their helpers are unused without it.
#![cfg_attr(not(feature = "cli"), allow(dead_code, unused_imports))]

use diagfim::engine::{analyze, AnalysisOptions, Request};
use diagfim::family::FamilyKind;
use diagfim::model::{load_safetensors, save_safetensors, StoreDtype};
use diagfim::{Activation, Error, Family, Key, Label, Mlp};
use ndarray::{Array1, Array2};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[cfg(feature = "cli")]
const BIN: &str = env!("CARGO_BIN_EXE_diagfim");

/// The result keys every analysis writes (ef only with labels).
const KEYS: [&str; 11] = [
    "fisher",
    "var1",
    "var2",
    "mc1",
    "mc2",
    "mc_var1",
    "mc_var2",
    "mc_var1_se",
    "mc_var2_se",
    "var_joint1",
    "var_joint2",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn read_npy_f64_2d(name: &str) -> Array2<f64> {
    ndarray_npy::read_npy(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// max |a − b| / max |b|.
fn rel_err(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// The network outputs for every input row.
fn forward_all(model: &Mlp, x: &Array2<f64>) -> Array2<f64> {
    let o = model.output_dim();
    let mut out = Array2::zeros((x.nrows(), o));
    for (i, row) in x.rows().into_iter().enumerate() {
        out.row_mut(i).assign(&model.forward(row));
    }
    out
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_f64_is_exact() {
    let model = Mlp::init(&[4, 5, 3], vec![Activation::Tanh], 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m64.safetensors");
    save_safetensors(&model, &path, StoreDtype::F64).unwrap();
    let loaded = load_safetensors(&path, None).unwrap();
    assert_eq!(loaded, model);
    assert_eq!(loaded.activations(), &[Activation::Tanh]);

    // The file itself: float64 tensors with PyTorch's names and the activations metadata.
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, ["0.bias", "0.weight", "2.bias", "2.weight"]);
    for (_, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F64);
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta.get("activations").map(String::as_str), Some("tanh"));
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
}

#[test]
fn round_trip_f32_keeps_f32_precision() {
    let model = Mlp::init(&[4, 5, 3], vec![Activation::Tanh], 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m32.safetensors");
    save_safetensors(&model, &path, StoreDtype::F32).unwrap();
    let loaded = load_safetensors(&path, None).unwrap();
    assert_eq!(loaded.activations(), &[Activation::Tanh]);
    assert_eq!(loaded.params(), model.params());
    assert_eq!(loaded.layers().len(), model.layers().len());
    for (a, b) in loaded.layers().iter().zip(model.layers()) {
        assert_eq!(a.key, b.key);
        // Exactly the f32 rounding of the original values.
        assert_eq!(a.weight, b.weight.mapv(|v| f64::from(v as f32)));
        assert_eq!(
            a.bias.as_ref().unwrap(),
            &b.bias.as_ref().unwrap().mapv(|v| f64::from(v as f32))
        );
        for (x, y) in a.weight.iter().zip(&b.weight) {
            assert!((x - y).abs() <= 1e-7 * y.abs().max(1e-30), "{x} vs {y}");
        }
    }
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (_, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
    }
}

#[test]
fn activations_argument_overrides_metadata() {
    let model = Mlp::init(&[4, 5, 3], vec![Activation::Tanh], 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    save_safetensors(&model, &path, StoreDtype::F64).unwrap();
    let loaded = load_safetensors(&path, Some(vec![Activation::Softplus])).unwrap();
    assert_eq!(loaded.activations(), &[Activation::Softplus]);
    assert_eq!(loaded.layers(), model.layers());
}

// ---------------------------------------------------------------- Python fixtures

#[test]
fn python_f32_model_forward_matches_numpy() {
    let model = load_safetensors(&fixture("mlp_f32.safetensors"), None).unwrap();
    assert_eq!(model.widths(), vec![3, 5, 4, 3]);
    assert_eq!(
        model.activations(),
        &[Activation::Sigmoid, Activation::Tanh]
    );
    let names: Vec<String> = model.params().into_iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    );
    let x = diagfim::io::read_inputs(&fixture("x_f32.npy")).unwrap();
    assert_eq!(x.dim(), (6, 3));
    let want = read_npy_f64_2d("logits_a.npy");
    let got = forward_all(&model, &x);
    let err = rel_err(&got, &want);
    assert!(err < 1e-12, "forward vs numpy: rel err {err:e}");
}

#[test]
fn python_f64_model_without_metadata() {
    let path = fixture("mlp_f64_nometa.safetensors");
    match load_safetensors(&path, None) {
        Err(e @ Error::ModelFile { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("--activations"), "{msg}");
        }
        other => panic!("expected Error::ModelFile, got {other:?}"),
    }
    let model = load_safetensors(&path, Some(vec![Activation::Relu])).unwrap();
    assert_eq!(model.widths(), vec![4, 6, 2]);
    assert_eq!(model.activations(), &[Activation::Relu]);
    let names: Vec<String> = model.params().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight"]);
    assert!(model.layers()[1].bias.is_none());
    let x = diagfim::io::read_inputs(&fixture("x_f64.npy")).unwrap();
    let want = read_npy_f64_2d("out_b.npy");
    let err = rel_err(&forward_all(&model, &x), &want);
    assert!(err < 1e-12, "forward vs numpy: rel err {err:e}");
}

// ---------------------------------------------------------------- labels

#[test]
fn read_categorical_labels() {
    let family = Family::from_name("categorical", 1.0).unwrap();
    let labels = diagfim::io::read_labels(&fixture("labels_a.npy"), family.as_dyn(), 6, 3).unwrap();
    let raw: Array1<i64> = ndarray_npy::read_npy(fixture("labels_a.npy")).unwrap();
    let want: Vec<Label> = raw.iter().map(|&c| Label::Class(c as usize)).collect();
    assert_eq!(labels, want);
}

#[test]
fn read_gaussian_targets() {
    let family = Family::from_name("gaussian", 0.5).unwrap();
    let labels =
        diagfim::io::read_labels(&fixture("targets_b.npy"), family.as_dyn(), 5, 2).unwrap();
    let raw = read_npy_f64_2d("targets_b.npy");
    let want: Vec<Label> = raw
        .rows()
        .into_iter()
        .map(|r| Label::Target(r.to_vec()))
        .collect();
    assert_eq!(labels, want);
}

#[test]
fn read_labels_checks_count() {
    let family = Family::from_name("categorical", 1.0).unwrap();
    let err =
        diagfim::io::read_labels(&fixture("labels_a.npy"), family.as_dyn(), 7, 3).unwrap_err();
    assert!(matches!(err, Error::ArrayFile { .. }), "{err:?}");
    assert!(err.to_string().contains("6 labels but 7 inputs"), "{err}");
}

#[test]
fn read_labels_out_of_range_is_an_error_not_a_panic() {
    let family = Family::from_name("categorical", 1.0).unwrap();
    for outputs in [0, 1] {
        let err = diagfim::io::read_labels(&fixture("labels_a.npy"), family.as_dyn(), 6, outputs)
            .unwrap_err();
        assert!(matches!(err, Error::ArrayFile { .. }), "{err:?}");
        assert!(err.to_string().contains("out of range"), "{err}");
    }
}

// ---------------------------------------------------------------- CLI end to end

/// A RESULT.safetensors read back: name → (shape, values).
fn read_result(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F64, "{name}");
            let values = view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

#[cfg(feature = "cli")]
fn run_cli(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "diagfim {args:?} failed ({:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Checks names, dtypes and shapes of RESULT.safetensors against the model's parameters: the
/// contract keys (KEYS, ef with labels) are there, and so is every other key the library
/// reports for the family (the theory layer's bounds, docs/theory.md).
fn check_result_layout(
    result: &BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    model: &Mlp,
    kind: FamilyKind,
    with_ef: bool,
    per_input: Option<usize>,
) {
    let keys: Vec<&str> = Key::ALL
        .into_iter()
        .filter(|k| k.is_available(kind, with_ef))
        .map(Key::name)
        .collect();
    for key in KEYS.iter().chain(with_ef.then_some(&"ef")) {
        assert!(keys.contains(key), "{key}");
    }
    assert_eq!(
        result.len(),
        keys.len() * model.params().len(),
        "tensors: {:?}",
        result.keys().collect::<Vec<_>>()
    );
    for key in &keys {
        for p in model.params() {
            let name = format!("{key}/{}", p.name);
            let (shape, values) = result
                .get(&name)
                .unwrap_or_else(|| panic!("missing tensor '{name}'"));
            let mut want = p.shape.clone();
            if let Some(b) = per_input {
                if Key::from_name(key).unwrap().is_per_input() {
                    want.insert(0, b);
                }
            }
            assert_eq!(shape, &want, "{name}");
            assert!(values.iter().all(|v| v.is_finite()), "{name}");
        }
    }
}

/// The library's report on the same inputs as the CLI's defaults.
fn library_report(
    model: &Mlp,
    family: &Family,
    x: &Array2<f64>,
    labels: Option<&[Label]>,
    per_input: bool,
    samples: usize,
    seed: u64,
) -> diagfim::Report {
    analyze(&Request {
        model,
        family: family.as_dyn(),
        inputs: x.view(),
        labels,
        options: AnalysisOptions {
            per_input,
            samples,
            seed,
            ..Default::default()
        },
        progress: None,
    })
    .unwrap()
}

fn check_fisher_equals_library(
    result: &BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    report: &diagfim::Report,
    model: &Mlp,
) {
    for p in model.params() {
        let lib = report.get(Key::Fisher, &p.name).unwrap();
        let (shape, values) = &result[&format!("fisher/{}", p.name)];
        assert_eq!(lib.shape(), shape.as_slice(), "{}", p.name);
        let lib: Vec<f64> = lib.iter().copied().collect();
        assert_eq!(&lib, values, "fisher/{} differs from the library", p.name);
    }
}

#[cfg(feature = "cli")]
#[test]
fn cli_categorical_per_input_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.safetensors");
    let summary = dir.path().join("summary.json");
    let model_path = fixture("mlp_f32.safetensors");
    let x_path = fixture("x_f32.npy");
    let labels_path = fixture("labels_a.npy");
    run_cli(&[
        "analyze",
        "--model",
        model_path.to_str().unwrap(),
        "--inputs",
        x_path.to_str().unwrap(),
        "--labels",
        labels_path.to_str().unwrap(),
        "--samples",
        "8",
        "--seed",
        "5",
        "--engine",
        "cpu",
        "--per-input",
        "--out",
        out.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ]);
    let model = load_safetensors(&model_path, None).unwrap();
    let result = read_result(&out);
    check_result_layout(&result, &model, FamilyKind::Categorical, true, Some(6));

    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = diagfim::io::read_inputs(&x_path).unwrap();
    let labels = diagfim::io::read_labels(&labels_path, family.as_dyn(), 6, 3).unwrap();
    let report = library_report(&model, &family, &x, Some(&labels), true, 8, 5);
    check_fisher_equals_library(&result, &report, &model);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["engine"], "cpu");
    assert_eq!(json["samples"], 8);
    assert_eq!(json["seed"], 5);
    assert_eq!(json["inputs"], 6);
    assert_eq!(json["per_input"], true);
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), model.params().len());
    for (layer, p) in layers.iter().zip(model.params()) {
        assert_eq!(layer["name"], p.name.as_str());
        let means = layer["means"].as_object().unwrap();
        for key in KEYS.iter().chain(&["ef"]) {
            let m = means
                .get(*key)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or_else(|| panic!("{}: no mean of {key}", p.name));
            assert!(m.is_finite() && m >= 0.0, "{}: {key} mean {m}", p.name);
        }
        // The summary's fisher mean is the mean of the written tensor.
        let (_, values) = &result[&format!("fisher/{}", p.name)];
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let m = means["fisher"].as_f64().unwrap();
        assert!((m - mean).abs() <= 1e-12 * mean.abs(), "{m} vs {mean}");
    }
}

#[cfg(feature = "cli")]
#[test]
fn cli_gaussian_averaged_without_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.safetensors");
    let summary = dir.path().join("summary.json");
    let model_path = fixture("mlp_f64_nometa.safetensors");
    let x_path = fixture("x_f64.npy");
    run_cli(&[
        "analyze",
        "--model",
        model_path.to_str().unwrap(),
        "--inputs",
        x_path.to_str().unwrap(),
        "--family",
        "gaussian",
        "--sigma2",
        "0.5",
        "--activations",
        "relu",
        "--out",
        out.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ]);
    let model = load_safetensors(&model_path, Some(vec![Activation::Relu])).unwrap();
    let result = read_result(&out);
    check_result_layout(
        &result,
        &model,
        FamilyKind::Gaussian { sigma2: 0.5 },
        false,
        None,
    );

    let family = Family::from_name("gaussian", 0.5).unwrap();
    let x = diagfim::io::read_inputs(&x_path).unwrap();
    let report = library_report(&model, &family, &x, None, false, 16, 0);
    check_fisher_equals_library(&result, &report, &model);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(json["engine"].is_string());
    assert_eq!(json["samples"], 16);
    assert_eq!(json["seed"], 0);
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for layer in layers {
        let means = layer["means"].as_object().unwrap();
        let available = Key::ALL
            .into_iter()
            .filter(|k| k.is_available(FamilyKind::Gaussian { sigma2: 0.5 }, false))
            .count();
        assert_eq!(means.len(), available, "{means:?}");
        assert!(!means.contains_key("ef"));
    }
}

#[cfg(feature = "cli")]
#[test]
fn cli_gaussian_with_targets_per_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.safetensors");
    let model_path = fixture("mlp_f64_nometa.safetensors");
    let x_path = fixture("x_f64.npy");
    let t_path = fixture("targets_b.npy");
    run_cli(&[
        "analyze",
        "--model",
        model_path.to_str().unwrap(),
        "--inputs",
        x_path.to_str().unwrap(),
        "--family",
        "gaussian",
        "--activations",
        "relu",
        "--labels",
        t_path.to_str().unwrap(),
        "--per-input",
        "--out",
        out.to_str().unwrap(),
    ]);
    let model = load_safetensors(&model_path, Some(vec![Activation::Relu])).unwrap();
    let result = read_result(&out);
    check_result_layout(
        &result,
        &model,
        FamilyKind::Gaussian { sigma2: 1.0 },
        true,
        Some(5),
    );
    let family = Family::from_name("gaussian", 1.0).unwrap();
    let x = diagfim::io::read_inputs(&x_path).unwrap();
    let labels = diagfim::io::read_labels(&t_path, family.as_dyn(), 5, 2).unwrap();
    let report = library_report(&model, &family, &x, Some(&labels), true, 16, 0);
    check_fisher_equals_library(&result, &report, &model);
}

#[cfg(feature = "cli")]
#[test]
fn cli_info_prints_parameter_count() {
    let model_path = fixture("mlp_f32.safetensors");
    let out = run_cli(&["info", "--model", model_path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 3·5+5 + 5·4+4 + 4·3+3 = 59.
    assert!(stdout.contains("59 parameters"), "{stdout}");
    assert!(
        stdout.contains("sigmoid") && stdout.contains("tanh"),
        "{stdout}"
    );

    let model_path = fixture("mlp_f64_nometa.safetensors");
    let out = run_cli(&[
        "info",
        "--model",
        model_path.to_str().unwrap(),
        "--activations",
        "relu",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 4·6+6 + 6·2 = 42.
    assert!(stdout.contains("42 parameters"), "{stdout}");
    assert!(stdout.contains("no bias"), "{stdout}");
}

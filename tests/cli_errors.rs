//! Every bad input to the `diagfim` CLI ends with exit code 2 (never a panic, which exits
//! 101) and a message on stderr that names the problem.

use diagfim::model::{save_safetensors, StoreDtype};
use diagfim::{Activation, Mlp};
use ndarray::{Array1, Array2};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_diagfim");

/// A tensor to write into a hand-made model file.
struct T {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A float64 tensor with values 0.1, 0.2, … (finite, small).
fn f64_tensor(name: &'static str, shape: &[usize]) -> T {
    let n: usize = shape.iter().product();
    T {
        name,
        dtype: Dtype::F64,
        shape: shape.to_vec(),
        data: (0..n)
            .flat_map(|i| (0.1 * (i as f64 + 1.0) / n as f64).to_le_bytes())
            .collect(),
    }
}

/// A tensor of `dtype` whose elements are `size` zero bytes each.
fn raw_tensor(name: &'static str, dtype: Dtype, shape: &[usize], size: usize) -> T {
    let n: usize = shape.iter().product();
    T {
        name,
        dtype,
        shape: shape.to_vec(),
        data: vec![0; n * size],
    }
}

/// Writes a safetensors file with the `activations` metadata key when given.
fn write_model(path: &Path, tensors: &[T], activations: Option<&str>) {
    let meta = activations.map(|a| HashMap::from([("activations".to_string(), a.to_string())]));
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name,
                TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

/// A scratch folder holding a valid 3 → 4 → 2 sigmoid model, 5 valid inputs and labels.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let model = Mlp::init(&[3, 4, 2], vec![Activation::Sigmoid], 7).unwrap();
        save_safetensors(
            &model,
            &dir.path().join("model.safetensors"),
            StoreDtype::F64,
        )
        .unwrap();
        let x = Array2::from_shape_fn((5, 3), |(i, k)| (i as f64 - 2.0) * 0.3 + k as f64 * 0.1);
        ndarray_npy::write_npy(dir.path().join("x.npy"), &x).unwrap();
        ndarray_npy::write_npy(
            dir.path().join("labels.npy"),
            &Array1::from(vec![0i64, 1, 1, 0, 1]),
        )
        .unwrap();
        Setup { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
    /// `analyze` with the given model and inputs plus extra arguments.
    fn analyze(&self, model: &str, inputs: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "analyze".to_string(),
            "--model".into(),
            self.p(model),
            "--inputs".into(),
            self.p(inputs),
            "--out".into(),
            self.p("result.safetensors"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_failing(&args)
    }
    /// `analyze` on the valid model and inputs plus extra arguments.
    fn analyze_ok_files(&self, extra: &[&str]) -> String {
        self.analyze("model.safetensors", "x.npy", extra)
    }
    /// `analyze` on a hand-made model and the valid inputs.
    fn analyze_model(&self, tensors: &[T], activations: Option<&str>) -> String {
        write_model(&self.path("bad.safetensors"), tensors, activations);
        self.analyze("bad.safetensors", "x.npy", &[])
    }
    /// `analyze` on the valid model and the given inputs array.
    fn analyze_inputs<A: ndarray_npy::WriteNpyExt>(&self, x: &A) -> String {
        ndarray_npy::write_npy(self.path("bad.npy"), x).unwrap();
        self.analyze("model.safetensors", "bad.npy", &[])
    }
    /// `analyze` on the valid model and inputs with the given labels array.
    fn analyze_labels<A: ndarray_npy::WriteNpyExt>(&self, y: &A, extra: &[&str]) -> String {
        ndarray_npy::write_npy(self.path("y.npy"), y).unwrap();
        let mut args = vec!["--labels".to_string(), self.p("y.npy")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.analyze_ok_files(&args)
    }
}

/// Runs the CLI, checks exit code 2 without a panic, returns stderr.
fn run_failing<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "diagfim {args:?}: expected exit code 2\nstderr:\n{stderr}\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[track_caller]
fn assert_says(stderr: &str, phrases: &[&str]) {
    for p in phrases {
        assert!(stderr.contains(p), "stderr lacks '{p}':\n{stderr}");
    }
}

/// The valid model's tensors, to be altered.
fn good_tensors() -> Vec<T> {
    vec![
        f64_tensor("0.weight", &[4, 3]),
        f64_tensor("0.bias", &[4]),
        f64_tensor("2.weight", &[2, 4]),
        f64_tensor("2.bias", &[2]),
    ]
}

// ---------------------------------------------------------------- model files

#[test]
fn missing_model_file() {
    let s = Setup::new();
    let err = s.analyze("nope.safetensors", "x.npy", &[]);
    assert_says(&err, &["cannot read", "nope.safetensors"]);
    let err = run_failing(&["info", "--model", &s.p("nope.safetensors")]);
    assert_says(&err, &["cannot read", "nope.safetensors"]);
}

#[test]
fn model_path_is_a_directory() {
    let s = Setup::new();
    let err = run_failing(&["info", "--model", s.dir.path().to_str().unwrap()]);
    assert_says(&err, &["cannot read"]);
}

#[test]
fn truncated_model_file() {
    let s = Setup::new();
    let bytes = std::fs::read(s.path("model.safetensors")).unwrap();
    std::fs::write(s.path("trunc.safetensors"), &bytes[..40]).unwrap();
    let err = s.analyze("trunc.safetensors", "x.npy", &[]);
    assert_says(&err, &["trunc.safetensors", "not a valid safetensors file"]);
    // Also cut inside the data part (the header is intact).
    std::fs::write(s.path("trunc.safetensors"), &bytes[..bytes.len() - 8]).unwrap();
    let err = s.analyze("trunc.safetensors", "x.npy", &[]);
    assert_says(&err, &["not a valid safetensors file"]);
}

#[test]
fn empty_and_text_model_files() {
    let s = Setup::new();
    std::fs::write(s.path("empty.safetensors"), b"").unwrap();
    let err = s.analyze("empty.safetensors", "x.npy", &[]);
    assert_says(&err, &["not a valid safetensors file"]);

    std::fs::write(
        s.path("text.safetensors"),
        "This is not a model at all, just some random text.\nkdhf83 ;lk2j3 ==\n",
    )
    .unwrap();
    let err = s.analyze("text.safetensors", "x.npy", &[]);
    assert_says(&err, &["text.safetensors", "not a valid safetensors file"]);

    // A header that is valid JSON length-wise but not JSON.
    let mut bytes = 8u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{notjson");
    std::fs::write(s.path("json.safetensors"), bytes).unwrap();
    let err = s.analyze("json.safetensors", "x.npy", &[]);
    assert_says(&err, &["not a valid safetensors file"]);
}

#[test]
fn model_without_tensors() {
    let s = Setup::new();
    let err = s.analyze_model(&[], Some("sigmoid"));
    assert_says(&err, &["no tensors"]);
}

#[test]
fn bias_without_weight() {
    let s = Setup::new();
    let mut t = good_tensors();
    t.remove(2); // 2.weight
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["'2.bias' exists but '2.weight' is missing"]);
}

#[test]
fn weight_with_three_axes() {
    let s = Setup::new();
    let mut t = good_tensors();
    t[2] = f64_tensor("2.weight", &[2, 4, 1]);
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["'2.weight'", "[2, 4, 1]", "2-D"]);
}

#[test]
fn bias_with_two_axes_or_wrong_length() {
    let s = Setup::new();
    let mut t = good_tensors();
    t[1] = f64_tensor("0.bias", &[4, 1]);
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["'0.bias'", "1-D"]);
    let mut t = good_tensors();
    t[1] = f64_tensor("0.bias", &[3]);
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["'0.bias' has 3 entries", "4 rows"]);
}

#[test]
fn unexpected_tensor_names() {
    let s = Setup::new();
    let mut t = good_tensors();
    t.push(f64_tensor("layers.0.weight", &[4, 3]));
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["unexpected tensor 'layers.0.weight'"]);
    let mut t = good_tensors();
    t.push(f64_tensor("0.running_mean", &[4]));
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["unexpected tensor '0.running_mean'"]);
}

#[test]
fn two_tensors_for_one_layer_key() {
    let s = Setup::new();
    let mut t = good_tensors();
    t.push(f64_tensor("00.weight", &[4, 3]));
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["'00.weight'", "'0.weight'", "same layer"]);
}

#[test]
fn shapes_that_do_not_chain() {
    let s = Setup::new();
    let mut t = good_tensors();
    t[2] = f64_tensor("2.weight", &[2, 5]);
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["do not chain", "'0.weight' outputs 4", "expects 5"]);
}

#[test]
fn empty_weight() {
    let s = Setup::new();
    let mut t = good_tensors();
    t[2] = f64_tensor("2.weight", &[0, 4]);
    t.remove(3);
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["empty shape"]);
}

#[test]
fn inputs_width_differs_from_model() {
    let s = Setup::new();
    let err = s.analyze_inputs(&Array2::<f64>::zeros((5, 4)));
    assert_says(&err, &["4 columns", "expects 3 inputs"]);
}

#[test]
fn unknown_activation_on_command_line() {
    let s = Setup::new();
    let err = s.analyze_ok_files(&["--activations", "gelu"]);
    assert_says(&err, &["unknown activation 'gelu'", "sigmoid"]);
    let err = run_failing(&[
        "info",
        "--model",
        &s.p("model.safetensors"),
        "--activations",
        "sigmoid,swish",
    ]);
    assert_says(&err, &["unknown activation 'swish'"]);
}

#[test]
fn unknown_activation_in_metadata() {
    let s = Setup::new();
    let err = s.analyze_model(&good_tensors(), Some("gelu"));
    assert_says(
        &err,
        &[
            "bad.safetensors",
            "'activations' metadata",
            "unknown activation 'gelu'",
            "--activations",
        ],
    );
}

#[test]
fn wrong_number_of_activations() {
    let s = Setup::new();
    let err = s.analyze_model(&good_tensors(), Some("sigmoid,tanh"));
    assert_says(&err, &["2 layers need 1 hidden activation", "got 2"]);
    let err = s.analyze_ok_files(&["--activations", "relu,relu"]);
    assert_says(&err, &["need 1 hidden activation", "--activations"]);
}

#[test]
fn model_without_metadata_needs_activations() {
    let s = Setup::new();
    let err = s.analyze_model(&good_tensors(), None);
    assert_says(&err, &["no 'activations' metadata", "--activations"]);
}

#[test]
fn model_tensor_of_wrong_dtype() {
    let s = Setup::new();
    let mut t = good_tensors();
    t[0] = raw_tensor("0.weight", Dtype::F16, &[4, 3], 2);
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["'0.weight'", "F16", "float32 or float64"]);
    let mut t = good_tensors();
    t[3] = raw_tensor("2.bias", Dtype::I32, &[2], 4);
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["'2.bias'", "I32", "float32 or float64"]);
    let mut t = good_tensors();
    t[3] = raw_tensor("2.bias", Dtype::BF16, &[2], 2);
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["'2.bias'", "BF16"]);
}

#[test]
fn nan_and_inf_in_weights() {
    let s = Setup::new();
    let mut t = good_tensors();
    t[2].data[8 * 5..8 * 6].copy_from_slice(&f64::NAN.to_le_bytes());
    let err = s.analyze_model(&t, Some("sigmoid"));
    assert_says(&err, &["non-finite", "layer '2'", "index 5"]);
    let mut t = good_tensors();
    t[1].data[..8].copy_from_slice(&f64::INFINITY.to_le_bytes());
    let err = s.analyze_model(&t, Some("sigmoid"));
    // Weight (12 values) then bias: the bias's first entry is index 12.
    assert_says(&err, &["non-finite", "layer '0'", "index 12"]);
}

#[test]
fn categorical_model_with_one_output() {
    let s = Setup::new();
    let t = vec![
        f64_tensor("0.weight", &[4, 3]),
        f64_tensor("2.weight", &[1, 4]),
    ];
    let err = s.analyze_model(&t, Some("tanh"));
    assert_says(&err, &["at least 2 outputs"]);
}

// ---------------------------------------------------------------- inputs

#[test]
fn integer_inputs() {
    let s = Setup::new();
    let err = s.analyze_inputs(&Array2::<i32>::zeros((5, 3)));
    assert_says(&err, &["bad.npy", "float32 or float64", "int32", "[5, 3]"]);
}

#[test]
fn inputs_with_wrong_rank() {
    let s = Setup::new();
    let err = s.analyze_inputs(&Array1::<f64>::zeros(3));
    assert_says(&err, &["shape [B, in]", "[3]"]);
}

#[test]
fn inputs_not_npy() {
    let s = Setup::new();
    std::fs::write(s.path("x.txt"), "1,2,3\n4,5,6\n").unwrap();
    let err = s.analyze("model.safetensors", "x.txt", &[]);
    assert_says(&err, &["x.txt", "not an .npy file", "numpy.save"]);
    let err = s.analyze("model.safetensors", "missing.npy", &[]);
    assert_says(&err, &["cannot read", "missing.npy"]);
}

#[test]
fn nan_or_inf_in_inputs() {
    let s = Setup::new();
    let mut x = Array2::<f64>::zeros((5, 3));
    x[[1, 2]] = f64::NAN;
    let err = s.analyze_inputs(&x);
    assert_says(&err, &["non-finite", "inputs", "index 5"]);
    let mut x = Array2::<f32>::zeros((5, 3));
    x[[4, 0]] = f32::NEG_INFINITY;
    let err = s.analyze_inputs(&x);
    assert_says(&err, &["non-finite", "inputs", "index 12"]);
}

#[test]
fn no_inputs() {
    let s = Setup::new();
    let err = s.analyze_inputs(&Array2::<f64>::zeros((0, 3)));
    assert_says(&err, &["no inputs (B = 0)"]);
}

// ---------------------------------------------------------------- options

#[test]
fn too_few_samples() {
    let s = Setup::new();
    let err = s.analyze_ok_files(&["--samples", "1"]);
    assert_says(&err, &["N = 1", "--samples 2"]);
    let err = s.analyze_ok_files(&["--samples", "0"]);
    assert_says(&err, &["N = 0"]);
}

#[test]
fn unknown_family() {
    let s = Setup::new();
    let err = s.analyze_ok_files(&["--family", "binomial"]);
    assert_says(
        &err,
        &[
            "unknown family 'binomial'",
            "categorical",
            "gaussian",
            "bernoulli",
            "poisson",
        ],
    );
}

#[test]
fn bad_gaussian_variance() {
    let s = Setup::new();
    let err = s.analyze_ok_files(&["--family", "gaussian", "--sigma2", "0"]);
    assert_says(&err, &["σ²", "> 0"]);
    let err = s.analyze_ok_files(&["--family", "gaussian", "--sigma2", "nan"]);
    assert_says(&err, &["σ²"]);
}

#[test]
fn unknown_engine() {
    let s = Setup::new();
    let err = s.analyze_ok_files(&["--engine", "tpu"]);
    assert_says(&err, &["unknown engine 'tpu'", "auto, cpu or gpu"]);
}

#[test]
fn unknown_bounds() {
    let s = Setup::new();
    let err = s.analyze_ok_files(&["--bounds", "some"]);
    assert_says(&err, &["unknown bounds 'some'", "all, keys or none"]);
}

#[test]
fn gpu_engine_unavailable() {
    let s = Setup::new();
    let out = Command::new(BIN)
        .args([
            "analyze",
            "--model",
            &s.p("model.safetensors"),
            "--inputs",
            &s.p("x.npy"),
            "--engine",
            "gpu",
            "--out",
            &s.p("result.safetensors"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Once a GPU engine exists this run may succeed; it must never panic.
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_says(&stderr, &["GPU"]);
        assert!(!s.path("result.safetensors").exists());
    }
}

#[test]
fn unwritable_outputs() {
    let s = Setup::new();
    let out = s.p("no/such/dir/result.safetensors");
    let err = run_failing(&[
        "analyze",
        "--model",
        &s.p("model.safetensors"),
        "--inputs",
        &s.p("x.npy"),
        "--out",
        &out,
    ]);
    assert_says(&err, &["result.safetensors"]);
    let summary = s.p("no/such/dir/summary.json");
    let err = run_failing(&[
        "analyze",
        "--model",
        &s.p("model.safetensors"),
        "--inputs",
        &s.p("x.npy"),
        "--out",
        &s.p("result.safetensors"),
        "--summary",
        &summary,
    ]);
    assert_says(&err, &["summary.json"]);
}

#[test]
fn bad_argument_syntax() {
    // clap's own usage errors also exit with 2.
    let s = Setup::new();
    let err = Command::new(BIN)
        .args(["analyze", "--model", &s.p("model.safetensors")])
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(2));
    let err = Command::new(BIN)
        .args(["analyze", "--samples", "many"])
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(2));
}

// ---------------------------------------------------------------- labels

#[test]
fn labels_out_of_range() {
    let s = Setup::new();
    let err = s.analyze_labels(&Array1::from(vec![0i64, 1, 2, 0, 1]), &[]);
    assert_says(&err, &["label 2 at index 2 is out of range", "2 classes"]);
    let err = s.analyze_labels(&Array1::from(vec![0i32, -1, 1, 0, 1]), &[]);
    assert_says(&err, &["label -1 at index 1 is out of range"]);
}

#[test]
fn labels_of_wrong_count_or_shape() {
    let s = Setup::new();
    let err = s.analyze_labels(&Array1::from(vec![0i64, 1, 1]), &[]);
    assert_says(&err, &["3 labels but 5 inputs"]);
    let err = s.analyze_labels(&Array2::<i64>::zeros((5, 1)), &[]);
    assert_says(&err, &["shape [B]", "int64", "[5, 1]"]);
    let err = s.analyze_labels(&Array1::<f64>::zeros(5), &[]);
    assert_says(&err, &["integer", "float64"]);
}

#[test]
fn gaussian_targets_of_wrong_width() {
    let s = Setup::new();
    let err = s.analyze_labels(&Array2::<f64>::zeros((5, 3)), &["--family", "gaussian"]);
    assert_says(&err, &["shape [B, 2]", "[5, 3]"]);
    let err = s.analyze_labels(&Array1::<f64>::zeros(5), &["--family", "gaussian"]);
    assert_says(&err, &["shape [B, 2]", "[5]"]);
    let err = s.analyze_labels(&Array2::<f64>::zeros((4, 2)), &["--family", "gaussian"]);
    assert_says(&err, &["4 labels but 5 inputs"]);
    let mut t = Array2::<f64>::zeros((5, 2));
    t[[3, 1]] = f64::INFINITY;
    let err = s.analyze_labels(&t, &["--family", "gaussian"]);
    assert_says(&err, &["non-finite", "labels", "index 7"]);
}

/// Bernoulli labels must be 0/1 and Poisson labels whole counts ≥ 0; the message names the
/// row and the entry.
#[test]
fn bernoulli_and_poisson_labels_that_are_not_indicators_or_counts() {
    let s = Setup::new();
    let bern = ["--family", "bernoulli"];
    let mut t = Array2::<f64>::zeros((5, 2));
    t[[2, 1]] = 0.5;
    let err = s.analyze_labels(&t, &bern);
    assert_says(
        &err,
        &["row 2", "Bernoulli label entry 1 is 0.5", "must be 0 or 1"],
    );
    let mut t = Array2::<i64>::ones((5, 2));
    t[[4, 0]] = 2;
    let err = s.analyze_labels(&t, &bern);
    assert_says(&err, &["row 4", "entry 0 is 2"]);
    let err = s.analyze_labels(&Array2::<f64>::zeros((5, 3)), &bern);
    assert_says(&err, &["Bernoulli labels must have shape [B, 2]", "[5, 3]"]);
    let err = s.analyze_labels(&Array1::<i64>::zeros(5), &bern);
    assert_says(&err, &["shape [B, 2]"]);
    let pois = ["--family", "poisson"];
    let mut t = Array2::<i32>::ones((5, 2));
    t[[1, 1]] = -3;
    let err = s.analyze_labels(&t, &pois);
    assert_says(
        &err,
        &["row 1", "Poisson label entry 1 is -3", "non-negative whole"],
    );
    let mut t = Array2::<f32>::ones((5, 2));
    t[[3, 0]] = 1.5;
    let err = s.analyze_labels(&t, &pois);
    assert_says(&err, &["row 3", "entry 0 is 1.5"]);
    let mut t = Array2::<f64>::ones((5, 2));
    t[[0, 1]] = f64::NAN;
    let err = s.analyze_labels(&t, &pois);
    assert_says(&err, &["non-finite", "index 1"]);
}

// ---------------------------------------------------------------- key selection

#[test]
fn unknown_or_impossible_keys() {
    let s = Setup::new();
    let e = s.analyze_ok_files(&["--keys", "fisher,fishr"]);
    assert_says(&e, &["--keys", "unknown key 'fishr'", "var_opt", "all"]);
    let e = s.analyze_ok_files(&["--keys", ""]);
    assert_says(&e, &["--keys"]);
    let e = s.analyze_ok_files(&["--keys", "ef"]);
    assert_says(&e, &["'ef'", "--labels"]);
    let e = s.analyze_ok_files(&["--keys", "ub_var1", "--bounds", "none"]);
    assert_says(&e, &["'ub_var1'", "--bounds none"]);
    assert!(!s.path("result.safetensors").exists());
}

/// `--keys` writes only those keys to RESULT, and SUMMARY lists them with nulls for the rest.
#[test]
fn selected_keys_alone_reach_the_outputs() {
    let s = Setup::new();
    let out = Command::new(BIN)
        .args([
            "analyze",
            "--model",
            &s.p("model.safetensors"),
            "--inputs",
            &s.p("x.npy"),
        ])
        .args([
            "--engine",
            "cpu",
            "--keys",
            "fisher,var_opt",
            "--out",
            &s.p("r.safetensors"),
        ])
        .args(["--summary", &s.p("s.json")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(s.path("r.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fisher/0.bias",
            "fisher/0.weight",
            "fisher/2.bias",
            "fisher/2.weight",
            "var_opt/0.bias",
            "var_opt/0.weight",
            "var_opt/2.bias",
            "var_opt/2.weight"
        ]
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("s.json")).unwrap()).unwrap();
    assert_eq!(summary["keys"], serde_json::json!(["fisher", "var_opt"]));
    assert!(summary["layers"][0]["means"]["var1"].is_null());
    assert!(summary["layers"][0]["means"]["var_opt"].is_f64());
}

//! Python bindings of diagfim: the module `diagfim._diagfim`, wrapped by the pure-Python
//! package `diagfim` (python/diagfim/__init__.py), which converts PyTorch models and tensors.
//!
//! Everything heavy runs with the GIL released ([`Python::detach`]). Every library error
//! becomes `diagfim.DiagfimError` (a `ValueError`) with the library's message, the same text
//! the command line prints.

use diagfim::engine::{AnalysisOptions, Bounds, EngineKind, KeySet, ProgressFn, Request};
use diagfim::model::{Dense, Mlp};
use diagfim::{Activation, Family, Label, Report};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods, ToPyArray};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

mod partial;

create_exception!(
    diagfim,
    DiagfimError,
    PyValueError,
    "An error of diagfim: bad model, inputs, labels or options. The message says what was \
     wrong and how to fix it (the same text as the command line's)."
);

/// A library error as a Python exception.
pub(crate) fn py_err(e: diagfim::Error) -> PyErr {
    DiagfimError::new_err(e.to_string())
}

/// An error of this module's own checks, worded like the library's `invalid input: …`.
pub(crate) fn input_err(msg: impl Into<String>) -> PyErr {
    py_err(diagfim::Error::Input(msg.into()))
}

/// A validated MLP (`diagfim::Mlp`): dense layers `<k>.weight` [out, in] / `<k>.bias` [out]
/// and one activation per hidden layer.
#[pyclass(module = "diagfim._diagfim", name = "Model", frozen)]
pub struct PyModel {
    pub(crate) mlp: Mlp,
}

fn parse_activations(names: Vec<String>) -> PyResult<Vec<Activation>> {
    names
        .iter()
        .map(|n| n.parse::<Activation>().map_err(py_err))
        .collect()
}

#[pymethods]
impl PyModel {
    /// Loads a safetensors model file (`diagfim::model::load_safetensors`); `activations`
    /// (one name per hidden layer) overrides the file's `activations` metadata.
    #[staticmethod]
    #[pyo3(signature = (path, activations=None))]
    fn load(py: Python<'_>, path: PathBuf, activations: Option<Vec<String>>) -> PyResult<Self> {
        let acts = activations.map(parse_activations).transpose()?;
        let mlp = py
            .detach(|| diagfim::model::load_safetensors(&path, acts))
            .map_err(py_err)?;
        Ok(PyModel { mlp })
    }

    /// Builds a model from `(k, weight [out, in], bias [out] or None)` per layer, in order,
    /// and one activation name per hidden layer. Parameters are named `<k>.weight` and
    /// `<k>.bias`, as in a PyTorch `nn.Sequential`'s state_dict. The arrays are copied.
    #[staticmethod]
    fn from_layers(
        layers: Vec<(
            usize,
            PyReadonlyArray2<'_, f64>,
            Option<PyReadonlyArray1<'_, f64>>,
        )>,
        activations: Vec<String>,
    ) -> PyResult<Self> {
        let acts = parse_activations(activations)?;
        let dense = layers
            .into_iter()
            .map(|(key, w, b)| Dense {
                key,
                weight: w.as_array().to_owned(),
                bias: b.map(|b| b.as_array().to_owned()),
            })
            .collect();
        let mlp = Mlp::new(dense, acts).map_err(py_err)?;
        Ok(PyModel { mlp })
    }

    /// The parameter tensors as (name, shape), in file order.
    #[getter]
    fn params(&self) -> Vec<(String, Vec<usize>)> {
        self.mlp
            .params()
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect()
    }

    /// [in, h1, …, out].
    #[getter]
    fn widths(&self) -> Vec<usize> {
        self.mlp.widths()
    }

    /// The hidden activations' names.
    #[getter]
    fn activations(&self) -> Vec<&'static str> {
        self.mlp.activations().iter().map(|a| a.name()).collect()
    }

    /// Total number of parameters.
    #[getter]
    fn num_params(&self) -> usize {
        self.mlp.num_params()
    }

    /// The architecture, as `diagfim info` prints it.
    fn describe(&self) -> String {
        self.mlp.describe()
    }

    fn __repr__(&self) -> String {
        let widths: Vec<String> = self.mlp.widths().iter().map(|w| w.to_string()).collect();
        format!(
            "Model({}, activations=[{}], {} parameters)",
            widths.join("-"),
            Activation::join(self.mlp.activations()),
            self.mlp.num_params()
        )
    }
}

/// The result of an analysis (`diagfim::Report`).
#[pyclass(module = "diagfim._diagfim", name = "Report", frozen)]
pub struct PyReport {
    pub(crate) report: Report,
}

#[pymethods]
impl PyReport {
    /// The key names computed (`fisher`, `var1`, …), in contract order (SUMMARY.json's
    /// `keys`).
    #[getter]
    fn computed_keys(&self) -> Vec<String> {
        self.report.run.keys.clone()
    }

    /// The keys this family, labels and bounds mode have but that were not selected
    /// (SUMMARY.json's `skipped_keys`).
    #[getter]
    fn skipped_keys(&self) -> Vec<String> {
        self.report.run.skipped_keys.clone()
    }

    /// Seconds of the theory layer's per-input work, summed over threads; None when it did
    /// not run.
    #[getter]
    fn theory_s(&self) -> Option<f64> {
        self.report.run.theory_s
    }

    /// The tensor names `<key>/<param>` in RESULT.safetensors order.
    fn keys(&self) -> Vec<String> {
        self.report.tensors().map(|(name, _)| name).collect()
    }

    /// The float64 array of `<key>/<param>` (a copy), or None.
    fn get<'py>(&self, py: Python<'py>, name: &str) -> Option<Bound<'py, PyAny>> {
        self.report
            .tensors()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.to_pyarray(py).into_any())
    }

    /// Every tensor as a dict `<key>/<param>` → float64 array (copies).
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, a) in self.report.tensors() {
            d.set_item(name, a.to_pyarray(py))?;
        }
        Ok(d)
    }

    /// SUMMARY.json's text (compact).
    fn summary_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.report.summary())
            .map_err(|e| input_err(format!("cannot format the summary: {e}")))
    }

    /// Writes RESULT.safetensors.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.report.save(&path)).map_err(py_err)
    }

    /// Writes SUMMARY.json.
    fn save_summary(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.report.save_summary(&path))
            .map_err(py_err)
    }

    /// The per-tensor table the command line prints.
    fn table(&self) -> String {
        self.report.table()
    }

    #[getter]
    fn inputs(&self) -> usize {
        self.report.run.inputs
    }

    #[getter]
    fn samples(&self) -> usize {
        self.report.run.samples
    }

    #[getter]
    fn engine(&self) -> String {
        self.report.run.engine.to_string()
    }

    #[getter]
    fn adapter(&self) -> String {
        self.report.run.adapter.to_string()
    }

    #[getter]
    fn family(&self) -> String {
        self.report.run.family.to_string()
    }

    #[getter]
    fn per_input(&self) -> bool {
        self.report.run.per_input
    }

    #[getter]
    fn wall_time_s(&self) -> f64 {
        self.report.run.wall_time_s
    }
}

/// Converts data labels the way `diagfim::io::read_labels` does for .npy files: integer
/// classes [B] for the categorical family, float [B, O] targets (Gaussian), 0/1 indicators
/// (Bernoulli) or counts (Poisson) for the others. The Python layer hands over int64 classes
/// or float64 arrays; the library's `validate` checks the count and the values (0/1, whole
/// counts) and names the first bad entry.
fn convert_labels(
    family: &Family,
    outputs: usize,
    labels: &Bound<'_, PyAny>,
) -> PyResult<Vec<Label>> {
    match family {
        Family::Categorical(_) => {
            let classes: PyReadonlyArray1<'_, i64> = labels.extract().map_err(|_| {
                input_err("categorical labels must be an integer array of shape [B]")
            })?;
            classes
                .as_array()
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    if c < 0 || c as u64 >= outputs as u64 {
                        Err(input_err(format!(
                            "label {c} at index {i} is out of range: the model has {outputs} \
                             classes, so labels must be 0 to {}",
                            outputs.saturating_sub(1)
                        )))
                    } else {
                        Ok(Label::Class(c as usize))
                    }
                })
                .collect()
        }
        Family::Gaussian(_) | Family::Bernoulli(_) | Family::Poisson(_) => {
            let what = match family {
                Family::Bernoulli(_) => "Bernoulli labels (0/1)",
                Family::Poisson(_) => "Poisson counts",
                _ => "Gaussian targets",
            };
            let t: PyReadonlyArray2<'_, f64> = labels.extract().map_err(|_| {
                input_err(format!(
                    "{what} must be a float array of shape [B, {outputs}]"
                ))
            })?;
            if t.shape()[1] != outputs {
                return Err(input_err(format!(
                    "{what} must have shape [B, {outputs}]; found shape {:?}",
                    t.shape()
                )));
            }
            Ok(t.as_array()
                .rows()
                .into_iter()
                .map(|r| Label::Target(r.to_vec()))
                .collect())
        }
    }
}

/// Everything of a request except the model and the inputs.
pub(crate) struct Prepared {
    pub family: Family,
    pub labels: Option<Vec<Label>>,
    pub options: AnalysisOptions,
    pub progress: bool,
}

/// The arguments shared by `analyze` and `analyze_partial` (all but the model and inputs).
pub(crate) struct Args<'py> {
    pub family: &'py str,
    pub sigma2: f64,
    pub samples: usize,
    pub seed: u64,
    pub labels: Option<Bound<'py, PyAny>>,
    pub engine: &'py str,
    pub bounds: &'py str,
    pub per_input: bool,
    pub input_offset: u64,
    pub batch_size: Option<usize>,
    pub threads: Option<usize>,
    pub keys: Option<Bound<'py, PyAny>>,
    pub progress: bool,
}

/// The keys to compute: None (every key), a comma-separated string (`"fisher,var1"` or
/// `"all"`) or a sequence of key names. An unknown name is an error listing the valid ones.
pub(crate) fn parse_keys(keys: Option<&Bound<'_, PyAny>>) -> PyResult<KeySet> {
    let Some(keys) = keys else {
        return Ok(KeySet::ALL);
    };
    if let Ok(text) = keys.extract::<String>() {
        return KeySet::parse(&text).map_err(py_err);
    }
    let names: Vec<String> = keys.extract().map_err(|_| {
        input_err(format!(
            "keys must be None, a comma-separated string or a list of key names; got {}",
            keys.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        ))
    })?;
    KeySet::from_names(&names).map_err(py_err)
}

impl Args<'_> {
    pub(crate) fn prepare(&self, mlp: &Mlp) -> PyResult<Prepared> {
        let family = Family::from_name(self.family, self.sigma2).map_err(py_err)?;
        let engine: EngineKind = self.engine.parse().map_err(py_err)?;
        let bounds: Bounds = self.bounds.parse().map_err(py_err)?;
        let keys = parse_keys(self.keys.as_ref())?;
        let labels = self
            .labels
            .as_ref()
            .map(|l| convert_labels(&family, mlp.output_dim(), l))
            .transpose()?;
        let defaults = AnalysisOptions::default();
        let options = AnalysisOptions {
            samples: self.samples,
            seed: self.seed,
            per_input: self.per_input,
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            threads: self.threads.unwrap_or(0),
            engine,
            bounds,
            input_offset: self.input_offset,
            keys,
            ..defaults
        };
        Ok(Prepared {
            family,
            labels,
            options,
            progress: self.progress,
        })
    }
}

/// A progress bar on stderr (shown when stderr is a terminal), as the command line draws it.
pub(crate) fn progress_bar(inputs: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(inputs as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} analysing {pos}/{len} inputs [{bar:30}] {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Runs `f` on the request with the GIL released, with a progress bar if asked for.
pub(crate) fn run_request<T: Send>(
    py: Python<'_>,
    mlp: &Mlp,
    inputs: ndarray::ArrayView2<'_, f64>,
    prep: &Prepared,
    f: impl Fn(&Request<'_>) -> diagfim::Result<T> + Sync,
) -> PyResult<T> {
    let bar = prep.progress.then(|| progress_bar(inputs.nrows()));
    let update = |done: usize, _total: usize| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    };
    let progress: Option<ProgressFn<'_>> = bar.as_ref().map(|_| &update as ProgressFn<'_>);
    let out = py.detach(|| {
        f(&Request {
            model: mlp,
            family: prep.family.as_dyn(),
            inputs,
            labels: prep.labels.as_deref(),
            options: prep.options.clone(),
            progress,
        })
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    out.map_err(py_err)
}

/// Runs `diagfim::engine::analyze`. `inputs` must be a float64 array [B, in]; it is read in
/// place, without a copy (do not modify it from another thread meanwhile). The Python layer
/// (`diagfim.analyze`) converts models, tensors and other dtypes.
#[pyfunction]
#[pyo3(signature = (model, inputs, *, family="categorical", sigma2=1.0, samples=16, seed=0,
    labels=None, engine="auto", bounds="all", per_input=false, input_offset=0, batch_size=None,
    threads=None, keys=None, progress=false))]
#[allow(clippy::too_many_arguments)]
fn analyze<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyModel>,
    inputs: PyReadonlyArray2<'py, f64>,
    family: &'py str,
    sigma2: f64,
    samples: usize,
    seed: u64,
    labels: Option<Bound<'py, PyAny>>,
    engine: &'py str,
    bounds: &'py str,
    per_input: bool,
    input_offset: u64,
    batch_size: Option<usize>,
    threads: Option<usize>,
    keys: Option<Bound<'py, PyAny>>,
    progress: bool,
) -> PyResult<PyReport> {
    let args = Args {
        family,
        sigma2,
        samples,
        seed,
        labels,
        engine,
        bounds,
        per_input,
        input_offset,
        batch_size,
        threads,
        keys,
        progress,
    };
    let mlp = &model.get().mlp;
    let prep = args.prepare(mlp)?;
    let report = run_request(py, mlp, inputs.as_array(), &prep, diagfim::engine::analyze)?;
    Ok(PyReport { report })
}

/// Reads a RESULT.safetensors key's parameter name: `fisher/0.weight` → `0.weight`.
#[pyfunction]
fn split_key(name: &str) -> PyResult<(String, String)> {
    name.split_once('/')
        .map(|(k, p)| (k.to_string(), p.to_string()))
        .ok_or_else(|| input_err(format!("'{name}' is not a '<key>/<param>' name")))
}

/// The supported activation names.
#[pyfunction]
fn activation_names() -> Vec<&'static str> {
    Activation::ALL.iter().map(|a| a.name()).collect()
}

/// The output key names of RESULT.safetensors, in contract order.
#[pyfunction]
fn key_names() -> Vec<&'static str> {
    diagfim::Key::ALL.iter().map(|k| k.name()).collect()
}

#[pymodule]
fn _diagfim(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DiagfimError", m.py().get_type::<DiagfimError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyModel>()?;
    m.add_class::<PyReport>()?;
    m.add_function(wrap_pyfunction!(analyze, m)?)?;
    m.add_function(wrap_pyfunction!(split_key, m)?)?;
    m.add_function(wrap_pyfunction!(activation_names, m)?)?;
    m.add_function(wrap_pyfunction!(key_names, m)?)?;
    partial::register(m)?;
    Ok(())
}

//! `diagfim._diagfim.Partial`: the sufficient statistics of an analysis of a shard of the
//! inputs (`diagfim::Partial`), which merge into the report of all inputs.

use crate::{input_err, py_err, run_request, Args, PyModel, PyReport};
use numpy::PyReadonlyArray2;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;

/// A mergeable partial analysis (`diagfim::Partial`).
#[pyclass(module = "diagfim._diagfim", name = "Partial")]
pub struct PyPartial {
    partial: diagfim::Partial,
}

#[pymethods]
impl PyPartial {
    /// Number of inputs covered.
    #[getter]
    fn inputs(&self) -> usize {
        self.partial.inputs()
    }

    /// The input index ranges [start, stop) covered.
    #[getter]
    fn ranges(&self) -> Vec<(u64, u64)> {
        self.partial.ranges().to_vec()
    }

    /// Adds `other` in place (same model and options, disjoint inputs); the error names the
    /// field that differs.
    fn merge(&mut self, py: Python<'_>, other: PyRef<'_, PyPartial>) -> PyResult<()> {
        let other = &other.partial;
        let partial = &mut self.partial;
        py.detach(|| partial.merge(other)).map_err(py_err)
    }

    /// The report over the inputs covered.
    fn finish(&self, py: Python<'_>) -> PyResult<PyReport> {
        let report = py.detach(|| self.partial.finish()).map_err(py_err)?;
        Ok(PyReport { report })
    }

    /// Self-describing safetensors bytes (what `save` writes).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py.detach(|| self.partial.to_bytes()).map_err(py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Reads the bytes of `to_bytes`.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<PyPartial> {
        let partial = py
            .detach(|| diagfim::Partial::from_bytes(data))
            .map_err(py_err)?;
        Ok(PyPartial { partial })
    }

    /// Writes the partial as a safetensors file.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.partial.save(&path)).map_err(py_err)
    }

    /// Reads a partial written by `save` (or by the command line).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<PyPartial> {
        let partial = py
            .detach(|| diagfim::Partial::load(&path))
            .map_err(py_err)?;
        Ok(PyPartial { partial })
    }
}

/// Runs `diagfim::analyze_partial` on a shard of the inputs; `input_offset` is the index of
/// its first input in the whole data set. Same arguments as `analyze`, less `per_input`.
#[pyfunction]
#[pyo3(signature = (model, inputs, *, family="categorical", sigma2=1.0, samples=16, seed=0,
    labels=None, engine="auto", bounds="all", input_offset=0, batch_size=None, threads=None,
    keys=None, progress=false))]
#[allow(clippy::too_many_arguments)]
fn analyze_partial<'py>(
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
    input_offset: u64,
    batch_size: Option<usize>,
    threads: Option<usize>,
    keys: Option<Bound<'py, PyAny>>,
    progress: bool,
) -> PyResult<PyPartial> {
    let args = Args {
        family,
        sigma2,
        samples,
        seed,
        labels,
        engine,
        bounds,
        per_input: false,
        input_offset,
        batch_size,
        threads,
        keys,
        progress,
    };
    let mlp = &model.get().mlp;
    let prep = args.prepare(mlp)?;
    let partial = run_request(py, mlp, inputs.as_array(), &prep, diagfim::analyze_partial)?;
    Ok(PyPartial { partial })
}

/// Merges partials (leaving them unchanged) and finishes the merged one into a report.
#[pyfunction]
fn merge(py: Python<'_>, partials: Vec<PyRef<'_, PyPartial>>) -> PyResult<PyReport> {
    if partials.is_empty() {
        return Err(input_err("merge needs at least one Partial"));
    }
    let parts: Vec<&diagfim::Partial> = partials.iter().map(|p| &p.partial).collect();
    let report = py
        .detach(|| {
            let mut acc = parts[0].clone();
            for p in &parts[1..] {
                acc.merge(p)?;
            }
            acc.finish()
        })
        .map_err(py_err)?;
    Ok(PyReport { report })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPartial>()?;
    m.add_function(wrap_pyfunction!(analyze_partial, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    Ok(())
}

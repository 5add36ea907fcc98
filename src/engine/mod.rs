//! Engines that run the analysis. They share one request type and one report type; the CPU
//! engine (f64) is the reference and the fallback when no GPU adapter exists.

pub(crate) mod accumulate;
pub mod blocked;
pub mod channels;
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod keys;
pub mod partial;
pub mod stats;

use crate::family::{ExpFamily, Label};
use crate::model::Mlp;
use crate::report::Report;
use crate::{Error, Result, MIN_SAMPLES_FOR_VARIANCE};
pub use keys::{KeySet, Needs};
use ndarray::ArrayView2;
use std::str::FromStr;
use std::sync::Arc;

#[cfg(feature = "gpu")]
pub use gpu::GpuContext;

/// Without the `gpu` feature there is no GPU device: this type has no values, so
/// [`AnalysisOptions::gpu`] is always `None`.
#[cfg(not(feature = "gpu"))]
#[derive(Debug)]
pub enum GpuContext {}

/// Which engine runs the analysis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// The GPU engine when an adapter exists, else the CPU engine (always the CPU engine in a
    /// build without the `gpu` feature).
    #[default]
    Auto,
    /// The f64 CPU reference engine.
    Cpu,
    /// The f32 wgpu engine (WGSL kernels); an error without an adapter or without the `gpu`
    /// feature.
    Gpu,
}

impl FromStr for EngineKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(EngineKind::Auto),
            "cpu" => Ok(EngineKind::Cpu),
            "gpu" => Ok(EngineKind::Gpu),
            other => Err(Error::Input(format!(
                "unknown engine '{other}': use auto, cpu or gpu"
            ))),
        }
    }
}

/// How much of the theory layer an analysis computes (docs/theory.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bounds {
    /// Every bound: the per-parameter bound keys and SUMMARY.json's per-tensor trace bounds
    /// (Cor. 4.6, Thm C.1).
    #[default]
    All,
    /// The per-parameter bound keys only: skips the per-tensor hook, about half of the host's
    /// per-input work.
    Keys,
    /// No bounds: only the keys that need no spectral quantity of the family (the exact
    /// values, the Monte-Carlo keys and their standard errors, cov12, w_opt, var_opt, var_x,
    /// the empirical Fisher's keys). The per-input spectra are skipped, so the GPU engine
    /// does no per-input work on the host.
    None,
}

impl Bounds {
    /// Whether the per-parameter bound keys ([`crate::Key::is_bound`]) are computed.
    pub fn keys(self) -> bool {
        self != Bounds::None
    }

    /// Whether the per-tensor trace bounds are computed.
    pub fn tensors(self) -> bool {
        self == Bounds::All
    }
}

impl FromStr for Bounds {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Bounds::All),
            "keys" => Ok(Bounds::Keys),
            "none" => Ok(Bounds::None),
            other => Err(Error::Input(format!(
                "unknown bounds '{other}': use all, keys or none"
            ))),
        }
    }
}

/// Options of one analysis.
#[derive(Clone, Debug)]
pub struct AnalysisOptions {
    /// N, the number of labels sampled per input (≥ 2, so that sample variances exist).
    pub samples: usize,
    /// Seed of the counter-based RNG.
    pub seed: u64,
    /// Keep a leading input axis instead of averaging over inputs.
    pub per_input: bool,
    /// Inputs processed per block (memory bound only: results do not depend on it).
    pub batch_size: usize,
    /// Worker threads of the CPU engine (0: rayon's default). Results do not depend on it.
    pub threads: usize,
    /// Which engine runs the analysis ([`EngineKind`]).
    pub engine: EngineKind,
    /// Which bounds to compute ([`Bounds`]); the other keys do not depend on it.
    pub bounds: Bounds,
    /// The keys to compute ([`KeySet::ALL`] by default): each engine computes only what these
    /// keys need ([`Needs`]), and the report holds only them. Every computed key equals the
    /// full run's bit for bit on the CPU engine.
    pub keys: KeySet,
    /// Global index of the first input: labels are sampled by (seed, global input index,
    /// sample), so a shard [K, K + B) of a data set given `input_offset = K` draws exactly the
    /// labels that an analysis of the whole data set draws for those inputs
    /// (docs/scale-out.md).
    pub input_offset: u64,
    /// The GPU device to run on ([`GpuContext::new`]); `None` uses the default one
    /// ([`GpuContext::shared`]) when the engine is the GPU's.
    pub gpu: Option<Arc<GpuContext>>,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions {
            samples: 16,
            seed: 0,
            per_input: false,
            batch_size: 256,
            threads: 0,
            engine: EngineKind::Auto,
            bounds: Bounds::All,
            keys: KeySet::ALL,
            input_offset: 0,
            gpu: None,
        }
    }
}

/// Callback told (inputs done, inputs in all) after each block.
pub type ProgressFn<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Everything an engine needs.
pub struct Request<'a> {
    /// The MLP whose Fisher information is analysed.
    pub model: &'a Mlp,
    /// The output family p(y|x,θ): categorical, isotropic Gaussian, Bernoulli or Poisson.
    pub family: &'a dyn ExpFamily,
    /// Inputs, one row per input x: [B, in].
    pub inputs: ArrayView2<'a, f64>,
    /// Data labels for the empirical Fisher, one per input.
    pub labels: Option<&'a [Label]>,
    /// Options of the analysis.
    pub options: AnalysisOptions,
    /// Called after each block with (inputs done, inputs in all).
    pub progress: Option<ProgressFn<'a>>,
}

impl Request<'_> {
    /// The keys of the report: the selected ones that exist for the family, labels and
    /// bounds mode ([`keys::report_keys`]).
    pub fn report_keys(&self) -> KeySet {
        keys::report_keys(
            self.options.keys,
            self.family.kind(),
            self.labels.is_some(),
            self.options.bounds,
        )
    }

    /// What the engines compute for the report's keys.
    pub fn needs(&self) -> Needs {
        Needs::for_family(self.report_keys(), self.options.bounds, self.family.kind())
    }
}

/// Checks a request; every problem becomes an error that says how to fix it.
pub fn validate(req: &Request<'_>) -> Result<()> {
    let (b, width) = req.inputs.dim();
    if b == 0 {
        return Err(Error::Input(
            "there are no inputs (B = 0): give at least one row".into(),
        ));
    }
    let last = req.options.input_offset.checked_add(b as u64);
    if last.is_none_or(|last| last > 1 << 32) {
        return Err(Error::Input(format!(
            "inputs {}..{} (--input-offset {} plus {b} inputs) exceed the RNG's 2³² input \
             counter: global input indices must stay below 4294967296",
            req.options.input_offset,
            req.options.input_offset.saturating_add(b as u64),
            req.options.input_offset
        )));
    }
    if width != req.model.input_dim() {
        return Err(Error::Input(format!(
            "inputs have {width} columns but the model expects {} inputs",
            req.model.input_dim()
        )));
    }
    if let Some(index) = req.inputs.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "the inputs".into(),
            index,
        });
    }
    req.family.check_outputs(req.model.output_dim())?;
    keys::check_selection(
        req.options.keys,
        req.family.kind(),
        req.labels.is_some(),
        req.options.bounds,
    )?;
    if req.options.samples < MIN_SAMPLES_FOR_VARIANCE {
        return Err(Error::Input(format!(
            "N = {} sampled labels per input: at least {MIN_SAMPLES_FOR_VARIANCE} are needed for \
             the sample variances mc_var1/mc_var2 (use --samples 2 or more)",
            req.options.samples
        )));
    }
    if req.options.samples > u32::MAX as usize {
        return Err(Error::Input(
            "N exceeds the RNG's 2³² sample counter".into(),
        ));
    }
    if let Some(labels) = req.labels {
        if labels.len() != b {
            return Err(Error::Input(format!(
                "{} labels for {b} inputs: give one label per input",
                labels.len()
            )));
        }
        let o = req.model.output_dim();
        let h = vec![0.0; o];
        let eta = req.family.eta(&h);
        let mut r = vec![0.0; o];
        for (i, y) in labels.iter().enumerate() {
            req.family
                .residual(&h, &eta, y, &mut r)
                .map_err(|e| match e {
                    Error::Input(m) => Error::Input(format!("label {i}: {m}")),
                    other => other,
                })?;
            if let Label::Target(t) = y {
                if let Some(k) = t.iter().position(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        what: format!("label {i}"),
                        index: k,
                    });
                }
            }
        }
    }
    check_resources(req)
}

/// Refuses a request whose worker threads or per-input results the machine cannot hold
/// ([`crate::resources`]); each engine checks its own work buffers as well.
fn check_resources(req: &Request<'_>) -> Result<()> {
    crate::resources::check_threads(req.options.threads)?;
    if req.options.per_input {
        let (b, p) = (req.inputs.nrows() as u64, req.model.num_params() as u64);
        let keys = crate::report::NUM_KEYS as u64;
        // The accumulator's values, the report's arrays and RESULT's bytes.
        let bytes = crate::resources::product(&[b, p, keys, 8, 3]);
        crate::resources::check_memory(
            &format!("--per-input ({b} inputs × {p} parameters × up to {keys} keys)"),
            bytes,
            "drop --per-input, use --partial shards, or fewer inputs",
        )?;
    }
    Ok(())
}

/// The engine an analysis or a training run uses: the one policy behind [`EngineKind`].
/// `Cpu` is the CPU engine; `Gpu` the GPU engine on the given device or the default one (an
/// error without an adapter); `Auto` the GPU engine when the given device, or else the default
/// one, is a hardware adapter, and the CPU engine otherwise (a software rasteriser such as
/// lavapipe is slower than the CPU engine, so `Auto` skips it; `Gpu` accepts it).
#[cfg(feature = "gpu")]
pub(crate) fn resolve_engine(
    kind: EngineKind,
    given: Option<&Arc<GpuContext>>,
) -> Result<EngineKind> {
    Ok(match kind {
        EngineKind::Auto => match GpuContext::given_or_shared(given) {
            Ok(ctx) if !ctx.is_software() => EngineKind::Gpu,
            _ => EngineKind::Cpu,
        },
        other => other,
    })
}

/// Without the `gpu` feature: `Auto` is the CPU engine and `Gpu` an error.
#[cfg(not(feature = "gpu"))]
pub(crate) fn resolve_engine(
    kind: EngineKind,
    _given: Option<&Arc<GpuContext>>,
) -> Result<EngineKind> {
    match kind {
        EngineKind::Gpu => Err(gpu_not_built()),
        _ => Ok(EngineKind::Cpu),
    }
}

/// The error for the GPU engine or backend in a build without the `gpu` feature.
#[cfg(not(feature = "gpu"))]
pub(crate) fn gpu_not_built() -> Error {
    Error::Gpu(
        "diagfim was built without the `gpu` feature: rebuild it with `--features gpu` (on by \
         default) or use the CPU engine (`--engine cpu`)"
            .into(),
    )
}

/// Runs the analysis on the engine the options ask for (see [`EngineKind`]; `Auto` uses the
/// GPU engine on a hardware adapter and the CPU engine otherwise).
pub fn analyze(req: &Request<'_>) -> Result<Report> {
    let started = std::time::Instant::now();
    let mut report = match resolve_engine(req.options.engine, req.options.gpu.as_ref())? {
        #[cfg(feature = "gpu")]
        EngineKind::Gpu => auto_fallback(
            req.options.engine,
            || gpu::analyze(req),
            || cpu::analyze(req),
        )?,
        _ => cpu::analyze(req)?,
    };
    report.run.wall_time_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Runs the GPU engine, and with [`EngineKind::Auto`] the CPU engine instead when the run
/// leaves the GPU's f32 range ([`Error::GpuRange`]): `auto` picks the engine that can run it.
/// An explicit `Gpu` keeps the error, whose message names `--engine cpu`.
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
fn auto_fallback<T>(
    engine: EngineKind,
    gpu: impl FnOnce() -> Result<T>,
    cpu: impl FnOnce() -> Result<T>,
) -> Result<T> {
    match gpu() {
        Err(Error::GpuRange(_)) if engine == EngineKind::Auto => cpu(),
        other => other,
    }
}

/// The short entry point: analyses `inputs` ([B, in]) without data labels or a progress
/// callback, with the given options.
///
/// ```no_run
/// # fn main() -> diagfim::Result<()> {
/// let model = diagfim::model::load_safetensors("model.safetensors".as_ref(), None)?;
/// let x = diagfim::io::read_inputs("x.npy".as_ref())?;
/// let family = diagfim::Family::from_name("categorical", 1.0)?;
/// let report = diagfim::analyze_model(&model, &family, x.view(), &Default::default())?;
/// println!("{}", report.table());
/// # Ok(()) }
/// ```
pub fn analyze_model(
    model: &Mlp,
    family: &dyn ExpFamily,
    inputs: ArrayView2<'_, f64>,
    options: &AnalysisOptions,
) -> Result<Report> {
    analyze(&Request {
        model,
        family,
        inputs,
        labels: None,
        options: options.clone(),
        progress: None,
    })
}

/// Runs the analysis and returns its sufficient statistics ([`partial::Partial`]) instead of a
/// report, for merging with the partials of other shards of the inputs. Per-input results
/// are refused.
pub fn analyze_partial(req: &Request<'_>) -> Result<partial::Partial> {
    if req.options.per_input {
        return Err(accumulate::per_input_refused());
    }
    let started = std::time::Instant::now();
    let mut partial = match resolve_engine(req.options.engine, req.options.gpu.as_ref())? {
        #[cfg(feature = "gpu")]
        EngineKind::Gpu => auto_fallback(
            req.options.engine,
            || gpu::analyze_partial(req),
            || cpu::analyze_partial(req),
        )?,
        _ => cpu::analyze_partial(req)?,
    };
    partial.set_wall_time(started.elapsed().as_secs_f64());
    Ok(partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `auto` falls back to the CPU engine on a range refusal only; `gpu` keeps the error, and
    /// other GPU errors are never masked.
    #[test]
    fn auto_falls_back_to_the_cpu_engine_on_range_refusals_only() {
        let range = || Err::<&str, _>(Error::GpuRange("f32".into()));
        let lost = || Err::<&str, _>(Error::Gpu("device lost".into()));
        let cpu = || Ok("cpu");
        assert_eq!(auto_fallback(EngineKind::Auto, range, cpu).unwrap(), "cpu");
        assert!(matches!(
            auto_fallback(EngineKind::Gpu, range, cpu),
            Err(Error::GpuRange(_))
        ));
        assert!(matches!(
            auto_fallback(EngineKind::Auto, lost, cpu),
            Err(Error::Gpu(_))
        ));
        assert_eq!(
            auto_fallback(EngineKind::Auto, || Ok("gpu"), cpu).unwrap(),
            "gpu"
        );
    }
}

//! The engine interface of training: the loss, gradient and logits of a mini-batch, implemented
//! by the CPU backend (f64 ndarray GEMMs) and the GPU backend (f32 WGSL kernels shared with the
//! GPU analysis engine); see the module docs of `train`.

use super::CpuBackend;
#[cfg(feature = "gpu")]
use super::GpuBackend;
use crate::engine::GpuContext;
use crate::model::Mlp;
use crate::{EngineKind, Error, Result};
use ndarray::{Array1, Array2, ArrayView2, Zip};
use std::sync::Arc;

/// Gradients of a scalar with respect to every parameter of an [`Mlp`], laid out like its
/// layers (weight `[out, in]`, optional bias `[out]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    /// ∂/∂W_l per layer, `[out, in]`.
    pub weight: Vec<Array2<f64>>,
    /// ∂/∂b_l per layer, `[out]`, when the layer has a bias.
    pub bias: Vec<Option<Array1<f64>>>,
}

impl Gradients {
    /// Zeros shaped like `model`'s parameters.
    pub fn zeros_like(model: &Mlp) -> Gradients {
        Gradients {
            weight: model
                .layers()
                .iter()
                .map(|d| Array2::zeros(d.weight.raw_dim()))
                .collect(),
            bias: model
                .layers()
                .iter()
                .map(|d| d.bias.as_ref().map(|b| Array1::zeros(b.raw_dim())))
                .collect(),
        }
    }

    /// self += other (same shapes).
    pub fn add_assign(&mut self, other: &Gradients) {
        for (a, b) in self.weight.iter_mut().zip(&other.weight) {
            *a += b;
        }
        for (a, b) in self.bias.iter_mut().zip(&other.bias) {
            if let (Some(a), Some(b)) = (a, b) {
                *a += b;
            }
        }
    }

    /// self *= factor.
    pub fn scale(&mut self, factor: f64) {
        for w in &mut self.weight {
            w.mapv_inplace(|v| v * factor);
        }
        for b in self.bias.iter_mut().flatten() {
            b.mapv_inplace(|v| v * factor);
        }
    }

    /// Applies `f(parameter, gradient)` to every parameter of `model` and its gradient, layer
    /// by layer, weight then bias (the layout optimisers walk).
    pub fn for_each_param(&self, model: &mut Mlp, mut f: impl FnMut(&mut f64, f64)) {
        for ((d, gw), gb) in model
            .layers_mut()
            .iter_mut()
            .zip(&self.weight)
            .zip(&self.bias)
        {
            Zip::from(&mut d.weight).and(gw).for_each(|p, &g| f(p, g));
            if let (Some(b), Some(gb)) = (d.bias.as_mut(), gb) {
                Zip::from(b).and(gb).for_each(|p, &g| f(p, g));
            }
        }
    }

    /// All gradient values, layer by layer, weight then bias.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.weight
            .iter()
            .zip(&self.bias)
            .flat_map(|(w, b)| w.iter().chain(b.iter().flatten()).copied())
    }
}

/// Sums over a mini-batch (not means), so that batches and chunks add up exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Sum of the cross-entropy losses −log p(y_i|x_i).
    pub loss_sum: f64,
    /// Number of inputs whose arg-max logit is the label.
    pub correct: usize,
    /// Number of inputs.
    pub count: usize,
}

impl BatchStats {
    /// Adds another batch's sums.
    pub fn add(&mut self, other: BatchStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.count += other.count;
    }

    /// Mean loss (NaN for an empty batch).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.count as f64
    }

    /// Fraction of correct predictions (NaN for an empty batch).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.count as f64
    }
}

/// What a training engine computes. Implementations must be deterministic: the same model
/// and batch give bit-identical results whatever the thread count.
pub trait Backend: Send + Sync {
    /// A short description (e.g. "cpu (f64, 2 threads)").
    fn name(&self) -> String;

    /// The mean softmax cross-entropy of the batch and its gradient with respect to every
    /// parameter (the gradient of the mean loss), with the batch's sums. `x` is [B, in];
    /// `labels` holds B classes in `0..model.output_dim()`.
    fn loss_and_gradient(
        &self,
        model: &Mlp,
        x: ArrayView2<f64>,
        labels: &[usize],
    ) -> Result<(BatchStats, Gradients)>;

    /// Loss and accuracy sums over `x` without gradients.
    fn evaluate(&self, model: &Mlp, x: ArrayView2<f64>, labels: &[usize]) -> Result<BatchStats>;
}

/// The training backend for an engine choice and an optional GPU device, by the same policy
/// as the analysis (`crate::engine::resolve_engine`): `Cpu` gives the CPU backend, `Gpu` the
/// GPU backend on the given or the default device (an error without an adapter), `Auto` the
/// GPU backend on a hardware adapter and the CPU backend otherwise (a software rasteriser such
/// as lavapipe is slower than the CPU). Without the `gpu` feature, `Gpu` is an [`Error::Gpu`]
/// and `Auto` the CPU backend.
pub fn select_backend(kind: EngineKind, gpu: Option<&Arc<GpuContext>>) -> Result<Box<dyn Backend>> {
    match crate::engine::resolve_engine(kind, gpu)? {
        #[cfg(feature = "gpu")]
        EngineKind::Gpu => Ok(Box::new(GpuBackend::new(GpuContext::given_or_shared(gpu)?))),
        _ => Ok(Box::new(CpuBackend::default())),
    }
}

/// Checks a batch against a model: widths, counts, label range. Shared by backends.
pub(crate) fn check_batch(model: &Mlp, x: ArrayView2<f64>, labels: &[usize]) -> Result<()> {
    if x.nrows() == 0 {
        return Err(Error::Input(
            "an empty batch: give at least one input".into(),
        ));
    }
    if x.ncols() != model.input_dim() {
        return Err(Error::Input(format!(
            "inputs have {} columns but the model expects {} inputs",
            x.ncols(),
            model.input_dim()
        )));
    }
    if labels.len() != x.nrows() {
        return Err(Error::Input(format!(
            "{} labels for {} inputs: give one label per input",
            labels.len(),
            x.nrows()
        )));
    }
    let o = model.output_dim();
    if let Some((i, &c)) = labels.iter().enumerate().find(|(_, &c)| c >= o) {
        return Err(Error::Input(format!(
            "label {i} is class {c}, but the model has {o} outputs (classes 0..{o})"
        )));
    }
    if o < 2 {
        return Err(Error::Input(format!(
            "the model has {o} output; softmax cross-entropy needs at least 2 classes"
        )));
    }
    Ok(())
}

//! The GPU training backend: the mini-batch loss gradient with the GPU engine's kernels
//! (forward GEMMs and activations shared with the analysis, GEMM back-propagation;
//! [`crate::engine::gpu::train`]) in f32, returned to the host optimiser in f64.

use super::backend::{check_batch, Backend, BatchStats, Gradients};
use crate::engine::gpu::train::GpuTrainer;
use crate::engine::gpu::GpuContext;
use crate::model::Mlp;
use crate::{Error, Result};
use ndarray::{Array1, Array2, ArrayView2};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Rows per evaluation pass (forward only).
const EVAL_ROWS: usize = 1024;

/// Trainers by (widths, batch size, with gradient).
type TrainerCache = HashMap<(Vec<usize>, usize, bool), GpuTrainer>;

/// Training on a GPU device. Kernels are built once per (architecture, batch size, with
/// gradient) and reused.
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    trainers: Mutex<TrainerCache>,
}

impl GpuBackend {
    /// Training on the device of `ctx` ([`GpuContext::new`] or [`GpuContext::shared`]).
    pub fn new(ctx: Arc<GpuContext>) -> GpuBackend {
        GpuBackend {
            ctx,
            trainers: Mutex::new(HashMap::new()),
        }
    }

    fn run(
        &self,
        model: &Mlp,
        x: ArrayView2<f64>,
        labels: &[usize],
        grad: bool,
    ) -> Result<(BatchStats, Option<Gradients>)> {
        check_batch(model, x, labels)?;
        let key = (model.widths(), x.nrows(), grad);
        let mut cache = self
            .trainers
            .lock()
            .map_err(|_| Error::Gpu("trainer cache poisoned".into()))?;
        if !cache.contains_key(&key) {
            let t = GpuTrainer::new(self.ctx.clone(), model, x.nrows(), grad)?;
            cache.insert(key.clone(), t);
        }
        let trainer = &cache[&key];
        let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let lf: Vec<f32> = labels.iter().map(|&c| c as f32).collect();
        let out = trainer.run(model, &xf, &lf)?;
        let stats = BatchStats {
            loss_sum: out.loss_sum,
            correct: out.correct,
            count: x.nrows(),
        };
        if !grad {
            return Ok((stats, None));
        }
        let mut g = Gradients::zeros_like(model);
        for (l, d) in model.layers().iter().enumerate() {
            let w = out
                .weight
                .get(l)
                .ok_or_else(|| Error::Gpu("missing gradient".into()))?;
            g.weight[l] = Array2::from_shape_vec(
                d.weight.raw_dim(),
                w.iter().map(|v| f64::from(*v)).collect(),
            )
            .map_err(|e| Error::Gpu(format!("gradient shape: {e}")))?;
            if let (Some(slot), Some(Some(b))) = (g.bias[l].as_mut(), out.bias.get(l)) {
                *slot = Array1::from_iter(b.iter().map(|v| f64::from(*v)));
            }
        }
        Ok((stats, Some(g)))
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        format!("gpu: {}", self.ctx.describe())
    }

    fn loss_and_gradient(
        &self,
        model: &Mlp,
        x: ArrayView2<f64>,
        labels: &[usize],
    ) -> Result<(BatchStats, Gradients)> {
        let (stats, g) = self.run(model, x, labels, true)?;
        Ok((
            stats,
            g.ok_or_else(|| Error::Gpu("no gradient computed".into()))?,
        ))
    }

    fn evaluate(&self, model: &Mlp, x: ArrayView2<f64>, labels: &[usize]) -> Result<BatchStats> {
        check_batch(model, x, labels)?;
        let mut total = BatchStats::default();
        for start in (0..x.nrows()).step_by(EVAL_ROWS) {
            let end = (start + EVAL_ROWS).min(x.nrows());
            let (s, _) = self.run(
                model,
                x.slice(ndarray::s![start..end, ..]),
                &labels[start..end],
                false,
            )?;
            total.add(s);
        }
        Ok(total)
    }
}

//! The CPU training backend (f64): batched forward and backward passes with ndarray GEMMs,
//! parallel over fixed-size chunks of the batch. Chunk results are summed in chunk order, so
//! results depend on the chunk size but never on the thread count.

use super::backend::{check_batch, Backend, BatchStats, Gradients};
use crate::model::Mlp;
use crate::Result;
use ndarray::{s, Array2, ArrayView2, Axis, Zip};
use rayon::prelude::*;

/// The CPU backend. `chunk_rows` inputs form one parallel work item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuBackend {
    /// Rows per work item (≥ 1). Part of the arithmetic: keep it fixed to reproduce a run.
    pub chunk_rows: usize,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend { chunk_rows: 32 }
    }
}

/// Layer inputs a_{l−1} (a_0 = x), σ'(z_l) of the hidden layers, and the logits.
struct Forward {
    layer_inputs: Vec<Array2<f64>>,
    slopes: Vec<Array2<f64>>,
    logits: Array2<f64>,
}

/// The batched forward pass; `keep` stores what the backward pass needs.
fn forward(model: &Mlp, x: ArrayView2<f64>, keep: bool) -> Forward {
    let mut layer_inputs = Vec::new();
    let mut slopes = Vec::new();
    let mut a = x.to_owned();
    for (l, d) in model.layers().iter().enumerate() {
        let mut z = a.dot(&d.weight.t());
        if let Some(b) = &d.bias {
            z += b;
        }
        let next = match model.activations().get(l) {
            Some(&act) => {
                let mut slope = Array2::zeros(z.raw_dim());
                Zip::from(&mut z).and(&mut slope).for_each(|z, s| {
                    let (v, d1, _) = act.eval(*z);
                    *z = v;
                    *s = d1;
                });
                if keep {
                    slopes.push(slope);
                }
                z
            }
            None => z,
        };
        if keep {
            layer_inputs.push(std::mem::replace(&mut a, next));
        } else {
            a = next;
        }
    }
    Forward {
        layer_inputs,
        slopes,
        logits: a,
    }
}

/// Softmax cross-entropy sums of `logits` against `labels`; with `grad`, overwrites the
/// logits by ∂loss/∂h = softmax(h) − e_y (per row).
fn cross_entropy(logits: &mut Array2<f64>, labels: &[usize], grad: bool) -> BatchStats {
    let mut stats = BatchStats {
        count: labels.len(),
        ..Default::default()
    };
    for (mut row, &y) in logits.rows_mut().into_iter().zip(labels) {
        let (mut arg, mut max) = (0, f64::NEG_INFINITY);
        for (k, &v) in row.iter().enumerate() {
            if v > max {
                (arg, max) = (k, v);
            }
        }
        let lse = max + row.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
        stats.loss_sum += lse - row[y];
        stats.correct += usize::from(arg == y);
        if grad {
            row.mapv_inplace(|v| (v - lse).exp());
            row[y] -= 1.0;
        }
    }
    stats
}

/// Loss sums and the gradient of the summed loss over one chunk.
fn chunk_gradient(model: &Mlp, x: ArrayView2<f64>, labels: &[usize]) -> (BatchStats, Gradients) {
    let mut fwd = forward(model, x, true);
    let stats = cross_entropy(&mut fwd.logits, labels, true);
    let layers = model.layers();
    let mut weight = Vec::with_capacity(layers.len());
    let mut bias = Vec::with_capacity(layers.len());
    let mut g = fwd.logits; // ∂loss/∂z_L, [rows, O]
    for l in (0..layers.len()).rev() {
        weight.push(g.t().dot(&fwd.layer_inputs[l]));
        bias.push(layers[l].bias.as_ref().map(|_| g.sum_axis(Axis(0))));
        if l > 0 {
            let mut prev = g.dot(&layers[l].weight);
            prev *= &fwd.slopes[l - 1];
            g = prev;
        }
    }
    weight.reverse();
    bias.reverse();
    let grads = Gradients { weight, bias };
    (stats, grads)
}

impl CpuBackend {
    /// Row ranges of the work items of a batch of `n` rows.
    fn chunks(&self, n: usize, rows: usize) -> Vec<(usize, usize)> {
        let step = rows.max(1);
        (0..n)
            .step_by(step)
            .map(|i| (i, (i + step).min(n)))
            .collect()
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu (f64, {} threads)", rayon::current_num_threads())
    }

    fn loss_and_gradient(
        &self,
        model: &Mlp,
        x: ArrayView2<f64>,
        labels: &[usize],
    ) -> Result<(BatchStats, Gradients)> {
        check_batch(model, x, labels)?;
        let parts: Vec<(BatchStats, Gradients)> = self
            .chunks(x.nrows(), self.chunk_rows)
            .into_par_iter()
            .map(|(a, b)| chunk_gradient(model, x.slice(s![a..b, ..]), &labels[a..b]))
            .collect();
        let mut parts = parts.into_iter();
        let (mut stats, mut grads) = parts
            .next()
            .unwrap_or_else(|| (BatchStats::default(), Gradients::zeros_like(model)));
        for (s, g) in parts {
            stats.add(s);
            grads.add_assign(&g);
        }
        grads.scale(1.0 / x.nrows() as f64);
        Ok((stats, grads))
    }

    fn evaluate(&self, model: &Mlp, x: ArrayView2<f64>, labels: &[usize]) -> Result<BatchStats> {
        check_batch(model, x, labels)?;
        // No gradients to hold: larger work items keep the GEMMs efficient.
        let parts: Vec<BatchStats> = self
            .chunks(x.nrows(), self.chunk_rows.max(256))
            .into_par_iter()
            .map(|(a, b)| {
                let mut fwd = forward(model, x.slice(s![a..b, ..]), false);
                cross_entropy(&mut fwd.logits, &labels[a..b], false)
            })
            .collect();
        let mut total = BatchStats::default();
        for p in parts {
            total.add(p);
        }
        Ok(total)
    }
}

//! Mini-batch gradients of the softmax cross-entropy on the GPU, for training: the forward
//! GEMMs and activation kernels of the analysis, then back-propagation by GEMMs
//! (δ_{l−1} = (δ_l W_l) ⊙ σ', ∂L/∂W_l = δ_lᵀ A_{l−1}, ∂L/∂b_l = δ_lᵀ 1).

use super::context::GpuContext;
use super::forward::Forward;
use super::kernels::{self, groups_1d, Dispatch, Gemm};
use super::shaders::Shader;
use crate::model::Mlp;
use crate::{Error, Result};
use std::sync::Arc;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct BpParams {
    pub(super) bb: u32,
    pub(super) o: u32,
    pub(super) count: u32,
    pub(super) _p0: u32,
    pub(super) scale: f32,
    pub(super) _p1: [u32; 3],
}

/// Gradient of the mean loss of one batch, with the batch's loss sum and correct count.
pub struct BatchGradient {
    /// Σ_x −log p(y_x|x) over the batch.
    pub loss_sum: f64,
    /// Number of inputs whose arg-max logit is the label.
    pub correct: usize,
    /// Per layer: ∂L/∂W_l (`[out, in]`, row-major) and ∂L/∂b_l (`[out]`, when the layer has a bias).
    pub weight: Vec<Vec<f32>>,
    /// See `weight`.
    pub bias: Vec<Option<Vec<f32>>>,
}

/// Device buffers and recorded kernels for batches of `bb` inputs of one architecture.
pub struct GpuTrainer {
    ctx: Arc<GpuContext>,
    widths: Vec<usize>,
    has_bias: Vec<bool>,
    bb: usize,
    x: wgpu::Buffer,
    labels: wgpu::Buffer,
    weights: Vec<wgpu::Buffer>,
    biases: Vec<wgpu::Buffer>,
    stats: wgpu::Buffer,
    grad_w: Vec<wgpu::Buffer>,
    grad_b: Vec<wgpu::Buffer>,
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
}

impl GpuTrainer {
    /// Builds the kernels for `model`'s architecture and batches of exactly `bb` inputs.
    pub fn new(
        ctx: Arc<GpuContext>,
        model: &Mlp,
        bb: usize,
        with_gradient: bool,
    ) -> Result<GpuTrainer> {
        let widths = model.widths();
        let layers = model.layers();
        let nl = layers.len();
        let o = model.output_dim();
        let u = |v: usize| v as u32;
        let x = kernels::storage(&ctx, "x", bb * widths[0])?;
        let labels = kernels::storage(&ctx, "labels", bb)?;
        let ones = kernels::upload(&ctx, "ones", &vec![1.0; bb])?;
        let dummy = kernels::storage(&ctx, "dummy", 1)?;
        let dummy_rw = kernels::storage(&ctx, "dummy_rw", 1)?;
        let stats = kernels::storage(&ctx, "stats", 2 * bb)?;
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        let fwd = Forward::new(&ctx, model, bb)?;
        let mut delta = Vec::new();
        let mut grad_w = Vec::new();
        let mut grad_b = Vec::new();
        for d in layers {
            weights.push(kernels::storage(&ctx, "weight", d.outputs() * d.inputs())?);
            biases.push(kernels::storage(&ctx, "bias", d.outputs())?);
            delta.push(kernels::storage(&ctx, "delta", bb * d.outputs())?);
            grad_w.push(kernels::storage(&ctx, "grad_w", d.outputs() * d.inputs())?);
            grad_b.push(kernels::storage(&ctx, "grad_b", d.outputs())?);
        }
        let bias_of: Vec<Option<&wgpu::Buffer>> = layers
            .iter()
            .zip(&biases)
            .map(|(d, b)| d.bias.as_ref().map(|_| b))
            .collect();
        let mut forward = fwd.record(&ctx, model, &x, &weights, &bias_of, &dummy)?;
        let ce = BpParams {
            bb: u(bb),
            o: u(o),
            scale: bb as f32,
            ..Default::default()
        };
        forward.push(kernels::dispatch(
            &ctx,
            Shader::Backprop,
            "ce_main",
            &[],
            &ce,
            &[fwd.h(), &labels, &delta[nl - 1], &stats],
            groups_1d(bb as u64)?,
        )?);
        let mut backward = Vec::new();
        if with_gradient {
            for l in (0..nl).rev() {
                let d = &layers[l];
                let input = if l == 0 { &x } else { &fwd.act[l - 1] };
                // ∂L/∂W_l = δ_lᵀ A_{l−1};  ∂L/∂b_l = δ_lᵀ 1.
                let g = Gemm::new(u(d.outputs()), u(d.inputs()), u(bb), true, false);
                backward.push(g.dispatch(&ctx, &delta[l], input, &grad_w[l], &dummy)?);
                let g = Gemm::new(u(d.outputs()), 1, u(bb), true, false);
                backward.push(g.dispatch(&ctx, &delta[l], &ones, &grad_b[l], &dummy)?);
                if l > 0 {
                    // δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1}).
                    let g = Gemm::new(u(bb), u(d.inputs()), u(d.outputs()), false, false);
                    backward.push(g.dispatch(
                        &ctx,
                        &delta[l],
                        &weights[l],
                        &delta[l - 1],
                        &dummy,
                    )?);
                    let count = bb * d.inputs();
                    let p = BpParams {
                        count: u(count),
                        ..Default::default()
                    };
                    backward.push(kernels::dispatch(
                        &ctx,
                        Shader::Backprop,
                        "mul_main",
                        &[],
                        &p,
                        &[&fwd.s1[l - 1], &dummy, &delta[l - 1], &dummy_rw],
                        groups_1d(count as u64)?,
                    )?);
                }
            }
        }
        ctx.check()?;
        Ok(GpuTrainer {
            ctx,
            widths,
            has_bias: layers.iter().map(|d| d.bias.is_some()).collect(),
            bb,
            x,
            labels,
            weights,
            biases,
            stats,
            grad_w,
            grad_b,
            forward,
            backward,
        })
    }

    /// Batch size this trainer was built for.
    pub fn batch(&self) -> usize {
        self.bb
    }

    /// Uploads `model`'s parameters (same architecture as at construction).
    fn upload(&self, model: &Mlp) -> Result<()> {
        if model.widths() != self.widths {
            return Err(Error::Input(format!(
                "the trainer was built for widths {:?}, the model has {:?}",
                self.widths,
                model.widths()
            )));
        }
        for (l, d) in model.layers().iter().enumerate() {
            let w: Vec<f32> = d.weight.iter().map(|v| *v as f32).collect();
            self.ctx
                .queue
                .write_buffer(&self.weights[l], 0, bytemuck::cast_slice(&w));
            if let Some(b) = &d.bias {
                let b: Vec<f32> = b.iter().map(|v| *v as f32).collect();
                self.ctx
                    .queue
                    .write_buffer(&self.biases[l], 0, bytemuck::cast_slice(&b));
            }
        }
        Ok(())
    }

    /// Loss sum, correct count and (when built with gradients) the gradient of the mean loss
    /// of a batch of exactly `bb` rows `x` ([bb·in], row-major f32) with class `labels`.
    pub fn run(&self, model: &Mlp, x: &[f32], labels: &[f32]) -> Result<BatchGradient> {
        if labels.len() != self.bb || x.len() != self.bb * self.widths[0] {
            return Err(Error::Input(format!(
                "the GPU trainer takes batches of exactly {} inputs",
                self.bb
            )));
        }
        self.upload(model)?;
        self.ctx
            .queue
            .write_buffer(&self.x, 0, bytemuck::cast_slice(x));
        self.ctx
            .queue
            .write_buffer(&self.labels, 0, bytemuck::cast_slice(labels));
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in self.forward.iter().chain(&self.backward) {
                d.record(&mut pass);
            }
        }
        self.ctx.queue.submit([enc.finish()]);
        let nl = self.widths.len() - 1;
        let mut regions: Vec<(&wgpu::Buffer, usize)> = vec![(&self.stats, 2 * self.bb)];
        if !self.backward.is_empty() {
            for l in 0..nl {
                regions.push((&self.grad_w[l], self.widths[l + 1] * self.widths[l]));
                regions.push((&self.grad_b[l], self.widths[l + 1]));
            }
        }
        let mut data = kernels::read_back(&self.ctx, &regions)?.into_iter();
        let stats = data.next().unwrap_or_default();
        let loss_sum = stats.iter().step_by(2).map(|v| f64::from(*v)).sum();
        let correct = stats
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|v| **v > 0.5)
            .count();
        let mut weight = Vec::new();
        let mut bias = Vec::new();
        for l in 0..nl.min(data.len() / 2) {
            weight.push(data.next().unwrap_or_default());
            let b = data.next().unwrap_or_default();
            bias.push(self.has_bias[l].then_some(b));
        }
        Ok(BatchGradient {
            loss_sum,
            correct,
            weight,
            bias,
        })
    }
}

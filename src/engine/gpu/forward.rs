//! The batched forward pass shared by the analysis and training: per layer a GEMM
//! z_l = A_{l−1} W_lᵀ (+ b_l, fused epilogue), then for hidden layers the activation kernel
//! writing a_l, σ'_l and σ''_l (MATH §6.1, §6.4).

use super::context::GpuContext;
use super::kernels::{self, groups_1d, Dispatch, Epilogue, Gemm};
use super::shaders::{Shader, WgslEnum};
use crate::model::Mlp;
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Count {
    pub(super) count: u32,
    pub(super) _p: [u32; 3],
}

/// Work buffers of a forward pass over `bb` inputs: z_l for every layer (the last is h), and
/// a_l, σ'_l, σ''_l for the hidden layers.
pub struct Forward {
    /// Inputs per batch the buffers hold.
    pub bb: usize,
    /// Pre-activations z_l, `[bb, n_l]` per layer (the last is h).
    pub z: Vec<wgpu::Buffer>,
    /// Activations a_l = σ(z_l), `[bb, n_l]` per hidden layer.
    pub act: Vec<wgpu::Buffer>,
    /// σ'(z_l), `[bb, n_l]` per hidden layer.
    pub s1: Vec<wgpu::Buffer>,
    /// σ''(z_l), `[bb, n_l]` per hidden layer.
    pub s2: Vec<wgpu::Buffer>,
}

impl Forward {
    /// Allocates the buffers for `model` and `bb` inputs.
    pub fn new(ctx: &GpuContext, model: &Mlp, bb: usize) -> Result<Forward> {
        let nl = model.layers().len();
        let mut f = Forward {
            bb,
            z: Vec::new(),
            act: Vec::new(),
            s1: Vec::new(),
            s2: Vec::new(),
        };
        for (l, d) in model.layers().iter().enumerate() {
            f.z.push(kernels::storage(ctx, "z", bb * d.outputs())?);
            if l + 1 < nl {
                f.act.push(kernels::storage(ctx, "act", bb * d.outputs())?);
                f.s1.push(kernels::storage(ctx, "s1", bb * d.outputs())?);
                f.s2.push(kernels::storage(ctx, "s2", bb * d.outputs())?);
            }
        }
        Ok(f)
    }

    /// The network output h ([bb, O]).
    pub fn h(&self) -> &wgpu::Buffer {
        &self.z[self.z.len() - 1]
    }

    /// Records the pass on inputs `x` ([bb, in], `bb` as at construction) with the layers' weights and biases
    /// (`None` for a layer without bias; `dummy` fills the unused binding).
    pub fn record(
        &self,
        ctx: &GpuContext,
        model: &Mlp,
        x: &wgpu::Buffer,
        weights: &[wgpu::Buffer],
        biases: &[Option<&wgpu::Buffer>],
        dummy: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let nl = model.layers().len();
        let bb = self.bb;
        let mut ds = Vec::new();
        for (l, d) in model.layers().iter().enumerate() {
            let input = if l == 0 { x } else { &self.act[l - 1] };
            let mut gemm = Gemm::new(
                bb as u32,
                d.outputs() as u32,
                d.inputs() as u32,
                false,
                true,
            );
            let bias = match biases[l] {
                Some(b) => {
                    gemm.epilogue = Epilogue::AddBias;
                    b
                }
                None => dummy,
            };
            ds.push(gemm.dispatch(ctx, input, &weights[l], &self.z[l], bias)?);
            if l + 1 < nl {
                let count = bb * d.outputs();
                ds.push(kernels::dispatch(
                    ctx,
                    Shader::Activation,
                    "main",
                    &[model.activations()[l].constant()],
                    &Count {
                        count: count as u32,
                        ..Default::default()
                    },
                    &[&self.z[l], &self.act[l], &self.s1[l], &self.s2[l]],
                    groups_1d(count as u64)?,
                )?);
            }
        }
        Ok(ds)
    }
}

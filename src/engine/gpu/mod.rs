//! The GPU engine on wgpu (DESIGN §4): portable f32 WGSL kernels (Vulkan, Metal, DX12), the
//! same API and the same results (to f32 tolerance) as the CPU reference engine.

mod accumulate;
mod analysis;
mod bench;
pub mod context;
pub(crate) mod forward;
mod host;
#[cfg(test)]
mod interface_tests;
#[cfg(test)]
mod kernel_tests;
pub(crate) mod kernels;
mod plan;
pub(crate) mod shaders;
mod timer;
pub mod train;

pub use accumulate::accumulated_channels;
pub use analysis::{
    analyze, analyze_partial, analyze_timed, batch_size, phase_flops, work_bytes, Phase, PhaseTimes,
};
pub use bench::{gemm_benchmark, GemmTiming};
pub use context::{AdapterChoice, GpuContext, GpuOptions};

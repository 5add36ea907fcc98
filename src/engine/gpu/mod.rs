//! The GPU engine on wgpu (DESIGN §4): portable f32 WGSL kernels (Vulkan, Metal, DX12), the
//! same API and the same results (to f32 tolerance) as the CPU reference engine.

mod accumulate;
mod analysis;
pub mod context;
pub mod forward;
mod host;
#[cfg(test)]
mod interface_tests;
pub mod kernels;
mod plan;
pub mod shaders;
mod timer;
pub mod train;

pub use accumulate::accumulated_channels;
pub use analysis::{
    analyze, analyze_partial, analyze_timed, batch_size, cache_reuses, phase_flops, release_cache,
    work_bytes, Phase, PhaseTimes,
};
pub use context::GpuContext;

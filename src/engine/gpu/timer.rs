//! Device time per phase of the analysis (timestamp queries, an optional WebGPU feature):
//! every phase segment is recorded as its own compute pass with begin/end timestamps, resolved
//! into small buffers that are read once at the end.

use super::context::GpuContext;
use super::kernels::{self, Dispatch};
use crate::Result;

/// Phases of the analysis pass, timed separately when the adapter has timestamp queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The forward pass: GEMMs and activations.
    Forward,
    /// η, label sampling and residuals.
    Family,
    /// Output Jacobians and Hessian diagonals (DESIGN §2).
    Hessian,
    /// Per-unit bases.
    UnitStats,
    /// Reduction of the per-sample scores and negative Hessians over the labels.
    Samples,
    /// Accumulation over the inputs (DESIGN §1).
    Accumulate,
}

impl Phase {
    /// Every phase, in pass order (the index of `PhaseTimes::seconds`).
    pub const ALL: [Phase; 6] = [
        Phase::Forward,
        Phase::Family,
        Phase::Hessian,
        Phase::UnitStats,
        Phase::Samples,
        Phase::Accumulate,
    ];
    /// The phase's key in SUMMARY.json's `device_phase_s`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Family => "family",
            Phase::Hessian => "hessian",
            Phase::UnitStats => "unit_stats",
            Phase::Samples => "samples",
            Phase::Accumulate => "accumulate",
        }
    }
}

/// Seconds of device time per phase, summed over batches (zero without timestamp queries).
#[derive(Clone, Debug, Default)]
pub struct PhaseTimes {
    /// Device seconds per phase, in [`Phase::ALL`] order.
    pub seconds: [f64; 6],
    /// Whether the adapter measured them.
    pub measured: bool,
    /// Wall seconds of the host's per-input spectra and bounds.
    pub host_seconds: f64,
}

/// Records compute passes, one per phase segment, with device timestamps when the adapter
/// has them; the timestamps are resolved into small buffers read once at the end.
pub struct Timer {
    on: bool,
    resolved: Vec<(Vec<Phase>, wgpu::Buffer)>,
}

impl Timer {
    pub fn new(ctx: &GpuContext) -> Timer {
        Timer {
            on: ctx.has_timestamps(),
            resolved: Vec::new(),
        }
    }

    pub fn record(
        &mut self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        segments: &[(Phase, &[Dispatch])],
    ) {
        let count = 2 * segments.len() as u32;
        let queries = self.on.then(|| {
            ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("phases"),
                ty: wgpu::QueryType::Timestamp,
                count,
            })
        });
        for (i, (_, dispatches)) in segments.iter().enumerate() {
            let writes = queries.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
                query_set: q,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: writes,
            });
            for d in *dispatches {
                d.record(&mut pass);
            }
        }
        if let Some(q) = queries {
            let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 8 * u64::from(count),
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            enc.resolve_query_set(&q, 0..count, &buf, 0);
            self.resolved
                .push((segments.iter().map(|(p, _)| *p).collect(), buf));
        }
    }

    /// Device seconds per phase, summed over everything recorded.
    pub fn finish(self, ctx: &GpuContext) -> Result<PhaseTimes> {
        let mut times = PhaseTimes::default();
        if !self.on {
            return Ok(times);
        }
        let regions: Vec<(&wgpu::Buffer, usize)> = self
            .resolved
            .iter()
            .map(|(phases, b)| (b, 4 * phases.len()))
            .collect();
        let tick = f64::from(ctx.queue.get_timestamp_period()) * 1e-9;
        for ((phases, _), words) in self.resolved.iter().zip(kernels::read_back(ctx, &regions)?) {
            let stamp = |i: usize| {
                u64::from(words[2 * i].to_bits()) | (u64::from(words[2 * i + 1].to_bits()) << 32)
            };
            for (i, phase) in phases.iter().enumerate() {
                let dt = stamp(2 * i + 1).saturating_sub(stamp(2 * i)) as f64 * tick;
                let slot = Phase::ALL.iter().position(|p| p == phase).unwrap_or(0);
                times.seconds[slot] += dt;
            }
        }
        times.measured = true;
        Ok(times)
    }
}

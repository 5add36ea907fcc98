//! A benchmark entry point for the tiled GEMM (`benches/gpu.rs`,
//! `examples/bench_analysis.rs --gemm N`), so that the kernels stay internal.

use super::context::GpuContext;
use super::kernels::{self, Gemm};
use crate::{Error, Result};
use std::time::Instant;

/// Timings of [`gemm_benchmark`]: medians over the timed repetitions of one
/// C[m×n] = A[m×k]·B[k×n] on the device.
#[derive(Clone, Debug)]
pub struct GemmTiming {
    /// Median device seconds of one GEMM, from timestamp queries; None when the adapter has
    /// none ([`GpuContext::has_timestamps`]).
    pub device_seconds: Option<f64>,
    /// Median wall seconds of one GEMM, from submission to completion as the host sees it.
    pub wall_seconds: f64,
    /// Wall seconds of all the timed repetitions together.
    pub total_wall_seconds: f64,
    /// 2·m·n·k floating-point operations over the median device seconds (the median wall
    /// seconds without timestamp queries), in GFLOP/s.
    pub gflops: f64,
}

/// Times the engine's tiled f32 GEMM C[m×n] = A[m×k]·B[k×n] (row-major, no transposes, the
/// register blocking the context chooses) on `ctx`: uploads random operands in [−½, ½),
/// runs it once to warm up (pipeline compilation), then `reps` (at least one) times, each
/// submitted alone and waited for.
///
/// Errors: sizes beyond the adapter's buffer or dispatch limits (or a software adapter's loop
/// limit), and device errors.
pub fn gemm_benchmark(
    ctx: &GpuContext,
    m: usize,
    n: usize,
    k: usize,
    reps: usize,
) -> Result<GemmTiming> {
    let dim = |v: usize| {
        u32::try_from(v)
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| Error::Input(format!("GEMM size {v} is not in 1..2³²")))
    };
    let (mu, nu, ku) = (dim(m)?, dim(n)?, dim(k)?);
    let random = |len: usize, stream: u32| -> Vec<f32> {
        (0..len.div_ceil(4))
            .flat_map(|i| crate::rng::block(0x6765_6d6d, stream, i as u32, 0, 0))
            .take(len)
            .map(|w| (crate::rng::uniform(w) - 0.5) as f32)
            .collect()
    };
    let a = kernels::upload(ctx, "a", &random(m * k, 1))?;
    let b = kernels::upload(ctx, "b", &random(k * n, 2))?;
    let c = kernels::storage(ctx, "c", m * n)?;
    let d = Gemm::new(mu, nu, ku, false, false).dispatch(ctx, &a, &b, &c, &a)?;
    let stamps = ctx.has_timestamps();
    let queries = stamps.then(|| {
        ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("gemm"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        })
    });
    let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gemm timestamps"),
        size: 16,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let reps = reps.max(1);
    let (mut device, mut wall) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for rep in 0..=reps {
        let started = Instant::now();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gemm"),
                timestamp_writes: queries.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
                    query_set: q,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            d.record(&mut pass);
        }
        if let Some(q) = &queries {
            enc.resolve_query_set(q, 0..2, &resolve, 0);
        }
        ctx.queue.submit([enc.finish()]);
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the device failed: {e}")))?;
        let secs = started.elapsed().as_secs_f64();
        ctx.check()?;
        if rep == 0 {
            continue;
        }
        wall.push(secs);
        if stamps {
            let w = kernels::read_back(ctx, &[(&resolve, 4)])?.remove(0);
            let tick = |i: usize| u64::from(w[i].to_bits()) | (u64::from(w[i + 1].to_bits()) << 32);
            device.push(
                tick(2).saturating_sub(tick(0)) as f64
                    * f64::from(ctx.queue.get_timestamp_period())
                    * 1e-9,
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let total_wall_seconds = wall.iter().sum();
    let wall_seconds = median(&mut wall);
    let device_seconds = stamps.then(|| median(&mut device));
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    let secs = device_seconds.unwrap_or(wall_seconds);
    Ok(GemmTiming {
        device_seconds,
        wall_seconds,
        total_wall_seconds,
        gflops: if secs > 0.0 { flops / secs * 1e-9 } else { 0.0 },
    })
}

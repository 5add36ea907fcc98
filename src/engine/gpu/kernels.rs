//! Recording kernels: uniform parameters, bind groups and dispatch sizes, built once per plan
//! and replayed for every batch.

use super::context::GpuContext;
use super::shaders::Shader;
use crate::{Error, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// One recorded kernel launch.
pub struct Dispatch {
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    /// Kept alive with the bind group.
    _uniform: wgpu::Buffer,
}

impl Dispatch {
    /// The dispatch's uniform buffer (rewritten between batches where parameters change).
    pub fn uniform(&self) -> &wgpu::Buffer {
        &self._uniform
    }

    /// Records the launch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// Largest workgroup count per dispatch dimension (WebGPU default limit).
const MAX_GROUPS: u32 = 65_535;

/// Workgroups for `threads` invocations of a 64-wide 1-D kernel that linearises
/// gid.x + gid.y·(num_workgroups.x·64).
pub fn groups_1d(threads: u64) -> Result<[u32; 3]> {
    let wgs = threads.div_ceil(64).max(1);
    let x = wgs.min(MAX_GROUPS as u64);
    let y = wgs.div_ceil(x);
    if y > MAX_GROUPS as u64 {
        return Err(Error::Gpu(format!(
            "{threads} invocations exceed the dispatch limit; use a smaller --batch-size"
        )));
    }
    Ok([x as u32, y as u32, 1])
}

/// Workgroups for one 64-wide workgroup per item (items ≤ 65535²).
pub fn groups_per_item(items: u64) -> Result<[u32; 3]> {
    let x = items.clamp(1, MAX_GROUPS as u64);
    let y = items.div_ceil(x).max(1);
    if y > MAX_GROUPS as u64 {
        return Err(Error::Gpu(format!(
            "{items} workgroups exceed the dispatch limit"
        )));
    }
    Ok([x as u32, y as u32, 1])
}

/// Creates a dispatch of `entry` in `shader` with uniform `params` and the storage `buffers`
/// in binding order (binding 0 is the uniform).
pub fn dispatch<P: bytemuck::Pod>(
    ctx: &GpuContext,
    shader: Shader,
    entry: &'static str,
    constants: &[(&'static str, f64)],
    params: &P,
    buffers: &[&wgpu::Buffer],
    groups: [u32; 3],
) -> Result<Dispatch> {
    let pipeline = ctx.pipeline(shader, entry, constants)?;
    let layout = ctx.bind_group_layout(shader)?;
    let uniform = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        });
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: uniform.as_entire_binding(),
    }];
    for (i, b) in buffers.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: b.as_entire_binding(),
        });
    }
    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(entry),
        layout: &layout,
        entries: &entries,
    });
    Ok(Dispatch {
        pipeline,
        bind_group,
        groups,
        _uniform: uniform,
    })
}

/// Uniform parameters of gemm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub lda: u32,
    pub ldb: u32,
    pub ldc: u32,
    pub off_a: u32,
    pub off_b: u32,
    pub off_c: u32,
    pub stride_a: u32,
    pub stride_b: u32,
    pub stride_c: u32,
    pub off_bias: u32,
    pub _pad: [u32; 3],
}

/// What the GEMM does with its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    Store,
    AddBias,
    Accumulate,
}

/// C = op(A)·op(B) (+ epilogue) for `batch` problems; offsets and strides in f32 elements.
pub struct Gemm {
    pub params: GemmParams,
    pub trans_a: bool,
    pub trans_b: bool,
    pub epilogue: Epilogue,
    pub batch: u32,
}

impl Gemm {
    /// Plain row-major C[m×n] = op(A)·op(B) with natural leading dimensions.
    pub fn new(m: u32, n: u32, k: u32, trans_a: bool, trans_b: bool) -> Gemm {
        Gemm {
            params: GemmParams {
                m,
                n,
                k,
                lda: if trans_a { m } else { k },
                ldb: if trans_b { k } else { n },
                ldc: n,
                ..Default::default()
            },
            trans_a,
            trans_b,
            epilogue: Epilogue::Store,
            batch: 1,
        }
    }

    /// Records the GEMM; `bias` is required with [`Epilogue::AddBias`] (a dummy otherwise).
    pub fn dispatch(
        &self,
        ctx: &GpuContext,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        c: &wgpu::Buffer,
        bias: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let p = &self.params;
        let groups = [
            p.n.div_ceil(64).max(1),
            p.m.div_ceil(64).max(1),
            self.batch.max(1),
        ];
        if groups.iter().any(|g| *g > MAX_GROUPS) {
            return Err(Error::Gpu(format!(
                "GEMM {}×{}×{} (batch {}) exceeds the dispatch limit; use a smaller --batch-size",
                p.m, p.n, p.k, self.batch
            )));
        }
        let epi = match self.epilogue {
            Epilogue::Store => 0.0,
            Epilogue::AddBias => 1.0,
            Epilogue::Accumulate => 2.0,
        };
        dispatch(
            ctx,
            Shader::Gemm,
            "main",
            &[
                ("TRANS_A", f64::from(u8::from(self.trans_a))),
                ("TRANS_B", f64::from(u8::from(self.trans_b))),
                ("EPILOGUE", epi),
            ],
            p,
            &[a, b, c, bias],
            groups,
        )
    }
}

/// A storage buffer of `len` f32 values (at least one), usable as copy source and target.
pub fn storage(ctx: &GpuContext, label: &str, len: usize) -> Result<wgpu::Buffer> {
    let bytes = (len.max(1) * 4) as u64;
    if bytes > ctx.max_binding_bytes() {
        return Err(Error::Gpu(format!(
            "buffer '{label}' needs {bytes} bytes, more than the adapter's limit of {} bytes; \
             use a smaller --batch-size",
            ctx.max_binding_bytes()
        )));
    }
    Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    }))
}

/// A storage buffer initialised with `data`.
pub fn upload(ctx: &GpuContext, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
    let b = storage(ctx, label, data.len())?;
    if !data.is_empty() {
        ctx.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
    }
    Ok(b)
}

/// Reads back f32 values from several (buffer, len) regions with one staging buffer.
pub fn read_back(ctx: &GpuContext, regions: &[(&wgpu::Buffer, usize)]) -> Result<Vec<Vec<f32>>> {
    let total: usize = regions.iter().map(|(_, n)| n * 4).sum();
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("staging"),
        size: total.max(4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    let mut off = 0u64;
    for (b, n) in regions {
        let bytes = (*n * 4) as u64;
        if bytes > 0 {
            enc.copy_buffer_to_buffer(b, 0, &staging, off, bytes);
        }
        off += bytes;
    }
    ctx.queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the device failed: {e}")))?;
    rx.recv()
        .map_err(|_| Error::Gpu("the device was lost while reading results".into()))?
        .map_err(|e| Error::Gpu(format!("cannot map the read-back buffer: {e}")))?;
    ctx.check()?;
    let out = {
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("cannot read the mapped buffer: {e}")))?;
        let all: &[f32] = bytemuck::cast_slice(&view);
        let mut out = Vec::with_capacity(regions.len());
        let mut at = 0;
        for (_, n) in regions {
            out.push(all[at..at + n].to_vec());
            at += n;
        }
        out
    };
    staging.unmap();
    Ok(out)
}

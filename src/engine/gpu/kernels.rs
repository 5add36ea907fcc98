//! Recording kernels: uniform parameters, bind groups and dispatch sizes, built once per plan
//! and replayed for every batch.

use super::context::GpuContext;
use super::shaders::{GemmTile, Shader, WgslEnum};
use crate::{Error, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// One recorded kernel launch.
pub struct Dispatch {
    /// The compiled kernel.
    pub pipeline: Arc<wgpu::ComputePipeline>,
    /// Its buffers (uniform parameters first).
    pub bind_group: wgpu::BindGroup,
    /// Workgroup counts (x, y, z).
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

/// Smallest GEMM inner dimension that a software adapter (lavapipe) would silently truncate.
const SOFTWARE_MAX_K: u32 = 65_536;

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
    // The Rust side of the shader interface (shaders.rs): entry point, every override, and a
    // buffer for every storage binding.
    let mut names: Vec<&str> = constants.iter().map(|(n, _)| *n).collect();
    let mut want = shader.overrides().to_vec();
    names.sort_unstable();
    want.sort_unstable();
    if !shader.entry_points().contains(&entry)
        || names != want
        || buffers.len() + 1 != shader.bindings().len()
    {
        return Err(Error::Internal(format!(
            "{} {entry}: overrides {names:?} (want {want:?}), {} buffers (want {})",
            shader.name(),
            buffers.len(),
            shader.bindings().len() - 1
        )));
    }
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
    /// Rows of op(A) and C.
    pub m: u32,
    /// Columns of op(B) and C.
    pub n: u32,
    /// Columns of op(A), rows of op(B).
    pub k: u32,
    /// Row stride of A as stored.
    pub lda: u32,
    /// Row stride of B as stored.
    pub ldb: u32,
    /// Row stride of C.
    pub ldc: u32,
    /// Offset of A in its buffer.
    pub off_a: u32,
    /// Offset of B in its buffer.
    pub off_b: u32,
    /// Offset of C in its buffer.
    pub off_c: u32,
    /// Offset of A between consecutive problems of the batch.
    pub stride_a: u32,
    /// Offset of B between consecutive problems of the batch.
    pub stride_b: u32,
    /// Offset of C between consecutive problems of the batch.
    pub stride_c: u32,
    /// Offset of the bias in its buffer ([`Epilogue::AddBias`]).
    pub off_bias: u32,
    /// Columns of B actually stored; when > 0, columns j ≥ b_cols of op(B) read as 1.
    pub b_cols: u32,
    /// Rows per input with [`Prologue::ScaleRows`] (n_l).
    pub pro_nl: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: u32,
}

/// What the GEMM does with its result (`EPILOGUE`, named in WGSL by [`WgslEnum`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// C = op(A)·op(B).
    Store,
    /// C = op(A)·op(B) + 1·biasᵀ (bias per column).
    AddBias,
    /// C += op(A)·op(B).
    Accumulate,
}

/// What the GEMM does to A while loading it (`PROLOGUE`, named in WGSL by [`WgslEnum`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prologue {
    /// A is read as stored.
    None,
    /// One step of the inter-layer Jacobian chain (DESIGN §2): row (x, j) of A (`pro_nl`
    /// rows per input x, not batched, not transposed) is scaled by σ'[x, ·] of shape [bb, K].
    ScaleRows,
}

/// C = op(A)·op(B) (+ epilogue) for `batch` problems; offsets and strides in f32 elements.
/// A may get the [`Prologue::ScaleRows`] transform and be squared (`pow_a` ∈ {1, 2}); op(B)
/// may be raised elementwise to `pow_b` ∈ {1, 2, 4, 8} and padded with columns of ones
/// (`params.b_cols`); all fused into the tile loads.
pub struct Gemm {
    /// Sizes, strides and offsets (the uniform buffer).
    pub params: GemmParams,
    /// A is stored K×M (op(A) = Aᵀ).
    pub trans_a: bool,
    /// B is stored N×K (op(B) = Bᵀ).
    pub trans_b: bool,
    /// What is done with the product.
    pub epilogue: Epilogue,
    /// What is done to A while loading it.
    pub prologue: Prologue,
    /// Elementwise power of op(A), in [`Gemm::POWS_A`].
    pub pow_a: u32,
    /// Elementwise power of op(B), in [`Gemm::POWS_B`].
    pub pow_b: u32,
    /// Number of problems (workgroups' z).
    pub batch: u32,
    /// Register blocking; None: [`GemmTile::Narrow`] for N ≤ 16, else the context's choice
    /// ([`GpuContext::gemm_tile`]).
    pub tile: Option<GemmTile>,
}

impl Gemm {
    /// The supported powers of A (`pow_a`) and of B (`pow_b`).
    pub const POWS_A: [u32; 2] = [1, 2];
    /// See [`Gemm::POWS_A`].
    pub const POWS_B: [u32; 4] = [1, 2, 4, 8];

    /// The override constants of gemm.wgsl for this product.
    pub fn constants(&self) -> [(&'static str, f64); 6] {
        [
            ("TRANS_A", f64::from(u8::from(self.trans_a))),
            ("TRANS_B", f64::from(u8::from(self.trans_b))),
            self.epilogue.constant(),
            self.prologue.constant(),
            ("POW_A", f64::from(self.pow_a)),
            ("POW_B", f64::from(self.pow_b)),
        ]
    }

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
            prologue: Prologue::None,
            pow_a: 1,
            pow_b: 1,
            batch: 1,
            tile: None,
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
        self.dispatch_with(ctx, [a, b, c, bias, bias])
    }

    /// Records the GEMM with the [`Prologue::ScaleRows`] factors σ' (`s1`, [bb, K]).
    pub fn dispatch_scaled(
        &self,
        ctx: &GpuContext,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        c: &wgpu::Buffer,
        s1: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        debug_assert_eq!(self.prologue, Prologue::ScaleRows);
        self.dispatch_with(ctx, [a, b, c, s1, s1])
    }

    /// Records the GEMM with bindings a, b, c, bias, s1.
    fn dispatch_with(&self, ctx: &GpuContext, buffers: [&wgpu::Buffer; 5]) -> Result<Dispatch> {
        let p = &self.params;
        if self.prologue == Prologue::ScaleRows
            && (self.trans_a || self.batch > 1 || p.pro_nl == 0 || !p.m.is_multiple_of(p.pro_nl))
        {
            return Err(Error::Internal(format!(
                "the row-scaling prologue needs {} rows in blocks of {}, \
                 untransposed and unbatched",
                p.m, p.pro_nl
            )));
        }
        if !Gemm::POWS_A.contains(&self.pow_a) {
            return Err(Error::Internal(format!(
                "GEMM power {} of A is not 1 or 2",
                self.pow_a
            )));
        }
        if !Gemm::POWS_B.contains(&self.pow_b) {
            return Err(Error::Internal(format!(
                "GEMM power {} of B is not 1, 2, 4 or 8",
                self.pow_b
            )));
        }
        if ctx.is_software() && p.k >= SOFTWARE_MAX_K {
            // Measured: lavapipe silently stops a loop after 65 536 iterations, and the K loop
            // runs K iterations of its inner step.
            return Err(Error::Gpu(format!(
                "a GEMM with inner dimension {} exceeds what the software adapter '{}' runs \
                 in one invocation; use --engine cpu",
                p.k, ctx.info.name
            )));
        }
        let tile = self.tile.unwrap_or_else(|| {
            if p.n <= 16 {
                GemmTile::Narrow
            } else {
                ctx.gemm_tile()
            }
        });
        let (tm, tn) = tile.tile();
        if tile.workgroup_bytes() > ctx.limits.max_compute_workgroup_storage_size {
            return Err(Error::Gpu(format!(
                "the {tm}×{tn} GEMM tile needs {} bytes of workgroup memory, '{}' has {}",
                tile.workgroup_bytes(),
                ctx.info.name,
                ctx.limits.max_compute_workgroup_storage_size
            )));
        }
        let groups = [
            p.n.div_ceil(tn).max(1),
            p.m.div_ceil(tm).max(1),
            self.batch.max(1),
        ];
        if groups.iter().any(|g| *g > MAX_GROUPS) {
            return Err(Error::Gpu(format!(
                "GEMM {}×{}×{} (batch {}) exceeds the dispatch limit; use a smaller --batch-size",
                p.m, p.n, p.k, self.batch
            )));
        }
        dispatch(
            ctx,
            Shader::Gemm(tile),
            "main",
            &self.constants(),
            p,
            &buffers,
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

/// A storage buffer initialised with f32 `data`.
pub fn upload(ctx: &GpuContext, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
    upload_words(ctx, label, data)
}

/// A storage buffer initialised with u32 `data` (read as `array<u32>` in WGSL).
pub fn upload_u32(ctx: &GpuContext, label: &str, data: &[u32]) -> Result<wgpu::Buffer> {
    upload_words(ctx, label, data)
}

fn upload_words<T: bytemuck::Pod>(
    ctx: &GpuContext,
    label: &str,
    data: &[T],
) -> Result<wgpu::Buffer> {
    let b = storage(ctx, label, data.len())?;
    if !data.is_empty() {
        ctx.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
    }
    Ok(b)
}

/// A reusable read-back buffer: [`Staging::copy`] records copies of (buffer, f32 count)
/// regions into it (growing it when needed) and [`Staging::read`], after the copies were
/// submitted, maps it and returns the regions.
#[derive(Default)]
pub struct Staging {
    buffer: Option<wgpu::Buffer>,
}

impl Staging {
    /// Records the copies of `regions` into the staging buffer.
    pub fn copy(
        &mut self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        regions: &[(&wgpu::Buffer, usize)],
    ) -> Result<()> {
        let total = (regions.iter().map(|(_, n)| n * 4).sum::<usize>().max(4)) as u64;
        if total > ctx.limits.max_buffer_size {
            return Err(Error::Gpu(format!(
                "reading back {total} bytes exceeds the adapter's buffer limit of {} bytes; \
                 use a smaller --batch-size",
                ctx.limits.max_buffer_size
            )));
        }
        if self.buffer.as_ref().is_none_or(|b| b.size() < total) {
            self.buffer = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: total,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = self.buffer.as_ref().expect("allocated above");
        let mut off = 0u64;
        for (b, n) in regions {
            let bytes = (*n * 4) as u64;
            if bytes > 0 {
                enc.copy_buffer_to_buffer(b, 0, staging, off, bytes);
            }
            off += bytes;
        }
        Ok(())
    }

    /// Waits for the submitted copies of `regions` and returns their values.
    pub fn read(
        &self,
        ctx: &GpuContext,
        regions: &[(&wgpu::Buffer, usize)],
    ) -> Result<Vec<Vec<f32>>> {
        let staging = self
            .buffer
            .as_ref()
            .ok_or_else(|| Error::Internal("nothing was copied for read-back".into()))?;
        let total: usize = regions.iter().map(|(_, n)| n * 4).sum();
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
            let all: &[f32] = bytemuck::cast_slice(&view[..total]);
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
}

/// Reads back f32 values from several (buffer, len) regions with one staging buffer.
pub fn read_back(ctx: &GpuContext, regions: &[(&wgpu::Buffer, usize)]) -> Result<Vec<Vec<f32>>> {
    let mut staging = Staging::default();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    staging.copy(ctx, &mut enc, regions)?;
    ctx.queue.submit([enc.finish()]);
    staging.read(ctx, regions)
}

//! The analysis pass of one batch shape (DESIGN §1–§4), recorded once as a plan of
//! dispatches and replayed for every batch of inputs: forward (GEMM + activation) → η, data
//! residuals → Δ_l and Hd_l of every layer by the reverse (inter-layer Jacobian) form of
//! DESIGN §2 → per-unit statistics → per sample chunk: labels and residuals, β = Δ_l r and
//! g = Hd_l r, Welford/Pébay reductions over the samples. Batches are sized by the adapter's
//! binding limits ([`choose_batch`]).

use super::context::GpuContext;
use super::forward::Forward;
use super::kernels::{self, groups_1d, groups_per_item, Dispatch, Epilogue, Gemm, Prologue};
use super::shaders::{GpuFamily, Shader, WgslEnum, NB};
use super::timer::Phase;
use crate::engine::Request;
use crate::family::FamilyKind;
use crate::{Error, Result};

/// Samples per chunk: the residual buffer holds at most this many labels per input.
pub const SAMPLE_CHUNK: usize = 256;
/// Bound on ⌈ns/64⌉·O, the multiply-adds of one invocation of the sample reduction
/// (lavapipe silently stops very long loops).
const MAX_REDUCE_WORK: usize = 16_384;

/// Samples per chunk for O outputs and N samples.
pub fn sample_chunk(o: usize, n: usize) -> usize {
    let by_work = (MAX_REDUCE_WORK / o.max(1)).max(1) * 64;
    n.min(SAMPLE_CHUNK).min(by_work).max(1)
}
/// Inputs per batch at most: keeps the accumulation's per-entry Welford loop (one iteration
/// per input of the batch) far below lavapipe's loop limit and the batched GEMMs' z dimension
/// within the dispatch limit. Results do not depend on the batch size.
pub const MAX_BATCH: usize = 4096;

/// Units per dispatch from which one invocation per unit is parallel enough.
const MANY_UNITS: usize = 4096;

/// Invocations per unit of the sample reduction (a power of two ≤ 64): one when there are many
/// units, unless one invocation would exceed the loop-work bound; with few units, enough to
/// give every sample its own invocation (up to 64).
pub fn reduce_lanes(units: usize, ns: usize, o: usize) -> usize {
    let mut lanes = 1;
    while lanes < 64 && ns.div_ceil(lanes) * o.max(1) > MAX_REDUCE_WORK {
        lanes *= 2;
    }
    if units < MANY_UNITS {
        lanes = lanes.max(ns.next_power_of_two().min(64));
    }
    lanes
}

/// Budget for all work buffers of one batch.
const MEMORY_BUDGET: u64 = 1 << 30;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct FamilyParams {
    pub(super) bb: u32,
    pub(super) o: u32,
    pub(super) ns: u32,
    pub(super) sample0: u32,
    pub(super) input0: u32,
    pub(super) key_lo: u32,
    pub(super) key_hi: u32,
    pub(super) _p0: u32,
    pub(super) sigma2: f32,
    pub(super) _p1: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct HessParams {
    pub(super) bb: u32,
    pub(super) nl: u32,
    pub(super) cols: u32,
    pub(super) _p: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct UnitParams {
    pub(super) bb: u32,
    pub(super) nl: u32,
    pub(super) o: u32,
    pub(super) has_labels: u32,
    pub(super) sigma2: f32,
    pub(super) _p: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ReduceParams {
    pub(super) bb: u32,
    pub(super) nl: u32,
    pub(super) ns: u32,
    pub(super) first: u32,
    pub(super) last: u32,
    pub(super) o: u32,
    pub(super) _p: [u32; 2],
}

/// Model weights on the device, uploaded once per analysis.
pub struct Weights {
    w: Vec<wgpu::Buffer>,
    b: Vec<Option<wgpu::Buffer>>,
}

impl Weights {
    pub fn upload(ctx: &GpuContext, model: &crate::Mlp) -> Result<Weights> {
        let mut w = Vec::new();
        let mut b = Vec::new();
        for d in model.layers() {
            let wf: Vec<f32> = d.weight.iter().map(|v| *v as f32).collect();
            w.push(kernels::upload(ctx, "weight", &wf)?);
            b.push(match &d.bias {
                Some(bias) => {
                    let bf: Vec<f32> = bias.iter().map(|v| *v as f32).collect();
                    Some(kernels::upload(ctx, "bias", &bf)?)
                }
                None => None,
            });
        }
        Ok(Weights { w, b })
    }

    /// Overwrites the weights with those of `model`, which has the same layer shapes.
    pub fn write(&self, ctx: &GpuContext, model: &crate::Mlp) {
        for ((d, w), b) in model.layers().iter().zip(&self.w).zip(&self.b) {
            let wf: Vec<f32> = d.weight.iter().map(|v| *v as f32).collect();
            ctx.queue.write_buffer(w, 0, bytemuck::cast_slice(&wf));
            if let (Some(bias), Some(b)) = (&d.bias, b) {
                let bf: Vec<f32> = bias.iter().map(|v| *v as f32).collect();
                ctx.queue.write_buffer(b, 0, bytemuck::cast_slice(&bf));
            }
        }
    }
}

/// Shapes of the work buffers for a batch of `bb` inputs.
pub struct Sizes {
    widths: Vec<usize>,
    o: usize,
    /// One Jacobian-chain buffer: B_{l→m}ᵀ rows (x, j) for the widest chain.
    ts: usize,
    per_sample: usize,
    n_max: usize,
}

impl Sizes {
    pub fn new(widths: &[usize], bb: usize, ns: usize) -> Sizes {
        let layers = widths.len() - 1;
        let o = widths[layers];
        // Unit layer l (width widths[l+1]) chains through the hidden layers m = l+1 … L−2
        // (widths[l+2 ..= L−1]); the last hidden layer and the head need no chain.
        let mut ts = 1;
        for l in 0..layers.saturating_sub(2) {
            let cols = widths[l + 2..layers].iter().copied().max().unwrap_or(1);
            ts = ts.max(bb * widths[l + 1] * cols);
        }
        let n_max = widths[1..].iter().copied().max().unwrap_or(o);
        Sizes {
            widths: widths.to_vec(),
            o,
            ts,
            per_sample: bb * ns * o,
            n_max,
        }
    }

    /// (largest buffer, all buffers) in bytes.
    pub fn bytes(&self, bb: usize) -> (u64, u64) {
        let units: usize = self.widths[1..].iter().sum();
        let dh = 2 * bb * self.n_max * self.o;
        let largest = self.ts.max(self.per_sample).max(dh) as u64 * 4;
        // z, a, σ', σ'' per layer; bases; Δ/Hd, C_l; G; the running sample statistics.
        let acts = self.widths.iter().sum::<usize>() * bb * 4;
        let per_unit = units * bb * (NB + 3 * self.o + 9) + bb * self.n_max * self.o;
        let total = (2 * self.ts + self.per_sample + acts + per_unit) as u64 * 4;
        (largest, total)
    }
}

/// The largest batch (≤ `wanted`) whose buffers fit the adapter's limits and the budget.
pub fn choose_batch(ctx: &GpuContext, widths: &[usize], ns: usize, wanted: usize) -> Result<usize> {
    let one = Sizes::new(widths, 1, ns);
    let (largest, total) = one.bytes(1);
    let by_binding = ctx.max_binding_bytes() / largest.max(1);
    let by_budget = MEMORY_BUDGET / total.max(1);
    let bb = (wanted.min(MAX_BATCH) as u64)
        .min(by_binding)
        .min(by_budget.max(1));
    if bb == 0 {
        return Err(Error::Gpu(format!(
            "one input needs a {largest}-byte buffer but '{}' allows {} bytes per binding; \
             the model is too wide for this adapter (use --engine cpu)",
            ctx.info.name,
            ctx.max_binding_bytes()
        )));
    }
    Ok(bb as usize)
}

/// Buffers and recorded dispatches for batches of `bb` inputs.
pub struct Plan {
    /// Consecutive runs of dispatches of one phase: (phase, end index).
    segments: Vec<(Phase, usize)>,
    pub bb: usize,
    pub x: wgpu::Buffer,
    labels: wgpu::Buffer,
    pub fwd: Forward,
    pub bases: Vec<wgpu::Buffer>,
    /// Per layer: Δ_l rows then Hd_l rows ([2·bb·n_l, O]).
    pub dh: Vec<wgpu::Buffer>,
    dispatches: Vec<Dispatch>,
    /// Family dispatches whose uniform must be rewritten with the batch's first input index.
    family_uniforms: Vec<(usize, FamilyParams)>,
}

/// The work buffers of a plan (those the bind groups alone keep alive are dropped with it
/// after recording).
struct Buffers {
    x: wgpu::Buffer,
    /// Fills unused read-only bindings.
    dummy: wgpu::Buffer,
    /// Fills unused read-write bindings.
    dummy_rw: wgpu::Buffer,
    fwd: Forward,
    eta: wgpu::Buffer,
    /// Per-sample residuals of one chunk ([bb, ns, O]).
    r: wgpu::Buffer,
    labels: wgpu::Buffer,
    r_data: wgpu::Buffer,
    /// The two Jacobian-chain buffers B_{l→m}ᵀ, alternating along the chain.
    ts: [wgpu::Buffer; 2],
    /// G_l[x] = W_{l+1}ᵀ Δ_{l+1}[x] of the backward pass.
    g: wgpu::Buffer,
    /// Per layer: the per-unit bases ([bb, NB, n_l]).
    bases: Vec<wgpu::Buffer>,
    /// Per layer and unit: count, then mean, M2, M3, M4 of β² and of g (reduce_samples.wgsl).
    running: Vec<wgpu::Buffer>,
    /// Δ_l and Hd_l of every layer ([2·bb·n_l, O], Δ rows first), kept for read-back.
    dh: Vec<wgpu::Buffer>,
    /// C_l = σ''_l ⊙ W_{l+1}ᵀΔ_{l+1} of every layer.
    cm: Vec<wgpu::Buffer>,
}

impl Buffers {
    fn new(
        ctx: &GpuContext,
        model: &crate::Mlp,
        sizes: &Sizes,
        bb: usize,
        ns: usize,
    ) -> Result<Buffers> {
        let (widths, o) = (&sizes.widths, sizes.o);
        let x = kernels::storage(ctx, "x", bb * widths[0])?;
        let dummy = kernels::storage(ctx, "dummy", 1)?;
        let dummy_rw = kernels::storage(ctx, "dummy", 1)?;
        let fwd = Forward::new(ctx, model, bb)?;
        let eta = kernels::storage(ctx, "eta", bb * o)?;
        let r = kernels::storage(ctx, "residuals", bb * ns * o)?;
        let labels = kernels::storage(ctx, "labels", bb * o)?;
        let r_data = kernels::storage(ctx, "r_data", bb * o)?;
        let ts = [
            kernels::storage(ctx, "chain", sizes.ts)?,
            kernels::storage(ctx, "chain", sizes.ts)?,
        ];
        let g = kernels::storage(ctx, "g", bb * sizes.n_max * o)?;
        let (mut bases, mut running, mut dh, mut cm) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for d in model.layers() {
            bases.push(kernels::storage(ctx, "bases", bb * NB * d.outputs())?);
            dh.push(kernels::storage(ctx, "delta_hd", 2 * bb * d.outputs() * o)?);
            cm.push(kernels::storage(ctx, "c_m", bb * d.outputs() * o)?);
            running.push(kernels::storage(ctx, "running", bb * d.outputs() * 9)?);
        }
        Ok(Buffers {
            x,
            dummy,
            dummy_rw,
            fwd,
            eta,
            r,
            labels,
            r_data,
            ts,
            g,
            bases,
            running,
            dh,
            cm,
        })
    }
}

/// The dispatches of one phase, in order.
struct Recorded {
    phase: Phase,
    dispatches: Vec<Dispatch>,
    /// Family dispatches (index in `dispatches`) whose uniform is rewritten per batch.
    family_uniforms: Vec<(usize, FamilyParams)>,
}

impl Recorded {
    fn new(phase: Phase, dispatches: Vec<Dispatch>) -> Recorded {
        Recorded {
            phase,
            dispatches,
            family_uniforms: Vec::new(),
        }
    }
}

fn u(v: usize) -> u32 {
    v as u32
}

/// Records the phases of the analysis pass on a plan's buffers, one method per phase.
struct Recorder<'a> {
    ctx: &'a GpuContext,
    model: &'a crate::Mlp,
    weights: &'a Weights,
    b: &'a Buffers,
    bb: usize,
    /// Samples per chunk.
    ns: usize,
    /// Samples in all.
    n: usize,
    o: usize,
    seed: u64,
    sigma2: f32,
    has_labels: bool,
    fam_consts: [(&'static str, f64); 1],
}

impl Recorder<'_> {
    /// The family kernel's uniform for a chunk of `ns_c` samples from `sample0` (the first
    /// input index is written per batch, [`Plan::prepare`]).
    fn family_params(&self, ns_c: usize, sample0: usize) -> FamilyParams {
        FamilyParams {
            bb: u(self.bb),
            o: u(self.o),
            ns: u(ns_c),
            sample0: u(sample0),
            input0: 0,
            key_lo: self.seed as u32,
            key_hi: (self.seed >> 32) as u32,
            sigma2: self.sigma2,
            ..Default::default()
        }
    }

    /// Records entry point `entry` of family.wgsl into `rec` as a family dispatch.
    fn push_family(
        &self,
        rec: &mut Recorded,
        entry: &'static str,
        fp: FamilyParams,
        groups: [u32; 3],
    ) -> Result<()> {
        let b = self.b;
        let buffers = [b.fwd.h(), &b.eta, &b.r, &b.labels, &b.r_data];
        rec.family_uniforms.push((rec.dispatches.len(), fp));
        rec.dispatches.push(kernels::dispatch(
            self.ctx,
            Shader::Family,
            entry,
            &self.fam_consts,
            &fp,
            &buffers,
            groups,
        )?);
        Ok(())
    }

    /// Phase 1: the forward pass: GEMMs and activations.
    fn forward(&self) -> Result<Recorded> {
        let b = self.b;
        let biases: Vec<Option<&wgpu::Buffer>> =
            self.weights.b.iter().map(Option::as_ref).collect();
        let ds = b.fwd.record(
            self.ctx,
            self.model,
            &b.x,
            &self.weights.w,
            &biases,
            &b.dummy,
        )?;
        Ok(Recorded::new(Phase::Forward, ds))
    }

    /// Phase 2: η and, with data labels, the data residuals.
    fn family(&self) -> Result<Recorded> {
        let mut rec = Recorded::new(Phase::Family, Vec::new());
        let fp = self.family_params(self.ns, 0);
        self.push_family(&mut rec, "eta_main", fp, groups_1d(self.bb as u64)?)?;
        if self.has_labels {
            self.push_family(&mut rec, "data_main", fp, groups_1d(self.bb as u64)?)?;
        }
        Ok(rec)
    }

    /// A dispatch of hessian.wgsl over bb·nl·cols invocations.
    fn hessian_dispatch(
        &self,
        entry: &'static str,
        nl: usize,
        cols: usize,
        bufs: [&wgpu::Buffer; 6],
    ) -> Result<Dispatch> {
        let p = HessParams {
            bb: u(self.bb),
            nl: u(nl),
            cols: u(cols),
            ..Default::default()
        };
        kernels::dispatch(
            self.ctx,
            Shader::Hessian,
            entry,
            &[],
            &p,
            &bufs,
            groups_1d(u64::from(p.bb) * u64::from(p.nl) * u64::from(p.cols))?,
        )
    }

    /// Phase 3: Δ_l and Hd_l by the reverse form of DESIGN §2 (hessian.wgsl): backward from
    /// the head, then for each layer the Jacobian chain through the hidden layers above it.
    fn hessian(&self) -> Result<Recorded> {
        let mut ds = self.backward()?;
        ds.extend(self.chains()?);
        Ok(Recorded::new(Phase::Hessian, ds))
    }

    /// The backward pass: Δ_l, C_l and the first term of Hd_l of every layer.
    fn backward(&self) -> Result<Vec<Dispatch>> {
        let (b, w, o, bb) = (self.b, &self.weights.w, self.o, self.bb);
        let layers = self.model.layers();
        let head = layers.len() - 1;
        let dummy = &b.dummy;
        let mut ds = vec![self.hessian_dispatch(
            "head_main",
            o,
            o,
            [dummy, dummy, dummy, dummy, &b.dh[head], &b.cm[head]],
        )?];
        for l in (0..head).rev() {
            let (nl, next) = (layers[l].outputs(), layers[l + 1].outputs());
            // G_l[x] = W_{l+1}ᵀ Δ_{l+1}[x], batched over the inputs.
            let mut gemm = Gemm::new(u(nl), u(o), u(next), true, false);
            gemm.batch = u(bb);
            gemm.params.stride_b = u(next * o);
            gemm.params.stride_c = u(nl * o);
            ds.push(gemm.dispatch(self.ctx, &w[l + 1], &b.dh[l + 1], &b.g, dummy)?);
            ds.push(self.hessian_dispatch(
                "backward_main",
                nl,
                o,
                [dummy, &b.fwd.s1[l], &b.fwd.s2[l], &b.g, &b.dh[l], &b.cm[l]],
            )?);
        }
        Ok(ds)
    }

    /// Per layer below the last hidden one: Hd_l += Σ_m (B_{l→m} ⊙ B_{l→m})ᵀ C_m along the
    /// Jacobian chain B_{l→m} through the hidden layers m above it.
    fn chains(&self) -> Result<Vec<Dispatch>> {
        let (b, w, o, bb) = (self.b, &self.weights.w, self.o, self.bb);
        let (s1, ts) = (&b.fwd.s1, &b.ts);
        let layers = self.model.layers();
        let head = layers.len() - 1;
        let mut ds = Vec::new();
        for l in 0..head.saturating_sub(1) {
            let nl = layers[l].outputs();
            let chain_in = |m: usize| if (m - l) % 2 == 1 { &ts[0] } else { &ts[1] };
            ds.push(self.hessian_dispatch(
                "chain_init_main",
                nl,
                layers[l + 1].outputs(),
                [
                    &w[l + 1],
                    &s1[l],
                    &b.dummy,
                    &b.dummy,
                    chain_in(l + 1),
                    &b.dummy_rw,
                ],
            )?);
            for m in l + 1..head {
                let nm = layers[m].outputs();
                // Hd_l[x] += (B_{l→m} ⊙ B_{l→m})ᵀ[x] · C_m[x], batched over the inputs.
                let mut gemm = Gemm::new(u(nl), u(o), u(nm), false, false);
                gemm.batch = u(bb);
                gemm.pow_a = 2;
                gemm.epilogue = Epilogue::Accumulate;
                gemm.params.stride_a = u(nl * nm);
                gemm.params.stride_b = u(nm * o);
                gemm.params.off_c = u(bb * nl * o);
                gemm.params.stride_c = u(nl * o);
                ds.push(gemm.dispatch(self.ctx, chain_in(m), &b.cm[m], &b.dh[l], &b.dummy)?);
                if m + 1 < head {
                    // B_{l→m+1}ᵀ = (σ'_m ⊙ B_{l→m}ᵀ) W_{m+1}ᵀ.
                    let next = layers[m + 1].outputs();
                    let mut gemm = Gemm::new(u(bb * nl), u(next), u(nm), false, true);
                    gemm.prologue = Prologue::ScaleRows;
                    gemm.params.pro_nl = u(nl);
                    ds.push(gemm.dispatch_scaled(
                        self.ctx,
                        chain_in(m),
                        &w[m + 1],
                        chain_in(m + 1),
                        &s1[m],
                    )?);
                }
            }
        }
        Ok(ds)
    }

    /// Phase 4: unit statistics (the per-unit bases) of every layer.
    fn unit_stats(&self) -> Result<Recorded> {
        let b = self.b;
        let mut ds = Vec::new();
        for (l, d) in self.model.layers().iter().enumerate() {
            let up = UnitParams {
                bb: u(self.bb),
                nl: u(d.outputs()),
                o: u(self.o),
                has_labels: u32::from(self.has_labels),
                sigma2: self.sigma2,
                ..Default::default()
            };
            ds.push(kernels::dispatch(
                self.ctx,
                Shader::UnitStats,
                "main",
                &self.fam_consts,
                &up,
                &[&b.dh[l], &b.eta, &b.r_data, &b.bases[l]],
                groups_1d((self.bb * d.outputs()) as u64)?,
            )?);
        }
        Ok(Recorded::new(Phase::UnitStats, ds))
    }

    /// Phase 5: per chunk of samples: labels and residuals once, then every layer's reduction.
    fn samples(&self) -> Result<Recorded> {
        let (b, bb, ns, n, o) = (self.b, self.bb, self.ns, self.n, self.o);
        let mut rec = Recorded::new(Phase::Samples, Vec::new());
        let chunks = n.div_ceil(ns);
        for c in 0..chunks {
            let ns_c = ns.min(n - c * ns);
            let fp = self.family_params(ns_c, c * ns);
            self.push_family(
                &mut rec,
                "sample_main",
                fp,
                [u(ns_c.div_ceil(64)), u(bb), 1],
            )?;
            for (l, d) in self.model.layers().iter().enumerate() {
                let nl = d.outputs();
                let lanes = reduce_lanes(bb * nl, ns_c, o);
                let rp = ReduceParams {
                    bb: u(bb),
                    nl: u(nl),
                    ns: u(ns_c),
                    first: u32::from(c == 0),
                    last: u32::from(c + 1 == chunks),
                    o: u(o),
                    ..Default::default()
                };
                rec.dispatches.push(kernels::dispatch(
                    self.ctx,
                    Shader::ReduceSamples,
                    "main",
                    &[("LANES", lanes as f64)],
                    &rp,
                    &[&b.dh[l], &b.r, &b.running[l], &b.bases[l]],
                    groups_per_item((bb * nl).div_ceil(64 / lanes) as u64)?,
                )?);
            }
        }
        Ok(rec)
    }
}

impl Plan {
    /// Allocates the buffers for batches of `bb` inputs and chunks of `ns` samples and
    /// records the analysis pass, phase by phase.
    pub fn new(
        ctx: &GpuContext,
        req: &Request<'_>,
        weights: &Weights,
        bb: usize,
        ns: usize,
    ) -> Result<Plan> {
        let model = req.model;
        let sizes = Sizes::new(&model.widths(), bb, ns);
        let kind = req.family.kind();
        let buffers = Buffers::new(ctx, model, &sizes, bb, ns)?;
        let rec = Recorder {
            ctx,
            model,
            weights,
            b: &buffers,
            bb,
            ns,
            n: req.options.samples,
            o: sizes.o,
            seed: req.options.seed,
            sigma2: match kind {
                FamilyKind::Gaussian { sigma2 } => sigma2 as f32,
                FamilyKind::Categorical | FamilyKind::Bernoulli | FamilyKind::Poisson => 1.0,
            },
            has_labels: req.labels.is_some(),
            fam_consts: [GpuFamily::from(kind).constant()],
        };
        // Only what the keys need: without Hd_l (e.g. `--keys fisher`) the backward pass alone,
        // without Monte-Carlo keys no sampling.
        let needs = req.needs();
        let phases = [
            rec.forward()?,
            rec.family()?,
            if needs.hessian {
                rec.hessian()?
            } else {
                Recorded::new(Phase::Hessian, rec.backward()?)
            },
            rec.unit_stats()?,
            if needs.samples {
                rec.samples()?
            } else {
                Recorded::new(Phase::Samples, Vec::new())
            },
        ];
        let (mut dispatches, mut segments, mut family_uniforms) =
            (Vec::new(), Vec::new(), Vec::new());
        for p in phases {
            let start = dispatches.len();
            family_uniforms.extend(p.family_uniforms.into_iter().map(|(i, fp)| (start + i, fp)));
            dispatches.extend(p.dispatches);
            segments.push((p.phase, dispatches.len()));
        }
        ctx.check()?;
        let Buffers {
            x,
            labels,
            fwd,
            bases,
            dh,
            ..
        } = buffers;
        Ok(Plan {
            segments,
            bb,
            x,
            labels,
            fwd,
            bases,
            dh,
            dispatches,
            family_uniforms,
        })
    }

    /// Uploads one batch (inputs `x` as rows, optional labels, index of its first input) and
    /// returns the dispatches of each phase, to record after the uploads.
    pub fn prepare(
        &self,
        ctx: &GpuContext,
        x: &[f32],
        labels: Option<&[f32]>,
        input0: usize,
    ) -> Vec<(Phase, &[Dispatch])> {
        ctx.queue.write_buffer(&self.x, 0, bytemuck::cast_slice(x));
        if let Some(l) = labels {
            ctx.queue
                .write_buffer(&self.labels, 0, bytemuck::cast_slice(l));
        }
        for (i, p) in &self.family_uniforms {
            let p = FamilyParams {
                input0: input0 as u32,
                ..*p
            };
            ctx.queue
                .write_buffer(self.dispatches[*i].uniform(), 0, bytemuck::bytes_of(&p));
        }
        let mut start = 0;
        self.segments
            .iter()
            .map(|(phase, end)| {
                let seg = (*phase, &self.dispatches[start..*end]);
                start = *end;
                seg
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample chunk and lane count keeps one invocation's loop within the bound, with a
    /// power-of-two lane count ≤ 64, and many units get one lane each when the bound allows.
    #[test]
    fn reduce_lanes_respect_the_loop_bound() {
        for o in [1, 2, 10, 63, 64, 65, 100, 1000, 16_384] {
            for n in [2, 3, 16, 64, 65, 255, 256, 257, 1000, 4096] {
                let ns = sample_chunk(o, n);
                for units in [1, 100, MANY_UNITS, 100_000] {
                    let lanes = reduce_lanes(units, ns, o);
                    assert!(lanes.is_power_of_two() && lanes <= 64, "{lanes}");
                    assert!(
                        ns.div_ceil(lanes) * o <= MAX_REDUCE_WORK,
                        "o {o} ns {ns} {lanes}"
                    );
                    if units >= MANY_UNITS && ns * o <= MAX_REDUCE_WORK {
                        assert_eq!(lanes, 1);
                    }
                    if units < MANY_UNITS {
                        assert!(lanes >= ns.min(64), "few units: a lane per sample");
                    }
                }
            }
        }
    }
}

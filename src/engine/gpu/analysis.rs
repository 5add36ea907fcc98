//! The analysis pass on the GPU (DESIGN §1–§4), recorded once per batch shape as a plan and
//! replayed for every batch of inputs in one command buffer:
//! forward (GEMM + activation) → η, data residuals → for every layer: Δ_l and Hd_l by
//! forward-over-forward propagation → per-unit statistics → per sample chunk: labels and
//! residuals, β = Δ_l r and g = Hd_l r (batched GEMMs), Welford/Chan reductions over samples.
//! The per-unit bases and layer inputs come back to the host, which expands them to parameters
//! in f64 with the same accumulator as the CPU engine.

use super::accumulate::{AccumPlan, DeviceSums, FLUSH_INPUTS};
use super::context::GpuContext;
use super::forward::Forward;
use super::kernels::{
    self, groups_1d, groups_per_item, Dispatch, Epilogue, Gemm, Prologue, Staging,
};
use super::shaders::{Shader, NB};
use crate::engine::accumulate::Accumulator;
use crate::engine::channels::scalars_of;
use crate::engine::cpu::{InputStats, UnitStats};
use crate::engine::{validate, Request};
use crate::family::{FamilyKind, Label};
use crate::report::Report;
use crate::theory::{input_theory, InputTheory, LayerData, Spectrum};
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use rayon::prelude::*;

/// Samples per chunk: the residual buffer holds at most this many labels per input.
const SAMPLE_CHUNK: usize = 256;
/// Bound on ⌈ns/64⌉·O, the multiply-adds of one invocation of the sample reduction
/// (lavapipe silently stops very long loops).
const MAX_REDUCE_WORK: usize = 16_384;

/// Samples per chunk for O outputs and N samples.
fn sample_chunk(o: usize, n: usize) -> usize {
    let by_work = (MAX_REDUCE_WORK / o.max(1)).max(1) * 64;
    n.min(SAMPLE_CHUNK).min(by_work).max(1)
}
/// Budget for all work buffers of one batch.
const MEMORY_BUDGET: u64 = 1 << 30;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct FamilyParams {
    bb: u32,
    o: u32,
    ns: u32,
    sample0: u32,
    input0: u32,
    key_lo: u32,
    key_hi: u32,
    _p0: u32,
    sigma2: f32,
    _p1: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct HessParams {
    bb: u32,
    nl: u32,
    cols: u32,
    _p: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct UnitParams {
    bb: u32,
    nl: u32,
    o: u32,
    has_labels: u32,
    sigma2: f32,
    _p: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    bb: u32,
    nl: u32,
    ns: u32,
    first: u32,
    last: u32,
    o: u32,
    _p: [u32; 2],
}

/// Model weights on the device, uploaded once per analysis.
struct Weights {
    w: Vec<wgpu::Buffer>,
    b: Vec<Option<wgpu::Buffer>>,
}

impl Weights {
    fn upload(ctx: &GpuContext, model: &crate::Mlp) -> Result<Weights> {
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
}

/// Shapes of the work buffers for a batch of `bb` inputs.
struct Sizes {
    widths: Vec<usize>,
    o: usize,
    /// One Jacobian-chain buffer: B_{l→m}ᵀ rows (x, j) for the widest chain.
    ts: usize,
    per_sample: usize,
    n_max: usize,
}

impl Sizes {
    fn new(widths: &[usize], bb: usize, ns: usize) -> Sizes {
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
    fn bytes(&self, bb: usize) -> (u64, u64) {
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
fn choose_batch(ctx: &GpuContext, widths: &[usize], ns: usize, wanted: usize) -> Result<usize> {
    let one = Sizes::new(widths, 1, ns);
    let (largest, total) = one.bytes(1);
    let by_binding = ctx.max_binding_bytes() / largest.max(1);
    let by_budget = MEMORY_BUDGET / total.max(1);
    let bb = (wanted as u64).min(by_binding).min(by_budget.max(1));
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

/// Phases of the analysis pass, timed separately when the adapter has timestamp queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Forward,
    Family,
    Hessian,
    UnitStats,
    Samples,
    Accumulate,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Forward,
        Phase::Family,
        Phase::Hessian,
        Phase::UnitStats,
        Phase::Samples,
        Phase::Accumulate,
    ];
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
    pub seconds: [f64; 6],
    /// Whether the adapter measured them.
    pub measured: bool,
    /// Wall seconds of the host's per-input spectra and bounds.
    pub host_seconds: f64,
}

/// Buffers and recorded dispatches for batches of `bb` inputs.
struct Plan {
    /// Consecutive runs of dispatches of one phase: (phase, end index).
    segments: Vec<(Phase, usize)>,
    bb: usize,
    x: wgpu::Buffer,
    labels: wgpu::Buffer,
    fwd: Forward,
    bases: Vec<wgpu::Buffer>,
    /// Per layer: Δ_l rows then Hd_l rows ([2·bb·n_l, O]).
    dh: Vec<wgpu::Buffer>,
    dispatches: Vec<Dispatch>,
    /// Family dispatches whose uniform must be rewritten with the batch's first input index.
    family_uniforms: Vec<(usize, FamilyParams)>,
}

impl Plan {
    #[allow(clippy::too_many_lines)]
    fn new(
        ctx: &GpuContext,
        req: &Request<'_>,
        weights: &Weights,
        bb: usize,
        ns: usize,
    ) -> Result<Plan> {
        let model = req.model;
        let widths = model.widths();
        let layers = model.layers();
        let nl_count = layers.len();
        let sizes = Sizes::new(&widths, bb, ns);
        let o = sizes.o;
        let n = req.options.samples;
        let (fam_code, sigma2) = match req.family.kind() {
            FamilyKind::Categorical => (0.0, 1.0f32),
            FamilyKind::Gaussian { sigma2 } => (1.0, sigma2 as f32),
        };
        let has_labels = req.labels.is_some();
        let u = |v: usize| v as u32;

        let x = kernels::storage(ctx, "x", bb * widths[0])?;
        let dummy = kernels::storage(ctx, "dummy", 1)?;
        let dummy_rw = kernels::storage(ctx, "dummy", 1)?;
        let fwd = Forward::new(ctx, model, bb)?;
        let (s1, s2) = (&fwd.s1, &fwd.s2);
        let eta = kernels::storage(ctx, "eta", bb * o)?;
        let r = kernels::storage(ctx, "residuals", bb * ns * o)?;
        let labels = kernels::storage(ctx, "labels", bb * o)?;
        let r_data = kernels::storage(ctx, "r_data", bb * o)?;
        let ts = [
            kernels::storage(ctx, "chain", sizes.ts)?,
            kernels::storage(ctx, "chain", sizes.ts)?,
        ];
        let g = kernels::storage(ctx, "g", bb * sizes.n_max * o)?;
        // Per unit: count, then mean, M2, M3, M4 of β² and of g (reduce_samples.wgsl).
        let running = kernels::storage(ctx, "running", bb * sizes.n_max * 9)?;
        let mut bases = Vec::new();
        // Δ_l and Hd_l of every layer ([2·bb·n_l, O], Δ rows first), kept for read-back, and
        // C_l = σ''_l ⊙ W_{l+1}ᵀΔ_{l+1} of the hidden layers.
        let mut dh = Vec::new();
        let mut cm = Vec::new();
        for d in layers {
            bases.push(kernels::storage(ctx, "bases", bb * NB * d.outputs())?);
            dh.push(kernels::storage(ctx, "delta_hd", 2 * bb * d.outputs() * o)?);
            cm.push(kernels::storage(ctx, "c_m", bb * d.outputs() * o)?);
        }

        let mut ds: Vec<Dispatch> = Vec::new();
        let mut family_uniforms = Vec::new();
        let fam_consts = [("FAMILY", fam_code)];
        let fam_params = |ns_c: usize, sample0: usize| FamilyParams {
            bb: u(bb),
            o: u(o),
            ns: u(ns_c),
            sample0: u(sample0),
            input0: 0,
            key_lo: req.options.seed as u32,
            key_hi: (req.options.seed >> 32) as u32,
            sigma2,
            ..Default::default()
        };

        // 1. Forward pass.
        let biases: Vec<Option<&wgpu::Buffer>> = weights.b.iter().map(Option::as_ref).collect();
        ds.extend(fwd.record(ctx, model, &x, &weights.w, &biases, &dummy)?);
        let mut segments = vec![(Phase::Forward, ds.len())];
        let h = fwd.h();
        let fam_buffers = [h, &eta, &r, &labels, &r_data];
        // 2. η and the data residuals.
        let fp = fam_params(ns, 0);
        family_uniforms.push((ds.len(), fp));
        ds.push(kernels::dispatch(
            ctx,
            Shader::Family,
            "eta_main",
            &fam_consts,
            &fp,
            &fam_buffers,
            groups_1d(bb as u64)?,
        )?);
        if has_labels {
            family_uniforms.push((ds.len(), fp));
            ds.push(kernels::dispatch(
                ctx,
                Shader::Family,
                "data_main",
                &fam_consts,
                &fp,
                &fam_buffers,
                groups_1d(bb as u64)?,
            )?);
        }

        segments.push((Phase::Family, ds.len()));
        // 3. Δ_l and Hd_l by the reverse form of DESIGN §2 (hessian.wgsl): backward from
        // the head, then for each layer the Jacobian chain through the hidden layers above it.
        let head = nl_count - 1;
        let hp = |nl: usize, cols: usize| HessParams {
            bb: u(bb),
            nl: u(nl),
            cols: u(cols),
            ..Default::default()
        };
        let hessian = |entry: &'static str, p: HessParams, bufs: [&wgpu::Buffer; 6]| {
            kernels::dispatch(
                ctx,
                Shader::Hessian,
                entry,
                &[],
                &p,
                &bufs,
                groups_1d(u64::from(p.bb) * u64::from(p.nl) * u64::from(p.cols))?,
            )
        };
        ds.push(hessian(
            "head_main",
            hp(o, o),
            [&dummy, &dummy, &dummy, &dummy, &dh[head], &cm[head]],
        )?);
        for l in (0..head).rev() {
            let (nl, next) = (layers[l].outputs(), layers[l + 1].outputs());
            // G_l[x] = W_{l+1}ᵀ Δ_{l+1}[x], batched over the inputs.
            let mut gemm = Gemm::new(u(nl), u(o), u(next), true, false);
            gemm.batch = u(bb);
            gemm.params.stride_b = u(next * o);
            gemm.params.stride_c = u(nl * o);
            ds.push(gemm.dispatch(ctx, &weights.w[l + 1], &dh[l + 1], &g, &dummy)?);
            ds.push(hessian(
                "backward_main",
                hp(nl, o),
                [&dummy, &s1[l], &s2[l], &g, &dh[l], &cm[l]],
            )?);
        }
        for l in 0..head.saturating_sub(1) {
            let nl = layers[l].outputs();
            let chain_in = |m: usize| if (m - l) % 2 == 1 { &ts[0] } else { &ts[1] };
            ds.push(hessian(
                "chain_init_main",
                hp(nl, layers[l + 1].outputs()),
                [
                    &weights.w[l + 1],
                    &s1[l],
                    &dummy,
                    &dummy,
                    chain_in(l + 1),
                    &dummy_rw,
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
                ds.push(gemm.dispatch(ctx, chain_in(m), &cm[m], &dh[l], &dummy)?);
                if m + 1 < head {
                    // B_{l→m+1}ᵀ = (σ'_m ⊙ B_{l→m}ᵀ) W_{m+1}ᵀ.
                    let next = layers[m + 1].outputs();
                    let mut gemm = Gemm::new(u(bb * nl), u(next), u(nm), false, true);
                    gemm.prologue = Prologue::ScaleRows;
                    gemm.params.pro_nl = u(nl);
                    ds.push(gemm.dispatch_scaled(
                        ctx,
                        chain_in(m),
                        &weights.w[m + 1],
                        chain_in(m + 1),
                        &s1[m],
                    )?);
                }
            }
        }
        segments.push((Phase::Hessian, ds.len()));
        // 4. Per layer: unit statistics, then sample reductions.
        for (l, d) in layers.iter().enumerate() {
            let nl = d.outputs();
            let up = UnitParams {
                bb: u(bb),
                nl: u(nl),
                o: u(o),
                has_labels: u32::from(has_labels),
                sigma2,
                ..Default::default()
            };
            ds.push(kernels::dispatch(
                ctx,
                Shader::UnitStats,
                "main",
                &fam_consts,
                &up,
                &[&dh[l], &eta, &r_data, &bases[l]],
                groups_1d((bb * nl) as u64)?,
            )?);
            segments.push((Phase::UnitStats, ds.len()));
            let chunks = n.div_ceil(ns);
            for c in 0..chunks {
                let ns_c = ns.min(n - c * ns);
                let fp = fam_params(ns_c, c * ns);
                family_uniforms.push((ds.len(), fp));
                ds.push(kernels::dispatch(
                    ctx,
                    Shader::Family,
                    "sample_main",
                    &fam_consts,
                    &fp,
                    &fam_buffers,
                    [u(ns_c.div_ceil(64)), u(bb), 1],
                )?);
                let rp = ReduceParams {
                    bb: u(bb),
                    nl: u(nl),
                    ns: u(ns_c),
                    first: u32::from(c == 0),
                    last: u32::from(c + 1 == chunks),
                    o: u(o),
                    ..Default::default()
                };
                ds.push(kernels::dispatch(
                    ctx,
                    Shader::ReduceSamples,
                    "main",
                    &[],
                    &rp,
                    &[&dh[l], &r, &running, &bases[l]],
                    groups_per_item((bb * nl) as u64)?,
                )?);
            }
            segments.push((Phase::Samples, ds.len()));
        }
        ctx.check()?;
        Ok(Plan {
            segments,
            dh,
            bb,
            x,
            labels,
            fwd,
            bases,
            dispatches: ds,
            family_uniforms,
        })
    }

    /// Uploads one batch (inputs `x` as rows, optional labels, index of its first input) and
    /// returns the dispatches of each phase, to record after the uploads.
    fn prepare(
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

/// Records compute passes, one per phase segment, with device timestamps when the adapter
/// has them; the timestamps are resolved into small buffers read once at the end.
struct Timer {
    on: bool,
    resolved: Vec<(Vec<Phase>, wgpu::Buffer)>,
}

impl Timer {
    fn new(ctx: &GpuContext) -> Timer {
        Timer {
            on: ctx.has_timestamps(),
            resolved: Vec::new(),
        }
    }

    fn record(
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
    fn finish(self, ctx: &GpuContext) -> Result<PhaseTimes> {
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

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| f64::from(*x)).collect()
}

/// What comes back to the host per batch besides h: Δ_l/Hd_l (for the per-tensor bounds), the
/// hidden layers' activations (for those bounds and for host accumulation) and the bases
/// (host accumulation, with per-input results).
#[derive(Clone, Copy)]
struct Readback {
    dh: bool,
    act: bool,
    bases: bool,
}

impl Readback {
    fn of(options: &crate::engine::AnalysisOptions) -> Readback {
        Readback {
            dh: options.tensor_bounds,
            act: options.tensor_bounds || options.per_input,
            bases: options.per_input,
        }
    }
}

/// The read-back regions of a batch: h, then per layer those `what` asks for.
fn batch_regions<'a>(
    plan: &'a Plan,
    model: &crate::Mlp,
    count: usize,
    what: Readback,
) -> Vec<(&'a wgpu::Buffer, usize)> {
    let o = model.output_dim();
    let layers = model.layers();
    let mut regions = vec![(plan.fwd.h(), count * o)];
    for (l, d) in layers.iter().enumerate() {
        if what.dh {
            regions.push((&plan.dh[l], 2 * count * d.outputs() * o));
        }
        if what.act && l + 1 < layers.len() {
            regions.push((&plan.fwd.act[l], count * d.outputs()));
        }
        if what.bases {
            regions.push((&plan.bases[l], count * NB * d.outputs()));
        }
    }
    regions
}

/// The read-back regions of [`batch_regions`], by name (empty vectors where not read).
struct BatchData {
    count: usize,
    h: Vec<f32>,
    dh: Vec<Vec<f32>>,
    act: Vec<Vec<f32>>,
    bases: Vec<Vec<f32>>,
}

impl BatchData {
    fn new(model: &crate::Mlp, count: usize, what: Readback, data: Vec<Vec<f32>>) -> BatchData {
        let layers = model.layers().len();
        let mut it = data.into_iter();
        let mut next = || it.next().expect("one vector per read-back region");
        let h = next();
        let (mut dh, mut act, mut bases) = (Vec::new(), Vec::new(), Vec::new());
        for l in 0..layers {
            if what.dh {
                dh.push(next());
            }
            if what.act && l + 1 < layers {
                act.push(next());
            }
            if what.bases {
                bases.push(next());
            }
        }
        BatchData {
            count,
            h,
            dh,
            act,
            bases,
        }
    }
}

/// The spectral quantities of input `i` of the batch from its output h (MATH §5, §7).
fn input_spectrum(req: &Request<'_>, data: &BatchData, i: usize) -> Result<Spectrum> {
    let o = req.model.output_dim();
    let h = to_f64(&data.h[i * o..(i + 1) * o]);
    Spectrum::new(req.family, &req.family.eta(&h))
}

/// The host's share of input `i` of a batch: the theory layer's per-tensor bounds from Δ_l,
/// Hd_l and the layer inputs (when asked for), and, when the bases were read back, the
/// per-input statistics for the host accumulator.
fn host_input(
    req: &Request<'_>,
    data: &BatchData,
    i: usize,
    spectrum: &Spectrum,
    x: ndarray::ArrayView1<'_, f64>,
) -> Result<(Option<InputStats>, Option<InputTheory>)> {
    let model = req.model;
    let o = model.output_dim();
    let count = data.count;
    let mut layer_inputs = vec![x.to_owned()];
    for (act, d) in data.act.iter().zip(model.layers()) {
        let nl = d.outputs();
        layer_inputs.push(Array1::from(to_f64(&act[i * nl..(i + 1) * nl])));
    }
    let theory = if data.dh.is_empty() {
        None
    } else {
        let mut dh = Vec::new();
        for (all, d) in data.dh.iter().zip(model.layers()) {
            let nl = d.outputs();
            // Δ_l rows of input i, then its Hd_l rows (count·n_l rows further).
            let rows_of = |start: usize| {
                Array2::from_shape_vec((nl, o), to_f64(&all[start..start + nl * o]))
                    .map_err(|e| Error::Gpu(format!("Δ/Hd shape: {e}")))
            };
            dh.push((rows_of(i * nl * o)?, rows_of((count + i) * nl * o)?));
        }
        let layers: Vec<LayerData<'_>> = dh
            .iter()
            .zip(&layer_inputs)
            .map(|((delta, hd), a)| LayerData {
                delta: delta.view(),
                hd: hd.view(),
                layer_input: a.view(),
            })
            .collect();
        Some(input_theory(spectrum, &layers)?)
    };
    if data.bases.is_empty() {
        return Ok((None, theory));
    }
    let units = model
        .layers()
        .iter()
        .zip(&data.bases)
        .map(|(d, b)| {
            let nl = d.outputs();
            let b_i = &b[i * NB * nl..(i + 1) * NB * nl];
            Array2::from_shape_vec((NB, nl), to_f64(b_i))
                .map(|bases| UnitStats { bases })
                .map_err(|e| Error::Gpu(format!("bases shape: {e}")))
        })
        .collect::<Result<_>>()?;
    let stats = InputStats {
        layer_inputs,
        units,
        scalars: scalars_of(spectrum),
    };
    Ok((Some(stats), theory))
}

/// Uploads batch (`start`, `count`) and submits its analysis pass followed by the copies of
/// its results into `staging`.
#[allow(clippy::too_many_arguments)]
fn submit_batch(
    ctx: &GpuContext,
    req: &Request<'_>,
    plan: &Plan,
    start: usize,
    count: usize,
    what: Readback,
    timer: &mut Timer,
    staging: &mut Staging,
) -> Result<()> {
    let rows = req.inputs.slice(ndarray::s![start..start + count, ..]);
    let xf: Vec<f32> = rows.iter().map(|v| *v as f32).collect();
    let lf: Option<Vec<f32>> = req.labels.map(|l| {
        l[start..start + count]
            .iter()
            .flat_map(|y| match y {
                Label::Class(c) => vec![*c as f32],
                Label::Target(t) => t.iter().map(|v| *v as f32).collect(),
            })
            .collect()
    });
    let segments = plan.prepare(ctx, &xf, lf.as_deref(), start);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    timer.record(ctx, &mut enc, &segments);
    staging.copy(ctx, &mut enc, &batch_regions(plan, req.model, count, what))?;
    ctx.queue.submit([enc.finish()]);
    Ok(())
}

/// Runs the whole analysis on the GPU; the run information carries the phase timings.
pub fn analyze(req: &Request<'_>) -> Result<Report> {
    let (mut report, times) = analyze_timed(req)?;
    if times.measured {
        report.run.device_phase_s = Phase::ALL
            .iter()
            .zip(times.seconds)
            .map(|(p, s)| (p.name().to_string(), s))
            .collect();
    }
    report.run.host_theory_s = Some(times.host_seconds);
    Ok(report)
}

/// Runs the whole analysis on the GPU and returns the device time of each phase.
///
/// Batches are pipelined: while the host computes the spectra and bounds of batch k (from its
/// h, Δ_l, Hd_l), the device runs batch k+1; the accumulation of batch k over its inputs runs
/// on the device as soon as its per-input scalars are uploaded. With per-input results the
/// bases come back instead and the host expands them.
pub fn analyze_timed(req: &Request<'_>) -> Result<(Report, PhaseTimes)> {
    validate(req)?;
    let ctx = GpuContext::shared()?;
    let model = req.model;
    let widths = model.widths();
    let b = req.inputs.nrows();
    let ns = sample_chunk(model.output_dim(), req.options.samples);
    let bb = choose_batch(&ctx, &widths, ns, req.options.batch_size.max(1).min(b))?;
    let weights = Weights::upload(&ctx, model)?;
    let has_labels = req.labels.is_some();
    let mut acc = Accumulator::new(model, b, req.options.per_input, has_labels);
    let what = Readback::of(&req.options);
    let mut sums = if what.bases {
        None
    } else {
        Some(DeviceSums::new(
            &ctx,
            model,
            req.family.kind(),
            has_labels,
            bb,
        )?)
    };
    let batches: Vec<(usize, usize)> = (0..b).step_by(bb).map(|s| (s, bb.min(b - s))).collect();
    // One plan per batch size (all but the last batch share one).
    let mut plans: Vec<(Plan, Option<AccumPlan>)> = Vec::new();
    for &(_, count) in &batches {
        if plans.iter().any(|(p, _)| p.bb == count) {
            continue;
        }
        let plan = Plan::new(&ctx, req, &weights, count, ns)?;
        let accum = match &sums {
            Some(s) => {
                let mut inputs = vec![&plan.x];
                inputs.extend(&plan.fwd.act);
                Some(AccumPlan::new(&ctx, s, &plan.bases, &inputs, count)?)
            }
            None => None,
        };
        plans.push((plan, accum));
    }
    let plan_for = |count: usize| {
        plans
            .iter()
            .find(|(p, _)| p.bb == count)
            .expect("a plan per batch size")
    };
    let mut timer = Timer::new(&ctx);
    let mut host_seconds = 0.0;
    let mut staging = [Staging::default(), Staging::default()];
    let (start0, count0) = batches[0];
    submit_batch(
        &ctx,
        req,
        &plan_for(count0).0,
        start0,
        count0,
        what,
        &mut timer,
        &mut staging[0],
    )?;
    for (k, &(start, count)) in batches.iter().enumerate() {
        let (plan, accum) = plan_for(count);
        let data = staging[k % 2].read(&ctx, &batch_regions(plan, model, count, what))?;
        let data = BatchData::new(model, count, what, data);
        let host_started = std::time::Instant::now();
        let spectra: Vec<Spectrum> = (0..count)
            .into_par_iter()
            .map(|i| input_spectrum(req, &data, i))
            .collect::<Result<_>>()?;
        host_seconds += host_started.elapsed().as_secs_f64();
        if let (Some(sums), Some(accum)) = (sums.as_mut(), accum) {
            if sums.merged + count > FLUSH_INPUTS {
                sums.flush(&ctx, &mut acc)?;
            }
            let scalars: Vec<f32> = spectra
                .iter()
                .flat_map(|s| scalars_of(s).map(|v| v as f32))
                .collect();
            let dispatches = accum.prepare(&ctx, sums, &scalars);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            timer.record(&ctx, &mut enc, &[(Phase::Accumulate, dispatches)]);
            ctx.queue.submit([enc.finish()]);
        }
        if let Some(&(next, next_count)) = batches.get(k + 1) {
            submit_batch(
                &ctx,
                req,
                &plan_for(next_count).0,
                next,
                next_count,
                what,
                &mut timer,
                &mut staging[(k + 1) % 2],
            )?;
        }
        // Host side, in parallel over the batch's inputs, while the device runs the next batch.
        let host_started = std::time::Instant::now();
        let rows = req.inputs.slice(ndarray::s![start..start + count, ..]);
        let per_input: Vec<(Option<InputStats>, Option<InputTheory>)> = (0..count)
            .into_par_iter()
            .map(|i| host_input(req, &data, i, &spectra[i], rows.row(i)))
            .collect::<Result<_>>()?;
        for (i, (stats, theory)) in per_input.iter().enumerate() {
            if let Some(stats) = stats {
                acc.add(start + i, stats);
            }
            if let Some(theory) = theory {
                acc.add_theory(start + i, theory);
            }
        }
        host_seconds += host_started.elapsed().as_secs_f64();
        if let Some(p) = req.progress {
            p(start + count, b);
        }
    }
    if let Some(s) = sums.as_mut() {
        s.flush(&ctx, &mut acc)?;
    }
    let mut times = timer.finish(&ctx)?;
    times.host_seconds = host_seconds;
    Ok((acc.finish(req, "gpu", &ctx.describe())?, times))
}

/// Cost model: floating-point operations per input of each [`Phase`] (GEMMs and the main
/// elementwise work), for widths [in, …, out] (layers with biases), N sampled labels and
/// `channels` accumulated channel keys ([`accumulated_channels`]).
pub fn phase_flops(widths: &[usize], samples: usize, channels: usize) -> [f64; 6] {
    let layers = widths.len() - 1;
    let o = widths[layers] as f64;
    let n: Vec<f64> = widths.iter().map(|&w| w as f64).collect();
    let forward: f64 = (1..=layers)
        .map(|l| 2.0 * n[l] * n[l - 1] + 10.0 * n[l])
        .sum();
    let family = samples as f64 * o * 4.0 + 4.0 * o;
    // Reverse form (DESIGN §2), unit layers n[1..=L]: backward G_l = W_{l+1}ᵀΔ_{l+1}
    // (2·n_l·n_{l+1}·O) and Δ_l, C_l, Hd_l (3·n_l·O); for every hidden m > l the contraction
    // (2·n_l·n_m·O + n_l·n_m) and, below the last hidden layer, one chain GEMM
    // (2·n_l·n_m·n_{m+1} + n_l·n_m), after the chain's start (n_l·n_{l+1}).
    let mut hessian = 0.0;
    for l in 1..layers {
        hessian += 2.0 * n[l] * n[l + 1] * o + 3.0 * n[l] * o;
        if l + 1 < layers {
            hessian += n[l] * n[l + 1];
        }
        for m in l + 1..layers {
            hessian += 2.0 * n[l] * n[m] * o + n[l] * n[m];
            if m + 1 < layers {
                hessian += 2.0 * n[l] * n[m] * n[m + 1] + n[l] * n[m];
            }
        }
    }
    let units: f64 = n[1..].iter().sum();
    let unit_stats = units * 16.0 * o;
    let samples_f = units * (4.0 * o * samples as f64 + 8.0 * samples as f64);
    // Per layer: the GEMM 2·C·n_l·(n_{l−1}+1), the scaling C·n_l and two Welford updates
    // (≈ 12 flops) per entry.
    let c = channels as f64;
    let accumulate: f64 = (1..=layers)
        .map(|l| (2.0 * c + 12.0) * n[l] * (n[l - 1] + 1.0) + c * n[l])
        .sum();
    [forward, family, hessian, unit_stats, samples_f, accumulate]
}

/// Bytes of device work buffers for a batch of `bb` inputs (weights excluded; the
/// accumulation's sums, [`accumulated_channels`] of them, included).
pub fn work_bytes(widths: &[usize], bb: usize, samples: usize, channels: usize) -> u64 {
    let pass = Sizes::new(widths, bb, samples.min(SAMPLE_CHUNK))
        .bytes(bb)
        .1;
    let entries: usize = widths.windows(2).map(|w| w[1] * (w[0] + 1)).sum();
    let widest = widths[1..].iter().max().copied().unwrap_or(1);
    let accumulate = (channels + 4) * entries + bb * channels * widest;
    pass + 4 * accumulate as u64
}

/// The batch size the GPU engine will use for `wanted` inputs per batch.
pub fn batch_size(
    ctx: &GpuContext,
    widths: &[usize],
    samples: usize,
    wanted: usize,
) -> Result<usize> {
    choose_batch(
        ctx,
        widths,
        sample_chunk(widths[widths.len() - 1], samples),
        wanted,
    )
}

//! The GPU engine's driver (DESIGN §1–§4): plans per batch shape, batches pipelined between
//! the device and the host, accumulation over inputs on the device, and the cost model of the
//! kernels. The per-parameter results are merged in f64 by the same accumulator as the CPU
//! engine.

use super::accumulate::{AccumPlan, DeviceSums, FLUSH_INPUTS};
use super::context::GpuContext;
use super::host::{
    check_outputs, host_input, input_scalars, input_spectrum, spectrum_extremes, Readback,
    ReadbackLayout,
};
use super::kernels::Staging;
use super::plan::{choose_batch, sample_chunk, Plan, Sizes, Weights, SAMPLE_CHUNK};
use super::timer::Timer;
pub use super::timer::{Phase, PhaseTimes};
use crate::engine::accumulate::Accumulator;
use crate::engine::stats::InputStats;
use crate::engine::{validate, KeySet, Request};
use crate::family::FamilyKind;
use crate::family::Label;
use crate::model::Activation;
use crate::report::{Engine, Report};
use crate::theory::{InputTheory, Spectrum};
use crate::{Error, Result};
use ndarray::ArrayView2;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

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
    // Labels are keyed by the global input index (AnalysisOptions::input_offset).
    let global = req.options.input_offset as usize + start;
    let segments = plan.prepare(ctx, &xf, lf.as_deref(), global);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    timer.record(ctx, &mut enc, &segments);
    let layout = ReadbackLayout::new(plan, req.model, count, what);
    staging.copy(ctx, &mut enc, layout.regions())?;
    ctx.queue.submit([enc.finish()]);
    Ok(())
}

/// The shape of an analysis: everything its plans depend on besides the weights' values.
#[derive(Clone, Debug, PartialEq)]
struct ShapeKey {
    widths: Vec<usize>,
    activations: Vec<Activation>,
    biases: Vec<bool>,
    family: FamilyKind,
    samples: usize,
    seed: u64,
    labels: bool,
    per_input: bool,
    /// The report's keys (the channels and the host's work depend on them).
    keys: KeySet,
    bound_keys: bool,
    /// Batch size, sample chunk and the last (possibly smaller) batch.
    batches: (usize, usize, usize),
}

impl ShapeKey {
    fn new(req: &Request<'_>, bb: usize, ns: usize, last: usize) -> ShapeKey {
        let model = req.model;
        ShapeKey {
            widths: model.widths(),
            activations: model.activations().to_vec(),
            biases: model.layers().iter().map(|d| d.bias.is_some()).collect(),
            family: req.family.kind(),
            samples: req.options.samples,
            seed: req.options.seed,
            labels: req.labels.is_some(),
            per_input: req.options.per_input,
            keys: req.report_keys(),
            bound_keys: req.options.bounds.keys(),
            batches: (bb, ns, last),
        }
    }
}

/// Everything an analysis shape needs on the device: the weights' buffers, a plan per batch
/// size (with its accumulation) and the device sums. Kept after a successful run, so that
/// the next analysis of the same shape (a training loop, repeated benchmarks) only uploads
/// the new weights instead of rebuilding buffers, bind groups and uniforms.
pub(crate) struct Prepared {
    key: ShapeKey,
    weights: Weights,
    plans: Vec<(Plan, Option<AccumPlan>)>,
    sums: Option<DeviceSums>,
    /// Read-back buffers of alternate batches.
    staging: [Staging; 2],
}

impl Prepared {
    fn new(
        ctx: &GpuContext,
        req: &Request<'_>,
        key: ShapeKey,
        batches: &[(usize, usize)],
        what: Readback,
    ) -> Result<Prepared> {
        let model = req.model;
        let (bb, ns, _) = key.batches;
        let weights = Weights::upload(ctx, model)?;
        let sums = if what.bases {
            None
        } else {
            Some(DeviceSums::new(
                ctx,
                model,
                req.family.kind(),
                req.needs().channels,
                bb,
            )?)
        };
        // One plan per batch size (all but the last batch share one).
        let mut plans: Vec<(Plan, Option<AccumPlan>)> = Vec::new();
        for &(_, count) in batches {
            if plans.iter().any(|(p, _)| p.bb == count) {
                continue;
            }
            let plan = Plan::new(ctx, req, &weights, count, ns)?;
            let accum = match &sums {
                Some(s) => {
                    let mut inputs = vec![&plan.x];
                    inputs.extend(&plan.fwd.act);
                    Some(AccumPlan::new(ctx, s, &plan.bases, &inputs, count)?)
                }
                None => None,
            };
            plans.push((plan, accum));
        }
        Ok(Prepared {
            key,
            weights,
            plans,
            sums,
            staging: Default::default(),
        })
    }
}

/// The phase timings as SUMMARY.json records them (empty without timestamp queries).
fn phase_seconds(times: &PhaseTimes) -> BTreeMap<String, f64> {
    if !times.measured {
        return BTreeMap::new();
    }
    Phase::ALL
        .iter()
        .zip(times.seconds)
        .map(|(p, s)| (p.name().to_string(), s))
        .collect()
}

/// Runs the whole analysis on the GPU; the run information carries the phase timings.
pub fn analyze(req: &Request<'_>) -> Result<Report> {
    let (mut report, times) = analyze_timed(req)?;
    report.run.device_phase_s = phase_seconds(&times);
    report.run.host_theory_s = Some(times.host_seconds);
    Ok(report)
}

/// Runs the analysis on the GPU and returns its sufficient statistics
/// ([`crate::engine::partial::Partial`]), with the phase timings.
pub fn analyze_partial(req: &Request<'_>) -> Result<crate::engine::partial::Partial> {
    let (acc, times, adapter) = accumulate_timed(req)?;
    let mut partial = acc.into_partial(req, ENGINE, &adapter)?;
    partial.set_device_times(phase_seconds(&times), Some(times.host_seconds));
    Ok(partial)
}

const ENGINE: Engine = Engine::Gpu;

/// Runs the whole analysis on the GPU and returns the device time of each phase.
///
/// Batches are pipelined: while the host computes the spectra and bounds of batch k (from its
/// h, Δ_l, Hd_l), the device runs batch k+1; the accumulation of batch k over its inputs runs
/// on the device as soon as its per-input scalars are uploaded. With per-input results the
/// bases come back instead and the host expands them.
pub fn analyze_timed(req: &Request<'_>) -> Result<(Report, PhaseTimes)> {
    let (acc, times, adapter) = accumulate_timed(req)?;
    Ok((acc.finish(req, ENGINE, &adapter)?, times))
}

/// The batches of a request: (first input, count) each.
type Batches = Vec<(usize, usize)>;

/// The batches of a request and the device state of its shape: the context's kept state
/// when the shape matches (only the new weights are uploaded), else a new one.
fn prepare(ctx: &GpuContext, req: &Request<'_>) -> Result<(Prepared, Batches, Readback)> {
    let model = req.model;
    let widths = model.widths();
    let b = req.inputs.nrows();
    let ns = sample_chunk(model.output_dim(), req.options.samples);
    let bb = choose_batch(ctx, &widths, ns, req.options.batch_size.max(1).min(b))?;
    let what = Readback::of(req);
    let batches: Batches = (0..b).step_by(bb).map(|s| (s, bb.min(b - s))).collect();
    let key = ShapeKey::new(req, bb, ns, batches.last().map_or(bb, |l| l.1));
    let cached = ctx
        .prepared
        .lock()
        .ok()
        .and_then(|mut slot| slot.take_if(|p| p.key == key));
    let prepared = match cached {
        Some(p) => {
            p.weights.write(ctx, model);
            ctx.reused.fetch_add(1, Ordering::Relaxed);
            p
        }
        None => Prepared::new(ctx, req, key, &batches, what)?,
    };
    Ok((prepared, batches, what))
}

/// Accumulates every input on the GPU (see [`analyze_timed`]); returns the accumulator, the
/// phase timings and the adapter's description.
fn accumulate_timed(req: &Request<'_>) -> Result<(Accumulator, PhaseTimes, String)> {
    validate(req)?;
    check_depth(req.model.layers().len())?;
    let ctx = GpuContext::given_or_shared(req.options.gpu.as_ref())?;
    let model = req.model;
    let b = req.inputs.nrows();
    // The device runs an exact reparametrisation when the inputs' scale needs one: column k
    // of X times s_k, column k of W_0 divided by it (the forward pass is unchanged); the host
    // sees the original inputs and undoes the factors in f64 ([`input_scales`]).
    let scales = input_scales(req.inputs)?;
    check_f32_range(req, &scales)?;
    let scaled = scaled_request(req, &scales)?;
    let device_req = match &scaled {
        Some((m, x)) => Request {
            model: m,
            family: req.family,
            inputs: x.view(),
            labels: req.labels,
            options: req.options.clone(),
            progress: None,
        },
        None => Request {
            model: req.model,
            family: req.family,
            inputs: req.inputs,
            labels: req.labels,
            options: req.options.clone(),
            progress: None,
        },
    };
    let scales: &[f64] = if scaled.is_some() { &scales } else { &[] };
    let (mut prepared, batches, what) = prepare(&ctx, &device_req)?;
    let needs = req.needs();
    let mut acc = Accumulator::new(model, b, req.options.per_input, &needs);
    let Prepared {
        plans,
        sums,
        staging,
        ..
    } = &mut prepared;
    let plan_for = |count: usize| {
        plans
            .iter()
            .find(|(p, _)| p.bb == count)
            .expect("a plan per batch size")
    };
    let mut timer = Timer::new(&ctx);
    let mut host_seconds = 0.0;
    let (start0, count0) = batches[0];
    submit_batch(
        &ctx,
        &device_req,
        &plan_for(count0).0,
        start0,
        count0,
        what,
        &mut timer,
        &mut staging[0],
    )?;
    let extremes = spectrum_extremes(req);
    for (k, &(start, count)) in batches.iter().enumerate() {
        let (plan, accum) = plan_for(count);
        let layout = ReadbackLayout::new(plan, model, count, what);
        let data = layout.unpack(staging[k % 2].read(&ctx, layout.regions())?)?;
        check_outputs(req, &data, req.options.input_offset as usize + start)?;
        let host_started = std::time::Instant::now();
        let spectra: Vec<(Option<Spectrum>, f64)> = (0..count)
            .into_par_iter()
            .map(|i| {
                let t = std::time::Instant::now();
                input_spectrum(req, &data, i, extremes).map(|s| (s, t.elapsed().as_secs_f64()))
            })
            .collect::<Result<_>>()?;
        let spectra: Vec<Option<Spectrum>> = spectra
            .into_iter()
            .map(|(s, secs)| {
                acc.add_theory_time(secs);
                s
            })
            .collect();
        host_seconds += host_started.elapsed().as_secs_f64();
        if let (Some(sums), Some(accum)) = (sums.as_mut(), accum) {
            if sums.merged + count > FLUSH_INPUTS {
                sums.flush(&ctx, &mut acc, scales)?;
            }
            let scalars: Vec<f32> = spectra
                .iter()
                .flat_map(|s| input_scalars(s.as_ref()).map(|v| v as f32))
                .collect();
            let dispatches = accum.prepare(&ctx, sums, &scalars);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            timer.record(&ctx, &mut enc, &[(Phase::Accumulate, dispatches)]);
            ctx.queue.submit([enc.finish()]);
        }
        if let Some(&(next, next_count)) = batches.get(k + 1) {
            submit_batch(
                &ctx,
                &device_req,
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
        let per_input: Vec<(Option<InputStats>, Option<InputTheory>, f64)> = (0..count)
            .into_par_iter()
            .map(|i| {
                let t = std::time::Instant::now();
                host_input(req, &data, i, spectra[i].as_ref(), rows.row(i))
                    .map(|(s, th)| (s, th, t.elapsed().as_secs_f64()))
            })
            .collect::<Result<_>>()?;
        for (i, (stats, theory, secs)) in per_input.iter().enumerate() {
            if theory.is_some() {
                acc.add_theory_time(*secs);
            }
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
        s.flush(&ctx, &mut acc, scales)?;
    }
    let mut times = timer.finish(&ctx)?;
    if let Ok(mut slot) = ctx.prepared.lock() {
        *slot = Some(prepared);
    }
    times.host_seconds = host_seconds;
    Ok((acc, times, ctx.describe()))
}

/// Input columns whose largest magnitude lies in [2⁻⁸, 2⁸] are not rescaled.
const UNSCALED: (f64, f64) = (1.0 / 256.0, 256.0);

/// Per input column k, the power of two s_k that brings its largest magnitude into [1, 2)
/// (1 for columns already in a moderate range, and for zero columns), so that the powers
/// a², a⁴, a⁸ that the device accumulates in f32 neither underflow nor overflow.
pub fn input_scales(x: ArrayView2<'_, f64>) -> Result<Vec<f64>> {
    x.columns()
        .into_iter()
        .enumerate()
        .map(|(k, col)| {
            let m = col.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            if m == 0.0 || (UNSCALED.0..=UNSCALED.1).contains(&m) {
                return Ok(1.0);
            }
            let s = (-m.log2().floor()).exp2();
            if !(s.is_finite() && (m * s).is_finite() && s > 0.0) {
                return Err(Error::GpuRange(format!(
                    "input column {k} reaches {m:e}, beyond what the f32 GPU engine can scale: \
                     use --engine cpu (f64)"
                )));
            }
            Ok(s)
        })
        .collect()
}

/// The model and inputs the device runs when some input column needs a scale: X·diag(s)
/// and W_0·diag(s)⁻¹ (`None` when every scale is 1). Refused when a scaled first-layer
/// weight leaves f32's normal range.
fn scaled_request(
    req: &Request<'_>,
    scales: &[f64],
) -> Result<Option<(crate::model::Mlp, ndarray::Array2<f64>)>> {
    if scales.iter().all(|&s| s == 1.0) {
        return Ok(None);
    }
    let mut model = req.model.clone();
    let first = &mut model.layers_mut()[0].weight;
    for (mut col, &s) in first.columns_mut().into_iter().zip(scales) {
        col.mapv_inplace(|w| w / s);
    }
    if let Some(w) = first
        .iter()
        .find(|w| **w != 0.0 && !(f32::MIN_POSITIVE as f64..=f32::MAX as f64).contains(&w.abs()))
    {
        return Err(Error::GpuRange(format!(
            "the inputs' scale makes a first-layer weight {w:e} on the device, outside f32's \
             range: use --engine cpu (f64), or rescale the inputs"
        )));
    }
    let mut x = req.inputs.to_owned();
    for (mut col, &s) in x.columns_mut().into_iter().zip(scales) {
        col.mapv_inplace(|v| v * s);
    }
    Ok(Some((model, x)))
}

/// The device accumulates, per parameter (unit j, input column k), products of powers up to
/// the 8th of the unit's back-propagated derivative and of the layer input: g_j·|a_k| must
/// stay in [2⁻¹⁵, 2¹⁴] (or be 0) for those powers and their sums to be normal f32 numbers.
const PRODUCT_RANGE: (f64, f64) = (1.0 / 32768.0, 16384.0);

/// Per layer, (largest bound g_j over the inputs of |∂h/∂z_j| per unit, largest |a_k| over
/// the inputs per column of the layer input), from an f64 forward pass and a backward pass
/// of bounds g_l = |σ'(z_l)| ⊙ |W_{l+1}|ᵀ g_{l+1} (g = 1 at the output), as matrix products
/// over chunks of inputs (about twice the forward pass's FLOPs). The first layer's input is
/// taken as the device sees it, `x·diag(scales)`.
fn derivative_ranges(req: &Request<'_>, scales: &[f64]) -> Vec<(Vec<f64>, Vec<f64>)> {
    use ndarray::{Array2, Axis};
    let model = req.model;
    let layers = model.layers();
    let n = layers.len();
    let abs_weights: Vec<Array2<f64>> = layers.iter().map(|d| d.weight.mapv(f64::abs)).collect();
    let column_max = |m: &Array2<f64>| -> Vec<f64> {
        m.axis_iter(Axis(1))
            .map(|c| c.iter().fold(0.0f64, |a, v| a.max(v.abs())))
            .collect()
    };
    let per_chunk = |x: ndarray::ArrayView2<'_, f64>| {
        let mut inputs = vec![x.to_owned()];
        let mut slopes = Vec::with_capacity(n);
        for (l, d) in layers.iter().enumerate() {
            let mut z = inputs[l].dot(&d.weight.t());
            if let Some(bias) = &d.bias {
                z += bias;
            }
            if l + 1 < n {
                let act = model.activations()[l];
                slopes.push(z.mapv(|v| act.eval(v).1.abs()));
                inputs.push(z.mapv(|v| act.value(v)));
            }
        }
        let mut g = vec![Array2::<f64>::ones((x.nrows(), model.output_dim()))];
        for l in (0..n - 1).rev() {
            let up = g[0].dot(&abs_weights[l + 1]);
            g.insert(0, &slopes[l] * &up);
        }
        for (mut col, s) in inputs[0].columns_mut().into_iter().zip(scales) {
            col *= *s;
        }
        inputs
            .iter()
            .zip(&g)
            .map(|(a, g)| (column_max(g), column_max(a)))
            .collect::<Vec<_>>()
    };
    let chunks: Vec<_> = req.inputs.axis_chunks_iter(Axis(0), 64).collect();
    chunks
        .into_par_iter()
        .map(per_chunk)
        .reduce_with(|mut m, o| {
            for ((mg, ma), (og, oa)) in m.iter_mut().zip(&o) {
                mg.iter_mut().zip(og).for_each(|(x, y)| *x = x.max(*y));
                ma.iter_mut().zip(oa).for_each(|(x, y)| *x = x.max(*y));
            }
            m
        })
        .unwrap_or_default()
}

/// Refuses a run in which some parameter's accumulated powers would leave f32's normal range
/// on the device ([`PRODUCT_RANGE`]): saturated units whose derivatives nearly vanish, or
/// hidden activations that are tiny or huge. The first layer's input is rescaled instead
/// ([`input_scales`]).
fn check_f32_range(req: &Request<'_>, scales: &[f64]) -> Result<()> {
    let names = req.model.params();
    for (l, (g, a)) in derivative_ranges(req, scales).iter().enumerate() {
        let bias = req.model.layers()[l].bias.is_some();
        let nonzero_min = |v: &[f64]| v.iter().copied().filter(|v| *v > 0.0).reduce(f64::min);
        let largest = |v: &[f64]| v.iter().copied().fold(0.0f64, f64::max);
        let a_min = nonzero_min(a).map(|m| if bias { m.min(1.0) } else { m });
        let a_max = if bias {
            largest(a).max(1.0)
        } else {
            largest(a)
        };
        let (Some(g_min), Some(a_min)) = (nonzero_min(g), a_min) else {
            continue;
        };
        let (low, high) = (g_min * a_min, largest(g) * a_max);
        if low < PRODUCT_RANGE.0 || high > PRODUCT_RANGE.1 {
            let name = names
                .iter()
                .find(|p| p.layer == l && !p.is_bias)
                .map_or_else(|| format!("layer {l}"), |p| format!("'{}'", p.name));
            let (what, v) = if low < PRODUCT_RANGE.0 {
                ("as small as", low)
            } else {
                ("as large as", high)
            };
            return Err(Error::GpuRange(format!(
                "the parameters of {name} have derivatives (unit slope × layer input) {what} \
                 {v:.1e} (saturated units, or tiny or huge activations); the f32 GPU engine \
                 raises them to the 8th power, which leaves f32's range outside \
                 [2^-15, 2^14]: use --engine cpu (f64), or rescale the model or its inputs"
            )));
        }
    }
    Ok(())
}

/// Most dispatches the recorded Jacobian chains of the Hessian pass may hold: about
/// layers² of them, each with its own uniform buffer and bind group.
pub const MAX_CHAIN_DISPATCHES: usize = 40_000;

/// The dispatches of the Hessian pass's Jacobian chains for a model of `layers` layers.
pub fn chain_dispatches(layers: usize) -> usize {
    let head = layers.saturating_sub(1);
    (0..head.saturating_sub(1))
        .map(|l| {
            1 + (l + 1..head)
                .map(|m| 1 + usize::from(m + 1 < head))
                .sum::<usize>()
        })
        .sum()
}

/// Refuses a model too deep for the GPU engine's recorded Hessian pass.
fn check_depth(layers: usize) -> Result<()> {
    let n = chain_dispatches(layers);
    if n > MAX_CHAIN_DISPATCHES {
        return Err(Error::Resources(format!(
            "the GPU engine records {n} Hessian-pass dispatches for a {layers}-layer model (their \
             number grows as the square of the depth; at most {MAX_CHAIN_DISPATCHES}, about 200 \
             layers): use --engine cpu for this model"
        )));
    }
    Ok(())
}

/// Cost model: floating-point operations per input of each [`Phase`] (GEMMs and the main
/// elementwise work), for widths [in, …, out] (layers with biases), N sampled labels and
/// `channels` accumulated channel keys ([`super::accumulated_channels`]).
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
/// accumulation's sums, [`super::accumulated_channels`] of them, included).
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

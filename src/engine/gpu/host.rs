//! The host's share of a batch: what comes back from the device, the per-input spectra of the
//! family's moments (MATH §5, §7; they give the bound channels' scalars) and the theory
//! layer's per-tensor bounds, and, with per-input results, the statistics for the host
//! accumulator.

use super::plan::Plan;
use super::shaders::NB;
use crate::engine::channels::{constant_scalars, scalars_of, NUM_INPUT_SCALARS};
use crate::engine::stats::{InputStats, UnitStats};
use crate::engine::Request;
use crate::family::{check_log_rates, max_log_rate_f32, FamilyKind};
use crate::theory::{input_theory_of, InputTheory, Spectrum};
use crate::{Error, Result};
use ndarray::{Array1, Array2};

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| f64::from(*x)).collect()
}

/// What comes back to the host per batch besides h: Δ_l/Hd_l (for the per-tensor bounds), the
/// hidden layers' activations (for those bounds and for host accumulation) and the bases
/// (host accumulation, with per-input results).
#[derive(Clone, Copy)]
pub struct Readback {
    pub dh: bool,
    pub act: bool,
    pub bases: bool,
}

impl Readback {
    pub fn of(req: &Request<'_>) -> Readback {
        let tensor_bounds = req.needs().tensor_bounds;
        Readback {
            dh: tensor_bounds,
            act: tensor_bounds || req.options.per_input,
            bases: req.options.per_input,
        }
    }
}

/// The read-back of a batch: which regions of which buffers are copied into the staging
/// buffer, in which order, and where each named quantity (h; per layer Δ/Hd, activations,
/// bases) lies among them. Both the copies ([`ReadbackLayout::regions`]) and the slicing of
/// the values read back ([`ReadbackLayout::unpack`]) go through it, so they cannot disagree.
pub struct ReadbackLayout<'a> {
    /// (buffer, f32 count) in staging order.
    regions: Vec<(&'a wgpu::Buffer, usize)>,
    count: usize,
    /// Index of h's region.
    h: usize,
    /// Per layer (when read): index of Δ_l/Hd_l's region.
    dh: Vec<usize>,
    /// Per hidden layer (when read): index of the activations' region.
    act: Vec<usize>,
    /// Per layer (when read): index of the bases' region.
    bases: Vec<usize>,
}

impl<'a> ReadbackLayout<'a> {
    /// The layout of a batch of `count` inputs run with `plan`: h, then per layer those
    /// `what` asks for.
    pub fn new(plan: &'a Plan, model: &crate::Mlp, count: usize, what: Readback) -> Self {
        let o = model.output_dim();
        let layers = model.layers();
        let mut layout = ReadbackLayout {
            regions: Vec::new(),
            count,
            h: 0,
            dh: Vec::new(),
            act: Vec::new(),
            bases: Vec::new(),
        };
        layout.h = layout.push(plan.fwd.h(), count * o);
        for (l, d) in layers.iter().enumerate() {
            if what.dh {
                let i = layout.push(&plan.dh[l], 2 * count * d.outputs() * o);
                layout.dh.push(i);
            }
            if what.act && l + 1 < layers.len() {
                let i = layout.push(&plan.fwd.act[l], count * d.outputs());
                layout.act.push(i);
            }
            if what.bases {
                let i = layout.push(&plan.bases[l], count * NB * d.outputs());
                layout.bases.push(i);
            }
        }
        layout
    }

    /// Appends a region; returns its index.
    fn push(&mut self, buffer: &'a wgpu::Buffer, len: usize) -> usize {
        self.regions.push((buffer, len));
        self.regions.len() - 1
    }

    /// The regions to copy and read back, in staging order.
    pub fn regions(&self) -> &[(&'a wgpu::Buffer, usize)] {
        &self.regions
    }

    /// Names the values read back from [`ReadbackLayout::regions`] (one vector per region).
    pub fn unpack(&self, data: Vec<Vec<f32>>) -> Result<BatchData> {
        let lens: Vec<usize> = data.iter().map(Vec::len).collect();
        let want: Vec<usize> = self.regions.iter().map(|(_, n)| *n).collect();
        if lens != want {
            return Err(Error::Internal(format!(
                "read back regions of {lens:?} values, the layout has {want:?}"
            )));
        }
        let mut data: Vec<Option<Vec<f32>>> = data.into_iter().map(Some).collect();
        let mut take = |i: usize| data[i].take().expect("each region is named once");
        Ok(BatchData {
            count: self.count,
            h: take(self.h),
            dh: self.dh.iter().map(|&i| take(i)).collect(),
            act: self.act.iter().map(|&i| take(i)).collect(),
            bases: self.bases.iter().map(|&i| take(i)).collect(),
        })
    }
}

/// The values of a batch's read-back, by name ([`ReadbackLayout::unpack`]; empty vectors
/// where not read).
pub struct BatchData {
    count: usize,
    h: Vec<f32>,
    dh: Vec<Vec<f32>>,
    act: Vec<Vec<f32>>,
    bases: Vec<Vec<f32>>,
}

/// Refuses a batch whose outputs the GPU engine cannot analyse: with the Poisson family, a
/// log-rate above the f32 sampler's range (λ ≤ 2²⁰, [`max_log_rate_f32`]), then the family's
/// own check of h ([`crate::ExpFamily::check_output`]), as the CPU engine does. `first` is the
/// batch's first input (for the message). Runs on every batch before its results are used,
/// so an analysis with such an input fails instead of reporting the f32 sampler's labels.
pub fn check_outputs(req: &Request<'_>, data: &BatchData, first: usize) -> Result<()> {
    let o = req.model.output_dim();
    let poisson = req.family.kind() == FamilyKind::Poisson;
    for i in 0..data.count {
        let h = to_f64(&data.h[i * o..(i + 1) * o]);
        let checked = if poisson {
            check_log_rates(&h, max_log_rate_f32(), GPU_RATE_HINT).map_err(|e| match e {
                Error::Input(msg) => Error::GpuRange(msg),
                other => other,
            })
        } else {
            Ok(())
        };
        checked
            .and_then(|()| req.family.check_output(&h))
            .map_err(|e| match e {
                Error::Input(msg) => Error::Input(format!("input {}: {msg}", first + i)),
                Error::GpuRange(msg) => Error::GpuRange(format!("input {}: {msg}", first + i)),
                other => other,
            })?;
    }
    Ok(())
}

/// Completes the Poisson family's message for log-rates beyond the GPU engine's range.
const GPU_RATE_HINT: &str = " or leave the range of the GPU engine's f32 sampler (rates up to \
                             2^20); use --engine cpu, which accepts log-rates up to 80";

/// The spectral quantities of input `i` of the batch from its output h (MATH §5, §7), when the
/// keys need them: `extremes` is None without spectra ([`crate::engine::Needs::spectra`]), else
/// the extreme eigenvalues of C and M to compute ([`spectrum_extremes`]).
pub fn input_spectrum(
    req: &Request<'_>,
    data: &BatchData,
    i: usize,
    extremes: Option<usize>,
) -> Result<Option<Spectrum>> {
    let Some(extremes) = extremes else {
        return Ok(None);
    };
    let o = req.model.output_dim();
    let h = to_f64(&data.h[i * o..(i + 1) * o]);
    Spectrum::with_extremes(req.family, &req.family.eta(&h), extremes).map(Some)
}

/// The `extremes` argument of [`input_spectrum`] for a request (once per run): None without
/// spectra; the widest hidden layer with per-tensor bounds, which pair the eigenvalues of C and
/// M with Gram matrices of that rank at most ([`crate::theory::trace_bound_extremes`]); 0
/// (only the scalars) without them.
pub fn spectrum_extremes(req: &Request<'_>) -> Option<usize> {
    let needs = req.needs();
    needs.spectra.then(|| {
        if needs.tensor_bounds {
            crate::theory::trace_bound_extremes(&req.model.widths())
        } else {
            0
        }
    })
}

/// The per-input scalars of the bound channels (constants without a spectrum).
pub fn input_scalars(spectrum: Option<&Spectrum>) -> [f64; NUM_INPUT_SCALARS] {
    spectrum.map_or_else(constant_scalars, scalars_of)
}

/// The host's share of input `i` of a batch: the theory layer's per-tensor bounds from Δ_l,
/// Hd_l and the layer inputs (when asked for), and, when the bases were read back, the
/// per-input statistics for the host accumulator.
pub fn host_input(
    req: &Request<'_>,
    data: &BatchData,
    i: usize,
    spectrum: Option<&Spectrum>,
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
    let theory = if let (false, Some(spectrum)) = (data.dh.is_empty(), spectrum) {
        let (mut delta, mut hd) = (Vec::new(), Vec::new());
        for (all, d) in data.dh.iter().zip(model.layers()) {
            let nl = d.outputs();
            // Δ_l rows of input i, then its Hd_l rows (count·n_l rows further).
            let rows_of = |start: usize| {
                Array2::from_shape_vec((nl, o), to_f64(&all[start..start + nl * o]))
                    .map_err(|e| Error::Gpu(format!("Δ/Hd shape: {e}")))
            };
            delta.push(rows_of(i * nl * o)?);
            hd.push(rows_of((count + i) * nl * o)?);
        }
        // Read back from the device: a head is recognised from its values.
        Some(input_theory_of(
            spectrum,
            &delta,
            &hd,
            &layer_inputs,
            false,
        )?)
    } else {
        None
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
                .ok()
                .and_then(UnitStats::from_all)
                .ok_or_else(|| {
                    Error::Gpu(format!("bases of {} values, not {NB} × {nl}", b_i.len()))
                })
        })
        .collect::<Result<_>>()?;
    let stats = InputStats {
        layer_inputs,
        units,
        scalars: input_scalars(spectrum),
    };
    Ok((Some(stats), theory))
}

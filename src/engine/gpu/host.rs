//! The host's share of a batch: what comes back from the device, the per-input spectra of the
//! family's moments (MATH §5, §7; they give the bound channels' scalars) and the theory
//! layer's per-tensor bounds, and, with per-input results, the statistics for the host
//! accumulator.

use super::plan::Plan;
use super::shaders::NB;
use crate::engine::channels::{constant_scalars, scalars_of, NUM_INPUT_SCALARS};
use crate::engine::stats::{InputStats, UnitStats};
use crate::engine::Request;
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
    pub fn of(options: &crate::engine::AnalysisOptions) -> Readback {
        Readback {
            dh: options.bounds.tensors(),
            act: options.bounds.tensors() || options.per_input,
            bases: options.per_input,
        }
    }
}

/// The read-back regions of a batch: h, then per layer those `what` asks for.
pub fn batch_regions<'a>(
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
pub struct BatchData {
    count: usize,
    h: Vec<f32>,
    dh: Vec<Vec<f32>>,
    act: Vec<Vec<f32>>,
    bases: Vec<Vec<f32>>,
}

impl BatchData {
    pub fn new(model: &crate::Mlp, count: usize, what: Readback, data: Vec<Vec<f32>>) -> BatchData {
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

/// The spectral quantities of input `i` of the batch from its output h (MATH §5, §7), when the
/// bound keys are asked for.
pub fn input_spectrum(req: &Request<'_>, data: &BatchData, i: usize) -> Result<Option<Spectrum>> {
    if !req.options.bounds.keys() {
        return Ok(None);
    }
    let o = req.model.output_dim();
    let h = to_f64(&data.h[i * o..(i + 1) * o]);
    Spectrum::new(req.family, &req.family.eta(&h)).map(Some)
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
        Some(input_theory_of(spectrum, &delta, &hd, &layer_inputs)?)
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
                .map(|bases| UnitStats { bases })
                .map_err(|e| Error::Gpu(format!("bases shape: {e}")))
        })
        .collect::<Result<_>>()?;
    let stats = InputStats {
        layer_inputs,
        units,
        scalars: input_scalars(spectrum),
    };
    Ok((Some(stats), theory))
}

//! The CPU engine, in f64 (DESIGN §5): Δ_l and the output-Hessian diagonals Hd_l of blocks of
//! inputs by batched dense products ([`super::blocked`], the reverse form of DESIGN §2), then
//! per-unit statistics (MATH §6.5) per input, and their accumulation by GEMMs. This module
//! also keeps the per-input recursion of MATH §6.2 ([`derivatives`]) and the per-sample route
//! (§6.6) as independent references for the tests. Parallel with rayon; reductions over
//! inputs run in input order so results are bit-identical for any thread count or batch size.

use super::accumulate::{Accumulator, Prepared};
use super::blocked;
use super::channels::{constant_scalars, sample_var_var, scalars_of, Base};
pub use super::stats::{InputStats, UnitStats};
use super::{validate, AnalysisOptions, Needs, Request};
use crate::family::{ExpFamily, Label};
use crate::model::{ForwardPass, Mlp};
use crate::report::{Engine, Report};
use crate::theory::{input_theory_of, InputTheory, Spectrum};
use crate::{Error, Result, MIN_SAMPLES_FOR_VARIANCE};
use ndarray::{Array1, Array2, ArrayView1, Axis};
use rayon::prelude::*;

/// Forward and backward quantities of one input x.
#[derive(Clone, Debug)]
pub struct Derivatives {
    /// Network output h (natural parameter).
    pub h: Vec<f64>,
    /// η = ∇F(h).
    pub eta: Vec<f64>,
    /// Layer inputs a_{l−1} for every layer l (a_0 = x).
    pub layer_inputs: Vec<Array1<f64>>,
    /// Δ_l[j, a] = ∂h_a/∂z_{l,j} (n_l × O). The last entry is the head's Δ_L = I (O × O):
    /// [`derivatives`] forms it, [`super::blocked::block_derivatives`] leaves it empty (0 × 0),
    /// as it is known (8 MB per input at O = 1000).
    pub delta: Vec<Array2<f64>>,
    /// Hd_l[j, a] = ∂²h_a/∂z_{l,j}² (n_l × O); the head's Hd_L = 0, formed or left empty as
    /// its Δ_L.
    pub hd: Vec<Array2<f64>>,
}

/// Forward pass, then Δ_l and Hd_l by the exact recursion of MATH §6.2, carrying the full
/// per-output Hessians H^a_l = ∂²h_a/∂z_l∂z_lᵀ (only the diagonal is formed for layer 1).
pub fn derivatives(model: &Mlp, family: &dyn ExpFamily, x: ArrayView1<f64>) -> Derivatives {
    let layers = model.layers();
    let nl = layers.len();
    let ForwardPass {
        layer_inputs,
        d1,
        d2,
        h,
    } = model.forward_with_derivatives(x);
    let h = h.to_vec();
    let eta = family.eta(&h);
    let o = h.len();

    let mut delta = vec![Array2::zeros((0, 0)); nl];
    let mut hd = vec![Array2::zeros((0, 0)); nl];
    delta[nl - 1] = Array2::eye(o);
    hd[nl - 1] = Array2::zeros((o, o));
    // Full H^a of the current layer; None means identically zero (the head).
    let mut hess: Option<Vec<Array2<f64>>> = None;
    for l in (1..nl).rev() {
        let w = &layers[l].weight;
        let (s1, s2) = (&d1[l - 1], &d2[l - 1]);
        let n = w.ncols();
        let g = w.t().dot(&delta[l]); // n × O: Σ_m W[m,j] Δ_l[m,a]
        let mut dl = g.clone();
        let mut hdl = Array2::zeros((n, o));
        for j in 0..n {
            for c in 0..o {
                dl[[j, c]] *= s1[j];
                hdl[[j, c]] = s2[j] * g[[j, c]];
            }
        }
        let need_full = l - 1 > 0;
        let mut next = Vec::with_capacity(if need_full { o } else { 0 });
        for c in 0..o {
            // W_lᵀ H^a_l W_l: in full while the recursion continues, else only its diagonal
            // diag_j = Σ_m W[m,j] (H W)[m,j].
            let hw = hess.as_ref().map(|hs| hs[c].dot(w));
            let quad: Option<Array2<f64>> = match &hw {
                Some(hw) if need_full => Some(w.t().dot(hw)),
                Some(hw) => {
                    for j in 0..n {
                        let diag = w.column(j).dot(&hw.column(j));
                        hdl[[j, c]] += s1[j] * s1[j] * diag;
                    }
                    None
                }
                None => None,
            };
            if let Some(q) = &quad {
                for j in 0..n {
                    hdl[[j, c]] += s1[j] * s1[j] * q[[j, j]];
                }
            }
            if need_full {
                let mut hn = quad.unwrap_or_else(|| Array2::zeros((n, n)));
                for j in 0..n {
                    for k in 0..n {
                        hn[[j, k]] *= s1[j] * s1[k];
                    }
                    hn[[j, j]] += s2[j] * g[[j, c]];
                }
                next.push(hn);
            }
        }
        delta[l - 1] = dl;
        hd[l - 1] = hdl;
        hess = need_full.then_some(next);
    }
    Derivatives {
        h,
        eta,
        layer_inputs,
        delta,
        hd,
    }
}

/// Per row of `m` (units × samples, values squared if `square`): the mean, the unbiased
/// variance s² and the estimated variance of s² ([`sample_var_var`], from the fourth central
/// moment), all two-pass and centred.
fn row_moments(m: &Array2<f64>, square: bool) -> Vec<[f64; 3]> {
    let n = m.ncols() as f64;
    m.rows()
        .into_iter()
        .map(|row| {
            let val = |v: f64| if square { v * v } else { v };
            let mean = row.iter().map(|&v| val(v)).sum::<f64>() / n;
            let (ss, s4) = row.iter().fold((0.0, 0.0), |(ss, s4), &v| {
                let d2 = (val(v) - mean).powi(2);
                (ss + d2, s4 + d2 * d2)
            });
            if n > 1.0 {
                [mean, ss / (n - 1.0), sample_var_var(n, ss, s4)]
            } else {
                [mean, f64::NAN, f64::NAN]
            }
        })
        .collect()
}

/// Sampled residuals r_s = t(y_s) − η for s = 0..N (N × O), keyed by (seed, input, s).
pub fn sampled_residuals(
    family: &dyn ExpFamily,
    d: &Derivatives,
    seed: u64,
    input: u32,
    samples: usize,
) -> (Array2<f64>, Vec<Label>) {
    let o = d.h.len();
    let mut r = Array2::zeros((samples, o));
    let mut labels = Vec::with_capacity(samples);
    for (s, mut row) in r.axis_iter_mut(Axis(0)).enumerate() {
        let row = row
            .as_slice_mut()
            .expect("rows of a standard array are contiguous");
        labels.push(family.sample(&d.h, &d.eta, seed, input, s as u32, row));
    }
    (r, labels)
}

/// One input's contribution: its per-unit statistics, its per-tensor trace bounds (when
/// asked for) and the seconds its theory-layer work took.
pub(crate) struct InputResult {
    pub stats: InputStats,
    pub theory: Option<InputTheory>,
    pub theory_s: f64,
}

/// Per-unit statistics of one input from its derivatives: the bases that `needs` asks for
/// (the others stay 0), the spectral scalars if a bound key is asked for, and the per-tensor
/// trace bounds of the theory layer (the per-input hook, [`crate::theory::input_theory`]) if
/// `needs.tensor_bounds`. Each base is computed on its own, so a subset of keys gives the
/// full run's values bit for bit.
pub(crate) fn input_stats(
    family: &dyn ExpFamily,
    d: Derivatives,
    input: u32,
    label: Option<&Label>,
    opts: &AnalysisOptions,
    needs: &Needs,
) -> Result<InputResult> {
    family.check_output(&d.h).map_err(|e| match e {
        Error::Input(msg) => Error::Input(format!("input {input}: {msg}")),
        other => other,
    })?;
    let started = std::time::Instant::now();
    let spectrum = if needs.spectra {
        // The extreme eigenvalues that the trace bounds of the hidden layers need (the head,
        // the last entry, needs none).
        let extremes = match d.delta.split_last() {
            Some((_, hidden)) if needs.tensor_bounds => {
                hidden.iter().map(|a| a.nrows()).max().unwrap_or(0)
            }
            _ => 0,
        };
        Some(Spectrum::with_extremes(family, &d.eta, extremes)?)
    } else {
        None
    };
    let mut theory_s = started.elapsed().as_secs_f64();
    let r = needs
        .samples
        .then(|| sampled_residuals(family, &d, opts.seed, input, opts.samples).0);
    let r_data = match label {
        Some(y) if needs.base(Base::Ef) => {
            let mut rd = vec![0.0; d.h.len()];
            family.residual(&d.h, &d.eta, y, &mut rd)?;
            Some(Array1::from(rd))
        }
        _ => None,
    };
    let o = d.h.len() as f64;
    let want = |b: Base| needs.base(b);
    // The last layer is the head, whose Δ_L = I and Hd_L = 0 in every `Derivatives` (formed,
    // or left empty by the blocked route): never read.
    let head = d.delta.len() - 1;
    debug_assert!(
        (d.delta[head].is_empty() || d.delta[head] == Array2::<f64>::eye(d.h.len()))
            && d.hd[head].iter().all(|v| *v == 0.0),
        "the head's Δ is I and its Hd is 0"
    );
    let units = d
        .delta
        .iter()
        .zip(&d.hd)
        .enumerate()
        .map(|(l, (delta, hd))| {
            // The head (Δ_L = I, Hd_L = 0): its Hessian bases vanish, and its rows are never
            // read (they may not be formed).
            let is_head = l == head;
            let n = if is_head { d.h.len() } else { delta.nrows() };
            let mut bases = UnitStats::zeros(n, want);
            // The head's Δ_L = I and Hd_L = 0 (O × O): its products are rᵀ, 0 and r_data,
            // the same values without the O² · N work.
            let score_sq = r.as_ref().map(|r| {
                let dr = if is_head {
                    r.t().to_owned()
                } else {
                    delta.dot(&r.t())
                };
                row_moments(&dr, true)
            });
            let hess_r = match &r {
                Some(r) if needs.hessian => {
                    let hr = if is_head {
                        Array2::zeros((n, r.nrows()))
                    } else {
                        hd.dot(&r.t())
                    };
                    Some(row_moments(&hr, false))
                }
                _ => None,
            };
            let ef = r_data
                .as_ref()
                .map(|rd| if is_head { rd.clone() } else { delta.dot(rd) });
            // q_j = C[Δ_j, Δ_j] of every unit at once, when a base reads it (Q, and the
            // negative Hessian's mean); at the head Δ_j = e_j: the family's closed form.
            let q_all =
                (want(Base::Q) || (want(Base::NegHessMean) && hess_r.is_some())).then(|| {
                    if is_head {
                        (0..n).map(|j| family.cov_diag(&d.eta, j)).collect()
                    } else {
                        let mut q = vec![0.0; n];
                        let rows = delta.as_standard_layout();
                        let rows = rows.as_slice().expect("standard layout");
                        family.cov_quad_rows(&d.eta, rows, &mut q);
                        q
                    }
                });
            if let (Some(mut row), Some(q)) = (bases.base_mut(Base::Q), &q_all) {
                row.assign(&ndarray::ArrayView1::from(q.as_slice()));
            }
            for j in 0..n {
                let (dj, hj) = if is_head {
                    (&[][..], needs.hessian.then_some(&[][..]))
                } else {
                    (unit_row(delta, j), needs.hessian.then(|| unit_row(hd, j)))
                };
                let mut set = |base: Base, v: &dyn Fn() -> f64| bases.set_with(base, j, v);
                let q = || q_all.as_ref().expect("q is formed when a base reads it")[j];
                // ‖Δ_j‖² once per unit (three bases read it); 1 at the head (Δ_j = e_j).
                let dn2_once = std::cell::OnceCell::new();
                let dn2 = || {
                    *dn2_once.get_or_init(|| {
                        if is_head {
                            1.0
                        } else {
                            dj.iter().map(|v| v * v).sum::<f64>()
                        }
                    })
                };
                let hj = || hj.expect("the Hessian pass ran");
                set(Base::V, &|| {
                    if is_head {
                        family.kurt_excess_diag(&d.eta, j)
                    } else {
                        family.kurt_excess_quad(&d.eta, dj)
                    }
                });
                set(Base::W, &|| {
                    if is_head {
                        0.0
                    } else {
                        family.cov_quad(&d.eta, hj())
                    }
                });
                set(Base::DeltaNorm2, &dn2);
                set(Base::HdNorm2, &|| {
                    if is_head {
                        0.0
                    } else {
                        hj().iter().map(|v| v * v).sum()
                    }
                });
                set(Base::Third, &|| {
                    if is_head {
                        0.0
                    } else {
                        family.third_central(&d.eta, dj, hj())
                    }
                });
                if let Some(m) = &score_sq {
                    set(Base::ScoreSqMean, &|| m[j][0]);
                    set(Base::ScoreSqVar, &|| m[j][1]);
                    set(Base::ScoreSqVarVar, &|| m[j][2]);
                }
                if let Some(m) = &hess_r {
                    set(Base::NegHessMean, &|| q() - m[j][0]);
                    set(Base::HessRVar, &|| m[j][1]);
                    set(Base::HessRVarVar, &|| m[j][2]);
                }
                if let Some(e) = &ef {
                    set(Base::Ef, &|| e[j] * e[j]);
                }
                set(Base::DeltaNorm4, &|| dn2() * dn2());
                set(Base::DeltaCentredNorm2, &|| {
                    let dsum: f64 = if is_head { 1.0 } else { dj.iter().sum() };
                    (dn2() - dsum * dsum / o).max(0.0)
                });
            }
            bases
        })
        .collect();
    let theory = match (&spectrum, needs.tensor_bounds) {
        (Some(spectrum), true) => {
            let started = std::time::Instant::now();
            // The last layer is the head (Δ_L = I, Hd_L = 0, asserted above).
            let t = input_theory_of(spectrum, &d.delta, &d.hd, &d.layer_inputs, true)?;
            theory_s += started.elapsed().as_secs_f64();
            Some(t)
        }
        _ => None,
    };
    let stats = InputStats {
        scalars: spectrum.as_ref().map_or_else(constant_scalars, scalars_of),
        layer_inputs: d.layer_inputs,
        units,
    };
    Ok(InputResult {
        stats,
        theory,
        theory_s: if needs.spectra { theory_s } else { 0.0 },
    })
}

/// Row j (unit j) of a per-layer n_l × O array.
fn unit_row(m: &Array2<f64>, j: usize) -> &[f64] {
    m.row(j).to_slice().expect("contiguous rows")
}

/// Runs the whole analysis on the CPU.
pub(super) fn analyze(req: &Request<'_>) -> Result<Report> {
    accumulate(req)?.finish(req, ENGINE, ADAPTER)
}

/// Runs the analysis on the CPU and returns its sufficient statistics.
pub(super) fn analyze_partial(req: &Request<'_>) -> Result<crate::engine::partial::Partial> {
    accumulate(req)?.into_partial(req, ENGINE, ADAPTER)
}

const ENGINE: Engine = Engine::Cpu;

/// Bytes of per-input derivatives (Δ_l, Hd_l) a block of inputs may hold at once (memory only:
/// blocks are whole derivative chunks, so results do not depend on it).
const DERIVATIVE_BYTES: usize = 256 << 20;
const ADAPTER: &str = "cpu (f64 reference engine)";

/// Refuses a number of sampled labels whose per-input buffers (N × (O + 3 × the widest
/// layer) numbers per worker thread) the machine cannot hold.
fn check_sample_memory(req: &Request<'_>) -> Result<()> {
    let opts = &req.options;
    let workers = match opts.threads {
        0 => rayon::current_num_threads(),
        t => t,
    };
    let in_flight = workers.min(opts.batch_size.max(1)).min(req.inputs.nrows()) as u64;
    let widest = req.model.widths().into_iter().max().unwrap_or(1) as u64;
    let per_label = req.model.output_dim() as u64 + 3 * widest;
    let bytes = crate::resources::product(&[in_flight, opts.samples as u64, per_label, 8, 2]);
    crate::resources::check_memory(
        &format!(
            "the CPU engine with --samples {} ({in_flight} inputs in flight)",
            opts.samples
        ),
        bytes,
        "use fewer --samples or --threads, or the GPU engine, which draws the samples in chunks",
    )
}

/// Accumulates every input of the request, in input order.
fn accumulate(req: &Request<'_>) -> Result<Accumulator> {
    validate(req)?;
    let opts = &req.options;
    debug_assert!(opts.samples >= MIN_SAMPLES_FOR_VARIANCE);
    let b = req.inputs.nrows();
    check_sample_memory(req)?;
    let needs = req.needs();
    let mut acc = Accumulator::new(req.model, b, opts.per_input, &needs);
    // Blocks of whole derivative chunks from input 0, so that every input's derivatives are
    // computed in the same chunk whatever the batch size; at most as many inputs as keep
    // their Δ_l and Hd_l (n_l × O each, per hidden layer: the head's are not formed) within
    // DERIVATIVE_BYTES.
    let widths = req.model.widths();
    let per_input: usize = widths[1..widths.len() - 1]
        .iter()
        .map(|n| 2 * 8 * n * req.model.output_dim())
        .sum();
    let fit = (DERIVATIVE_BYTES / per_input.max(1)).max(1);
    let block = opts.batch_size.max(1).min(fit).div_ceil(blocked::CHUNK) * blocked::CHUNK;
    // The weights' layout for the batched products, once for all blocks.
    let weights = blocked::Weights::new(req.model, needs.hessian);
    let mut run = || -> Result<()> {
        for start in (0..b).step_by(block) {
            let end = (start + block).min(b);
            let ds = blocked::block_derivatives_with(
                &weights,
                req.model,
                req.family,
                req.inputs.slice(ndarray::s![start..end, ..]),
                needs.hessian,
            );
            // Each input's statistics and its share of the accumulation chunks in parallel,
            // then added in input order.
            let shared = &acc;
            let results: Vec<(InputResult, Prepared)> = ds
                .into_par_iter()
                .enumerate()
                .map(|(offset, d)| {
                    let i = start + offset;
                    let r = input_stats(
                        req.family,
                        d,
                        (opts.input_offset + i as u64) as u32,
                        req.labels.map(|l| &l[i]),
                        opts,
                        &needs,
                    )?;
                    let prepared = shared.prepare(&r.stats);
                    Ok((r, prepared))
                })
                .collect::<Result<_>>()?;
            for (offset, (r, prepared)) in results.into_iter().enumerate() {
                acc.add_prepared(start + offset, &r.stats, prepared);
                if let Some(t) = &r.theory {
                    acc.add_theory(start + offset, t);
                }
                acc.add_theory_time(r.theory_s);
            }
            if let Some(p) = req.progress {
                p(end, b);
            }
        }
        Ok(())
    };
    match opts.threads {
        0 => run()?,
        t => rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| crate::Error::Input(format!("cannot start {t} threads: {e}")))?
            .install(run)?,
    }
    Ok(acc)
}

/// Per-sample derivatives of ℓ(y) = log p(y|x,θ) for one input and one label, per parameter
/// tensor in [`Mlp::params`] order, computed by the brute-force per-sample route: the score by
/// backpropagation of r, the exact negative diagonal Hessian as GGN_ii − (D r)_i with D r from
/// the weighted Hessian pass of MATH §6.6 (independent of the per-output Hd_l).
pub struct SampleDerivatives {
    /// The score ∂ℓ/∂θ_i, one flat vector per parameter tensor.
    pub score: Vec<Vec<f64>>,
    /// The negative diagonal Hessian −∂²ℓ/∂θ_i², one flat vector per parameter tensor.
    pub neg_hess: Vec<Vec<f64>>,
}

/// See [`SampleDerivatives`].
pub fn sample_derivatives(
    model: &Mlp,
    family: &dyn ExpFamily,
    x: ArrayView1<f64>,
    y: &Label,
) -> Result<SampleDerivatives> {
    let d = derivatives(model, family, x);
    let mut r = vec![0.0; d.h.len()];
    family.residual(&d.h, &d.eta, y, &mut r)?;
    let r = Array1::from(r);
    let dr = weighted_hessian_diag(model, x, r.view());
    let mut score = Vec::new();
    let mut neg_hess = Vec::new();
    for (l, layer) in model.layers().iter().enumerate() {
        let a = &d.layer_inputs[l];
        let beta = d.delta[l].dot(&r);
        let ggn: Vec<f64> = d.delta[l]
            .rows()
            .into_iter()
            .map(|row| family.cov_quad(&d.eta, row.as_slice().expect("contiguous")))
            .collect();
        let (n_out, n_in) = (layer.outputs(), layer.inputs());
        let mut sw = Vec::with_capacity(n_out * n_in);
        let mut hw = Vec::with_capacity(n_out * n_in);
        for j in 0..n_out {
            for k in 0..n_in {
                sw.push(beta[j] * a[k]);
                hw.push(a[k] * a[k] * (ggn[j] - dr[l][j]));
            }
        }
        score.push(sw);
        neg_hess.push(hw);
        if layer.bias.is_some() {
            score.push(beta.to_vec());
            neg_hess.push((0..n_out).map(|j| ggn[j] - dr[l][j]).collect());
        }
    }
    Ok(SampleDerivatives { score, neg_hess })
}

/// Diagonal of ∂²(rᵀh)/∂z_l² for every layer, by one pass of the MATH §6.2 recursion started
/// at Δ_L = r, H_L = 0 (MATH §6.6 step 3). Entry j of layer l equals `Σ_a Hd_l[j,a] r_a`.
pub fn weighted_hessian_diag(
    model: &Mlp,
    x: ArrayView1<f64>,
    r: ArrayView1<f64>,
) -> Vec<Array1<f64>> {
    let layers = model.layers();
    let nl = layers.len();
    let ForwardPass { d1, d2, .. } = model.forward_with_derivatives(x);
    let mut out = vec![Array1::zeros(0); nl];
    out[nl - 1] = Array1::zeros(r.len());
    let mut delta = r.to_owned();
    let mut hess = Array2::<f64>::zeros((r.len(), r.len()));
    for l in (1..nl).rev() {
        let w = &layers[l].weight;
        let g = w.t().dot(&delta);
        let mut hn = w.t().dot(&hess.dot(w));
        let (s1, s2) = (&d1[l - 1], &d2[l - 1]);
        for j in 0..g.len() {
            for k in 0..g.len() {
                hn[[j, k]] *= s1[j] * s1[k];
            }
            hn[[j, j]] += s2[j] * g[j];
        }
        delta = &g * s1;
        out[l - 1] = hn.diag().to_owned();
        hess = hn;
    }
    out
}

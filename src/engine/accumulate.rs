//! Expansion of per-unit statistics to parameters (MATH §6.5) and their accumulation over
//! inputs. For channel c with power p, the sum over inputs is a matrix product:
//! S_c[j,k] = Σ_x (s_c(x)·base_j(x)) · a_k(x)^p. Inputs are grouped into fixed chunks of
//! [`CHUNK`] consecutive indices (independent of the engine's batches and threads) and each
//! chunk is added with one GEMM per layer and power, in input order; the Fisher and the
//! empirical Fisher also get a per-entry Welford update in input order (their variance over
//! inputs). So the result does not depend on how inputs were split into blocks or threads.

use super::channels::Channel;
use super::cpu::InputStats;
use super::Request;
use crate::model::Mlp;
use crate::report::{Key, ParamReport, Report, RunInfo, NUM_KEYS};
use crate::theory::advice::optimal_combination;
use crate::theory::{InputTheory, LayerBounds, TensorBounds};
use crate::{Error, Result};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayD, IxDyn};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Inputs per accumulation chunk (fixed: results must not depend on the engine's batches).
pub const CHUNK: usize = 64;

/// The per-input value of every channel key for one parameter entry (index = [`Key::index`];
/// derived keys stay 0).
type Values = [f64; NUM_KEYS];

/// The channels grouped by power: (p, [(key slot, channel)]).
pub(crate) fn channel_groups() -> Vec<(u32, Vec<(usize, Channel)>)> {
    let mut groups: Vec<(u32, Vec<(usize, Channel)>)> = Vec::new();
    for key in Key::ALL {
        if let Some(c) = key.channel() {
            match groups.iter_mut().find(|g| g.0 == c.power) {
                Some(g) => g.1.push((key.index(), c)),
                None => groups.push((c.power, vec![(key.index(), c)])),
            }
        }
    }
    groups
}

/// The per-unit factor s(x)·base_j(x) of a channel for one input.
fn unit_factor(stats: &InputStats, layer: usize, j: usize, c: &Channel) -> f64 {
    stats.scalars[c.scalar as usize] * stats.units[layer].bases[[c.base.index(), j]]
}

/// Values of entry (unit j, layer input a) of one input: a^p · s(x) · base_j (a = 1 for biases).
fn values(stats: &InputStats, layer: usize, j: usize, a: f64) -> Values {
    let mut out = [0.0; NUM_KEYS];
    for (slot, key) in out.iter_mut().zip(Key::ALL) {
        if let Some(c) = key.channel() {
            *slot = a.powi(c.power as i32) * unit_factor(stats, layer, j, &c);
        }
    }
    out
}

const FISHER: usize = Key::Fisher.index();
const EF: usize = Key::Ef.index();

/// Fills the derived keys of one entry that are functions of its channel values (of one input,
/// or of the means over inputs, the squared standard errors already divided by B): the
/// standard errors of mc_var1/mc_var2, the optimal combination of Î1 and Î2 and the empirical
/// Fisher's bias.
fn derive(v: &mut Values) {
    for se in [Key::McVar1Se, Key::McVar2Se] {
        // Sums of unbiased per-input estimates may dip below 0 by rounding or chance; a NaN
        // (overflow) stays NaN so that the report refuses it.
        let var = v[se.index()];
        v[se.index()] = if var < 0.0 { 0.0 } else { var.sqrt() };
    }
    let (w, var) = optimal_combination(
        v[Key::Var1.index()],
        v[Key::Var2.index()],
        v[Key::Cov12.index()],
    );
    v[Key::WOpt.index()] = w;
    v[Key::VarOpt.index()] = var;
    v[Key::EfBias.index()] = v[EF] - v[FISHER];
}

/// Welford running mean and sum of squared deviations.
#[derive(Clone, Copy, Debug, Default)]
struct Welford {
    mean: f64,
    m2: f64,
}

impl Welford {
    /// Adds the n-th value; `inv_n` = 1/n.
    fn push(&mut self, x: f64, inv_n: f64) {
        let delta = x - self.mean;
        self.mean += delta * inv_n;
        self.m2 += delta * (x - self.mean);
    }

    /// Chan's merge of `n_a` values summarised by self with `n_b` values summarised by
    /// (mean, m2).
    fn merge(&mut self, n_a: f64, n_b: f64, mean: f64, m2: f64) {
        let n = n_a + n_b;
        let delta = mean - self.mean;
        self.mean += delta * n_b / n;
        self.m2 += m2 + delta * delta * n_a * n_b / n;
    }
}

/// Sums over a block of consecutive inputs of one layer, computed elsewhere (the GPU engine's
/// accumulation GEMMs, MATH §6.5): per channel key, Σ_x a^p·s(x)·base_j(x) as [n_out, row]
/// (row = [W[j, ·], b[j]]); and per entry the block's Welford statistics
/// (Fisher mean, Fisher M2, empirical-Fisher mean, empirical-Fisher M2).
pub(crate) struct LayerBlock<'a> {
    pub channels: Vec<(Key, &'a [f32])>,
    pub welford: &'a [f32],
}

/// The Welford statistics of one entry: the Fisher and the empirical Fisher, for their variance
/// over inputs (Thm 4.7's Var_x I(θ_i|x), MATH §5.7; the data-set variance of the empirical
/// Fisher, Cor. F.2).
#[derive(Clone, Copy, Debug, Default)]
struct EntryWelford {
    fisher: Welford,
    ef: Welford,
}

/// One layer's accumulators. Entries are rows j = [W[j, 0..n_in], b[j]] (bias last, if any).
struct LayerAcc {
    n_out: usize,
    n_in: usize,
    row: usize,
    welford: Vec<EntryWelford>,
    /// Per power group g: sums (|group g| · n_out) × row, row c·n_out + j.
    sums: Vec<Array2<f64>>,
    /// Pending chunk, per input: the layer input and, per group, the unit factors
    /// (|group| · n_out, channel-major).
    pending: Vec<(Vec<f64>, Vec<Vec<f64>>)>,
    per_input: Vec<Values>,
    /// Sums over inputs of the per-tensor bounds (theory hook).
    bounds: LayerBounds,
}

impl LayerAcc {
    /// Adds the pending chunk with one GEMM per power group.
    fn flush(&mut self, groups: &[(u32, Vec<(usize, Channel)>)]) {
        let m = self.pending.len();
        if m == 0 {
            return;
        }
        let (pending, row, n_out) = (&self.pending, self.row, self.n_out);
        self.sums
            .par_iter_mut()
            .zip(groups)
            .enumerate()
            .for_each(|(g, (sums, (power, chans)))| {
                let a = Array2::from_shape_fn((m, row), |(x, k)| {
                    pending[x].0.get(k).map_or(1.0, |v| v.powi(*power as i32))
                });
                let b =
                    Array2::from_shape_fn((m, chans.len() * n_out), |(x, c)| pending[x].1[g][c]);
                general_mat_mul(1.0, &b.t(), &a, 1.0, sums);
            });
        self.pending.clear();
    }
}

/// Accumulates per-parameter results over the inputs, in input order.
pub(crate) struct Accumulator {
    layers: Vec<LayerAcc>,
    groups: Vec<(u32, Vec<(usize, Channel)>)>,
    added: usize,
    theory_added: usize,
    inputs: usize,
    per_input: bool,
    has_ef: bool,
    bound_keys: bool,
}

impl Accumulator {
    /// `bound_keys`: whether the bound keys' channels get real per-input scalars (else they
    /// are left out of the report).
    pub fn new(
        model: &Mlp,
        inputs: usize,
        per_input: bool,
        has_ef: bool,
        bound_keys: bool,
    ) -> Accumulator {
        let groups = channel_groups();
        let layers = model
            .layers()
            .iter()
            .map(|d| {
                let row = d.inputs() + usize::from(d.bias.is_some());
                LayerAcc {
                    n_out: d.outputs(),
                    n_in: d.inputs(),
                    row,
                    welford: vec![EntryWelford::default(); d.outputs() * row],
                    sums: groups
                        .iter()
                        .map(|g| Array2::zeros((g.1.len() * d.outputs(), row)))
                        .collect(),
                    pending: Vec::with_capacity(CHUNK),
                    per_input: if per_input {
                        vec![[0.0; NUM_KEYS]; inputs * d.outputs() * row]
                    } else {
                        Vec::new()
                    },
                    bounds: LayerBounds::default(),
                }
            })
            .collect();
        Accumulator {
            layers,
            groups,
            added: 0,
            theory_added: 0,
            inputs,
            per_input,
            has_ef,
            bound_keys,
        }
    }

    /// Adds input number `index`; inputs must come in order 0, 1, 2, …
    pub fn add(&mut self, index: usize, stats: &InputStats) {
        assert_eq!(index, self.added, "inputs must be accumulated in order");
        let inv_n = 1.0 / (self.added + 1) as f64;
        let fisher = Key::Fisher.channel().expect("the Fisher is a channel");
        let ef = Key::Ef
            .channel()
            .expect("the empirical Fisher is a channel");
        let groups = &self.groups;
        for (l, (layer, a)) in self.layers.iter_mut().zip(&stats.layer_inputs).enumerate() {
            let (n_in, row, n_out) = (layer.n_in, layer.row, layer.n_out);
            let a2 = |k: usize| if k < n_in { a[k] * a[k] } else { 1.0 };
            // Welford updates, per entry in input order (both channels have power 2).
            layer
                .welford
                .par_chunks_mut(row)
                .enumerate()
                .for_each(|(j, ws)| {
                    let (qf, qe) = (
                        unit_factor(stats, l, j, &fisher),
                        unit_factor(stats, l, j, &ef),
                    );
                    for (k, w) in ws.iter_mut().enumerate() {
                        w.fisher.push(a2(k) * qf, inv_n);
                        w.ef.push(a2(k) * qe, inv_n);
                    }
                });
            if !layer.per_input.is_empty() {
                let entry =
                    |j: usize, k: usize| values(stats, l, j, if k < n_in { a[k] } else { 1.0 });
                layer.per_input[index * n_out * row..(index + 1) * n_out * row]
                    .par_chunks_mut(row)
                    .enumerate()
                    .for_each(|(j, vals)| {
                        for (k, v) in vals.iter_mut().enumerate() {
                            *v = entry(j, k);
                        }
                    });
            }
            let factors = groups
                .iter()
                .map(|(_, chans)| {
                    chans
                        .iter()
                        .flat_map(|(_, c)| (0..n_out).map(move |j| unit_factor(stats, l, j, c)))
                        .collect()
                })
                .collect();
            layer.pending.push((a.to_vec(), factors));
        }
        self.added += 1;
        if self.added.is_multiple_of(CHUNK) {
            self.flush();
        }
    }

    /// Adds a block of `count` inputs (the next ones in order) whose sums were formed
    /// elsewhere, one [`LayerBlock`] per layer; the block's Welford statistics are merged by
    /// Chan's formula. Not available with per-input results.
    pub fn merge_block(&mut self, count: usize, blocks: &[LayerBlock<'_>]) -> Result<()> {
        if self.per_input || count == 0 || blocks.len() != self.layers.len() {
            return Err(Error::Gpu(format!(
                "internal error: cannot merge a block of {count} inputs over {} layers",
                blocks.len()
            )));
        }
        let (n_a, n_b) = (self.added as f64, count as f64);
        for (layer, block) in self.layers.iter_mut().zip(blocks) {
            let size = layer.n_out * layer.row;
            if block.welford.len() != 4 * size {
                return Err(Error::Gpu("internal error: Welford block size".into()));
            }
            for (key, sums) in &block.channels {
                let (g, c) = self
                    .groups
                    .iter()
                    .enumerate()
                    .find_map(|(g, (_, chans))| {
                        chans
                            .iter()
                            .position(|(slot, _)| *slot == key.index())
                            .map(|c| (g, c))
                    })
                    .ok_or_else(|| Error::Gpu(format!("'{}' is not a channel", key.name())))?;
                if sums.len() != size {
                    return Err(Error::Gpu("internal error: channel block size".into()));
                }
                let rows = c * layer.n_out..(c + 1) * layer.n_out;
                let mut dst = layer.sums[g].slice_mut(ndarray::s![rows, ..]);
                for (d, v) in dst.iter_mut().zip(sums.iter()) {
                    *d += f64::from(*v);
                }
            }
            layer
                .welford
                .par_iter_mut()
                .zip(block.welford.par_chunks(4))
                .for_each(|(w, b)| {
                    let b: Vec<f64> = b.iter().map(|v| f64::from(*v)).collect();
                    w.fisher.merge(n_a, n_b, b[0], b[1]);
                    w.ef.merge(n_a, n_b, b[2], b[3]);
                });
        }
        self.added += count;
        Ok(())
    }

    fn flush(&mut self) {
        let groups = &self.groups;
        self.layers.par_iter_mut().for_each(|l| l.flush(groups));
    }

    /// Adds the per-tensor bounds of input number `index` (the theory hook,
    /// [`crate::theory::input_theory`]), in input order, for every input or for none.
    pub fn add_theory(&mut self, index: usize, theory: &InputTheory) {
        assert_eq!(
            index, self.theory_added,
            "inputs must be accumulated in order"
        );
        assert!(index < self.inputs, "input {index} out of range");
        for (layer, t) in self.layers.iter_mut().zip(&theory.layers) {
            layer.bounds.weight.add(&t.weight);
            layer.bounds.bias.add(&t.bias);
        }
        self.theory_added += 1;
    }

    /// Builds the report: means over inputs (or per-input arrays) of every key available for
    /// the family and labels, derived keys, and the per-tensor bounds if the theory hook ran.
    pub fn finish(mut self, req: &Request<'_>, engine: &str, adapter: &str) -> Result<Report> {
        assert_eq!(self.added, self.inputs, "every input must be accumulated");
        self.flush();
        let b = self.inputs as f64;
        let n = req.options.samples as f64;
        let kind = req.family.kind();
        let keys: Vec<Key> = Key::ALL
            .into_iter()
            .filter(|k| k.is_available(kind, self.has_ef) && (self.bound_keys || !k.is_bound()))
            .collect();
        let with_theory = self.theory_added == self.inputs;
        let mut params = Vec::new();
        for info in req.model.params() {
            let layer = &self.layers[info.layer];
            // Column range of this tensor within a row: weight 0..n_in, bias n_in..n_in+1.
            let cols = if info.is_bias {
                layer.n_in..layer.n_in + 1
            } else {
                0..layer.n_in
            };
            let index = |j: usize, k: usize| j * layer.row + k;
            let positions: Vec<usize> = (0..layer.n_out)
                .flat_map(|j| cols.clone().map(move |k| index(j, k)))
                .collect();
            // Means over inputs and derived keys, per entry.
            let means: Vec<Values> = positions
                .par_iter()
                .map(|&pos| {
                    let (j, k) = (pos / layer.row, pos % layer.row);
                    let mut v = [0.0; NUM_KEYS];
                    for ((_, chans), sums) in self.groups.iter().zip(&layer.sums) {
                        for (c, (slot, _)) in chans.iter().enumerate() {
                            v[*slot] = sums[[c * layer.n_out + j, k]] / b;
                        }
                    }
                    let w = &layer.welford[pos];
                    v[FISHER] = w.fisher.mean;
                    // Var of a mean of B independent estimates: Σ_x Var_x / B².
                    v[Key::McVar1Se.index()] /= b;
                    v[Key::McVar2Se.index()] /= b;
                    derive(&mut v);
                    v[Key::VarX.index()] = w.fisher.m2 / b;
                    v[Key::VarJoint1.index()] = (w.fisher.m2 / b + v[Key::Var1.index()] / n) / b;
                    v[Key::VarJoint2.index()] = (w.fisher.m2 / b + v[Key::Var2.index()] / n) / b;
                    v[Key::VarEf.index()] = w.ef.m2 / b;
                    v
                })
                .collect();
            let per_input: Vec<Values> = if self.per_input {
                (0..self.inputs)
                    .flat_map(|x| {
                        let base = x * layer.n_out * layer.row;
                        positions.iter().map(move |&pos| {
                            let mut v = layer.per_input[base + pos];
                            derive(&mut v);
                            v
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let shape = info.shape.clone();
            let mut values = BTreeMap::new();
            for &key in &keys {
                let slot = key.index();
                let array = if self.per_input && key.is_per_input() {
                    let mut s = vec![self.inputs];
                    s.extend(&shape);
                    ArrayD::from_shape_vec(IxDyn(&s), per_input.iter().map(|v| v[slot]).collect())
                } else {
                    ArrayD::from_shape_vec(IxDyn(&shape), means.iter().map(|v| v[slot]).collect())
                }
                .map_err(|e| Error::Model(format!("internal shape error: {e}")))?;
                if let Some(index) = array.iter().position(|v| !v.is_finite()) {
                    // The GPU engine sums in f32 (a⁸ for the standard errors): say so.
                    let hint = if engine == "gpu" {
                        "; the GPU engine works in f32: scale the inputs or use --engine cpu"
                    } else {
                        ""
                    };
                    return Err(Error::NonFinite {
                        what: format!(
                            "result '{}/{}' (overflow: the model's weights or inputs are too \
                             large{hint})",
                            key.name(),
                            info.name
                        ),
                        index,
                    });
                }
                values.insert(key, array);
            }
            let bounds = with_theory.then(|| {
                let mut t: TensorBounds = if info.is_bias {
                    layer.bounds.bias
                } else {
                    layer.bounds.weight
                };
                t.scale(1.0 / b);
                t
            });
            if let Some(t) = &bounds {
                if !t.is_finite() {
                    return Err(Error::NonFinite {
                        what: format!(
                            "the trace bounds of '{}' (overflow: the model's weights or inputs are too large)",
                            info.name
                        ),
                        index: 0,
                    });
                }
            }
            params.push(ParamReport {
                info,
                values,
                bounds,
            });
        }
        Ok(Report {
            params,
            run: RunInfo {
                engine: engine.into(),
                adapter: adapter.into(),
                family: req.family.name().into(),
                samples: req.options.samples,
                seed: req.options.seed,
                inputs: self.inputs,
                per_input: self.per_input,
                wall_time_s: 0.0,
                device_phase_s: BTreeMap::new(),
                host_theory_s: None,
            },
        })
    }
}

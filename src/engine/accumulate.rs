//! Expansion of per-unit statistics to parameters (MATH §6.5) and their accumulation over
//! inputs. Each parameter's running sums are updated in input order, so the result does not
//! depend on how inputs were split into blocks or threads.

use super::channels::Channel;
use super::cpu::InputStats;
use super::Request;
use crate::model::Mlp;
use crate::report::{Key, ParamReport, Report, RunInfo};
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::collections::BTreeMap;

const NUM_KEYS: usize = Key::ALL.len();

/// The per-input value of every channel key for one parameter entry (index = position in
/// [`Key::ALL`]; derived keys stay 0).
type Values = [f64; NUM_KEYS];

/// Values of entry (unit j, layer input a) of one input: a^p · s(x) · base_j (a = 1 for biases).
fn values(stats: &InputStats, layer: usize, j: usize, a: f64) -> Values {
    let bases = &stats.units[layer].bases;
    let mut out = [0.0; NUM_KEYS];
    for (slot, key) in out.iter_mut().zip(Key::ALL) {
        if let Some(Channel {
            base,
            power,
            scalar,
        }) = key.channel()
        {
            *slot =
                a.powi(power as i32) * stats.scalars[scalar as usize] * bases[[base.index(), j]];
        }
    }
    out
}

const FISHER: usize = key_index(Key::Fisher);

const fn key_index(key: Key) -> usize {
    let mut i = 0;
    while i < NUM_KEYS {
        if Key::ALL[i] as usize == key as usize {
            return i;
        }
        i += 1;
    }
    panic!("every key is in Key::ALL");
}

/// Running sums of one parameter entry; the Fisher also gets a Welford mean/M2 for the
/// input-randomness term Var_x I(θ_i|x) of Theorem 4.7 (MATH §5.7).
#[derive(Clone, Copy, Debug)]
struct Acc {
    fisher_mean: f64,
    fisher_m2: f64,
    sum: Values,
}

impl Default for Acc {
    fn default() -> Self {
        Acc {
            fisher_mean: 0.0,
            fisher_m2: 0.0,
            sum: [0.0; NUM_KEYS],
        }
    }
}

impl Acc {
    fn push(&mut self, v: &Values, n_before: usize) {
        let n = (n_before + 1) as f64;
        let f = v[FISHER];
        let delta = f - self.fisher_mean;
        self.fisher_mean += delta / n;
        self.fisher_m2 += delta * (f - self.fisher_mean);
        for (s, x) in self.sum.iter_mut().zip(v) {
            *s += x;
        }
    }
}

/// Entries of one layer, row j = [W[j, 0..n_in], b[j]] (bias last, if any).
struct LayerAcc {
    n_out: usize,
    n_in: usize,
    row: usize,
    acc: Vec<Acc>,
    per_input: Vec<Values>,
}

/// Accumulates per-parameter results over the inputs, in input order.
pub(super) struct Accumulator {
    layers: Vec<LayerAcc>,
    added: usize,
    inputs: usize,
    per_input: bool,
    has_ef: bool,
}

impl Accumulator {
    pub fn new(model: &Mlp, inputs: usize, per_input: bool, has_ef: bool) -> Accumulator {
        let layers = model
            .layers()
            .iter()
            .map(|d| {
                let row = d.inputs() + usize::from(d.bias.is_some());
                LayerAcc {
                    n_out: d.outputs(),
                    n_in: d.inputs(),
                    row,
                    acc: vec![Acc::default(); d.outputs() * row],
                    per_input: if per_input {
                        vec![[0.0; NUM_KEYS]; inputs * d.outputs() * row]
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        Accumulator {
            layers,
            added: 0,
            inputs,
            per_input,
            has_ef,
        }
    }

    /// Adds input number `index`; inputs must come in order 0, 1, 2, …
    pub fn add(&mut self, index: usize, stats: &InputStats) {
        assert_eq!(index, self.added, "inputs must be accumulated in order");
        let n = self.added;
        for (l, (layer, a)) in self.layers.iter_mut().zip(&stats.layer_inputs).enumerate() {
            let (n_in, row, n_out) = (layer.n_in, layer.row, layer.n_out);
            let entry = |j: usize, k: usize| values(stats, l, j, if k < n_in { a[k] } else { 1.0 });
            layer
                .acc
                .par_chunks_mut(row)
                .enumerate()
                .for_each(|(j, accs)| {
                    for (k, acc) in accs.iter_mut().enumerate() {
                        acc.push(&entry(j, k), n);
                    }
                });
            if !layer.per_input.is_empty() {
                layer.per_input[index * n_out * row..(index + 1) * n_out * row]
                    .par_chunks_mut(row)
                    .enumerate()
                    .for_each(|(j, vals)| {
                        for (k, v) in vals.iter_mut().enumerate() {
                            *v = entry(j, k);
                        }
                    });
            }
        }
        self.added += 1;
    }

    /// Builds the report: means over inputs (or per-input arrays) of every contract key.
    pub fn finish(self, req: &Request<'_>, engine: &str, adapter: &str) -> Result<Report> {
        assert_eq!(self.added, self.inputs, "every input must be accumulated");
        let b = self.inputs as f64;
        let n = req.options.samples as f64;
        let mut params = Vec::new();
        for info in req.model.params() {
            let layer = &self.layers[info.layer];
            // Column range of this tensor within a row: weight 0..n_in, bias n_in..n_in+1.
            let cols = if info.is_bias {
                layer.n_in..layer.n_in + 1
            } else {
                0..layer.n_in
            };
            let entries = |f: &dyn Fn(&Acc) -> f64| -> Vec<f64> {
                (0..layer.n_out)
                    .flat_map(|j| cols.clone().map(move |k| (j, k)))
                    .map(|(j, k)| f(&layer.acc[j * layer.row + k]))
                    .collect()
            };
            let shape = info.shape.clone();
            let mut values = BTreeMap::new();
            for key in Key::ALL {
                if key == Key::Ef && !self.has_ef {
                    continue;
                }
                let (var1, var2) = (key_index(Key::Var1), key_index(Key::Var2));
                let slot = key_index(key);
                let mean: Vec<f64> = match key {
                    Key::Fisher => entries(&|a| a.fisher_mean),
                    Key::VarJoint1 => entries(&|a| (a.fisher_m2 / b + a.sum[var1] / b / n) / b),
                    Key::VarJoint2 => entries(&|a| (a.fisher_m2 / b + a.sum[var2] / b / n) / b),
                    _ => entries(&|a| a.sum[slot] / b),
                };
                let array = if self.per_input && key.is_per_input() {
                    let mut full = Vec::with_capacity(self.inputs * mean.len());
                    for x in 0..self.inputs {
                        let base = x * layer.n_out * layer.row;
                        for j in 0..layer.n_out {
                            for k in cols.clone() {
                                full.push(layer.per_input[base + j * layer.row + k][slot]);
                            }
                        }
                    }
                    let mut s = vec![self.inputs];
                    s.extend(&shape);
                    ArrayD::from_shape_vec(IxDyn(&s), full)
                } else {
                    ArrayD::from_shape_vec(IxDyn(&shape), mean)
                }
                .map_err(|e| Error::Model(format!("internal shape error: {e}")))?;
                if let Some(index) = array.iter().position(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        what: format!(
                            "result '{}/{}' (overflow: the model's weights or inputs are too large)",
                            key.name(),
                            info.name
                        ),
                        index,
                    });
                }
                values.insert(key, array);
            }
            params.push(ParamReport { info, values });
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
            },
        })
    }
}

//! Expansion of per-unit statistics to parameters (MATH §6.5) and their accumulation over
//! inputs. Each parameter's running sums are updated in input order, so the result does not
//! depend on how inputs were split into blocks or threads.

use super::cpu::{InputStats, UnitStats};
use super::Request;
use crate::model::Mlp;
use crate::report::{Key, ParamReport, Report, RunInfo};
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// The per-input value of every per-input key for one parameter entry.
#[derive(Clone, Copy, Debug, Default)]
struct Values {
    fisher: f64,
    var1: f64,
    var2: f64,
    mc1: f64,
    mc2: f64,
    mc_var1: f64,
    mc_var2: f64,
    ef: f64,
}

impl Values {
    /// Entry (unit j, layer input a) of one input: a²·(unit scalar) for first-order keys and
    /// a⁴·(unit scalar) for variances (MATH §6.5; a = 1 for biases).
    fn of(u: &UnitStats, j: usize, a: f64) -> Values {
        let a2 = a * a;
        let a4 = a2 * a2;
        Values {
            fisher: a2 * u.q[j],
            var1: a4 * u.v[j],
            var2: a4 * u.w[j],
            mc1: a2 * u.score_sq_mean[j],
            mc2: a2 * (u.q[j] - u.hess_r_mean[j]),
            mc_var1: a4 * u.score_sq_var[j],
            mc_var2: a4 * u.hess_r_var[j],
            ef: u.ef.as_ref().map_or(0.0, |e| a2 * e[j]),
        }
    }

    fn get(&self, key: Key) -> f64 {
        match key {
            Key::Fisher => self.fisher,
            Key::Var1 => self.var1,
            Key::Var2 => self.var2,
            Key::Mc1 => self.mc1,
            Key::Mc2 => self.mc2,
            Key::McVar1 => self.mc_var1,
            Key::McVar2 => self.mc_var2,
            Key::Ef => self.ef,
            Key::VarJoint1 | Key::VarJoint2 => f64::NAN,
        }
    }
}

/// Running sums of one parameter entry; the Fisher also gets a Welford mean/M2 for the
/// input-randomness term Var_x I(θ_i|x) of Theorem 4.7 (MATH §5.7).
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    fisher_mean: f64,
    fisher_m2: f64,
    sum: Values,
}

impl Acc {
    fn push(&mut self, v: &Values, n_before: usize) {
        let n = (n_before + 1) as f64;
        let delta = v.fisher - self.fisher_mean;
        self.fisher_mean += delta / n;
        self.fisher_m2 += delta * (v.fisher - self.fisher_mean);
        let s = &mut self.sum;
        s.fisher += v.fisher;
        s.var1 += v.var1;
        s.var2 += v.var2;
        s.mc1 += v.mc1;
        s.mc2 += v.mc2;
        s.mc_var1 += v.mc_var1;
        s.mc_var2 += v.mc_var2;
        s.ef += v.ef;
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
                        vec![Values::default(); inputs * d.outputs() * row]
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
        for (layer, (a, u)) in self
            .layers
            .iter_mut()
            .zip(stats.layer_inputs.iter().zip(&stats.units))
        {
            let (n_in, row, n_out) = (layer.n_in, layer.row, layer.n_out);
            let entry = |j: usize, k: usize| Values::of(u, j, if k < n_in { a[k] } else { 1.0 });
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
                let mean: Vec<f64> = match key {
                    Key::Fisher => entries(&|a| a.fisher_mean),
                    Key::VarJoint1 => entries(&|a| (a.fisher_m2 / b + a.sum.var1 / b / n) / b),
                    Key::VarJoint2 => entries(&|a| (a.fisher_m2 / b + a.sum.var2 / b / n) / b),
                    k => entries(&|a| a.sum.get(k) / b),
                };
                let array = if self.per_input && key.is_per_input() {
                    let mut full = Vec::with_capacity(self.inputs * mean.len());
                    for x in 0..self.inputs {
                        let base = x * layer.n_out * layer.row;
                        for j in 0..layer.n_out {
                            for k in cols.clone() {
                                full.push(layer.per_input[base + j * layer.row + k].get(key));
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

//! Expansion of per-unit statistics to parameters (MATH §6.5) and their accumulation over
//! inputs. For channel c with power p, the sum over inputs is a matrix product:
//! `S_c[j,k] = Σ_x (s_c(x)·base_j(x)) · a_k(x)^p`. Inputs are grouped into fixed chunks of
//! [`CHUNK`] consecutive indices (independent of the engine's batches and threads) and each
//! chunk is added with one GEMM per layer and power, in input order; the Fisher and the
//! empirical Fisher also get a per-entry Welford update in input order (their variance over
//! inputs). So the result does not depend on how inputs were split into blocks or threads.

use super::blocked::gemm;
use super::channels::Channel;
use super::keys::Needs;
use super::partial::{written_zeros, Groups, LayerStats, Partial, Values, Welford};
use super::stats::InputStats;
use super::Request;
use crate::model::Mlp;
use crate::report::{Engine, Key, Report, NUM_KEYS};
use crate::theory::InputTheory;
use crate::{Error, Result};
use faer::{Accum, MatMut, MatRef};

use rayon::prelude::*;

/// Inputs per accumulation chunk (fixed: results must not depend on the engine's batches).
pub const CHUNK: usize = 64;

/// Output rows (channel × unit) per parallel task of a chunk's GEMM.
const GEMM_ROWS: usize = 64;

/// The per-unit factor s(x)·base_j(x) of a channel for one input.
fn unit_factor(stats: &InputStats, layer: usize, j: usize, c: &Channel) -> f64 {
    stats.scalars[c.scalar as usize] * stats.units[layer].get(c.base, j)
}

/// [`unit_factor`] of every unit of a layer (`n_out` of them), appended to `out`.
fn unit_factors_into(
    out: &mut Vec<f64>,
    stats: &InputStats,
    layer: usize,
    n_out: usize,
    c: &Channel,
) {
    let s = stats.scalars[c.scalar as usize];
    match stats.units[layer].base(c.base) {
        Some(base) => out.extend(base.iter().map(|b| s * b)),
        None => out.extend((0..n_out).map(|_| s * 0.0)),
    }
}

/// a^p by repeated squaring: the operations of `f64::powi` (so the same bits), inlined for
/// the channels' powers 1, 2, 4 and 8 instead of a library call per value.
#[inline(always)]
fn channel_power(a: f64, p: u32) -> f64 {
    match p {
        1 => a,
        2 => a * a,
        4 => {
            let s = a * a;
            s * s
        }
        8 => {
            let s = a * a;
            let q = s * s;
            q * q
        }
        _ => a.powi(p as i32),
    }
}

/// Values of entry (unit j, layer input a) of one input: a^p · s(x) · base_j (a = 1 for
/// biases), for the accumulated channels.
fn values(groups: &Groups, stats: &InputStats, layer: usize, j: usize, a: f64) -> Values {
    let mut out = [0.0; NUM_KEYS];
    for (power, chans) in groups {
        let ap = channel_power(a, *power);
        for (slot, c) in chans {
            out[*slot] = ap * unit_factor(stats, layer, j, c);
        }
    }
    out
}

/// Sums over a block of consecutive inputs of one layer, computed elsewhere (the GPU engine's
/// accumulation GEMMs, MATH §6.5): per channel key, Σ_x a^p·s(x)·base_j(x) as `[n_out, row]`
/// (`row = [W[j, ·], b[j]]`); and per entry the block's Welford statistics
/// (Fisher mean, Fisher M2, empirical-Fisher mean, empirical-Fisher M2).
#[cfg(feature = "gpu")]
pub(crate) struct LayerBlock<'a> {
    pub channels: Vec<(Key, &'a [f32])>,
    pub welford: &'a [f32],
    /// Per column k of the layer input, the power-of-two factor s_k by which the device's
    /// copy of a_k was multiplied (its weights divided), or empty for none: a channel of
    /// power p is divided by s_k^p, the Welford means by s_k² and M2 by s_k⁴ (exactly).
    pub column_scales: &'a [f64],
}

/// s_k^p for column k of a layer input scaled by `scales` (1 for the bias column, past the
/// scales, and without scales).
#[cfg(feature = "gpu")]
fn unscale(scales: &[f64], k: usize, power: i32) -> f64 {
    scales.get(k).map_or(1.0, |s| s.powi(power))
}

/// Welford's update of a running mean and M2 by the n-th value `x` (`inv_n` = 1/n).
#[inline(always)]
fn welford_push(mean: &mut f64, m2: &mut f64, x: f64, inv_n: f64) {
    let delta = x - *mean;
    *mean += delta * inv_n;
    *m2 += delta * (x - *mean);
}

/// Entries updated together by [`welford_row`]: enough independent chains to hide the
/// latency of each update.
const WELFORD_LANES: usize = 32;

/// Welford updates of one row of entries by the chunk's inputs in order: entry k gets the
/// values `a2[x][k] · q[x]` for x = 0, 1, … with `inv_n[x]` = 1/n. The statistics of a block
/// of [`WELFORD_LANES`] entries stay in registers while the chunk streams past; every entry
/// gets the same operations in the same order as one `welford_push` per value (with AVX where
/// the CPU has it, [`crate::simd::with_avx`]: the same results).
fn welford_row(mean: &mut [f64], m2: &mut [f64], a2: &[Vec<f64>], q: &[f64], inv_n: &[f64]) {
    crate::simd::with_avx(
        #[inline(always)]
        || welford_row_body(mean, m2, a2, q, inv_n),
    )
}

/// The body of [`welford_row`].
#[inline(always)]
fn welford_row_body(mean: &mut [f64], m2: &mut [f64], a2: &[Vec<f64>], q: &[f64], inv_n: &[f64]) {
    let row = mean.len();
    let mut k = 0;
    while k + WELFORD_LANES <= row {
        let mut mu: [f64; WELFORD_LANES] = mean[k..k + WELFORD_LANES].try_into().expect("lanes");
        let mut s2: [f64; WELFORD_LANES] = m2[k..k + WELFORD_LANES].try_into().expect("lanes");
        for ((a2, &q), &inv) in a2.iter().zip(q).zip(inv_n) {
            let a2: &[f64; WELFORD_LANES] = a2[k..k + WELFORD_LANES].try_into().expect("lanes");
            for i in 0..WELFORD_LANES {
                welford_push(&mut mu[i], &mut s2[i], a2[i] * q, inv);
            }
        }
        mean[k..k + WELFORD_LANES].copy_from_slice(&mu);
        m2[k..k + WELFORD_LANES].copy_from_slice(&s2);
        k += WELFORD_LANES;
    }
    for ((a2, &q), &inv) in a2.iter().zip(q).zip(inv_n) {
        for ((mu, s2), &a2) in mean[k..].iter_mut().zip(&mut m2[k..]).zip(&a2[k..row]) {
            welford_push(mu, s2, a2 * q, inv);
        }
    }
}

/// One input of a layer's pending chunk.
struct PendingInput {
    /// The layer input a.
    a: Vec<f64>,
    /// Per power group, the unit factors (|group| · n_out, channel-major).
    factors: Vec<Vec<f64>>,
    /// The Fisher's and the empirical Fisher's unit factors, for the Welford statistics.
    welford: [Vec<f64>; 2],
}

/// One input's contribution to every layer's pending chunk ([`Accumulator::prepare`]).
pub(crate) struct Prepared(Vec<PendingInput>);

/// One layer's accumulators: its sufficient statistics and the pending chunk.
struct LayerAcc {
    stats: LayerStats,
    /// The Welford statistics of inputs added one by one, as columns (mean, M2) per entry:
    /// the Fisher's and the empirical Fisher's (empty when not kept); written into `stats`
    /// at the end.
    welford: [[Vec<f64>; 2]; 2],
    /// The pending chunk, in input order.
    pending: Vec<PendingInput>,
    per_input: Vec<Values>,
}

impl LayerAcc {
    /// Adds the pending chunk, whose first input is input number `first`: one GEMM per power
    /// group, and the Welford updates (`welford`: the Fisher's, the empirical Fisher's) row by
    /// row of entries over the chunk's inputs in order, so that a row's statistics stay in
    /// cache while the chunk streams past.
    fn flush(&mut self, groups: &Groups, first: usize, welford: (bool, bool)) {
        let m = self.pending.len();
        if m == 0 {
            return;
        }
        let (pending, row, n_out) = (&self.pending, self.stats.row, self.stats.n_out);
        self.stats
            .sums
            .par_iter_mut()
            .zip(groups)
            .enumerate()
            .for_each(|(g, (sums, (power, chans)))| {
                // A = [a^p | 1] (m × row) and Uᵀ (channels·n_out × m), both row-major.
                let mut a = vec![1.0; m * row];
                for (dst, p) in a.chunks_exact_mut(row).zip(pending) {
                    for (d, v) in dst.iter_mut().zip(&p.a) {
                        *d = channel_power(*v, *power);
                    }
                }
                let cols = chans.len() * n_out;
                let mut ut = vec![0.0; cols * m];
                for (x, p) in pending.iter().enumerate() {
                    for (c, &f) in p.factors[g].iter().enumerate() {
                        ut[c * m + x] = f;
                    }
                }
                let a = MatRef::from_row_major_slice(&a, m, row);
                // Fixed blocks of output rows in parallel, each product sequential: every
                // entry is the same dot product over the chunk's inputs whatever the split
                // or the thread count.
                let sums = sums.as_slice_mut().expect("standard layout");
                sums.par_chunks_mut(GEMM_ROWS * row)
                    .zip(ut.par_chunks(GEMM_ROWS * m))
                    .for_each(|(dst, ut)| {
                        let rows = dst.len() / row;
                        gemm(
                            MatMut::from_row_major_slice_mut(dst, rows, row),
                            Accum::Add,
                            MatRef::from_row_major_slice(ut, rows, m),
                            a,
                        );
                    });
            });
        let (fisher, ef) = welford;
        if fisher || ef {
            let inv_n: Vec<f64> = (0..m).map(|x| 1.0 / (first + x + 1) as f64).collect();
            let a2: Vec<Vec<f64>> = pending
                .iter()
                .map(|p| {
                    let mut v: Vec<f64> = p.a.iter().map(|a| a * a).collect();
                    v.resize(row, 1.0);
                    v
                })
                .collect();
            for (stat, on) in [(0, fisher), (1, ef)] {
                if !on {
                    continue;
                }
                let [mean, m2] = &mut self.welford[stat];
                mean.par_chunks_mut(row)
                    .zip(m2.par_chunks_mut(row))
                    .enumerate()
                    .for_each(|(j, (mean, m2))| {
                        let q: Vec<f64> = pending.iter().map(|p| p.welford[stat][j]).collect();
                        welford_row(mean, m2, &a2, &q, &inv_n);
                    });
            }
        }
        self.pending.clear();
    }
}

/// Accumulates per-parameter results over the inputs, in input order.
pub(crate) struct Accumulator {
    layers: Vec<LayerAcc>,
    groups: Groups,
    /// Whether the Fisher's and the empirical Fisher's Welford statistics are kept.
    welford: (bool, bool),
    /// Seconds of the theory layer's per-input work, if it ran.
    theory_s: Option<f64>,
    added: usize,
    theory_added: usize,
    inputs: usize,
    per_input: bool,
}

impl Accumulator {
    /// Accumulators for `inputs` inputs of the model and the channels and Welford statistics
    /// that `needs` asks for, keeping per-input values if asked.
    pub fn new(model: &Mlp, inputs: usize, per_input: bool, needs: &Needs) -> Accumulator {
        let groups = needs.channel_groups();
        let layers = model
            .layers()
            .iter()
            .map(|d| {
                let stats = LayerStats::new(d.outputs(), d.inputs(), d.bias.is_some(), &groups);
                LayerAcc {
                    per_input: if per_input {
                        vec![[0.0; NUM_KEYS]; inputs * d.outputs() * stats.row]
                    } else {
                        Vec::new()
                    },
                    stats,
                    welford: Default::default(),
                    pending: Vec::with_capacity(CHUNK),
                }
            })
            .collect();
        Accumulator {
            layers,
            groups,
            welford: (needs.fisher_welford, needs.ef_welford),
            theory_s: needs.spectra.then_some(0.0),
            added: 0,
            theory_added: 0,
            inputs,
            per_input,
        }
    }

    /// Adds input number `index`; inputs must come in order 0, 1, 2, … (the GPU engine's
    /// per-input path; the CPU engine prepares inputs in parallel).
    #[cfg(feature = "gpu")]
    pub fn add(&mut self, index: usize, stats: &InputStats) {
        let prepared = self.prepare(stats);
        self.add_prepared(index, stats, prepared);
    }

    /// What one input adds to every layer's pending chunk: its layer input and its unit
    /// factors. It reads no running state, so engines compute it for many inputs in parallel
    /// and then add them in order with [`Accumulator::add_prepared`].
    pub fn prepare(&self, stats: &InputStats) -> Prepared {
        let fisher = Key::Fisher.channel().expect("the Fisher is a channel");
        let ef = Key::Ef
            .channel()
            .expect("the empirical Fisher is a channel");
        let (fisher_welford, ef_welford) = self.welford;
        let layers = self
            .layers
            .iter()
            .zip(&stats.layer_inputs)
            .enumerate()
            .map(|(l, (layer, a))| {
                let n_out = layer.stats.n_out;
                let unit_factors = |on: bool, c: &Channel| -> Vec<f64> {
                    let mut f = Vec::new();
                    if on {
                        unit_factors_into(&mut f, stats, l, n_out, c);
                    }
                    f
                };
                let factors = self
                    .groups
                    .iter()
                    .map(|(_, chans)| {
                        let mut f = Vec::with_capacity(chans.len() * n_out);
                        for (_, c) in chans {
                            unit_factors_into(&mut f, stats, l, n_out, c);
                        }
                        f
                    })
                    .collect();
                PendingInput {
                    a: a.to_vec(),
                    factors,
                    welford: [
                        unit_factors(fisher_welford, &fisher),
                        unit_factors(ef_welford, &ef),
                    ],
                }
            })
            .collect();
        Prepared(layers)
    }

    /// Adds input number `index` from its statistics and [`Accumulator::prepare`]'s result for
    /// them; inputs must come in order 0, 1, 2, …
    pub fn add_prepared(&mut self, index: usize, stats: &InputStats, prepared: Prepared) {
        assert_eq!(index, self.added, "inputs must be accumulated in order");
        let (fisher_welford, ef_welford) = self.welford;
        let groups = &self.groups;
        for (l, ((layer, a), pending)) in self
            .layers
            .iter_mut()
            .zip(&stats.layer_inputs)
            .zip(prepared.0)
            .enumerate()
        {
            let (n_in, row, n_out) = (layer.stats.n_in, layer.stats.row, layer.stats.n_out);
            for (stat, on) in [fisher_welford, ef_welford].into_iter().enumerate() {
                if on && layer.welford[stat][0].is_empty() {
                    layer.welford[stat] = [written_zeros(n_out * row), written_zeros(n_out * row)];
                }
            }
            if !layer.per_input.is_empty() {
                let entry = |j: usize, k: usize| {
                    values(groups, stats, l, j, if k < n_in { a[k] } else { 1.0 })
                };
                layer.per_input[index * n_out * row..(index + 1) * n_out * row]
                    .par_chunks_mut(row)
                    .enumerate()
                    .for_each(|(j, vals)| {
                        for (k, v) in vals.iter_mut().enumerate() {
                            *v = entry(j, k);
                        }
                    });
            }
            layer.pending.push(pending);
        }
        self.added += 1;
        if self.added.is_multiple_of(CHUNK) {
            self.flush();
        }
    }

    /// Adds a block of `count` inputs (the next ones in order) whose sums were formed
    /// elsewhere, one [`LayerBlock`] per layer; the block's Welford statistics are merged by
    /// Chan's formula. Not available with per-input results.
    #[cfg(feature = "gpu")]
    pub fn merge_block(&mut self, count: usize, blocks: &[LayerBlock<'_>]) -> Result<()> {
        if self.per_input || count == 0 || blocks.len() != self.layers.len() {
            return Err(Error::Internal(format!(
                "cannot merge a block of {count} inputs over {} layers",
                blocks.len()
            )));
        }
        let (n_a, n_b) = (self.added as f64, count as f64);
        for (layer, block) in self.layers.iter_mut().zip(blocks) {
            let layer = &mut layer.stats;
            let size = layer.n_out * layer.row;
            if block.welford.len() != 4 * size {
                return Err(Error::Internal("Welford block size".into()));
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
                    .ok_or_else(|| Error::Internal(format!("'{}' is not a channel", key.name())))?;
                if sums.len() != size {
                    return Err(Error::Internal("channel block size".into()));
                }
                let rows = c * layer.n_out..(c + 1) * layer.n_out;
                let power = self.groups[g].0 as i32;
                let row = layer.row;
                let mut dst = layer.sums[g].slice_mut(ndarray::s![rows, ..]);
                for (e, (d, v)) in dst.iter_mut().zip(sums.iter()).enumerate() {
                    *d += f64::from(*v) / unscale(block.column_scales, e % row, power);
                }
            }
            let row = layer.row;
            layer
                .welford
                .par_iter_mut()
                .zip(block.welford.par_chunks(4))
                .enumerate()
                .for_each(|(e, (w, b))| {
                    let (s2, s4) = (
                        unscale(block.column_scales, e % row, 2),
                        unscale(block.column_scales, e % row, 4),
                    );
                    let b: Vec<f64> = b.iter().map(|v| f64::from(*v)).collect();
                    w.fisher.merge(n_a, n_b, b[0] / s2, b[1] / s4);
                    w.ef.merge(n_a, n_b, b[2] / s2, b[3] / s4);
                });
        }
        self.added += count;
        Ok(())
    }

    /// Adds the pending chunk of every layer.
    fn flush(&mut self) {
        let (groups, welford) = (&self.groups, self.welford);
        let first = self.added - self.layers.first().map_or(0, |l| l.pending.len());
        self.layers
            .par_iter_mut()
            .for_each(|l| l.flush(groups, first, welford));
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
            layer.stats.bounds.weight.add(&t.weight);
            layer.stats.bounds.bias.add(&t.bias);
        }
        self.theory_added += 1;
    }

    /// Adds seconds of the theory layer's per-input work.
    pub fn add_theory_time(&mut self, seconds: f64) {
        if let Some(t) = &mut self.theory_s {
            *t += seconds;
        }
    }

    /// The sufficient statistics of the inputs accumulated ([`Partial`]), with the per-input
    /// values if they were kept.
    fn into_parts(
        mut self,
        req: &Request<'_>,
        engine: Engine,
        adapter: &str,
    ) -> Result<(Partial, Option<Vec<Vec<Values>>>)> {
        if self.added != self.inputs {
            return Err(Error::Internal(format!(
                "{} of {} inputs were accumulated",
                self.added, self.inputs
            )));
        }
        self.flush();
        let theory = if self.theory_added == self.inputs {
            self.inputs
        } else {
            0
        };
        let (stats, per_input): (Vec<LayerStats>, Vec<Vec<Values>>) = self
            .layers
            .into_iter()
            .map(|mut l| {
                for (e, w) in l.stats.welford.iter_mut().enumerate() {
                    let [fisher, ef] = &l.welford;
                    if !fisher[0].is_empty() {
                        w.fisher = Welford {
                            mean: fisher[0][e],
                            m2: fisher[1][e],
                        };
                    }
                    if !ef[0].is_empty() {
                        w.ef = Welford {
                            mean: ef[0][e],
                            m2: ef[1][e],
                        };
                    }
                }
                (l.stats, l.per_input)
            })
            .unzip();
        let mut partial = Partial::from_stats(req, stats, self.inputs, theory, engine, adapter);
        partial.set_theory_time(self.theory_s);
        Ok((partial, self.per_input.then_some(per_input)))
    }

    /// The sufficient statistics of the inputs accumulated, for merging (per-input values are
    /// not kept).
    pub fn into_partial(self, req: &Request<'_>, engine: Engine, adapter: &str) -> Result<Partial> {
        if self.per_input {
            return Err(per_input_refused());
        }
        Ok(self.into_parts(req, engine, adapter)?.0)
    }

    /// Builds the report: means over inputs (or per-input arrays) of every key available for
    /// the family and labels, derived keys, and the per-tensor bounds if the theory hook ran.
    pub fn finish(self, req: &Request<'_>, engine: Engine, adapter: &str) -> Result<Report> {
        let (partial, per_input) = self.into_parts(req, engine, adapter)?;
        partial.report(per_input.as_deref())
    }
}

/// The error for per-input results asked of a partial analysis.
pub(crate) fn per_input_refused() -> Error {
    Error::Input(
        "per-input results cannot be merged: drop --per-input when writing a partial result \
         (--partial), or analyse the inputs in one run"
            .into(),
    )
}

#[cfg(test)]
mod welford_tests {
    use super::*;

    /// The register-blocked row update gives every entry exactly the values of one
    /// `welford_push` per input, in order, for rows shorter than, equal to and longer than a
    /// block of lanes (with a tail).
    #[test]
    fn welford_row_is_bit_identical_to_pushes() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.25
        };
        for row in [
            1,
            5,
            WELFORD_LANES,
            WELFORD_LANES + 3,
            3 * WELFORD_LANES + 17,
        ] {
            let inputs = 13;
            let a2: Vec<Vec<f64>> = (0..inputs)
                .map(|_| (0..row).map(|_| next() * next()).collect())
                .collect();
            let q: Vec<f64> = (0..inputs).map(|_| 1e3 * next()).collect();
            let first = 40;
            let inv_n: Vec<f64> = (0..inputs).map(|x| 1.0 / (first + x + 1) as f64).collect();
            let mean0: Vec<f64> = (0..row).map(|_| next()).collect();
            let m20: Vec<f64> = (0..row).map(|_| next().abs()).collect();
            let (mut mean, mut m2) = (mean0.clone(), m20.clone());
            welford_row(&mut mean, &mut m2, &a2, &q, &inv_n);
            for k in 0..row {
                let (mut mu, mut s2) = (mean0[k], m20[k]);
                for x in 0..inputs {
                    welford_push(&mut mu, &mut s2, a2[x][k] * q[x], inv_n[x]);
                }
                assert_eq!(mu.to_bits(), mean[k].to_bits(), "row {row} entry {k}");
                assert_eq!(s2.to_bits(), m2[k].to_bits(), "row {row} entry {k}");
            }
        }
    }
}

#[cfg(test)]
mod power_tests {
    use super::channel_power;

    /// The inlined powers have the bits of `powi` (which the partial files and the per-input
    /// values were computed with), for ordinary, tiny, huge and negative values.
    #[test]
    fn channel_power_is_powi() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.7,
            3.1e-5,
            7.3e-80,
            2.2e40,
            -9.9e77,
            0.123456789,
        ];
        for p in [1u32, 2, 3, 4, 8] {
            for v in values {
                assert_eq!(
                    channel_power(v, p).to_bits(),
                    v.powi(p as i32).to_bits(),
                    "{v}^{p}"
                );
            }
        }
    }
}

//! Partial results that merge exactly: the sufficient statistics of an analysis over a subset
//! of the inputs (docs/scale-out.md).
//!
//! Every per-parameter key of a report is a function of a few sums over inputs (MATH §6.5):
//! per channel key, Σ_x a^p·s(x)·base_j(x) (f64), and per entry the Welford mean and sum of
//! squared deviations of the Fisher and of the empirical Fisher over inputs (for `var_x`,
//! `var_joint*` and `var_ef`), plus the sums of the per-tensor trace bounds behind SUMMARY.json.
//! A [`Partial`] holds exactly these, with the input count. Merging adds the sums and merges the
//! Welford statistics by Chan's formula, so it is associative and commutative up to rounding,
//! and [`Partial::finish`] turns the statistics into the same [`Report`] as an analysis of all
//! the inputs at once. Labels are sampled by global input index
//! ([`crate::AnalysisOptions::input_offset`]), so a shard draws exactly the labels that the
//! whole run draws for its inputs, and the Monte-Carlo keys merge exactly too.
//!
//! On disk a partial is a safetensors file (f64 tensors) whose header metadata describes the
//! run: a model fingerprint, the family and σ², N, the seed, the bounds mode, the keys, the
//! engine, the input ranges covered and a format version. Partials of different models or
//! options are refused with an error that names the field that differs.

use super::channels::Channel;
use super::keys::{channel_groups_of, report_keys, KeySet};
use super::{Bounds, Request};
use crate::family::FamilyKind;
use crate::io::{named, write_safetensors, OwnedTensor, StoreDtype};
use crate::model::{Mlp, ParamInfo};
use crate::report::{Engine, Key, ParamReport, Report, RunInfo, NUM_KEYS};
use crate::theory::advice::optimal_combination;
use crate::theory::{LayerBounds, TensorBounds};
use crate::{Error, Result};
use ndarray::{Array2, ArrayD, IxDyn};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Version of the partial file format; files of another version are refused.
pub const FORMAT_VERSION: u32 = 1;

/// Entries per parallel task when a report is built from the sums.
const REPORT_BLOCK: usize = 4096;

/// Header metadata key holding the partial's description (JSON).
const META_KEY: &str = "diagfim_partial";

/// The per-input value of every channel key for one parameter entry (index = [`Key::index`];
/// derived keys stay 0).
pub(crate) type Values = [f64; NUM_KEYS];

/// The channels grouped by power: (p, [(key slot, channel)]).
pub(crate) type Groups = Vec<(u32, Vec<(usize, Channel)>)>;

const FISHER: usize = Key::Fisher.index();
const EF: usize = Key::Ef.index();

/// The keys that [`derive`] writes.
const DERIVED: [Key; 5] = [
    Key::McVar1Se,
    Key::McVar2Se,
    Key::WOpt,
    Key::VarOpt,
    Key::EfBias,
];

/// Fills the derived keys of one entry that are functions of its channel values (of one input,
/// or of the means over inputs, the squared standard errors already divided by B): the
/// standard errors of mc_var1/mc_var2, the optimal combination of Î1 and Î2 and the empirical
/// Fisher's bias.
pub(crate) fn derive(v: &mut Values) {
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
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Welford {
    pub mean: f64,
    pub m2: f64,
}

impl Welford {
    /// Chan's merge of `n_a` values summarised by self with `n_b` values summarised by
    /// (mean, m2).
    pub fn merge(&mut self, n_a: f64, n_b: f64, mean: f64, m2: f64) {
        let n = n_a + n_b;
        if n == 0.0 {
            return;
        }
        let delta = mean - self.mean;
        self.mean += delta * n_b / n;
        self.m2 += m2 + delta * delta * n_a * n_b / n;
    }
}

/// The Welford statistics of one entry: the Fisher and the empirical Fisher, for their variance
/// over inputs (Thm 4.7's Var_x I(θ_i|x), MATH §5.7; the data-set variance of the empirical
/// Fisher, Cor. F.2).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct EntryWelford {
    pub fisher: Welford,
    pub ef: Welford,
}

/// The sufficient statistics of one layer. Entries are rows `j = [W[j, 0..n_in], b[j]]` (bias
/// last, if any).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LayerStats {
    pub n_out: usize,
    pub n_in: usize,
    pub row: usize,
    pub welford: Vec<EntryWelford>,
    /// Per power group g of the accumulated channels ([`Groups`]): sums (|group g| · n_out) × row, row
    /// c·n_out + j.
    pub sums: Vec<Array2<f64>>,
    /// Sums over inputs of the per-tensor bounds (theory hook).
    pub bounds: LayerBounds,
}

/// `n` zeros, written now. Sums that are read before they are written (`+=`) would otherwise
/// take, page by page, a read fault on the kernel's shared zero page and then a copy-on-write
/// fault with a TLB shoot-down of every other thread (`vec![0.0; n]` gets untouched zeroed
/// memory from the allocator).
pub(crate) fn written_zeros(n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0.0);
    v
}

impl LayerStats {
    /// Zero statistics of a layer with `n_out` units, `n_in` inputs and an optional bias.
    pub fn new(
        n_out: usize,
        n_in: usize,
        bias: bool,
        groups: &[(u32, Vec<(usize, Channel)>)],
    ) -> Self {
        let row = n_in + usize::from(bias);
        LayerStats {
            n_out,
            n_in,
            row,
            welford: vec![EntryWelford::default(); n_out * row],
            sums: groups
                .iter()
                .map(|g| {
                    let rows = g.1.len() * n_out;
                    Array2::from_shape_vec((rows, row), written_zeros(rows * row))
                        .expect("rows × row values")
                })
                .collect(),
            bounds: LayerBounds::default(),
        }
    }
}

/// One parameter tensor, as the partial file records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ParamMeta {
    name: String,
    layer: usize,
    is_bias: bool,
    shape: Vec<usize>,
}

/// The flags of a tensor's trace bounds (the same for every input).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct BoundFlags {
    ruhe: bool,
    gram_exact: bool,
    gram_size: usize,
}

impl BoundFlags {
    fn of(t: &TensorBounds) -> Self {
        BoundFlags {
            ruhe: t.ruhe,
            gram_exact: t.gram_exact,
            gram_size: t.gram_size,
        }
    }
    fn apply(self, t: &mut TensorBounds) {
        t.ruhe = self.ruhe;
        t.gram_exact = self.gram_exact;
        t.gram_size = self.gram_size;
    }
}

/// Everything a partial knows besides its tensors (the file's header metadata, as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    /// SHA-256 of the model's widths, activations, tensor names and f64 values.
    model_fingerprint: String,
    family: String,
    /// σ² of the Gaussian family (null for categorical).
    sigma2: Option<f64>,
    samples: usize,
    seed: u64,
    bounds: String,
    /// Whether data labels were given (the empirical Fisher's keys).
    labels: bool,
    /// The keys the partial's report will hold.
    keys: Vec<String>,
    engine: Engine,
    /// The channel keys per power group, as this build of diagfim accumulates them.
    channels: Vec<(u32, Vec<String>)>,
    params: Vec<ParamMeta>,
    /// Per layer: (units, layer inputs, has a bias).
    layers: Vec<(usize, usize, bool)>,
    /// The adapters that computed the partial (one per distinct adapter merged).
    adapters: Vec<String>,
    /// Inputs covered and, of those, inputs with per-tensor bounds.
    inputs: usize,
    theory_inputs: usize,
    /// The global input ranges [start, end) covered, sorted and disjoint.
    ranges: Vec<(u64, u64)>,
    /// Seconds, summed over the merged partials.
    wall_time_s: f64,
    device_phase_s: BTreeMap<String, f64>,
    host_theory_s: Option<f64>,
    /// Seconds of the theory layer's per-input work (spectra and trace bounds), summed over
    /// threads and merged partials.
    #[serde(default)]
    theory_s: Option<f64>,
    /// Per layer, the flags of the weight's and the bias's trace bounds.
    bound_flags: Vec<(BoundFlags, BoundFlags)>,
}

/// Feeds `values` to the hash as little-endian f64 bytes, a few KiB per update (the same bytes
/// as one update per value, without its per-call cost).
fn update_le<'a>(h: &mut Sha256, values: impl Iterator<Item = &'a f64>) {
    let mut buf = Vec::with_capacity(8 << 10);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
        if buf.len() == buf.capacity() {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
}

/// SHA-256 fingerprint of a model: widths, activations, tensor names, shapes and values (as
/// f64, so an f32 file and its f64 copy have the same fingerprint).
pub fn model_fingerprint(model: &Mlp) -> String {
    let mut h = Sha256::new();
    h.update(b"diagfim-mlp-v1");
    for w in model.widths() {
        h.update((w as u64).to_le_bytes());
    }
    for a in model.activations() {
        h.update(a.name().as_bytes());
        h.update([0]);
    }
    for d in model.layers() {
        h.update((d.key as u64).to_le_bytes());
        update_le(&mut h, d.weight.iter());
        match &d.bias {
            Some(b) => {
                h.update([1]);
                update_le(&mut h, b.iter());
            }
            None => h.update([0]),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn bounds_name(b: Bounds) -> &'static str {
    match b {
        Bounds::All => "all",
        Bounds::Keys => "keys",
        Bounds::None => "none",
    }
}

fn bounds_of(name: &str) -> Result<Bounds> {
    name.parse()
        .map_err(|_| Error::Partial(format!("unknown bounds mode '{name}'")))
}

fn family_kind(family: &str, sigma2: Option<f64>) -> Result<FamilyKind> {
    match (family, sigma2) {
        ("categorical", _) => Ok(FamilyKind::Categorical),
        ("gaussian", Some(sigma2)) => Ok(FamilyKind::Gaussian { sigma2 }),
        ("bernoulli", _) => Ok(FamilyKind::Bernoulli),
        ("poisson", _) => Ok(FamilyKind::Poisson),
        _ => Err(Error::Partial(format!(
            "unknown family '{family}' (a file from another version of diagfim?)"
        ))),
    }
}

/// The sufficient statistics of an analysis over a subset of the inputs: merge partials of
/// disjoint input sets with [`Partial::merge`], then [`Partial::finish`] gives the report.
#[derive(Clone, Debug)]
pub struct Partial {
    meta: Meta,
    /// The accumulated channels, from `meta.channels`.
    groups: Groups,
    layers: Vec<LayerStats>,
}

impl Partial {
    /// Wraps accumulated statistics (crate-internal: engines build partials).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_stats(
        req: &Request<'_>,
        layers: Vec<LayerStats>,
        inputs: usize,
        theory_inputs: usize,
        engine: Engine,
        adapter: &str,
    ) -> Partial {
        let kind = req.family.kind();
        let sigma2 = match kind {
            FamilyKind::Gaussian { sigma2 } => Some(sigma2),
            FamilyKind::Categorical | FamilyKind::Bernoulli | FamilyKind::Poisson => None,
        };
        let offset = req.options.input_offset;
        let keys = req.report_keys();
        let groups = req.needs().channel_groups();
        let meta = Meta {
            format_version: FORMAT_VERSION,
            model_fingerprint: model_fingerprint(req.model),
            family: req.family.name().into(),
            sigma2,
            samples: req.options.samples,
            seed: req.options.seed,
            bounds: bounds_name(req.options.bounds).into(),
            labels: req.labels.is_some(),
            keys: keys.iter().map(|k| k.name().to_string()).collect(),
            engine,
            channels: groups
                .iter()
                .map(|(p, chans)| {
                    let names = chans
                        .iter()
                        .map(|(slot, _)| Key::ALL[*slot].name().to_string())
                        .collect();
                    (*p, names)
                })
                .collect(),
            params: req
                .model
                .params()
                .into_iter()
                .map(|p| ParamMeta {
                    name: p.name,
                    layer: p.layer,
                    is_bias: p.is_bias,
                    shape: p.shape,
                })
                .collect(),
            layers: req
                .model
                .layers()
                .iter()
                .map(|d| (d.outputs(), d.inputs(), d.bias.is_some()))
                .collect(),
            adapters: vec![adapter.into()],
            inputs,
            theory_inputs,
            ranges: if inputs > 0 {
                vec![(offset, offset + inputs as u64)]
            } else {
                Vec::new()
            },
            wall_time_s: 0.0,
            device_phase_s: BTreeMap::new(),
            host_theory_s: None,
            theory_s: None,
            bound_flags: layers
                .iter()
                .map(|l| {
                    (
                        BoundFlags::of(&l.bounds.weight),
                        BoundFlags::of(&l.bounds.bias),
                    )
                })
                .collect(),
        };
        Partial {
            meta,
            groups,
            layers,
        }
    }

    /// Records the run's wall time.
    pub(crate) fn set_wall_time(&mut self, wall_time_s: f64) {
        self.meta.wall_time_s = wall_time_s;
    }

    /// Records the seconds of the theory layer's per-input work.
    pub(crate) fn set_theory_time(&mut self, theory_s: Option<f64>) {
        self.meta.theory_s = theory_s;
    }

    /// Records the GPU engine's device seconds per phase and host seconds.
    #[cfg(feature = "gpu")]
    pub(crate) fn set_device_times(
        &mut self,
        device_phase_s: BTreeMap<String, f64>,
        host_theory_s: Option<f64>,
    ) {
        self.meta.device_phase_s = device_phase_s;
        self.meta.host_theory_s = host_theory_s;
    }

    /// Number of inputs covered.
    pub fn inputs(&self) -> usize {
        self.meta.inputs
    }

    /// The global input ranges [start, end) covered, sorted and disjoint.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.meta.ranges
    }

    /// The engine that computed the partial.
    pub fn engine(&self) -> Engine {
        self.meta.engine
    }

    /// The model fingerprint ([`model_fingerprint`]).
    pub fn model_fingerprint(&self) -> &str {
        &self.meta.model_fingerprint
    }

    /// Checks that `other` comes from the same model and options; the error names the first
    /// field that differs.
    fn check_compatible(&self, other: &Partial) -> Result<()> {
        let (a, b) = (&self.meta, &other.meta);
        let differ = |field: &str, x: String, y: String| {
            Err(Error::Partial(format!(
                "cannot merge partials: they differ in {field} ({x} vs {y}); merge only partials \
                 of one model analysed with the same options"
            )))
        };
        macro_rules! same {
            ($($field:ident => $what:expr),* $(,)?) => {
                $( if a.$field != b.$field {
                    return differ($what, format!("{:?}", a.$field), format!("{:?}", b.$field));
                } )*
            };
        }
        same!(
            format_version => "format version",
            model_fingerprint => "model (fingerprint of the tensors and activations)",
            family => "family",
            sigma2 => "σ² (--sigma2)",
            samples => "N (--samples)",
            seed => "seed (--seed)",
            bounds => "bounds mode (--bounds)",
            labels => "data labels (--labels given or not)",
            keys => "keys computed",
            engine => "engine (--engine)",
            channels => "accumulated channels (diagfim version)",
            params => "parameter tensors",
            layers => "layer shapes",
        );
        for &(s, e) in &b.ranges {
            if let Some(&(s2, e2)) = a.ranges.iter().find(|&&(s2, e2)| s < e2 && s2 < e) {
                return Err(Error::Partial(format!(
                    "cannot merge partials: their inputs overlap (inputs [{}, {}) appear in both); \
                     give each shard its own --input-offset",
                    s.max(s2),
                    e.min(e2)
                )));
            }
        }
        Ok(())
    }

    /// Adds the statistics of `other` (a disjoint set of inputs of the same model and options).
    /// Sums add and the Welford statistics merge by Chan's formula, so merging is associative
    /// and commutative up to rounding.
    pub fn merge(&mut self, other: &Partial) -> Result<()> {
        self.check_compatible(other)?;
        let (n_a, n_b) = (self.meta.inputs as f64, other.meta.inputs as f64);
        for (la, lb) in self.layers.iter_mut().zip(&other.layers) {
            for (sa, sb) in la.sums.iter_mut().zip(&lb.sums) {
                *sa += sb;
            }
            la.welford
                .par_iter_mut()
                .zip(&lb.welford)
                .for_each(|(wa, wb)| {
                    wa.fisher.merge(n_a, n_b, wb.fisher.mean, wb.fisher.m2);
                    wa.ef.merge(n_a, n_b, wb.ef.mean, wb.ef.m2);
                });
            la.bounds.weight.add(&lb.bounds.weight);
            la.bounds.bias.add(&lb.bounds.bias);
        }
        let m = &mut self.meta;
        let o = &other.meta;
        if m.inputs == 0 {
            m.bound_flags = o.bound_flags.clone();
        }
        m.inputs += o.inputs;
        m.theory_inputs += o.theory_inputs;
        for a in &o.adapters {
            if !m.adapters.contains(a) {
                m.adapters.push(a.clone());
            }
        }
        let mut ranges: Vec<(u64, u64)> = m.ranges.iter().chain(&o.ranges).copied().collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => merged.push((s, e)),
            }
        }
        m.ranges = merged;
        m.wall_time_s += o.wall_time_s;
        for (k, v) in &o.device_phase_s {
            *m.device_phase_s.entry(k.clone()).or_insert(0.0) += v;
        }
        let add = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (None, None) => None,
            (x, y) => Some(x.unwrap_or(0.0) + y.unwrap_or(0.0)),
        };
        m.host_theory_s = add(m.host_theory_s, o.host_theory_s);
        m.theory_s = add(m.theory_s, o.theory_s);
        Ok(())
    }

    /// Merges partials of disjoint input sets (at least one) into one.
    pub fn merge_all<I: IntoIterator<Item = Partial>>(parts: I) -> Result<Partial> {
        let mut it = parts.into_iter();
        let mut acc = it.next().ok_or_else(|| {
            Error::Partial("nothing to merge: give at least one partial result".into())
        })?;
        for p in it {
            acc.merge(&p)?;
        }
        Ok(acc)
    }

    /// The report of the inputs covered: means over inputs of every key, derived keys,
    /// the variances over inputs and the per-tensor bounds.
    pub fn finish(&self) -> Result<Report> {
        self.report(None)
    }

    /// [`Partial::finish`], with per-input values (per layer, per input, per entry of the
    /// layer's rows) for the per-input keys.
    pub(crate) fn report(&self, per_input: Option<&[Vec<Values>]>) -> Result<Report> {
        let m = &self.meta;
        if m.inputs == 0 {
            return Err(Error::Partial(
                "the partial result covers no inputs: there is nothing to report".into(),
            ));
        }
        let b = m.inputs as f64;
        let n = m.samples as f64;
        let keys: Vec<Key> = m
            .keys
            .iter()
            .map(|name| {
                Key::from_name(name).ok_or_else(|| {
                    Error::Partial(format!(
                        "unknown key '{name}' (a file from another version of diagfim?)"
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let groups = &self.groups;
        let kind = family_kind(&m.family, m.sigma2)?;
        let skipped_keys: Vec<String> =
            report_keys(KeySet::ALL, kind, m.labels, bounds_of(&m.bounds)?)
                .iter()
                .filter(|k| !keys.contains(k))
                .map(|k| k.name().to_string())
                .collect();
        let with_theory = m.theory_inputs == m.inputs;
        let is_gpu = m.engine == Engine::Gpu;
        let mut params = Vec::new();
        for p in &m.params {
            let info = ParamInfo {
                name: p.name.clone(),
                layer: p.layer,
                is_bias: p.is_bias,
                shape: p.shape.clone(),
            };
            let layer = &self.layers[info.layer];
            // Column range of this tensor within a row: weight 0..n_in, bias n_in..n_in+1.
            let cols = if info.is_bias {
                layer.n_in..layer.n_in + 1
            } else {
                0..layer.n_in
            };
            let positions: Vec<usize> = (0..layer.n_out)
                .flat_map(|j| cols.clone().map(move |k| j * layer.row + k))
                .collect();
            // Means over inputs and derived keys of the reported keys only, in parallel blocks
            // of entries, each block key-major (so that every key's array is then a sequence
            // of contiguous copies).
            let nk = keys.len();
            let derived = keys.iter().any(|k| DERIVED.contains(k));
            let flat_sums: Vec<&[f64]> = layer
                .sums
                .iter()
                .map(|s| s.as_slice().expect("standard layout"))
                .collect();
            // One array per key, filled in parallel blocks of entries (each block writes its
            // own chunk of every key's array).
            let mut means: Vec<Vec<f64>> =
                keys.iter().map(|_| vec![0.0; positions.len()]).collect();
            let mut blocks: Vec<Vec<&mut [f64]>> = positions
                .chunks(REPORT_BLOCK)
                .map(|_| Vec::with_capacity(nk))
                .collect();
            for out in means.iter_mut() {
                for (block, chunk) in blocks.iter_mut().zip(out.chunks_mut(REPORT_BLOCK)) {
                    block.push(chunk);
                }
            }
            blocks
                .into_par_iter()
                .zip(positions.par_chunks(REPORT_BLOCK))
                .for_each(|(mut out, block)| {
                    for (e, &pos) in block.iter().enumerate() {
                        // Entry (j, k) of channel c is row c·n_out + j: flat index
                        // c·n_out·row + pos.
                        let mut v = [0.0; NUM_KEYS];
                        for ((_, chans), sums) in groups.iter().zip(&flat_sums) {
                            for (c, (slot, _)) in chans.iter().enumerate() {
                                v[*slot] = sums[c * layer.n_out * layer.row + pos] / b;
                            }
                        }
                        let w = &layer.welford[pos];
                        // Var of a mean of B independent estimates: Σ_x Var_x / B².
                        v[Key::McVar1Se.index()] /= b;
                        v[Key::McVar2Se.index()] /= b;
                        if derived {
                            derive(&mut v);
                        }
                        v[Key::VarX.index()] = w.fisher.m2 / b;
                        v[Key::VarJoint1.index()] =
                            (w.fisher.m2 / b + v[Key::Var1.index()] / n) / b;
                        v[Key::VarJoint2.index()] =
                            (w.fisher.m2 / b + v[Key::Var2.index()] / n) / b;
                        v[Key::VarEf.index()] = w.ef.m2 / b;
                        for (dst, key) in out.iter_mut().zip(&keys) {
                            dst[e] = v[key.index()];
                        }
                    }
                });
            let per_input: Option<Vec<Values>> = per_input.map(|layers| {
                let values = &layers[info.layer];
                (0..m.inputs)
                    .flat_map(|x| {
                        let base = x * layer.n_out * layer.row;
                        positions.iter().map(move |&pos| {
                            let mut v = values[base + pos];
                            derive(&mut v);
                            v
                        })
                    })
                    .collect()
            });
            let shape = info.shape.clone();
            // Every key's array in parallel; the first key in order that is not finite is the
            // error.
            let arrays: Vec<Result<(Key, ArrayD<f64>)>> = keys
                .par_iter()
                .zip(means)
                .map(|(&key, means)| {
                    let slot = key.index();
                    let array = match &per_input {
                        Some(per_input) if key.is_per_input() => {
                            let mut s = vec![m.inputs];
                            s.extend(&shape);
                            ArrayD::from_shape_vec(
                                IxDyn(&s),
                                per_input.iter().map(|v| v[slot]).collect(),
                            )
                        }
                        _ => ArrayD::from_shape_vec(IxDyn(&shape), means),
                    }
                    .map_err(|e| Error::Internal(format!("report shape: {e}")))?;
                    if let Some(index) = array.iter().position(|v| !v.is_finite()) {
                        // The GPU engine sums in f32 (a⁸ for the standard errors): say so.
                        let hint = if is_gpu {
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
                    Ok((key, array))
                })
                .collect();
            let values: BTreeMap<Key, ArrayD<f64>> = arrays.into_iter().collect::<Result<_>>()?;
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
                            "the trace bounds of '{}' (overflow past f64's range: the model's weights or inputs \
                             are too large, or the Gaussian σ² too small)",
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
                engine: m.engine,
                adapter: m.adapters.join("; "),
                family: m.family.clone(),
                samples: m.samples,
                seed: m.seed,
                inputs: m.inputs,
                per_input: per_input.is_some(),
                wall_time_s: m.wall_time_s,
                device_phase_s: m.device_phase_s.clone(),
                host_theory_s: m.host_theory_s,
                theory_s: m.theory_s,
                keys: m.keys.clone(),
                skipped_keys,
            },
        })
    }

    /// The partial as a self-describing safetensors file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let owned = self.tensors();
        crate::io::safetensors_bytes(&named(&owned), StoreDtype::F64, Some(self.metadata()?))
    }

    /// Writes the partial to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let owned = self.tensors();
        write_safetensors(
            path,
            &named(&owned),
            StoreDtype::F64,
            Some(self.metadata()?),
        )
    }

    /// Reads a partial written by [`Partial::save`].
    pub fn load(path: &Path) -> Result<Partial> {
        let bytes = crate::io::read_file(path)?;
        Partial::from_bytes(&bytes).map_err(|e| match e {
            Error::Partial(msg) => Error::Partial(format!("'{}': {msg}", path.display())),
            other => other,
        })
    }

    fn metadata(&self) -> Result<HashMap<String, String>> {
        let json = serde_json::to_string(&self.meta)
            .map_err(|e| Error::Partial(format!("cannot describe the partial: {e}")))?;
        Ok(HashMap::from([
            ("format".to_string(), "diagfim-partial".to_string()),
            (META_KEY.to_string(), json),
        ]))
    }

    /// (name, shape, values) of every tensor: per layer its channel sums per power group, its
    /// Welford statistics [entries, 4] and its trace-bound sums [2, 15].
    fn tensors(&self) -> Vec<OwnedTensor> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for (g, s) in layer.sums.iter().enumerate() {
                out.push((
                    format!("layer{l}.sums{g}"),
                    s.shape().to_vec(),
                    s.iter().copied().collect(),
                ));
            }
            out.push((
                format!("layer{l}.welford"),
                vec![layer.welford.len(), 4],
                layer
                    .welford
                    .iter()
                    .flat_map(|w| [w.fisher.mean, w.fisher.m2, w.ef.mean, w.ef.m2])
                    .collect(),
            ));
            out.push((
                format!("layer{l}.bounds"),
                vec![2, TensorBounds::FIELDS],
                layer
                    .bounds
                    .weight
                    .values()
                    .into_iter()
                    .chain(layer.bounds.bias.values())
                    .collect(),
            ));
        }
        out
    }

    /// Reads a partial from the bytes of its safetensors file, checking its format, version
    /// and every tensor's shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Partial> {
        let bad =
            |msg: String| Error::Partial(format!("not a valid diagfim partial result: {msg}"));
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| {
                bad(
                    "its header has no 'diagfim_partial' metadata (is it a RESULT file? \
                     write partials with `diagfim analyze --partial`)"
                        .into(),
                )
            })?;
        let version: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("unreadable metadata ({e})")))?;
        let found = version.get("format_version").and_then(|v| v.as_u64());
        if found != Some(u64::from(FORMAT_VERSION)) {
            return Err(bad(format!(
                "format version {found:?}, this diagfim reads version {FORMAT_VERSION}; \
                 recompute it with this version"
            )));
        }
        let meta: Meta =
            serde_json::from_str(json).map_err(|e| bad(format!("unreadable metadata ({e})")))?;
        let tensors = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let groups = groups_of(&meta.channels).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f64>> {
            let t = tensors
                .tensor(name)
                .map_err(|_| bad(format!("tensor '{name}' is missing")))?;
            if t.dtype() != safetensors::Dtype::F64 || t.shape() != shape {
                return Err(bad(format!(
                    "tensor '{name}' is {:?} {:?}, expected F64 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect())
        };
        if meta.bound_flags.len() != meta.layers.len() {
            return Err(bad("bound flags do not match the layers".into()));
        }
        let mut layers = Vec::with_capacity(meta.layers.len());
        for (l, &(n_out, n_in, bias)) in meta.layers.iter().enumerate() {
            let mut stats = LayerStats::new(n_out, n_in, bias, &groups);
            for (g, s) in stats.sums.iter_mut().enumerate() {
                let shape = s.shape().to_vec();
                let v = read(&format!("layer{l}.sums{g}"), &shape)?;
                *s = Array2::from_shape_vec((shape[0], shape[1]), v)
                    .map_err(|e| bad(format!("sums of layer {l}: {e}")))?;
            }
            let w = read(&format!("layer{l}.welford"), &[stats.welford.len(), 4])?;
            for (e, c) in stats.welford.iter_mut().zip(w.chunks_exact(4)) {
                e.fisher = Welford {
                    mean: c[0],
                    m2: c[1],
                };
                e.ef = Welford {
                    mean: c[2],
                    m2: c[3],
                };
            }
            let bnd = read(&format!("layer{l}.bounds"), &[2, TensorBounds::FIELDS])?;
            let (fw, fb) = meta.bound_flags[l];
            stats.bounds.weight = TensorBounds::from_values(&bnd[..TensorBounds::FIELDS]);
            stats.bounds.bias = TensorBounds::from_values(&bnd[TensorBounds::FIELDS..]);
            fw.apply(&mut stats.bounds.weight);
            fb.apply(&mut stats.bounds.bias);
            layers.push(stats);
        }
        for p in &meta.params {
            let fits = meta
                .layers
                .get(p.layer)
                .is_some_and(|&(n_out, n_in, bias)| {
                    if p.is_bias {
                        bias && p.shape == [n_out]
                    } else {
                        p.shape == [n_out, n_in]
                    }
                });
            if !fits {
                return Err(bad(format!(
                    "parameter '{}' does not fit its layer",
                    p.name
                )));
            }
        }
        if meta.theory_inputs > meta.inputs {
            return Err(bad("more inputs with bounds than inputs".into()));
        }
        Ok(Partial {
            meta,
            groups,
            layers,
        })
    }
}

/// The channel groups recorded in a partial's metadata: every name must be a channel key, and
/// the grouping must be the one this diagfim makes of those keys.
fn groups_of(channels: &[(u32, Vec<String>)]) -> Result<Groups> {
    let mut set = KeySet::EMPTY;
    for name in channels.iter().flat_map(|(_, names)| names) {
        match Key::from_name(name) {
            Some(k) if k.channel().is_some() => set.insert(k),
            _ => {
                return Err(Error::Partial(format!(
                    "'{name}' is not a channel of this diagfim (written by another version?)"
                )))
            }
        }
    }
    let groups = channel_groups_of(set);
    let same = groups.len() == channels.len()
        && groups.iter().zip(channels).all(|((p, chans), (q, names))| {
            p == q
                && chans.len() == names.len()
                && chans
                    .iter()
                    .zip(names)
                    .all(|((slot, _), name)| Key::ALL[*slot].name() == name)
        });
    if !same {
        return Err(Error::Partial(
            "its channels differ from this diagfim's (written by another version)".into(),
        ));
    }
    Ok(groups)
}

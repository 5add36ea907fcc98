//! Results of an analysis: per-parameter tensors under the contract keys, per-layer summaries,
//! and their serialisation (RESULT.safetensors, SUMMARY.json, a printed table).

use crate::family::FamilyKind;
use crate::io::{named, safetensors_bytes, OwnedTensor, StoreDtype};
use crate::model::ParamInfo;
use crate::theory::advice::{budget_split, chebyshev_samples, BudgetSplit};
use crate::theory::layer::RUHE_MAX_SIZE;
use crate::theory::TensorBounds;
use crate::{Error, Result};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The output keys of the CLI contract (README, "Output keys"; docs/theory.md for the bounds).
/// The discriminant of a key is its position in [`Key::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// Exact FIM diagonal I(θ_i|x) (MATH §4, Eq. 23).
    Fisher,
    /// N·Var[Î1(θ_i|x)] (Eq. 24).
    Var1,
    /// N·Var[Î2(θ_i|x)] (Eq. 25).
    Var2,
    /// Monte-Carlo Î1 with N labels.
    Mc1,
    /// Monte-Carlo Î2 with N labels.
    Mc2,
    /// Unbiased sample variance of the per-label Î1 values.
    McVar1,
    /// Unbiased sample variance of the per-label Î2 values.
    McVar2,
    /// Standard error of `mc_var1` over the label draws, from the samples' fourth central
    /// moment: √(Σ_x a⁸·Var(s²_x))/B (per input: √(a⁸·Var(s²_x))).
    McVar1Se,
    /// The same for `mc_var2`.
    McVar2Se,
    /// Variance of the data-set estimator Î1 with N_x = B inputs, N_y = N labels (Thm 4.7).
    VarJoint1,
    /// The same for Î2.
    VarJoint2,
    /// Empirical Fisher with the data labels (MATH §5.10).
    Ef,
    /// ‖J_i‖² λ_max(C) ≥ I (Thm 4.1, Eq. 10).
    UbFisher,
    /// ‖J_i‖² λ_min(C) ≤ I (Eq. 10; 0 for the categorical family).
    LbFisher,
    /// ‖J̃_i‖² λ_min(C|1⊥) ≤ I with the centred Jacobian (MATH §9a \[X\]; categorical).
    LbFisherCentred,
    /// ‖J_i‖⁴ λ_max(K − C⊗C) ≥ N·Var Î1 (Eq. 11).
    UbVar1,
    /// ‖J_i‖⁴ λ_min(K − C⊗C) ≤ N·Var Î1 (Eq. 11).
    LbVar1,
    /// ‖D_i‖² λ_max(C) ≥ N·Var Î2 (Eq. 12).
    UbVar2,
    /// ‖D_i‖² λ_min(C) ≤ N·Var Î2 (Eq. 12).
    LbVar2,
    /// ‖J_i‖⁴ (λ_max(K) − λ_min(C)²) (Cor. 4.2, Eq. 15).
    UbVar1Cor42,
    /// ‖J_i‖⁴ max(0, λ_min(K) − λ_max(C)²) (Cor. 4.2, Eq. 14).
    LbVar1Cor42,
    /// ‖J_i‖⁴ (B² λ_max(C) − λ_min(C)²) (Prop. 4.3, Eq. 16 in Eq. 15; categorical).
    UbVar1Prop43,
    /// ‖J_i‖⁴ λ_max(M), certified (MATH §7 \[X\]).
    UbVar1Cert,
    /// ‖J_i‖² ρ(p) (Thm 5.2; categorical).
    UbFisherThm52,
    /// ‖J_i‖⁴ 2ρ(p) (Thm 5.2; categorical).
    UbVar1Thm52,
    /// ‖D_i‖² ρ(p) (Thm 5.2; categorical).
    UbVar2Thm52,
    /// `N·Cov(Î1, Î2) = −E[(J_iᵀs)²(D_iᵀs)]` \[X\].
    Cov12,
    /// Weight w of the variance-optimal unbiased combination w Î1 + (1 − w) Î2 \[X\].
    WOpt,
    /// N·Var of that combination, ≤ min(var1, var2) \[X\].
    VarOpt,
    /// Var_x I(θ_i|x): the input-randomness term of Thm 4.7 over the B inputs.
    VarX,
    /// E_x[‖J_i‖⁴ λ_max(C)²] ≥ Var_x I(θ_i|x) (Lemma 4.8).
    UbVarX,
    /// Variance of the per-example empirical Fisher over the data pairs (Cor. F.1/F.2).
    VarEf,
    /// Bias of the empirical Fisher: ef − fisher (Sec. 6, Eq. 21).
    EfBias,
}

/// Number of keys.
pub const NUM_KEYS: usize = 33;

impl Key {
    /// Every key, in discriminant order (the order of SUMMARY.json and RESULT's tensors).
    pub const ALL: [Key; NUM_KEYS] = [
        Key::Fisher,
        Key::Var1,
        Key::Var2,
        Key::Mc1,
        Key::Mc2,
        Key::McVar1,
        Key::McVar2,
        Key::McVar1Se,
        Key::McVar2Se,
        Key::VarJoint1,
        Key::VarJoint2,
        Key::Ef,
        Key::UbFisher,
        Key::LbFisher,
        Key::LbFisherCentred,
        Key::UbVar1,
        Key::LbVar1,
        Key::UbVar2,
        Key::LbVar2,
        Key::UbVar1Cor42,
        Key::LbVar1Cor42,
        Key::UbVar1Prop43,
        Key::UbVar1Cert,
        Key::UbFisherThm52,
        Key::UbVar1Thm52,
        Key::UbVar2Thm52,
        Key::Cov12,
        Key::WOpt,
        Key::VarOpt,
        Key::VarX,
        Key::UbVarX,
        Key::VarEf,
        Key::EfBias,
    ];

    /// The keys of the terminal table ([`Report::table`]); SUMMARY.json has all of them.
    pub const TABLE: [Key; 11] = [
        Key::Fisher,
        Key::Var1,
        Key::Var2,
        Key::Mc1,
        Key::Mc2,
        Key::McVar1,
        Key::McVar2,
        Key::VarJoint1,
        Key::VarJoint2,
        Key::Ef,
        Key::VarOpt,
    ];

    /// Position in [`Key::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The key's name in RESULT.safetensors (`<name>/<param>`).
    pub fn name(self) -> &'static str {
        match self {
            Key::Fisher => "fisher",
            Key::Var1 => "var1",
            Key::Var2 => "var2",
            Key::Mc1 => "mc1",
            Key::Mc2 => "mc2",
            Key::McVar1 => "mc_var1",
            Key::McVar2 => "mc_var2",
            Key::McVar1Se => "mc_var1_se",
            Key::McVar2Se => "mc_var2_se",
            Key::VarJoint1 => "var_joint1",
            Key::VarJoint2 => "var_joint2",
            Key::Ef => "ef",
            Key::UbFisher => "ub_fisher",
            Key::LbFisher => "lb_fisher",
            Key::LbFisherCentred => "lb_fisher_centred",
            Key::UbVar1 => "ub_var1",
            Key::LbVar1 => "lb_var1",
            Key::UbVar2 => "ub_var2",
            Key::LbVar2 => "lb_var2",
            Key::UbVar1Cor42 => "ub_var1_cor42",
            Key::LbVar1Cor42 => "lb_var1_cor42",
            Key::UbVar1Prop43 => "ub_var1_prop43",
            Key::UbVar1Cert => "ub_var1_cert",
            Key::UbFisherThm52 => "ub_fisher_thm52",
            Key::UbVar1Thm52 => "ub_var1_thm52",
            Key::UbVar2Thm52 => "ub_var2_thm52",
            Key::Cov12 => "cov12",
            Key::WOpt => "w_opt",
            Key::VarOpt => "var_opt",
            Key::VarX => "var_x",
            Key::UbVarX => "ub_var_x",
            Key::VarEf => "var_ef",
            Key::EfBias => "ef_bias",
        }
    }

    /// The key with this name, if any.
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the key is a per-input quantity (gets a leading input axis with `--per-input`);
    /// the keys that describe the whole input set never do.
    pub fn is_per_input(self) -> bool {
        !matches!(
            self,
            Key::VarJoint1 | Key::VarJoint2 | Key::VarX | Key::UbVarX | Key::VarEf
        )
    }

    /// Whether the key is reported for this family (some bounds exist only for the
    /// categorical family) and with or without data labels.
    pub fn is_available(self, kind: FamilyKind, has_labels: bool) -> bool {
        match self {
            Key::Ef | Key::VarEf | Key::EfBias => has_labels,
            // Prop. 4.3 needs a bounded statistic: categorical and Bernoulli.
            Key::UbVar1Prop43 => matches!(kind, FamilyKind::Categorical | FamilyKind::Bernoulli),
            Key::LbFisherCentred | Key::UbFisherThm52 | Key::UbVar1Thm52 | Key::UbVar2Thm52 => {
                kind == FamilyKind::Categorical
            }
            _ => true,
        }
    }
}

/// All results of one parameter tensor.
#[derive(Clone, Debug)]
pub struct ParamReport {
    /// The tensor: name, layer, kind and shape.
    pub info: ParamInfo,
    /// One array per reported key, shaped like the tensor (with a leading input axis under
    /// `per_input`).
    pub values: BTreeMap<Key, ArrayD<f64>>,
    /// Means over inputs of the per-tensor trace bounds (Cor. 4.6, Thm C.1), when the engine
    /// ran the theory layer's per-input hook.
    pub bounds: Option<TensorBounds>,
}

/// Defines a fieldless enum that serialises, displays and compares with `&str` as its
/// lowercase name.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),*
        }
        impl $name {
            /// The name, as SUMMARY.json writes it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

named_enum!(
    /// The engine that computed a report.
    Engine {
        /// The f64 CPU reference engine.
        Cpu => "cpu",
        /// The f32 GPU engine (WGSL kernels).
        Gpu => "gpu",
    }
);

named_enum!(
    /// The estimator SUMMARY.json recommends for a tensor.
    Estimator {
        /// Î1, squared scores.
        I1 => "i1",
        /// Î2, negative Hessians.
        I2 => "i2",
        /// The variance-optimal combination w Î1 + (1 − w) Î2 (per-parameter `w_opt`).
        Combination => "combination",
    }
);

named_enum!(
    /// Whether a parameter tensor is a weight or a bias.
    ParamKind {
        /// A weight matrix W_l.
        Weight => "weight",
        /// A bias vector b_l.
        Bias => "bias",
    }
);

/// How the analysis was run.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    /// The engine that computed the report.
    pub engine: Engine,
    /// The adapter (GPU name, backend and device type) or the CPU engine's description; merged
    /// partials join theirs with "; ".
    pub adapter: String,
    /// The output family's name, `categorical` or `gaussian`.
    pub family: String,
    /// N, labels sampled per input.
    pub samples: usize,
    /// Seed of the counter-based RNG.
    pub seed: u64,
    /// B, the number of inputs analysed.
    pub inputs: usize,
    /// Whether the tensors keep a leading input axis.
    pub per_input: bool,
    /// Wall time of the analysis, in seconds.
    pub wall_time_s: f64,
    /// GPU engine: device seconds per phase (forward, family, hessian, unit_stats, samples,
    /// accumulate), summed over batches; empty on the CPU engine or without timestamp queries.
    pub device_phase_s: BTreeMap<String, f64>,
    /// GPU engine: host seconds spent on the per-input spectra and bounds (MATH §5, §7),
    /// which overlap the device's work on the next batch; None on the CPU engine.
    pub host_theory_s: Option<f64>,
    /// Seconds of the theory layer's per-input work (the family's spectra and the per-tensor
    /// trace bounds), summed over threads (both engines); None when it did not run.
    pub theory_s: Option<f64>,
    /// The keys computed, in [`Key::ALL`] order.
    pub keys: Vec<String>,
    /// The keys that this family, labels and bounds mode have but that were not selected
    /// (`--keys`): null in SUMMARY.json's means.
    pub skipped_keys: Vec<String>,
}

/// The result of an analysis.
#[derive(Clone, Debug)]
pub struct Report {
    /// One entry per parameter tensor, in [`crate::Mlp::params`] order.
    pub params: Vec<ParamReport>,
    /// How the analysis was run.
    pub run: RunInfo,
}

/// Per-tensor summary: means over the tensor's entries of each key, and the theory layer's
/// per-tensor results.
#[derive(Clone, Debug, Serialize)]
pub struct ParamSummary {
    /// Tensor name, `<k>.weight` or `<k>.bias`.
    pub name: String,
    /// Index of the layer (0-based position).
    pub layer: usize,
    /// Weight or bias.
    pub kind: ParamKind,
    /// Number of entries of the tensor.
    pub count: usize,
    /// Mean over the tensor's entries (and inputs) of each reported key, by key name; null for
    /// the keys that were not selected ([`RunInfo::skipped_keys`]).
    pub means: BTreeMap<String, Option<f64>>,
    /// The theory layer's per-tensor results.
    pub theory: TensorTheory,
}

/// SUMMARY.json.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// How the analysis was run (flattened into the top level).
    #[serde(flatten)]
    pub run: RunInfo,
    /// The options of the recommendation and the budget split.
    pub options: SummaryOptions,
    /// One summary per parameter tensor.
    pub layers: Vec<ParamSummary>,
}

/// Options of the per-tensor recommendation (docs/theory.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SummaryOptions {
    /// Relative error ε of the Chebyshev sample size.
    pub eps: f64,
    /// Failure probability δ of the Chebyshev sample size.
    pub delta: f64,
    /// Cost of one input in units of one label's cost, for the N_x/N_y budget split.
    pub input_cost: f64,
}

impl Default for SummaryOptions {
    fn default() -> Self {
        SummaryOptions {
            eps: 0.1,
            delta: 0.05,
            input_cost: 1.0,
        }
    }
}

impl SummaryOptions {
    /// Checks that ε > 0, 0 < δ < 1 and the input cost is ≥ 0 (all finite).
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::Input(format!(
                "the relative error ε must be finite and > 0, got {}",
                self.eps
            )));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(Error::Input(format!(
                "the failure probability δ must lie in (0, 1), got {}",
                self.delta
            )));
        }
        if !(self.input_cost.is_finite() && self.input_cost >= 0.0) {
            return Err(Error::Input(format!(
                "the input cost must be finite and ≥ 0 (in labels), got {}",
                self.input_cost
            )));
        }
        Ok(())
    }
}

/// Exact sums over a tensor S of per-parameter keys (means over inputs); None (null) for a key
/// that was not computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TraceSums {
    /// Σ I(θ_i|x) over the tensor.
    pub fisher: Option<f64>,
    /// Σ N·Var Î1.
    pub var1: Option<f64>,
    /// Σ N·Var Î2.
    pub var2: Option<f64>,
    /// Σ N·Cov(Î1, Î2).
    pub cov12: Option<f64>,
    /// Σ N·Var of the per-parameter optimal combination.
    pub var_opt: Option<f64>,
    /// Σ Var_x I(θ_i|x) (Thm 4.7's input term).
    pub var_x: Option<f64>,
}

/// One bound of Cor. 4.6: its two terms and their min (means over inputs of per-input values).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MinBound {
    /// The Frobenius-norm term.
    pub frob: f64,
    /// The spectral-norm term.
    pub spec: f64,
    /// The bound: mean over inputs of min(frob, spec) per input.
    pub bound: f64,
}

/// Cor. 4.6 (Eqs. 17–19) for a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Cor46 {
    /// Upper bound on Σ I (Eq. 17).
    pub fisher: MinBound,
    /// Upper bound on Σ N·Var Î1 (Eq. 18).
    pub var1: MinBound,
    /// Upper bound on Σ N·Var Î2 (Eq. 19).
    pub var2: MinBound,
    /// Whether λ_max(G_S) in `var1.spec` is exact (else Schur's bound).
    pub var1_spec_exact: bool,
}

/// Thm C.1 (Eqs. 29–31) for a tensor: [lower, upper] for each sum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ThmC1 {
    /// Bracket of Σ I (Eq. 29).
    pub fisher: [f64; 2],
    /// Bracket of Σ N·Var Î1 (Eq. 30).
    pub var1: [f64; 2],
    /// Bracket of Σ N·Var Î2 (Eq. 31).
    pub var2: [f64; 2],
}

/// Lemma 4.8 for a tensor: `Σ Var_x I ≤ Σ E_x[‖J_i‖⁴ λ_max(C)²]` (and the tighter \[X\] form
/// minus `Σ (E_x[‖J_i‖² λ_min(C)])²`); the bounds are None when the analysis computed no bound
/// keys (`--bounds none`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Lemma48 {
    /// Σ Var_x I(θ_i|x), exact (None if `var_x` was not computed).
    pub var_x: Option<f64>,
    /// `Σ E_x[‖J_i‖⁴ λ_max(C)²]`.
    pub bound: Option<f64>,
    /// The tighter \[X\] form.
    pub bound_tight: Option<f64>,
}

/// ln(Σ upper bound / Σ exact) of Thm 4.1 per quantity (Fig. 1 bottom); None where the exact
/// sum is 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LogRatio {
    /// For Σ I (Eq. 10).
    pub fisher: Option<f64>,
    /// For Σ N·Var Î1 (Eq. 11).
    pub var1: Option<f64>,
    /// For Σ N·Var Î2 (Eq. 12).
    pub var2: Option<f64>,
}

/// Which estimator to use for a tensor and how many labels per input it needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// "i1", "i2" (smaller summed variance) or "combination" (when w Î1 + (1−w) Î2 with the
    /// per-parameter `w_opt` has at most 90% of the better one's variance).
    pub estimator: Estimator,
    /// Chebyshev labels per input for relative error ε with probability 1 − δ (None: the
    /// tensor's Fisher is 0).
    pub n_i1: Option<f64>,
    /// The same for Î2.
    pub n_i2: Option<f64>,
    /// The same for the optimal combination.
    pub n_combination: Option<f64>,
}

/// N_x/N_y budget splits of the data-set estimator (Thm 4.7), per estimator.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Budget {
    /// The split for Î1.
    pub i1: BudgetSplit,
    /// The split for Î2.
    pub i2: BudgetSplit,
}

/// The theory layer's per-tensor results in SUMMARY.json.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorTheory {
    /// Exact sums over the tensor.
    pub exact: TraceSums,
    /// None if the engine did not run the per-input hook.
    pub cor46: Option<Cor46>,
    /// Thm C.1 brackets; None if the engine did not run the hook or skipped them.
    pub thm_c1: Option<ThmC1>,
    /// Why Thm C.1 is missing, if it is.
    pub thm_c1_skipped: Option<String>,
    /// Lemma 4.8's input-variance bound.
    pub lemma48: Lemma48,
    /// Tightness of the Thm 4.1 upper bounds.
    pub log_ratio: LogRatio,
    /// The recommended estimator and its sample sizes (None unless var1, var2, var_opt and
    /// fisher were computed).
    pub recommendation: Option<Recommendation>,
    /// The N_x/N_y budget splits (None unless var_x, var1 and var2 were computed).
    pub budget: Option<Budget>,
}

/// Fraction of the better estimator's variance below which the combination is recommended.
pub const COMBINATION_GAIN: f64 = 0.9;

impl TensorTheory {
    fn new(p: &ParamReport, run: &RunInfo, opts: &SummaryOptions) -> TensorTheory {
        let ndim = p.info.shape.len();
        // Per-parameter means over inputs (also with a leading input axis).
        let means = |k: Key| -> Vec<f64> {
            match p.values.get(&k) {
                Some(a) if a.ndim() > ndim => a
                    .mean_axis(ndarray::Axis(0))
                    .map(|m| m.iter().copied().collect())
                    .unwrap_or_default(),
                Some(a) => a.iter().copied().collect(),
                None => Vec::new(),
            }
        };
        let sum = |k: Key| {
            p.values
                .contains_key(&k)
                .then(|| means(k).iter().sum::<f64>())
        };
        let exact = TraceSums {
            fisher: sum(Key::Fisher),
            var1: sum(Key::Var1),
            var2: sum(Key::Var2),
            cov12: sum(Key::Cov12),
            var_opt: sum(Key::VarOpt),
            var_x: sum(Key::VarX),
        };
        let lb = means(Key::LbFisher);
        let has_bounds = p.values.contains_key(&Key::UbVarX);
        let lemma48 = Lemma48 {
            var_x: exact.var_x,
            bound: has_bounds.then(|| means(Key::UbVarX).iter().sum()),
            bound_tight: has_bounds.then(|| {
                means(Key::UbVarX)
                    .iter()
                    .zip(lb.iter().chain(std::iter::repeat(&0.0)))
                    .map(|(u, l)| u - l * l)
                    .sum()
            }),
        };
        let ratio = |ub: Option<f64>, exact: Option<f64>| match (ub, exact) {
            (Some(ub), Some(exact)) if exact > 0.0 && ub > 0.0 => Some((ub / exact).ln()),
            _ => None,
        };
        let log_ratio = LogRatio {
            fisher: ratio(sum(Key::UbFisher), exact.fisher),
            var1: ratio(sum(Key::UbVar1), exact.var1),
            var2: ratio(sum(Key::UbVar2), exact.var2),
        };
        let recommendation = match (exact.fisher, exact.var1, exact.var2, exact.var_opt) {
            (Some(_), Some(var1), Some(var2), Some(var_opt)) => {
                let fisher_sq: f64 = means(Key::Fisher).iter().map(|v| v * v).sum();
                let cheb = |v: f64| chebyshev_samples(v, fisher_sq, opts.eps, opts.delta);
                let estimator = if var_opt < COMBINATION_GAIN * var1.min(var2) {
                    Estimator::Combination
                } else if var2 <= var1 {
                    Estimator::I2
                } else {
                    Estimator::I1
                };
                Some(Recommendation {
                    estimator,
                    n_i1: cheb(var1),
                    n_i2: cheb(var2),
                    n_combination: cheb(var_opt),
                })
            }
            _ => None,
        };
        let (b, n) = (run.inputs as f64, run.samples as f64);
        let budget = match (exact.var_x, exact.var1, exact.var2) {
            (Some(var_x), Some(var1), Some(var2)) => Some(Budget {
                i1: budget_split(var_x, var1, opts.input_cost, b, n),
                i2: budget_split(var_x, var2, opts.input_cost, b, n),
            }),
            _ => None,
        };
        let cor46 = p.bounds.map(|t| Cor46 {
            fisher: MinBound {
                frob: t.fisher_frob,
                spec: t.fisher_spec,
                bound: t.fisher_min,
            },
            var1: MinBound {
                frob: t.var1_frob,
                spec: t.var1_spec,
                bound: t.var1_min,
            },
            var2: MinBound {
                frob: t.var2_frob,
                spec: t.var2_spec,
                bound: t.var2_min,
            },
            var1_spec_exact: t.gram_exact,
        });
        let (thm_c1, thm_c1_skipped) = match p.bounds {
            Some(t) if t.ruhe => (
                Some(ThmC1 {
                    fisher: [t.ruhe_fisher_lo, t.ruhe_fisher_hi],
                    var1: [t.ruhe_var1_lo, t.ruhe_var1_hi],
                    var2: [t.ruhe_var2_lo, t.ruhe_var2_hi],
                }),
                None,
            ),
            Some(t) => (
                None,
                Some(format!(
                    "skipped: the spectrum of G_S needs an eigenproblem of size min(n_l, O(O+1)/2) = {} > {RUHE_MAX_SIZE}",
                    t.gram_size
                )),
            ),
            None => (
                None,
                Some("not computed: the engine did not run the per-input theory hook".into()),
            ),
        };
        TensorTheory {
            exact,
            cor46,
            thm_c1,
            thm_c1_skipped,
            lemma48,
            log_ratio,
            recommendation,
            budget,
        }
    }
}

impl Report {
    /// The array of `key` for the parameter named `param` (e.g. `"0.weight"`).
    pub fn get(&self, key: Key, param: &str) -> Option<&ArrayD<f64>> {
        self.params
            .iter()
            .find(|p| p.info.name == param)
            .and_then(|p| p.values.get(&key))
    }

    /// All tensors as (`<key>/<param>`, array), in parameter then key order.
    pub fn tensors(&self) -> impl Iterator<Item = (String, &ArrayD<f64>)> {
        self.params.iter().flat_map(|p| {
            p.values
                .iter()
                .map(move |(k, v)| (format!("{}/{}", k.name(), p.info.name), v))
        })
    }

    /// Writes RESULT.safetensors (float64 tensors, metadata describing the run), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::output::write_atomic(path, &self.result_bytes()?)
    }

    /// The bytes of RESULT.safetensors ([`Report::save`]).
    pub fn result_bytes(&self) -> Result<Vec<u8>> {
        let owned: Vec<OwnedTensor> = self
            .tensors()
            .map(|(name, a)| (name, a.shape().to_vec(), a.iter().copied().collect()))
            .collect();
        let tensors = named(&owned);
        let meta = serde_json::to_value(&self.run)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k, v.to_string().trim_matches('"').to_string()))
                    .collect()
            });
        safetensors_bytes(&tensors, StoreDtype::F64, meta)
    }

    /// Per-tensor means of every key and the theory layer's per-tensor results (SUMMARY.json's
    /// `layers`), with the default [`SummaryOptions`].
    pub fn summary(&self) -> Summary {
        self.summary_with(&SummaryOptions::default())
    }

    /// [`Report::summary`] with the given options.
    pub fn summary_with(&self, opts: &SummaryOptions) -> Summary {
        let layers = self
            .params
            .iter()
            .map(|p| ParamSummary {
                name: p.info.name.clone(),
                layer: p.info.layer,
                kind: if p.info.is_bias {
                    ParamKind::Bias
                } else {
                    ParamKind::Weight
                },
                count: p.info.numel(),
                means: p
                    .values
                    .iter()
                    .map(|(k, v)| (k.name().to_string(), Some(v.mean().unwrap_or(f64::NAN))))
                    .chain(self.run.skipped_keys.iter().map(|k| (k.clone(), None)))
                    .collect(),
                theory: TensorTheory::new(p, &self.run, opts),
            })
            .collect();
        Summary {
            run: self.run.clone(),
            options: *opts,
            layers,
        }
    }

    /// Writes SUMMARY.json.
    pub fn save_summary(&self, path: &Path) -> Result<()> {
        self.save_summary_with(path, &SummaryOptions::default())
    }

    /// Writes SUMMARY.json with the given options, atomically.
    pub fn save_summary_with(&self, path: &Path, opts: &SummaryOptions) -> Result<()> {
        crate::output::write_atomic(path, &self.summary_bytes(opts)?)
    }

    /// The bytes of SUMMARY.json with the given options ([`Report::save_summary_with`]).
    pub fn summary_bytes(&self, opts: &SummaryOptions) -> Result<Vec<u8>> {
        let text = serde_json::to_string_pretty(&self.summary_with(opts))
            .map_err(|e| Error::Internal(format!("cannot format SUMMARY.json: {e}")))?;
        Ok((text + "\n").into_bytes())
    }

    /// A per-tensor table of the key means, for the terminal.
    pub fn table(&self) -> String {
        let s = self.summary();
        let keys: Vec<Key> = Key::TABLE
            .into_iter()
            .filter(|k| self.params.iter().any(|p| p.values.contains_key(k)))
            .collect();
        let mut out = format!("{:<14} {:>8}", "param", "count");
        for k in &keys {
            out += &format!(" {:>11}", k.name());
        }
        out += &format!(" {:>11}", "best");
        out.push('\n');
        for l in &s.layers {
            out += &format!("{:<14} {:>8}", l.name, l.count);
            for k in &keys {
                out += &format!(
                    " {:>11.4e}",
                    l.means.get(k.name()).copied().flatten().unwrap_or(f64::NAN)
                );
            }
            let best = l
                .theory
                .recommendation
                .as_ref()
                .map_or("-", |r| r.estimator.as_str());
            out += &format!(" {best:>11}");
            out.push('\n');
        }
        out
    }
}

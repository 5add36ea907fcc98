//! WGSL sources (`shaders/*.wgsl`, one concern per file) and the small generated prelude that
//! shares Rust-side constants (base indices of `channels.rs`, the codes of [`WgslEnum`]s) with
//! the kernels. Each shader's interface (bindings, entry points, override constants, uniform
//! struct) is listed here and checked against the WGSL by naga, without a GPU
//! (`interface_tests.rs`).

use super::kernels::{Epilogue, Prologue};
use crate::engine::channels::{Base, NUM_BASES, NUM_INPUT_SCALARS};
use crate::family::FamilyKind;
use crate::model::Activation;

/// Rows of the GPU bases array ([bb, NB, n_l]).
pub const NB: usize = NUM_BASES;

/// Register blocking of the GEMM (gemm.wgsl): RM×RN outputs per invocation and TM×TN tiles
/// per 16×16 workgroup, TM = 16·RM, TN = 16·RN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GemmTile {
    /// 4×4, 64×64 tiles (8.3 KB of workgroup memory): the portable default.
    #[default]
    R4,
    /// 8×8, 128×128 tiles (16.5 KB of workgroup memory: more than WebGPU's default limit).
    R8,
    /// 4×1, 64×16 tiles, for products with N ≤ 16 columns (O outputs): less idle work.
    Narrow,
}

impl GemmTile {
    /// (RM, RN).
    pub const fn blocking(self) -> (u32, u32) {
        match self {
            GemmTile::R4 => (4, 4),
            GemmTile::R8 => (8, 8),
            GemmTile::Narrow => (4, 1),
        }
    }

    /// Rows and columns of C per workgroup.
    pub const fn tile(self) -> (u32, u32) {
        let (rm, rn) = self.blocking();
        (16 * rm, 16 * rn)
    }

    /// Bytes of workgroup memory: KT × (TM + 1) and KT × (TN + 1) f32 tiles.
    pub const fn workgroup_bytes(self) -> u32 {
        let (tm, tn) = self.tile();
        16 * (tm + 1 + tn + 1) * 4
    }
}

/// The compute shaders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// gemm.wgsl, generated for one register blocking; launched by `kernels::Gemm::dispatch`.
    Gemm(GemmTile),
    /// activation.wgsl: a = σ(z), σ'(z), σ''(z) (MATH §6.4); launched by `Forward::record`.
    Activation,
    /// family.wgsl: η, label sampling and residuals (MATH §2, §6.6); launched by
    /// `Plan::family` (plan.rs).
    Family,
    /// hessian.wgsl: output Jacobians Δ_l and Hessian diagonals Hd_l (DESIGN §2); launched by
    /// `Plan::hessian` (plan.rs).
    Hessian,
    /// unit_stats.wgsl: the per-unit bases of one layer (MATH §6.5); launched by
    /// `Plan::unit_stats` (plan.rs).
    UnitStats,
    /// reduce_samples.wgsl: per-sample scores and negative Hessians reduced over the labels
    /// (MATH §6.6); launched by `Plan::samples` (plan.rs).
    ReduceSamples,
    /// backprop.wgsl: softmax cross-entropy back-propagation for training; launched by
    /// `GpuTrainer::new` (train.rs).
    Backprop,
    /// accumulate.wgsl: the left operands of the accumulation GEMMs (DESIGN §1); launched by
    /// `AccumPlan::new` (accumulate.rs).
    Accumulate,
    /// rng_test.wgsl: the Philox test kernel (used by the unit tests only, kernel_tests.rs).
    #[cfg_attr(not(test), allow(dead_code))]
    RngTest,
}

const RNG: &str = include_str!("../../../shaders/rng.wgsl");

/// The WGSL constant holding a base's row (exhaustive: a new base must be named here).
fn wgsl_name(b: Base) -> &'static str {
    match b {
        Base::Q => "BASE_Q",
        Base::V => "BASE_V",
        Base::W => "BASE_W",
        Base::DeltaNorm2 => "BASE_DELTA_NORM2",
        Base::HdNorm2 => "BASE_HD_NORM2",
        Base::Third => "BASE_THIRD",
        Base::ScoreSqMean => "BASE_SCORE_SQ_MEAN",
        Base::ScoreSqVar => "BASE_SCORE_SQ_VAR",
        Base::NegHessMean => "BASE_NEG_HESS_MEAN",
        Base::HessRVar => "BASE_HESS_R_VAR",
        Base::Ef => "BASE_EF",
        Base::DeltaNorm4 => "BASE_DELTA_NORM4",
        Base::DeltaCentredNorm2 => "BASE_DELTA_CENTRED_NORM2",
        Base::ScoreSqVarVar => "BASE_SCORE_SQ_VAR_VAR",
        Base::HessRVarVar => "BASE_HESS_R_VAR_VAR",
    }
}

/// A Rust enum whose values a kernel takes as the override constant [`WgslEnum::OVERRIDE`]:
/// the pipeline gets [`WgslEnum::code`], and the generated prelude declares
/// `const {OVERRIDE}_{SUFFIX}: u32` for every value, so the WGSL compares against names
/// (`if (FAMILY == FAMILY_CATEGORICAL)`, `case ACT_SIGMOID:`), never bare numbers.
pub trait WgslEnum: Copy + Sized + 'static {
    /// The override constant (`override {OVERRIDE}: u32;`), also the constants' prefix.
    const OVERRIDE: &'static str;
    /// Every value.
    const ALL: &'static [Self];
    /// The value passed to the kernel (distinct per value).
    fn code(self) -> u32;
    /// The upper-case name of the value in WGSL, after the prefix.
    fn suffix(self) -> &'static str;

    /// The WGSL constant naming this value.
    fn wgsl_name(self) -> String {
        format!("{}_{}", Self::OVERRIDE, self.suffix())
    }

    /// The pipeline constant selecting this value.
    fn constant(self) -> (&'static str, f64) {
        (Self::OVERRIDE, f64::from(self.code()))
    }
}

/// activation.wgsl's `ACT`.
impl WgslEnum for Activation {
    const OVERRIDE: &'static str = "ACT";
    const ALL: &'static [Self] = &Activation::ALL;
    fn code(self) -> u32 {
        self as u32
    }
    fn suffix(self) -> &'static str {
        match self {
            Activation::Identity => "IDENTITY",
            Activation::Sigmoid => "SIGMOID",
            Activation::Tanh => "TANH",
            Activation::Relu => "RELU",
            Activation::Softplus => "SOFTPLUS",
            Activation::LogSigmoid => "LOGSIGMOID",
        }
    }
}

/// The output family as the kernels see it: `FAMILY` of family.wgsl and unit_stats.wgsl
/// (σ² travels in the uniform parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuFamily {
    /// η = softmax(h).
    Categorical,
    /// η = h/σ².
    Gaussian,
    /// η = σ(h), independent outputs.
    Bernoulli,
    /// η = λ = exp(h), independent outputs.
    Poisson,
}

impl From<FamilyKind> for GpuFamily {
    fn from(kind: FamilyKind) -> GpuFamily {
        match kind {
            FamilyKind::Categorical => GpuFamily::Categorical,
            FamilyKind::Gaussian { .. } => GpuFamily::Gaussian,
            FamilyKind::Bernoulli => GpuFamily::Bernoulli,
            FamilyKind::Poisson => GpuFamily::Poisson,
        }
    }
}

impl WgslEnum for GpuFamily {
    const OVERRIDE: &'static str = "FAMILY";
    const ALL: &'static [Self] = &[
        GpuFamily::Categorical,
        GpuFamily::Gaussian,
        GpuFamily::Bernoulli,
        GpuFamily::Poisson,
    ];
    fn code(self) -> u32 {
        self as u32
    }
    fn suffix(self) -> &'static str {
        match self {
            GpuFamily::Categorical => "CATEGORICAL",
            GpuFamily::Gaussian => "GAUSSIAN",
            GpuFamily::Bernoulli => "BERNOULLI",
            GpuFamily::Poisson => "POISSON",
        }
    }
}

/// gemm.wgsl's `EPILOGUE`.
impl WgslEnum for Epilogue {
    const OVERRIDE: &'static str = "EPILOGUE";
    const ALL: &'static [Self] = &[Epilogue::Store, Epilogue::AddBias, Epilogue::Accumulate];
    fn code(self) -> u32 {
        self as u32
    }
    fn suffix(self) -> &'static str {
        match self {
            Epilogue::Store => "STORE",
            Epilogue::AddBias => "ADD_BIAS",
            Epilogue::Accumulate => "ACCUMULATE",
        }
    }
}

/// gemm.wgsl's `PROLOGUE`.
impl WgslEnum for Prologue {
    const OVERRIDE: &'static str = "PROLOGUE";
    const ALL: &'static [Self] = &[Prologue::None, Prologue::ScaleRows];
    fn code(self) -> u32 {
        self as u32
    }
    fn suffix(self) -> &'static str {
        match self {
            Prologue::None => "NONE",
            Prologue::ScaleRows => "SCALE_ROWS",
        }
    }
}

/// The named constants of an enum's values.
fn enum_constants<E: WgslEnum>() -> impl Iterator<Item = (String, u32)> {
    E::ALL.iter().map(|v| (v.wgsl_name(), v.code()))
}

/// The `u32` constants the generated prelude declares, (name, value): base rows, NB, NS, the
/// label stream of rng.wgsl and the codes of every [`WgslEnum`].
pub(crate) fn prelude_constants() -> Vec<(String, u32)> {
    let mut c: Vec<(String, u32)> = Base::ALL
        .iter()
        .map(|b| (wgsl_name(*b).to_string(), b.index() as u32))
        .collect();
    c.push(("NB".into(), NB as u32));
    c.push(("NS".into(), NUM_INPUT_SCALARS as u32));
    c.push(("STREAM_LABELS".into(), crate::rng::STREAM_LABELS));
    c.extend(enum_constants::<Activation>());
    c.extend(enum_constants::<GpuFamily>());
    c.extend(enum_constants::<Epilogue>());
    c.extend(enum_constants::<Prologue>());
    c
}

fn prelude() -> String {
    let mut s = String::from("// Generated by src/engine/gpu/shaders.rs\n");
    for (name, value) in prelude_constants() {
        s += &format!("const {name}: u32 = {value}u;\n");
    }
    // The invocation index of a 64-wide 1-D dispatch laid out by `kernels::groups_1d`.
    s += "fn linear(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {\n    return gid.x + gid.y * nwg.x * 64u;\n}\n";
    s
}

/// Kind of one binding of a shader's group 0, in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A uniform buffer (the kernel's parameters).
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

impl Shader {
    /// The bindings of group 0 (binding i = entry i), shared by all entry points of the file.
    pub fn bindings(self) -> &'static [Binding] {
        use Binding::*;
        match self {
            Shader::Gemm(_) => &[Uniform, Read, Read, ReadWrite, Read, Read],
            Shader::Activation => &[Uniform, Read, ReadWrite, ReadWrite, ReadWrite],
            Shader::Family => &[Uniform, Read, ReadWrite, ReadWrite, Read, ReadWrite],
            Shader::Hessian => &[Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite],
            Shader::UnitStats => &[Uniform, Read, Read, Read, ReadWrite],
            Shader::ReduceSamples => &[Uniform, Read, Read, ReadWrite, ReadWrite],
            Shader::Backprop => &[Uniform, Read, Read, ReadWrite, ReadWrite],
            Shader::Accumulate => &[Uniform, Read, Read, Read, Read, ReadWrite],
            Shader::RngTest => &[Uniform, ReadWrite],
        }
    }

    /// The compute entry points of the file.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Shader::Gemm(_)
            | Shader::Activation
            | Shader::UnitStats
            | Shader::ReduceSamples
            | Shader::RngTest => &["main"],
            Shader::Family => &["eta_main", "sample_main", "data_main"],
            Shader::Hessian => &["head_main", "backward_main", "chain_init_main"],
            Shader::Backprop => &["ce_main", "mul_main"],
            Shader::Accumulate => &["scale_main", "welford_main"],
        }
    }

    /// The override constants of the file; every pipeline sets all of them (they have no
    /// defaults in the WGSL).
    pub fn overrides(self) -> &'static [&'static str] {
        match self {
            Shader::Gemm(_) => &[
                "TRANS_A",
                "TRANS_B",
                Epilogue::OVERRIDE,
                Prologue::OVERRIDE,
                "POW_A",
                "POW_B",
            ],
            Shader::Activation => &[Activation::OVERRIDE],
            Shader::Family | Shader::UnitStats => &[GpuFamily::OVERRIDE],
            Shader::ReduceSamples => &["LANES"],
            Shader::Hessian | Shader::Backprop | Shader::Accumulate | Shader::RngTest => &[],
        }
    }

    /// The WGSL file name.
    pub fn name(self) -> &'static str {
        match self {
            Shader::Gemm(_) => "gemm.wgsl",
            Shader::Activation => "activation.wgsl",
            Shader::Family => "family.wgsl",
            Shader::Hessian => "hessian.wgsl",
            Shader::UnitStats => "unit_stats.wgsl",
            Shader::ReduceSamples => "reduce_samples.wgsl",
            Shader::Backprop => "backprop.wgsl",
            Shader::Accumulate => "accumulate.wgsl",
            Shader::RngTest => "rng_test.wgsl",
        }
    }

    /// The full WGSL source: prelude, shared pieces it needs, then the file.
    pub fn source(self) -> String {
        let (body, rng) = match self {
            Shader::Gemm(_) => (include_str!("../../../shaders/gemm.wgsl"), false),
            Shader::Activation => (include_str!("../../../shaders/activation.wgsl"), false),
            Shader::Family => (include_str!("../../../shaders/family.wgsl"), true),
            Shader::Hessian => (include_str!("../../../shaders/hessian.wgsl"), false),
            Shader::UnitStats => (include_str!("../../../shaders/unit_stats.wgsl"), false),
            Shader::ReduceSamples => (include_str!("../../../shaders/reduce_samples.wgsl"), false),
            Shader::Backprop => (include_str!("../../../shaders/backprop.wgsl"), false),
            Shader::Accumulate => (include_str!("../../../shaders/accumulate.wgsl"), false),
            Shader::RngTest => (include_str!("../../../shaders/rng_test.wgsl"), true),
        };
        let mut s = prelude();
        if let Shader::Gemm(tile) = self {
            let (rm, rn) = tile.blocking();
            s += &format!("const RM: u32 = {rm}u;\nconst RN: u32 = {rn}u;\n");
        }
        if rng {
            s += RNG;
        }
        s + body
    }
}

impl Shader {
    /// Every shader module the engine compiles (each GEMM blocking is one); the unit tests
    /// check them all.
    #[cfg(test)]
    pub const ALL: [Shader; 11] = [
        Shader::Gemm(GemmTile::R4),
        Shader::Gemm(GemmTile::R8),
        Shader::Gemm(GemmTile::Narrow),
        Shader::Activation,
        Shader::Family,
        Shader::Hessian,
        Shader::UnitStats,
        Shader::ReduceSamples,
        Shader::Backprop,
        Shader::Accumulate,
        Shader::RngTest,
    ];
}

/// Uniform parameters of rng_test.wgsl, the Philox test kernel (`kernel_tests.rs`).
#[cfg(test)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RngTestParams {
    /// Number of counters i = 0..count to draw.
    pub count: u32,
    /// Second word of the Philox counter.
    pub sample: u32,
    /// Third word of the Philox counter.
    pub block: u32,
    /// Fourth word of the Philox counter.
    pub stream: u32,
    /// Low word of the Philox key.
    pub key_lo: u32,
    /// High word of the Philox key.
    pub key_hi: u32,
    /// Padding to 32 bytes.
    pub _p: [u32; 2],
}

/// A pipeline the engine may create: an entry point of a shader with its override constants.
#[cfg(test)]
pub(crate) struct Variant {
    pub shader: Shader,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
}

/// Every pipeline the engine may create, with the override values produced by the Rust code
/// that creates them ([`Gemm::constants`](super::kernels::Gemm::constants),
/// [`WgslEnum::constant`]).
#[cfg(test)]
pub(crate) fn all_variants() -> Vec<Variant> {
    use super::kernels::Gemm;
    let mut variants = Vec::new();
    for shader in Shader::ALL {
        let sets: Vec<Vec<(&'static str, f64)>> = match shader {
            Shader::Gemm(tile) => {
                let mut sets = Vec::new();
                for (trans_a, trans_b) in
                    [(false, false), (false, true), (true, false), (true, true)]
                {
                    for &epilogue in Epilogue::ALL {
                        for &prologue in Prologue::ALL {
                            for pow_a in Gemm::POWS_A {
                                for pow_b in Gemm::POWS_B {
                                    let mut g = Gemm::new(1, 1, 1, trans_a, trans_b);
                                    g.epilogue = epilogue;
                                    g.prologue = prologue;
                                    g.pow_a = pow_a;
                                    g.pow_b = pow_b;
                                    g.tile = Some(tile);
                                    sets.push(g.constants().to_vec());
                                }
                            }
                        }
                    }
                }
                sets
            }
            Shader::Activation => Activation::ALL.iter().map(|a| vec![a.constant()]).collect(),
            Shader::Family | Shader::UnitStats => {
                GpuFamily::ALL.iter().map(|f| vec![f.constant()]).collect()
            }
            // plan::reduce_lanes: a power of two ≤ 64.
            Shader::ReduceSamples => (0..=6)
                .map(|i| vec![("LANES", f64::from(1u32 << i))])
                .collect(),
            Shader::Hessian | Shader::Backprop | Shader::Accumulate | Shader::RngTest => {
                vec![Vec::new()]
            }
        };
        for &entry in shader.entry_points() {
            for constants in &sets {
                variants.push(Variant {
                    shader,
                    entry,
                    constants: constants.clone(),
                });
            }
        }
    }
    variants
}

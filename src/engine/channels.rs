//! Per-unit statistics ("bases") and the per-parameter channels built from them.
//!
//! For one input x, every diagonal quantity of weight W_l[j,k] is a per-unit scalar of unit j
//! times a power of the layer input a_k = a_{l−1,k}(x), optionally times a per-input scalar
//! (MATH §6.5; a = 1 for biases). Engines compute the bases per input and unit; the sums over
//! inputs Σ_x a_k(x)^p · s(x) · base_j(x) are then formed per parameter (by a loop on the CPU,
//! by GEMMs on a GPU), and every output key is such a channel or is derived from them.

use crate::family::ExpFamily;
use crate::report::Key;

/// Per-unit scalars of one input and one layer (index j = unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// q_j = Δ_jᵀ C Δ_j (I = a²·q).
    Q,
    /// v_j = (K − C⊗C)[Δ_j⁴] (N·Var Î1 = a⁴·v).
    V,
    /// w_j = Hd_jᵀ C Hd_j (N·Var Î2 = a⁴·w).
    W,
    /// ‖Δ_j‖² (‖J_i‖² = a²·‖Δ_j‖²).
    DeltaNorm2,
    /// ‖Hd_j‖² (‖D_i‖² = a⁴·‖Hd_j‖²).
    HdNorm2,
    /// E[(Δ_jᵀs)²(Hd_jᵀs)], the third central moment contraction (a⁴ times it per parameter).
    Third,
    /// Mean over the N samples of β_j², β = Δ_l r_s.
    ScoreSqMean,
    /// Unbiased variance over the samples of β_j².
    ScoreSqVar,
    /// Mean over the samples of the unit's negative Hessian q_j − Hd_jᵀ r_s.
    NegHessMean,
    /// Unbiased variance over the samples of Hd_jᵀ r_s.
    HessRVar,
    /// (Δ_jᵀ r_data)² with the data label's residual.
    Ef,
}

/// Number of [`Base`] values.
pub const NUM_BASES: usize = 11;

impl Base {
    /// Row of the base in a [NUM_BASES, n_l] statistics array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Per-input scalars that multiply a base (placeholders for host-side spectral quantities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputScalar {
    One,
}

/// Number of [`InputScalar`] values.
pub const NUM_INPUT_SCALARS: usize = 1;

/// The per-input scalars of an input with output h and η.
pub fn input_scalars(
    _family: &dyn ExpFamily,
    _h: &[f64],
    _eta: &[f64],
) -> [f64; NUM_INPUT_SCALARS] {
    [1.0]
}

/// A per-parameter channel: Σ_x a^power · scalar(x) · base_j(x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    pub base: Base,
    pub power: u32,
    pub scalar: InputScalar,
}

const fn ch(base: Base, power: u32) -> Option<Channel> {
    Some(Channel {
        base,
        power,
        scalar: InputScalar::One,
    })
}

impl Key {
    /// The channel whose mean over inputs is this key, or None for derived keys.
    pub const fn channel(self) -> Option<Channel> {
        match self {
            Key::Fisher => ch(Base::Q, 2),
            Key::Var1 => ch(Base::V, 4),
            Key::Var2 => ch(Base::W, 4),
            Key::Mc1 => ch(Base::ScoreSqMean, 2),
            Key::Mc2 => ch(Base::NegHessMean, 2),
            Key::McVar1 => ch(Base::ScoreSqVar, 4),
            Key::McVar2 => ch(Base::HessRVar, 4),
            Key::Ef => ch(Base::Ef, 2),
            Key::VarJoint1 | Key::VarJoint2 => None,
        }
    }
}

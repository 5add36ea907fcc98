//! Per-unit statistics ("bases") and the per-parameter channels built from them.
//!
//! For one input x, every diagonal quantity of weight `W_l[j,k]` is a per-unit scalar of unit j
//! times a power of the layer input a_k = a_{l−1,k}(x), optionally times a per-input scalar
//! (MATH §6.5; a = 1 for biases). Engines compute the bases per input and unit; the sums over
//! inputs Σ_x a_k(x)^p · s(x) · base_j(x) are then formed per parameter as matrix products (on
//! the CPU by one GEMM per layer and power over fixed chunks of 64 inputs, see
//! `engine::accumulate`; on a GPU by GEMM kernels), and every output key is such a channel or is
//! derived from them.

use crate::family::FamilyKind;
use crate::report::Key;
use crate::theory::Spectrum;

/// Per-unit scalars of one input and one layer (index j = unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// q_j = Δ_jᵀ C Δ_j (I = a²·q).
    Q,
    /// `v_j = (K − C⊗C)[Δ_j⁴]` (`N·Var Î1 = a⁴·v`).
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
    /// ‖Δ_j‖⁴ (‖J_i‖⁴ = a⁴·‖Δ_j‖⁴), for the Var Î1 bounds of Eqs. 11, 14–16.
    DeltaNorm4,
    /// `‖Δ_j − (1ᵀΔ_j/O)·1‖² = ‖Δ_j‖² − (Σ_a Δ_j[a])²/O`, the centred Jacobian's norm
    /// (MATH §9a: ‖J̃_i‖² = a²·this).
    DeltaCentredNorm2,
    /// Estimated variance of [`Base::ScoreSqVar`] over the label draws,
    /// Var(s²) = (μ4 − σ⁴(N−3)/(N−1))/N, from the samples' M2 and M4 ([`sample_var_var`];
    /// a⁸ times it per parameter).
    ScoreSqVarVar,
    /// The same for [`Base::HessRVar`].
    HessRVarVar,
}

/// Number of [`Base`] values.
pub const NUM_BASES: usize = 15;

/// Estimate of Var(s²) = (μ4 − σ⁴(n−3)/(n−1))/n, the variance of the unbiased sample
/// variance s² of `n` ≥ 2 i.i.d. values, from their central sums M2 = Σ(v − v̄)² and
/// M4 = Σ(v − v̄)⁴. For n ≥ 4 it is the unbiased estimator
/// `[(n−1)²·M4 − (n²−3)·M2²/n] / [(n−1)²(n−2)(n−3)]` (from `E[m4]` and `E[m2²]`, docs/theory.md §3),
/// which can be slightly negative; sums over inputs are clamped at 0 only before the square
/// root. For n = 2, 3 it falls back to the (downward-biased) plug-in (m4 − s⁴(n−3)/(n−1))/n.
pub fn sample_var_var(n: f64, m2: f64, m4: f64) -> f64 {
    if n >= 4.0 {
        let n1 = n - 1.0;
        (n1 * n1 * m4 - (n * n - 3.0) * m2 * m2 / n) / (n1 * n1 * (n - 2.0) * (n - 3.0))
    } else {
        let s2 = m2 / (n - 1.0);
        (m4 / n - s2 * s2 * (n - 3.0) / (n - 1.0)) / n
    }
}

impl Base {
    /// All bases, in index order.
    pub const ALL: [Base; NUM_BASES] = [
        Base::Q,
        Base::V,
        Base::W,
        Base::DeltaNorm2,
        Base::HdNorm2,
        Base::Third,
        Base::ScoreSqMean,
        Base::ScoreSqVar,
        Base::NegHessMean,
        Base::HessRVar,
        Base::Ef,
        Base::DeltaNorm4,
        Base::DeltaCentredNorm2,
        Base::ScoreSqVarVar,
        Base::HessRVarVar,
    ];

    /// Row of the base in a [NUM_BASES, n_l] statistics array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Per-input scalars that multiply a base: spectral quantities of the family's moments at the
/// input's η (MATH §5, §7), computed on the host by [`crate::theory::Spectrum`]. Lower-bound
/// eigenvalues are ≥ 0 (MATH §9a); keys whose scalar does not exist for a family (marked
/// "categorical") are left out of that family's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputScalar {
    /// 1.
    One,
    /// −1.
    MinusOne,
    /// λ_max(C).
    LamMaxC,
    /// λ_min(C) (0 for the categorical family).
    LamMinC,
    /// λ_min(C) on 1⊥: the second-smallest eigenvalue of C (categorical).
    LamMinCPerp,
    /// λ_max(K − C⊗C), extreme Z-eigenvalue of sym(K − C⊗C).
    LamMaxV,
    /// λ_min(K − C⊗C) (0 for the categorical family).
    LamMinV,
    /// λ_max(K) − λ_min(C)² (Cor. 4.2, Eq. 15).
    Cor42Upper,
    /// max(0, λ_min(K) − λ_max(C)²) (Cor. 4.2, Eq. 14).
    Cor42Lower,
    /// B²·λ_max(C) − λ_min(C)² with B² = sup_y ‖t(y) − η‖² (Prop. 4.3, Eq. 16; categorical).
    Prop43,
    /// λ_max(M), M = Cov(s⊗s): certified upper bound on λ_max(K − C⊗C) \[X\].
    LamMaxM,
    /// ρ(p) = min{p_max, 1 − ‖p‖²} (Thm 5.2; categorical).
    Rho,
    /// 2ρ(p) (Thm 5.2; categorical).
    TwoRho,
    /// λ_max(C)² (Lemma 4.8).
    LamMaxC2,
}

/// Number of [`InputScalar`] values.
pub const NUM_INPUT_SCALARS: usize = 14;

impl InputScalar {
    /// All scalars, in index order.
    pub const ALL: [InputScalar; NUM_INPUT_SCALARS] = [
        InputScalar::One,
        InputScalar::MinusOne,
        InputScalar::LamMaxC,
        InputScalar::LamMinC,
        InputScalar::LamMinCPerp,
        InputScalar::LamMaxV,
        InputScalar::LamMinV,
        InputScalar::Cor42Upper,
        InputScalar::Cor42Lower,
        InputScalar::Prop43,
        InputScalar::LamMaxM,
        InputScalar::Rho,
        InputScalar::TwoRho,
        InputScalar::LamMaxC2,
    ];

    /// Whether the scalar is exactly 0 at every input of the family: for the categorical
    /// family λ_min(C) = λ_min(K) = λ_min(K − C⊗C) = 0 (u ∝ 1, MATH §9a), so the lower bounds
    /// of Eqs. 10–12 and 14 vanish and engines may skip their channels.
    pub fn vanishes(self, kind: FamilyKind) -> bool {
        kind == FamilyKind::Categorical
            && matches!(
                self,
                InputScalar::LamMinC | InputScalar::LamMinV | InputScalar::Cor42Lower
            )
    }

    /// The scalar's value for one input's spectrum (0 where it does not exist).
    pub fn value(self, s: &Spectrum) -> f64 {
        match self {
            InputScalar::One => 1.0,
            InputScalar::MinusOne => -1.0,
            InputScalar::LamMaxC => s.lam_max_c,
            InputScalar::LamMinC => s.lam_min_c,
            InputScalar::LamMinCPerp => s.lam_min_c_perp,
            InputScalar::LamMaxV => s.lam_max_v,
            InputScalar::LamMinV => s.lam_min_v,
            InputScalar::Cor42Upper => s.lam_max_k - s.lam_min_c * s.lam_min_c,
            InputScalar::Cor42Lower => (s.lam_min_k - s.lam_max_c * s.lam_max_c).max(0.0),
            InputScalar::Prop43 => s
                .stat_bound2
                .map_or(0.0, |b2| b2 * s.lam_max_c - s.lam_min_c * s.lam_min_c),
            InputScalar::LamMaxM => s.lam_max_m,
            InputScalar::Rho => s.rho.unwrap_or(0.0),
            InputScalar::TwoRho => 2.0 * s.rho.unwrap_or(0.0),
            InputScalar::LamMaxC2 => s.lam_max_c * s.lam_max_c,
        }
    }
}

/// The per-input scalars without a spectrum: 1 and −1, and 0 for every spectral scalar (their
/// channels are then not reported, [`Key::is_bound`]).
pub fn constant_scalars() -> [f64; NUM_INPUT_SCALARS] {
    InputScalar::ALL.map(|k| match k {
        InputScalar::One => 1.0,
        InputScalar::MinusOne => -1.0,
        _ => 0.0,
    })
}

/// The per-input scalars of one input's spectrum, indexed by `InputScalar as usize`.
pub fn scalars_of(s: &Spectrum) -> [f64; NUM_INPUT_SCALARS] {
    InputScalar::ALL.map(|k| k.value(s))
}

/// A per-parameter channel: Σ_x a^power · scalar(x) · base_j(x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    /// The per-unit statistic base_j(x).
    pub base: Base,
    /// The power p of the layer input a_k (a = 1 for biases).
    pub power: u32,
    /// The per-input scalar factor s(x).
    pub scalar: InputScalar,
}

const fn ch(base: Base, power: u32) -> Option<Channel> {
    chs(base, power, InputScalar::One)
}

const fn chs(base: Base, power: u32, scalar: InputScalar) -> Option<Channel> {
    Some(Channel {
        base,
        power,
        scalar,
    })
}

impl Key {
    /// Whether the key is a bound: a channel whose per-input scalar is a spectral quantity of
    /// the family (computed only with [`crate::engine::Bounds::keys`]).
    pub const fn is_bound(self) -> bool {
        match self.channel() {
            Some(c) => !matches!(c.scalar, InputScalar::One | InputScalar::MinusOne),
            None => false,
        }
    }

    /// The channel whose mean over inputs is this key, or None for derived keys.
    pub const fn channel(self) -> Option<Channel> {
        use InputScalar as S;
        match self {
            Key::Fisher => ch(Base::Q, 2),
            Key::Var1 => ch(Base::V, 4),
            Key::Var2 => ch(Base::W, 4),
            Key::Mc1 => ch(Base::ScoreSqMean, 2),
            Key::Mc2 => ch(Base::NegHessMean, 2),
            Key::McVar1 => ch(Base::ScoreSqVar, 4),
            Key::McVar2 => ch(Base::HessRVar, 4),
            // Squared standard errors; the report takes √(mean / B) (√ per input).
            Key::McVar1Se => ch(Base::ScoreSqVarVar, 8),
            Key::McVar2Se => ch(Base::HessRVarVar, 8),
            Key::Ef => ch(Base::Ef, 2),
            Key::UbFisher => chs(Base::DeltaNorm2, 2, S::LamMaxC),
            Key::LbFisher => chs(Base::DeltaNorm2, 2, S::LamMinC),
            Key::LbFisherCentred => chs(Base::DeltaCentredNorm2, 2, S::LamMinCPerp),
            Key::UbVar1 => chs(Base::DeltaNorm4, 4, S::LamMaxV),
            Key::LbVar1 => chs(Base::DeltaNorm4, 4, S::LamMinV),
            Key::UbVar2 => chs(Base::HdNorm2, 4, S::LamMaxC),
            Key::LbVar2 => chs(Base::HdNorm2, 4, S::LamMinC),
            Key::UbVar1Cor42 => chs(Base::DeltaNorm4, 4, S::Cor42Upper),
            Key::LbVar1Cor42 => chs(Base::DeltaNorm4, 4, S::Cor42Lower),
            Key::UbVar1Prop43 => chs(Base::DeltaNorm4, 4, S::Prop43),
            Key::UbVar1Cert => chs(Base::DeltaNorm4, 4, S::LamMaxM),
            Key::UbFisherThm52 => chs(Base::DeltaNorm2, 2, S::Rho),
            Key::UbVar1Thm52 => chs(Base::DeltaNorm4, 4, S::TwoRho),
            Key::UbVar2Thm52 => chs(Base::HdNorm2, 4, S::Rho),
            Key::Cov12 => chs(Base::Third, 4, S::MinusOne),
            Key::UbVarX => chs(Base::DeltaNorm4, 4, S::LamMaxC2),
            Key::VarJoint1
            | Key::VarJoint2
            | Key::WOpt
            | Key::VarOpt
            | Key::VarX
            | Key::VarEf
            | Key::EfBias => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;

    /// The scalars that [`InputScalar::vanishes`] marks are exactly 0 for peaked and flat
    /// categorical distributions, so skipping their channels changes nothing.
    #[test]
    fn vanishing_scalars_are_exactly_zero() {
        let family = Family::from_name("categorical", 1.0).unwrap();
        for h in [
            vec![0.0, 0.0, 0.0],
            vec![3.0, -1.0, 0.5, 2.0],
            vec![9.0, -9.0, 0.1, 0.2, -4.0],
        ] {
            let eta = family.as_dyn().eta(&h);
            let s = Spectrum::new(family.as_dyn(), &eta).unwrap();
            for k in InputScalar::ALL {
                if k.vanishes(FamilyKind::Categorical) {
                    assert_eq!(k.value(&s), 0.0, "{k:?} at {h:?}");
                }
            }
        }
    }

    #[test]
    fn indices_follow_declaration_order() {
        for (i, k) in Key::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i, "{}", k.name());
            assert_eq!(Key::from_name(k.name()), Some(k));
        }
        for (i, b) in Base::ALL.into_iter().enumerate() {
            assert_eq!(b.index(), i, "{b:?}");
        }
        for (i, s) in InputScalar::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i, "{s:?}");
        }
        // Every channel has power 2, 4 or 8 (a² for I-like, a⁴ for variance-like quantities,
        // a⁸ for the variances of the sample variances).
        for k in Key::ALL {
            if let Some(c) = k.channel() {
                assert!(matches!(c.power, 2 | 4 | 8), "{}", k.name());
                assert!(c.base.index() < NUM_BASES);
            }
        }
    }
}

//! Theory layer: spectral quantities and the bounds of Soen & Sun (2024) (MATH §5, §7), and
//! what the paper stops short of (docs/theory.md).
//!
//! * [`eigen`]: symmetric eigenvalues (Householder + implicit QL or Laguerre; faer for
//!   eigenvectors and as the fallback).
//! * [`ql_lanes`]: the root-free QL iteration on four tridiagonal matrices at once.
//! * [`moments`]: C, K x³, K x², B², tr M and the spectrum of M per family.
//! * [`zeig`]: extreme Z-eigenvalues of symmetric 4-tensors (GEAP, multi-start).
//! * `probe`: the f32 probes that rank the starts of the categorical searches.
//! * [`closed`]: Prop. 5.1 and Thm 5.2 closed forms.
//! * [`secular`]: eigenvalues of diagonal-plus-rank-one matrices (λ(C) and λ(M) of the
//!   categorical family in O(O²)).
//! * [`spectrum`]: all spectral quantities of one input ([`Spectrum`]).
//! * [`layer`]: per-tensor trace bounds of one input (Cor. 4.6, Thm C.1): the per-input hook.
//! * [`advice`]: optimal Î1/Î2 combination, Chebyshev sample size, input/label budget split.
//! * [`ef`]: empirical Fisher moments M2/M4 and Cor. F.1 for a given label distribution.
//! * [`pair`]: off-diagonal FIM entries and their estimator variances (App. B).

pub mod advice;
pub mod closed;
pub mod ef;
pub mod eigen;
pub mod layer;
pub mod moments;
pub mod pair;
mod probe;
pub mod ql_lanes;
pub mod secular;
pub mod spectrum;
pub mod zeig;

pub use layer::{
    input_theory, input_theory_of, trace_bound_extremes, InputTheory, LayerBounds, LayerData,
    TensorBounds,
};
pub use spectrum::Spectrum;

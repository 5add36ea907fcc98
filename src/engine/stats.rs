//! What one input contributes to the accumulation over inputs (MATH §6.5): its layer inputs,
//! the per-unit bases of every layer and the per-input scalars. Both engines produce these
//! (the CPU engine for every input, the GPU engine with `--per-input`), and the accumulator
//! consumes them.

use ndarray::{Array1, Array2};

use super::channels::NUM_INPUT_SCALARS;

/// Per-unit statistics of one input and one layer: row [`super::channels::Base::index`] of `bases` holds that
/// base for every unit j of the layer (shape [NUM_BASES, n_l]).
#[derive(Clone, Debug)]
pub struct UnitStats {
    /// The bases of every unit, `[NUM_BASES, n_l]`.
    pub bases: Array2<f64>,
}

/// Everything the accumulation over inputs needs from one input.
#[derive(Clone, Debug)]
pub struct InputStats {
    /// The input a_{l−1}(x) of every layer l (the input x for the first).
    pub layer_inputs: Vec<Array1<f64>>,
    /// The per-unit statistics of every layer.
    pub units: Vec<UnitStats>,
    /// The per-input scalars, indexed by `InputScalar as usize`.
    pub scalars: [f64; NUM_INPUT_SCALARS],
}

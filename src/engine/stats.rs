//! What one input contributes to the accumulation over inputs (MATH §6.5): its layer inputs,
//! the per-unit bases of every layer and the per-input scalars. Both engines produce these
//! (the CPU engine for every input, the GPU engine with `--per-input`), and the accumulator
//! consumes them.

use ndarray::{Array1, Array2, ArrayView1, ArrayViewMut1};

use super::channels::{Base, NUM_BASES, NUM_INPUT_SCALARS};

/// Per-unit statistics of one input and one layer: for each base that was computed, its value
/// at every unit j of the layer. A base that was not computed reads as 0 (the CPU engine
/// forms only the bases that the asked-for keys read).
#[derive(Clone, Debug)]
pub struct UnitStats {
    /// One row per computed base (`[count, n_l]`), in [`Base::ALL`] order.
    values: Array2<f64>,
    /// Per base ([`Base::index`]), its row in `values`, or None.
    rows: [Option<usize>; NUM_BASES],
}

impl UnitStats {
    /// Zeros for the bases that `computed` selects, at `n` units.
    pub fn zeros(n: usize, computed: impl Fn(Base) -> bool) -> UnitStats {
        let mut rows = [None; NUM_BASES];
        let mut count = 0;
        for b in Base::ALL {
            if computed(b) {
                rows[b.index()] = Some(count);
                count += 1;
            }
        }
        UnitStats {
            values: Array2::zeros((count, n)),
            rows,
        }
    }

    /// Every base, from a `[NUM_BASES, n_l]` array (row [`Base::index`]). `None` if `bases` has
    /// not [`NUM_BASES`] rows.
    pub fn from_all(bases: Array2<f64>) -> Option<UnitStats> {
        (bases.nrows() == NUM_BASES).then(|| UnitStats {
            values: bases,
            rows: std::array::from_fn(Some),
        })
    }

    /// The base at every unit, or None if it was not computed (then 0 at every unit).
    pub fn base(&self, b: Base) -> Option<ArrayView1<'_, f64>> {
        self.rows[b.index()].map(|r| self.values.row(r))
    }

    /// The base at unit j (0 if it was not computed).
    pub fn get(&self, b: Base, j: usize) -> f64 {
        self.rows[b.index()].map_or(0.0, |r| self.values[[r, j]])
    }

    /// Sets the base at unit j to `v()` if the base is computed (`v` is not called otherwise).
    pub fn set_with(&mut self, b: Base, j: usize, v: impl FnOnce() -> f64) {
        if let Some(r) = self.rows[b.index()] {
            self.values[[r, j]] = v();
        }
    }

    /// The base's row, to be written, or None if it is not computed.
    pub fn base_mut(&mut self, b: Base) -> Option<ArrayViewMut1<'_, f64>> {
        self.rows[b.index()].map(|r| self.values.row_mut(r))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed bases keep their values, the others read as 0; the full layout maps base i to
    /// row i.
    #[test]
    fn bases_are_found_by_name() {
        let mut s = UnitStats::zeros(3, |b| matches!(b, Base::W | Base::Ef));
        s.base_mut(Base::Ef)
            .unwrap()
            .assign(&ndarray::arr1(&[1.0, 2.0, 3.0]));
        s.base_mut(Base::W).unwrap()[1] = 5.0;
        assert!(s.base_mut(Base::Q).is_none());
        assert_eq!(s.get(Base::Ef, 2), 3.0);
        assert_eq!(s.get(Base::W, 1), 5.0);
        assert_eq!(s.get(Base::Q, 0), 0.0);
        assert_eq!(s.base(Base::Ef).unwrap().to_vec(), vec![1.0, 2.0, 3.0]);
        assert!(s.base(Base::V).is_none());
        let all = Array2::from_shape_fn((NUM_BASES, 2), |(i, j)| (10 * i + j) as f64);
        let s = UnitStats::from_all(all).unwrap();
        for b in Base::ALL {
            assert_eq!(s.get(b, 1), (10 * b.index() + 1) as f64, "{b:?}");
        }
        assert!(UnitStats::from_all(Array2::zeros((NUM_BASES - 1, 2))).is_none());
    }
}

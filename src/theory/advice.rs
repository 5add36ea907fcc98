//! Beyond the paper \[X\]: the variance-optimal unbiased combination of Î1 and Î2, the
//! Chebyshev sample size for a relative error, and the split of a budget between inputs and
//! labels for the data-set estimator of Thm 4.7 (derivations in docs/theory.md).

use serde::Serialize;

/// Relative size of Var(Î1 − Î2) below which the two estimators count as identical.
const DEGENERATE: f64 = 1e-12;

/// The weight w* and N·Var of Î_w = w Î1 + (1 − w) Î2 that minimises the variance, given
/// v1 = N·Var Î1, v2 = N·Var Î2 and c12 = N·Cov(Î1, Î2):
/// w* = (v2 − c12)/(v1 + v2 − 2c12), N·Var Î_w* = (v1 v2 − c12²)/(v1 + v2 − 2c12).
/// Î_w is unbiased for every fixed w. When v1 + v2 − 2c12 = Var(Î1 − Î2)·N vanishes, the
/// estimators coincide and w* = 1/2.
pub fn optimal_combination(v1: f64, v2: f64, c12: f64) -> (f64, f64) {
    let den = v1 + v2 - 2.0 * c12;
    let best_single = v1.min(v2);
    if den.is_nan() || den <= DEGENERATE * (v1.abs() + v2.abs()) {
        return (0.5, best_single.max(0.0));
    }
    let w = (v2 - c12) / den;
    let var = ((v1 * v2 - c12 * c12) / den).clamp(0.0, best_single.max(0.0));
    (w, var)
}

/// Chebyshev (Markov on the squared norm): with N labels per input,
/// P(‖Î_S − I_S‖ ≥ ε‖I_S‖) ≤ Σ_i v_i / (N ε² Σ_i I_i²), so N = ⌈Σ v_i / (δ ε² Σ I_i²)⌉ labels
/// give relative error ≤ ε with probability ≥ 1 − δ. None if Σ I_i² = 0.
pub fn chebyshev_samples(var_sum: f64, fisher_sq_sum: f64, eps: f64, delta: f64) -> Option<f64> {
    let den = delta * eps * eps * fisher_sq_sum;
    if den.is_nan() || den <= 0.0 || !var_sum.is_finite() {
        return None;
    }
    Some((var_sum / den).ceil().max(1.0))
}

/// The best split of a budget between N_x inputs and N_y labels per input for the data-set
/// estimator of Thm 4.7, Var = (v_x + v_y/N_y)/N_x, when one input costs `input_cost` labels
/// (total cost T = N_x (input_cost + N_y)).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BudgetSplit {
    /// The continuous optimum √(input_cost · v_y / v_x) (None: unbounded, v_x = 0).
    pub ny_continuous: Option<f64>,
    /// The best integer N_y ≥ 1.
    pub ny_opt: f64,
    /// N_x for the same cost as the current run (B inputs, N labels each).
    pub nx_same_cost: f64,
    /// Variance with (nx_same_cost, ny_opt).
    pub var_opt_split: f64,
    /// Variance of the current run: (v_x + v_y/N)/B.
    pub var_current: f64,
}

/// See [`BudgetSplit`]. `inputs` = B and `samples` = N of the current run.
pub fn budget_split(v_x: f64, v_y: f64, input_cost: f64, inputs: f64, samples: f64) -> BudgetSplit {
    let cost = inputs * (input_cost + samples);
    let var_at = |ny: f64| {
        let nx = cost / (input_cost + ny);
        (v_x + v_y / ny) / nx
    };
    let ny_continuous = (v_x > 0.0).then(|| (input_cost * v_y / v_x).sqrt());
    let ny_opt = match ny_continuous {
        Some(c) => {
            let lo = c.floor().max(1.0);
            let hi = c.ceil().max(1.0);
            if var_at(lo) <= var_at(hi) {
                lo
            } else {
                hi
            }
        }
        // No input randomness: spend everything on labels of as few inputs as possible.
        None => (cost - input_cost).max(1.0),
    };
    BudgetSplit {
        ny_continuous,
        ny_opt,
        nx_same_cost: cost / (input_cost + ny_opt),
        var_opt_split: var_at(ny_opt),
        var_current: (v_x + v_y / samples) / inputs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combination_is_no_worse_than_either() {
        for (v1, v2, c) in [
            (1.0, 2.0, 0.3),
            (1.0, 1.0, -0.9),
            (2.0, 0.0, 0.0),
            (1.0, 4.0, 1.9),
        ] {
            let (w, v) = optimal_combination(v1, v2, c);
            let direct = w * w * v1 + (1.0 - w) * (1.0 - w) * v2 + 2.0 * w * (1.0 - w) * c;
            assert!((v - direct.max(0.0)).abs() < 1e-12, "{v} vs {direct}");
            assert!(v <= v1.min(v2) + 1e-15);
        }
        assert_eq!(optimal_combination(1.0, 1.0, 1.0), (0.5, 1.0));
        assert_eq!(optimal_combination(0.0, 0.0, 0.0), (0.5, 0.0));
    }
}

//! Elementwise activations with closed-form first and second derivatives (MATH §6.4).

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// An elementwise activation σ. Hidden layers apply one each; the head is linear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// σ(z) = z.
    Identity,
    /// The logistic function σ(z) = 1/(1 + e^{−z}).
    Sigmoid,
    /// σ(z) = tanh z.
    Tanh,
    /// σ(z) = max(z, 0) (σ'' = 0; σ'(0) = 0, as in PyTorch).
    Relu,
    /// σ(z) = log(1 + e^z).
    Softplus,
    /// σ(z) = log(1/(1 + e^{−z})) = −softplus(−z).
    LogSigmoid,
}

/// Numerically stable logistic function.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Numerically stable softplus log(1 + e^z).
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

impl Activation {
    /// All supported activations, in the order of the CLI documentation.
    pub const ALL: [Activation; 6] = [
        Activation::Identity,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::Softplus,
        Activation::LogSigmoid,
    ];

    /// The name used in model metadata and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::Softplus => "softplus",
            Activation::LogSigmoid => "logsigmoid",
        }
    }

    /// σ(z).
    pub fn value(self, z: f64) -> f64 {
        self.eval(z).0
    }

    /// (σ(z), σ'(z), σ''(z)) in closed, overflow-free forms (MATH §6.4).
    pub fn eval(self, z: f64) -> (f64, f64, f64) {
        match self {
            Activation::Identity => (z, 1.0, 0.0),
            Activation::Sigmoid => {
                let s = sigmoid(z);
                let d = s * (1.0 - s);
                (s, d, d * (1.0 - 2.0 * s))
            }
            Activation::Tanh => {
                let t = z.tanh();
                let d = 1.0 - t * t;
                (t, d, -2.0 * t * d)
            }
            Activation::Relu => {
                if z > 0.0 {
                    (z, 1.0, 0.0)
                } else {
                    (0.0, 0.0, 0.0)
                }
            }
            Activation::Softplus => {
                let s = sigmoid(z);
                (softplus(z), s, s * (1.0 - s))
            }
            Activation::LogSigmoid => {
                let s = sigmoid(z);
                // 1 − σ(z) = σ(−z), computed directly to keep precision for large z.
                let sm = sigmoid(-z);
                (-softplus(-z), sm, -s * sm)
            }
        }
    }

    /// Parses a comma-separated list such as `sigmoid,sigmoid,tanh`.
    pub fn parse_list(list: &str) -> Result<Vec<Activation>> {
        let list = list.trim();
        if list.is_empty() {
            return Ok(Vec::new());
        }
        list.split(',').map(|s| s.trim().parse()).collect()
    }

    /// Formats a list the way [`Activation::parse_list`] reads it.
    pub fn join(acts: &[Activation]) -> String {
        acts.iter().map(|a| a.name()).collect::<Vec<_>>().join(",")
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == lower)
            .ok_or_else(|| Error::UnknownActivation {
                name: s.to_string(),
            })
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// σ' and σ'' against central finite differences of σ and σ'.
    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-5;
        for act in Activation::ALL {
            for &z in &[-7.3, -1.2, -0.4, 0.3, 0.9, 2.5, 8.0] {
                let (_, d1, d2) = act.eval(z);
                let fd1 = (act.value(z + h) - act.value(z - h)) / (2.0 * h);
                let fd2 = (act.eval(z + h).1 - act.eval(z - h).1) / (2.0 * h);
                assert!((d1 - fd1).abs() < 1e-8, "{act} σ' at {z}: {d1} vs {fd1}");
                assert!((d2 - fd2).abs() < 1e-8, "{act} σ'' at {z}: {d2} vs {fd2}");
            }
        }
    }

    #[test]
    fn extreme_arguments_are_finite() {
        for act in Activation::ALL {
            for &z in &[-800.0, -40.0, 40.0, 800.0] {
                let (v, d1, d2) = act.eval(z);
                assert!(
                    v.is_finite() && d1.is_finite() && d2.is_finite(),
                    "{act} at {z}"
                );
            }
        }
        assert_eq!(Activation::LogSigmoid.value(-800.0), -800.0);
        assert_eq!(Activation::Softplus.value(800.0), 800.0);
    }

    #[test]
    fn parse_names() {
        assert_eq!(
            Activation::parse_list("sigmoid, Tanh,relu").unwrap(),
            vec![Activation::Sigmoid, Activation::Tanh, Activation::Relu]
        );
        assert!(matches!(
            Activation::parse_list("sigmoid,gelu"),
            Err(Error::UnknownActivation { .. })
        ));
    }
}

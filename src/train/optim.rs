//! Optimisers with PyTorch's update rules: SGD with (heavy-ball) momentum and Adam.

use super::Gradients;
use crate::model::Mlp;
use crate::{Error, Result};
use ndarray::Zip;

/// An optimiser and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `torch.optim.SGD(lr, momentum)`: b ← μ b + g (b = g at the first step), θ ← θ − lr b.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum μ (0: plain SGD).
        momentum: f64,
    },
    /// `torch.optim.Adam(lr, betas, eps)` without weight decay.
    Adam {
        /// Learning rate.
        lr: f64,
        /// Decay β₁ of the first-moment average.
        beta1: f64,
        /// Decay β₂ of the second-moment average.
        beta2: f64,
        /// ε added to the denominator's square root.
        eps: f64,
    },
}

impl Default for Optimizer {
    /// Adam with PyTorch's defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8).
    fn default() -> Self {
        Optimizer::adam(1e-3)
    }
}

impl Optimizer {
    /// Adam with learning rate `lr` and PyTorch's other defaults.
    pub fn adam(lr: f64) -> Optimizer {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// SGD with learning rate `lr` and momentum `momentum` (0 for plain SGD).
    pub fn sgd(lr: f64, momentum: f64) -> Optimizer {
        Optimizer::Sgd { lr, momentum }
    }

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64, need: &str| {
            Err(Error::Input(format!(
                "optimiser {what} = {v}: it must be {need}"
            )))
        };
        let (lr, rest): (f64, Vec<(&str, f64, f64, f64)>) = match *self {
            Optimizer::Sgd { lr, momentum } => (lr, vec![("momentum", momentum, 0.0, 1.0)]),
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => (
                lr,
                vec![
                    ("beta1", beta1, 0.0, 1.0),
                    ("beta2", beta2, 0.0, 1.0),
                    ("eps", eps, 0.0, f64::INFINITY),
                ],
            ),
        };
        if !(lr.is_finite() && lr > 0.0) {
            return bad("learning rate", lr, "a finite number > 0");
        }
        for (name, v, lo, hi) in rest {
            let ok = v.is_finite() && v >= lo && v < hi && !(name == "eps" && v <= 0.0);
            if !ok {
                let need = if name == "eps" {
                    "a finite number > 0".to_string()
                } else {
                    format!("in [{lo}, {hi})")
                };
                return bad(name, v, &need);
            }
        }
        Ok(())
    }
}

/// The optimiser's running state (momentum buffers, Adam moments, step count).
#[derive(Clone, Debug)]
pub(crate) struct OptimState {
    optimizer: Optimizer,
    first: Option<Gradients>,
    second: Option<Gradients>,
    steps: u64,
}

impl OptimState {
    pub(crate) fn new(optimizer: Optimizer) -> Result<OptimState> {
        optimizer.validate()?;
        Ok(OptimState {
            optimizer,
            first: None,
            second: None,
            steps: 0,
        })
    }

    pub(crate) fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    /// One update of `model` with gradient `g`.
    pub(crate) fn step(&mut self, model: &mut Mlp, g: &Gradients) {
        self.steps += 1;
        match self.optimizer {
            Optimizer::Sgd { lr, momentum } => {
                if momentum == 0.0 {
                    g.for_each_param(model, |p, g| *p -= lr * g);
                    return;
                }
                let buf = match self.first.as_mut() {
                    Some(buf) => {
                        buf.scale(momentum);
                        buf.add_assign(g);
                        buf
                    }
                    None => self.first.insert(g.clone()),
                };
                buf.for_each_param(model, |p, b| *p -= lr * b);
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let m = self
                    .first
                    .get_or_insert_with(|| Gradients::zeros_like(model));
                let v = self
                    .second
                    .get_or_insert_with(|| Gradients::zeros_like(model));
                let t = i32::try_from(self.steps).unwrap_or(i32::MAX);
                let c1 = 1.0 - beta1.powi(t);
                let c2 = 1.0 - beta2.powi(t);
                let update = |p: &mut f64, m: &mut f64, v: &mut f64, g: &f64| {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                };
                for (l, d) in model.layers_mut().iter_mut().enumerate() {
                    Zip::from(&mut d.weight)
                        .and(&mut m.weight[l])
                        .and(&mut v.weight[l])
                        .and(&g.weight[l])
                        .for_each(update);
                    if let (Some(b), Some(mb), Some(vb), Some(gb)) =
                        (d.bias.as_mut(), &mut m.bias[l], &mut v.bias[l], &g.bias[l])
                    {
                        Zip::from(b).and(mb).and(vb).and(gb).for_each(update);
                    }
                }
            }
        }
    }
}

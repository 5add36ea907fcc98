//! The CPU engine against an independent autodiff oracle (hyper-dual numbers + dense C and K
//! tensors from the label distributions: enumeration for the categorical and Bernoulli
//! families, Isserlis for the Gaussian, truncated series for the Poisson): fisher, var1, var2,
//! var_joint1/2 and ef to 1e-8 relative, on random models with every activation and every
//! family.

mod common;
use common::*;
use diagfim::engine::{analyze, AnalysisOptions, EngineKind, Request};
use diagfim::{Activation, Family, Key, Label};
use Activation::*;

struct Case {
    widths: &'static [usize],
    acts: &'static [Activation],
    /// The family's name and σ² (Gaussian only).
    family: (&'static str, f64),
    scale: f64,
    biases: bool,
}

const CASES: &[Case] = &[
    Case {
        widths: &[3, 5, 4, 3],
        acts: &[Tanh, Sigmoid],
        family: ("categorical", 1.0),
        scale: 0.9,
        biases: true,
    },
    Case {
        widths: &[4, 6, 5, 2],
        acts: &[Softplus, LogSigmoid],
        family: ("gaussian", 0.7),
        scale: 0.8,
        biases: true,
    },
    Case {
        widths: &[2, 7, 3],
        acts: &[Relu],
        family: ("categorical", 1.0),
        scale: 1.0,
        biases: true,
    },
    Case {
        widths: &[3, 4, 4, 4, 5],
        acts: &[Sigmoid, Tanh, Identity],
        family: ("categorical", 1.0),
        scale: 1.2,
        biases: false,
    },
    Case {
        widths: &[5, 3, 1],
        acts: &[LogSigmoid],
        family: ("gaussian", 1.0),
        scale: 1.0,
        biases: true,
    },
    Case {
        widths: &[3, 6, 4],
        acts: &[Softplus],
        family: ("categorical", 1.0),
        scale: 1.5,
        biases: true,
    },
    Case {
        widths: &[2, 3],
        acts: &[],
        family: ("gaussian", 2.0),
        scale: 1.0,
        biases: true,
    },
    Case {
        widths: &[3, 5, 4, 3],
        acts: &[Tanh, Sigmoid],
        family: ("bernoulli", 1.0),
        scale: 1.0,
        biases: true,
    },
    Case {
        widths: &[4, 6, 2],
        acts: &[Softplus],
        family: ("bernoulli", 1.0),
        scale: 1.4,
        biases: true,
    },
    Case {
        widths: &[2, 5, 3, 4],
        acts: &[Relu, LogSigmoid],
        family: ("bernoulli", 1.0),
        scale: 0.9,
        biases: false,
    },
    Case {
        widths: &[3, 5, 4, 2],
        acts: &[Sigmoid, Identity],
        family: ("poisson", 1.0),
        scale: 0.6,
        biases: true,
    },
    Case {
        widths: &[4, 6, 3],
        acts: &[Tanh],
        family: ("poisson", 1.0),
        scale: 0.8,
        biases: true,
    },
    Case {
        widths: &[2, 4, 1],
        acts: &[Softplus],
        family: ("poisson", 1.0),
        scale: 0.7,
        biases: true,
    },
];

fn family_of(c: &Case) -> Family {
    Family::from_name(c.family.0, c.family.1).unwrap()
}

/// Labels for the empirical Fisher that are not the model's own: classes, targets, 0/1
/// indicators or counts.
fn data_labels(c: &Case, b: usize, o: usize) -> Vec<Label> {
    (0..b)
        .map(|i| match c.family.0 {
            "gaussian" => Label::Target(
                (0..o)
                    .map(|a| ((i * 7 + a * 3) % 5) as f64 * 0.4 - 0.8)
                    .collect(),
            ),
            "bernoulli" => Label::Target(
                (0..o)
                    .map(|a| ((i + 2 * a) % 3 == 0) as u8 as f64)
                    .collect(),
            ),
            "poisson" => Label::Target((0..o).map(|a| ((i * 3 + a * 5) % 4) as f64).collect()),
            _ => Label::Class((i * 5 + 1) % o),
        })
        .collect()
}

#[test]
fn cpu_engine_matches_autodiff_oracle() {
    for (ci, c) in CASES.iter().enumerate() {
        let model = random_model(c.widths, c.acts, c.scale, 100 + ci as u64, c.biases);
        let family = family_of(c);
        let b = 5;
        let x = random_inputs(b, c.widths[0], 7 + ci as u64);
        let labels = data_labels(c, b, model.output_dim());
        let n = 8;
        let report = analyze(&Request {
            model: &model,
            family: family.as_dyn(),
            inputs: x.view(),
            labels: Some(&labels),
            options: AnalysisOptions {
                samples: n,
                engine: EngineKind::Cpu,
                ..Default::default()
            },
            progress: None,
        })
        .unwrap();

        // Oracle: per-input values, then the contract's averages.
        let per: Vec<OracleInput> = (0..b)
            .map(|i| {
                oracle_input_family(
                    &model,
                    &family,
                    x.row(i).as_slice().unwrap(),
                    Some(&labels[i]),
                )
            })
            .collect();
        let p = model.num_params();
        let mean = |f: &dyn Fn(&OracleInput) -> &Vec<f64>| -> Vec<f64> {
            (0..p)
                .map(|i| per.iter().map(|o| f(o)[i]).sum::<f64>() / b as f64)
                .collect()
        };
        let fisher = mean(&|o| &o.fisher);
        let var1 = mean(&|o| &o.var1);
        let var2 = mean(&|o| &o.var2);
        let ef = mean(&|o| &o.ef);
        let popvar: Vec<f64> = (0..p)
            .map(|i| {
                per.iter()
                    .map(|o| (o.fisher[i] - fisher[i]).powi(2))
                    .sum::<f64>()
                    / b as f64
            })
            .collect();
        let joint = |v: &Vec<f64>| -> Vec<f64> {
            (0..p)
                .map(|i| (popvar[i] + v[i] / n as f64) / b as f64)
                .collect()
        };
        let checks = [
            (Key::Fisher, fisher.clone()),
            (Key::Var1, var1.clone()),
            (Key::Var2, var2.clone()),
            (Key::Ef, ef),
            (Key::VarJoint1, joint(&var1)),
            (Key::VarJoint2, joint(&var2)),
        ];
        for (key, want) in checks {
            let got = flat(&report, key);
            let err = max_rel_elementwise(&got, &want, 1e-10);
            assert!(
                err < 1e-8,
                "case {ci} ({:?}): {} rel err {err:e}",
                c.acts,
                key.name()
            );
        }
        // The oracle is not degenerate: the checked quantities are not all zero.
        assert!(fisher.iter().any(|v| *v > 1e-6) && var1.iter().any(|v| *v > 1e-8));
        if c.acts.iter().any(|a| !matches!(a, Identity | Relu)) {
            assert!(
                var2.iter().any(|v| *v > 1e-8),
                "case {ci}: var2 is trivially zero"
            );
        }
    }
}

/// MATH §9.10: Δ_l and Hd_l from the §6.2 recursion reproduce J and D of the oracle.
#[test]
fn recursion_matches_oracle_jacobian_and_hessian() {
    for (ci, c) in CASES.iter().enumerate() {
        let model = random_model(c.widths, c.acts, c.scale, 300 + ci as u64, c.biases);
        let family = family_of(c);
        let x = random_inputs(1, c.widths[0], 11);
        let xr = x.row(0);
        let d = diagfim::engine::cpu::derivatives(&model, family.as_dyn(), xr);
        let (j, dd) = jac_and_diag_hess(&model, xr.as_slice().unwrap());
        let mut i = 0;
        for (l, layer) in model.layers().iter().enumerate() {
            let a = &d.layer_inputs[l];
            for u in 0..layer.outputs() {
                for k in 0..layer.inputs() {
                    for o in 0..model.output_dim() {
                        assert!((d.delta[l][[u, o]] * a[k] - j[[i, o]]).abs() < 1e-12);
                        assert!((d.hd[l][[u, o]] * a[k] * a[k] - dd[[i, o]]).abs() < 1e-12);
                    }
                    i += 1;
                }
            }
            if layer.bias.is_some() {
                for u in 0..layer.outputs() {
                    for o in 0..model.output_dim() {
                        assert!((d.delta[l][[u, o]] - j[[i, o]]).abs() < 1e-12);
                        assert!((d.hd[l][[u, o]] - dd[[i, o]]).abs() < 1e-12);
                    }
                    i += 1;
                }
            }
        }
        assert_eq!(i, model.num_params());
        // The forward pass agrees with the oracle's as well.
        let h = output(&model, xr.as_slice().unwrap());
        assert!(rel_err(&d.h, &h) < 1e-14);
    }
}

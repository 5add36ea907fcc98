//! GPU engine tests (run on lavapipe in CI): the whole analysis against the CPU reference
//! engine, the CLI and training. The GEMM and RNG kernels are tested against Rust inside the
//! crate (`src/engine/gpu/kernel_tests.rs`).

mod common;
use common::*;
use diagfim::engine::gpu::GpuContext;
use std::sync::Arc;

/// The shared context; without an adapter the tests are skipped unless DIAGFIM_REQUIRE_GPU=1
/// (set by CI), in which case they fail.
pub fn gpu() -> Option<Arc<GpuContext>> {
    match GpuContext::shared() {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("DIAGFIM_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("DIAGFIM_REQUIRE_GPU=1 but {e}");
            }
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

use diagfim::engine::{analyze, AnalysisOptions, EngineKind, Request};
use diagfim::{Activation, Bounds, Family, Label, Mlp};
use Activation::*;

struct Case {
    widths: &'static [usize],
    acts: &'static [Activation],
    gaussian: Option<f64>,
    biases: bool,
}

const CASES: &[Case] = &[
    Case {
        widths: &[5, 9, 7, 4],
        acts: &[Sigmoid, Tanh],
        gaussian: None,
        biases: true,
    },
    Case {
        widths: &[4, 8, 6, 3],
        acts: &[Softplus, LogSigmoid],
        gaussian: Some(0.7),
        biases: true,
    },
    Case {
        widths: &[6, 10, 5],
        acts: &[Relu],
        gaussian: None,
        biases: true,
    },
    Case {
        widths: &[3, 6, 6, 6, 5],
        acts: &[Tanh, Identity, Sigmoid],
        gaussian: None,
        biases: false,
    },
    Case {
        widths: &[5, 7, 2],
        acts: &[LogSigmoid],
        gaussian: Some(1.0),
        biases: true,
    },
    Case {
        widths: &[4, 70, 3],
        acts: &[Softplus],
        gaussian: None,
        biases: true,
    },
    Case {
        widths: &[3, 4],
        acts: &[],
        gaussian: Some(2.0),
        biases: true,
    },
];

#[allow(clippy::too_many_arguments)]
fn run(
    model: &Mlp,
    family: &Family,
    x: &ndarray::Array2<f64>,
    labels: &[Label],
    engine: EngineKind,
    samples: usize,
    batch: usize,
    per_input: bool,
) -> diagfim::Report {
    run_with(
        model,
        family,
        x,
        labels,
        engine,
        samples,
        batch,
        per_input,
        Bounds::All,
    )
}

#[allow(clippy::too_many_arguments)]
fn run_with(
    model: &Mlp,
    family: &Family,
    x: &ndarray::Array2<f64>,
    labels: &[Label],
    engine: EngineKind,
    samples: usize,
    batch: usize,
    per_input: bool,
    bounds: Bounds,
) -> diagfim::Report {
    analyze(&Request {
        model,
        family: family.as_dyn(),
        inputs: x.view(),
        labels: Some(labels),
        options: AnalysisOptions {
            samples,
            seed: 3,
            per_input,
            batch_size: batch,
            threads: 0,
            engine,
            bounds,
            keys: diagfim::KeySet::ALL,
            input_offset: 0,
            gpu: None,
        },
        progress: None,
    })
    .unwrap()
}

/// |gpu − cpu| ≤ 2e-3·|cpu| + 2e-3·(mean |cpu| of the tensor) elementwise.
fn assert_close(gpu: &diagfim::Report, cpu: &diagfim::Report, what: &str) {
    for ((name, g), (_, c)) in gpu.tensors().zip(cpu.tensors()) {
        let scale = c.iter().map(|v| v.abs()).sum::<f64>() / c.len() as f64;
        for (i, (gv, cv)) in g.iter().zip(c.iter()).enumerate() {
            let tol = 2e-3 * cv.abs() + 2e-3 * scale + 1e-30;
            assert!(
                (gv - cv).abs() <= tol,
                "{what}: {name}[{i}] gpu {gv:e} vs cpu {cv:e}"
            );
        }
    }
}

#[test]
fn gpu_engine_matches_cpu_engine() {
    if gpu().is_none() {
        return;
    }
    for (ci, c) in CASES.iter().enumerate() {
        let model = random_model(c.widths, c.acts, 0.9, 500 + ci as u64, c.biases);
        let family = match c.gaussian {
            Some(s2) => Family::from_name("gaussian", s2).unwrap(),
            None => Family::from_name("categorical", 1.0).unwrap(),
        };
        let b = 6;
        let x = random_inputs(b, c.widths[0], 600 + ci as u64);
        let o = model.output_dim();
        let labels: Vec<Label> = (0..b)
            .map(|i| match c.gaussian {
                Some(_) => Label::Target((0..o).map(|a| (i + a) as f64 * 0.3 - 0.5).collect()),
                None => Label::Class(i % o),
            })
            .collect();
        let cpu = run(&model, &family, &x, &labels, EngineKind::Cpu, 8, 256, false);
        let gpu = run(&model, &family, &x, &labels, EngineKind::Gpu, 8, 256, false);
        assert!(gpu.run.engine == "gpu" && cpu.run.engine == "cpu");
        assert_close(&gpu, &cpu, &format!("case {ci} {:?}", c.acts));
    }
}

/// A model of a family with independent outputs; its output layer is scaled to |h| ≤ 3 on the
/// test inputs and `offset` is added to its biases (Poisson log-rates around 3.5 put many draws
/// in the PTRS regime, λ ≥ 10).
struct IndependentCase {
    widths: &'static [usize],
    acts: &'static [Activation],
    family: &'static str,
    biases: bool,
    offset: f64,
}

/// Every activation appears with each family; Poisson rates span inversion (λ < 10) and PTRS.
const INDEPENDENT_CASES: &[IndependentCase] = &[
    IndependentCase {
        widths: &[5, 9, 7, 4],
        acts: &[Tanh, Sigmoid],
        family: "bernoulli",
        biases: true,
        offset: 0.0,
    },
    IndependentCase {
        widths: &[4, 8, 6, 3],
        acts: &[Softplus, LogSigmoid],
        family: "bernoulli",
        biases: true,
        offset: 0.0,
    },
    IndependentCase {
        widths: &[3, 6, 6, 6, 5],
        acts: &[Relu, Identity, Tanh],
        family: "bernoulli",
        biases: false,
        offset: 0.0,
    },
    IndependentCase {
        widths: &[5, 8, 6, 3],
        acts: &[Sigmoid, Softplus],
        family: "poisson",
        biases: true,
        offset: 0.0,
    },
    IndependentCase {
        widths: &[4, 7, 5, 4],
        acts: &[LogSigmoid, Relu],
        family: "poisson",
        biases: true,
        offset: 3.5,
    },
    IndependentCase {
        widths: &[3, 6, 6, 6, 2],
        acts: &[Tanh, Identity, Sigmoid],
        family: "poisson",
        biases: false,
        offset: 0.0,
    },
    IndependentCase {
        widths: &[4, 5],
        acts: &[],
        family: "poisson",
        biases: true,
        offset: 2.0,
    },
    // Saturated positive logits (h ≈ 15 to 21, 1 − η ≈ 1e-7 to 1e-9): the GPU stores the
    // smaller of η and 1 − η, so c = η(1 − η) keeps f32 accuracy.
    IndependentCase {
        widths: &[4, 6, 3],
        acts: &[Tanh],
        family: "bernoulli",
        biases: true,
        offset: 18.0,
    },
];

/// The Bernoulli and Poisson families: the GPU engine reports the CPU engine's keys with the
/// same values (to f32 tolerance), with data labels (0/1 indicators, small counts): the
/// kernels' η, sampled labels (the same draws: both engines run the f32 samplers), data
/// residuals and per-unit statistics of independent outputs.
#[test]
fn gpu_engine_matches_cpu_engine_independent_families() {
    if gpu().is_none() {
        return;
    }
    for (ci, c) in INDEPENDENT_CASES.iter().enumerate() {
        let mut model = random_model(c.widths, c.acts, 0.9, 700 + ci as u64, c.biases);
        let b = 6;
        let x = random_inputs(b, c.widths[0], 800 + ci as u64);
        // The output layer scaled to |h| ≤ 3, then shifted by the offset.
        let h_max = x
            .rows()
            .into_iter()
            .flat_map(|row| model.forward(row).to_vec())
            .fold(0.0f64, |m, h| m.max(h.abs()));
        let head = model.layers_mut().last_mut().unwrap();
        let scale = (3.0 / h_max).min(1.0);
        head.weight.mapv_inplace(|w| w * scale);
        if let Some(bias) = head.bias.as_mut() {
            bias.mapv_inplace(|v| v * scale + c.offset);
        }
        assert!(
            c.offset == 0.0 || c.biases,
            "case {ci}: an offset needs output biases"
        );
        let family = Family::from_name(c.family, 1.0).unwrap();
        let o = model.output_dim();
        let labels: Vec<Label> = (0..b)
            .map(|i| {
                Label::Target(
                    (0..o)
                        .map(|a| match c.family {
                            "bernoulli" => ((i + a) % 2) as f64,
                            _ => ((i * 3 + a) % 5) as f64,
                        })
                        .collect(),
                )
            })
            .collect();
        // Accumulated on the device in one batch, and per input (host accumulation) in two
        // batches, the second smaller.
        for (per_input, batch) in [(false, 256), (true, 4)] {
            let go = |engine| run(&model, &family, &x, &labels, engine, 8, batch, per_input);
            let (cpu, gpu) = (go(EngineKind::Cpu), go(EngineKind::Gpu));
            assert!(gpu.run.engine == "gpu" && cpu.run.engine == "cpu");
            let names = |r: &diagfim::Report| r.tensors().map(|(n, _)| n).collect::<Vec<_>>();
            assert_eq!(names(&gpu), names(&cpu), "case {ci}");
            assert!(names(&gpu).iter().any(|n| n.starts_with("ef/")));
            let what = format!("case {ci} {} {:?} per_input {per_input}", c.family, c.acts);
            assert_close(&gpu, &cpu, &what);
        }
    }
}

/// Poisson log-rates beyond the GPU engine's f32 sampler (h > ln 2²⁰ ≈ 13.86) are an error
/// naming the input and pointing to the CPU engine, even when only a later batch has one;
/// the CPU engine (log-rates up to 80) answers.
#[test]
fn gpu_poisson_rate_beyond_f32_range_is_an_error() {
    if gpu().is_none() {
        return;
    }
    // h = x: only the last input's rate is out of the GPU's range.
    let mut model = random_model(&[1, 1], &[], 1.0, 5, true);
    model.layers_mut()[0].weight.fill(1.0);
    model.layers_mut()[0].bias.as_mut().unwrap().fill(0.0);
    let x = ndarray::Array2::from_shape_vec((3, 1), vec![0.5, 13.5, 14.5]).unwrap();
    let family = Family::from_name("poisson", 1.0).unwrap();
    let go = |engine, batch_size| {
        diagfim::analyze(&Request {
            model: &model,
            family: family.as_dyn(),
            inputs: x.view(),
            labels: None,
            options: AnalysisOptions {
                samples: 4,
                engine,
                batch_size,
                ..Default::default()
            },
            progress: None,
        })
    };
    for batch in [1, 3] {
        let err = go(EngineKind::Gpu, batch).expect_err("h = 14.5 must be refused");
        assert!(matches!(err, diagfim::Error::GpuRange(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("--engine cpu") && msg.contains("input 2"),
            "{msg}"
        );
    }
    let cpu = go(EngineKind::Cpu, 3).unwrap();
    assert!(cpu.tensors().all(|(_, v)| v.iter().all(|x| x.is_finite())));
}

/// Results do not depend on the batch (chunk) size, nor on the sample chunking (N > 256, one
/// lane per unit in the last chunk).
#[test]
fn gpu_results_independent_of_batch_size() {
    if gpu().is_none() {
        return;
    }
    let model = random_model(&[5, 8, 6, 3], &[Tanh, Sigmoid], 1.0, 77, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(7, 5, 78);
    let labels: Vec<Label> = (0..7).map(|i| Label::Class(i % 3)).collect();
    let base = run(&model, &family, &x, &labels, EngineKind::Gpu, 257, 7, true);
    for batch in [1, 3] {
        let other = run(
            &model,
            &family,
            &x,
            &labels,
            EngineKind::Gpu,
            257,
            batch,
            true,
        );
        assert_close(&other, &base, &format!("batch {batch}"));
    }
    // With N = 257 the samples come in two chunks (the second of one sample, one lane per
    // unit); the CPU engine draws the same labels.
    let cpu = run(&model, &family, &x, &labels, EngineKind::Cpu, 257, 7, true);
    assert_close(&base, &cpu, "chunked samples vs cpu");
}

/// The on-device accumulation over inputs (per-parameter sums and the Welford variance over
/// inputs) does not depend on the batch size, and its f32 sums are flushed into the f64 host
/// accumulator more than once (B > FLUSH_INPUTS = 2048) without changing the result.
#[test]
fn gpu_device_accumulation_batches_and_flushes() {
    if gpu().is_none() {
        return;
    }
    let model = random_model(&[3, 5, 4], &[Tanh], 1.0, 91, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let b = 2100;
    let x = random_inputs(b, 3, 92);
    let labels: Vec<Label> = (0..b).map(|i| Label::Class(i % 4)).collect();
    let cpu = run(&model, &family, &x, &labels, EngineKind::Cpu, 2, 256, false);
    for batch in [700, 2100] {
        let gpu = run(
            &model,
            &family,
            &x,
            &labels,
            EngineKind::Gpu,
            2,
            batch,
            false,
        );
        assert_close(&gpu, &cpu, &format!("batch {batch}"));
    }
}

/// With fewer bounds the GPU engine reads back less (no Δ/Hd without the per-tensor bounds;
/// activations only for per-input results; no spectra without bound keys) and accumulates
/// fewer channels, but every key it reports is bit-identical, the bound keys are left out
/// with `Bounds::None`, and the CPU engine reports the same key set.
#[test]
fn gpu_bounds_options_keep_every_other_key() {
    if gpu().is_none() {
        return;
    }
    let model = random_model(&[4, 6, 5, 3], &[Sigmoid, Tanh], 1.0, 81, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(5, 4, 82);
    let labels: Vec<Label> = (0..5).map(|i| Label::Class(i % 3)).collect();
    for per_input in [false, true] {
        let go = |engine, bounds| {
            run_with(
                &model, &family, &x, &labels, engine, 6, 2, per_input, bounds,
            )
        };
        let all = go(EngineKind::Gpu, Bounds::All);
        assert!(all.params.iter().all(|p| p.bounds.is_some()));
        for bounds in [Bounds::Keys, Bounds::None] {
            let some = go(EngineKind::Gpu, bounds);
            let full: std::collections::BTreeMap<String, &ndarray::ArrayD<f64>> =
                all.tensors().collect();
            let mut count = 0;
            for (name, values) in some.tensors() {
                let key = diagfim::Key::from_name(name.split('/').next().unwrap()).unwrap();
                assert!(bounds.keys() || !key.is_bound(), "{name} with {bounds:?}");
                assert!(
                    full[&name] == values,
                    "{name} differs ({bounds:?}, {per_input})"
                );
                count += 1;
            }
            let bound_tensors = full
                .keys()
                .filter(|n| {
                    diagfim::Key::from_name(n.split('/').next().unwrap())
                        .unwrap()
                        .is_bound()
                })
                .count();
            assert!(bound_tensors > 0);
            let expected = if bounds.keys() {
                full.len()
            } else {
                full.len() - bound_tensors
            };
            assert_eq!(count, expected, "{bounds:?}");
            assert!(some.params.iter().all(|p| p.bounds.is_none()));
            let cpu = go(EngineKind::Cpu, bounds);
            let names = |r: &diagfim::Report| r.tensors().map(|(n, _)| n).collect::<Vec<_>>();
            assert_eq!(names(&cpu), names(&some), "{bounds:?}");
        }
    }
}

/// Without data labels (no empirical Fisher, no ef channels on the device) the GPU engine
/// still matches the CPU engine on every key it reports, and both report the same keys.
#[test]
fn gpu_without_labels_matches_cpu() {
    if gpu().is_none() {
        return;
    }
    let model = random_model(&[5, 9, 4], &[Softplus], 1.0, 91, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(6, 5, 92);
    let go = |engine| {
        let options = AnalysisOptions {
            samples: 7,
            seed: 5,
            engine,
            ..Default::default()
        };
        analyze_opts(&model, family.as_dyn(), x.view(), None, options)
    };
    let (g, c) = (go(EngineKind::Gpu), go(EngineKind::Cpu));
    let names = |r: &diagfim::Report| r.tensors().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&g), names(&c));
    assert!(!names(&g).iter().any(|n| n.starts_with("ef")));
    assert_close(&g, &c, "no labels");
}

/// [`assert_close`], except for the variances over the inputs (`var_x`, `var_ef`, and the
/// Var_x part of `var_joint1/2`): f32 resolves each input's Fisher F to a relative ≈ 1e-6,
/// so their absolute error is up to ≈ 4e-6·F·σ + 1e-12·F² (σ: F's spread over the inputs),
/// whatever the inputs' scale (README, "Engines").
fn assert_close_range(gpu: &diagfim::Report, cpu: &diagfim::Report, what: &str) {
    let mut bad = vec![];
    for ((name, g), (_, c)) in gpu.tensors().zip(cpu.tensors()) {
        let (key, param) = name.split_once('/').unwrap();
        let scale = c.iter().map(|v| v.abs()).sum::<f64>() / c.len() as f64;
        let flat = |k| -> Vec<f64> { cpu.get(k, param).unwrap().iter().copied().collect() };
        let (fisher, var_x) = (flat(diagfim::Key::Fisher), flat(diagfim::Key::VarX));
        let over_inputs = matches!(key, "var_x" | "var_ef" | "var_joint1" | "var_joint2");
        for (i, (gv, cv)) in g.iter().zip(c.iter()).enumerate() {
            let (f, sd) = (
                fisher[i % fisher.len()].abs(),
                var_x[i % var_x.len()].abs().sqrt(),
            );
            let floor = if over_inputs {
                4e-6 * f * sd + 1e-12 * f * f
            } else {
                0.0
            };
            let tol = 2e-3 * cv.abs() + 2e-3 * scale + floor + 1e-300;
            if (gv - cv).abs() > tol || !gv.is_finite() {
                bad.push(format!("{name}[{i}] gpu {gv:e} vs cpu {cv:e}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} entries differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Inputs scaled anywhere from 1e-20 to 1e5: the GPU engine rescales the first layer's
/// input per column by a power of two (an exact reparametrisation, undone in f64 on the
/// host), so it agrees with the f64 CPU engine on every key and recommends the same
/// estimators; a scale it cannot handle is refused with a message naming `--engine cpu`,
/// never a silent zero or infinity.
#[test]
fn gpu_numeric_range_across_input_scales() {
    if gpu().is_none() {
        return;
    }
    let model = random_model(&[4, 6, 5, 3], &[Sigmoid, Tanh], 0.9, 81, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let base = random_inputs(12, 4, 82);
    let mut agreed = 0;
    for scale in [1e-20, 1e-12, 1e-6, 1e-3, 1.0, 1e3, 1e5] {
        let x = base.mapv(|v| v * scale);
        let go = |engine| {
            diagfim::analyze(&Request {
                model: &model,
                family: family.as_dyn(),
                inputs: x.view(),
                labels: None,
                options: AnalysisOptions {
                    samples: 4,
                    seed: 5,
                    engine,
                    ..Default::default()
                },
                progress: None,
            })
        };
        let cpu = go(EngineKind::Cpu).unwrap();
        match go(EngineKind::Gpu) {
            Ok(gpu) => {
                assert_close_range(&gpu, &cpu, &format!("inputs × {scale:e}"));
                let (gs, cs) = (gpu.summary(), cpu.summary());
                for (g, c) in gs.layers.iter().zip(&cs.layers) {
                    assert_eq!(
                        g.theory.recommendation.as_ref().unwrap().estimator,
                        c.theory.recommendation.as_ref().unwrap().estimator,
                        "inputs × {scale:e}: recommendation of {}",
                        g.name
                    );
                }
                // The first layer's weights carry the inputs' scale: not flushed to zero.
                for key in [
                    diagfim::Key::Var1,
                    diagfim::Key::Var2,
                    diagfim::Key::McVar1Se,
                ] {
                    let nonzero = |r: &diagfim::Report| {
                        r.get(key, "0.weight")
                            .unwrap()
                            .iter()
                            .filter(|v| **v != 0.0)
                            .count()
                    };
                    assert_eq!(nonzero(&gpu), nonzero(&cpu), "inputs × {scale:e}: {key:?}");
                }
                eprintln!("inputs × {scale:e}: the GPU engine agrees with the CPU engine");
                agreed += 1;
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("--engine cpu"), "inputs × {scale:e}: {msg}");
                eprintln!("inputs × {scale:e}: refused: {msg}");
                // Only the largest scales may saturate the hidden units out of f32's range.
                assert!(scale >= 1e3, "inputs × {scale:e} refused: {msg}");
            }
        }
    }
    assert!(agreed >= 5, "only {agreed} scales agreed");
    // Per-input results (expanded on the host from the device's per-unit statistics).
    let x = base.mapv(|v| v * 1e-12);
    let go = |engine| {
        diagfim::analyze(&Request {
            model: &model,
            family: family.as_dyn(),
            inputs: x.view(),
            labels: None,
            options: AnalysisOptions {
                samples: 4,
                seed: 5,
                per_input: true,
                engine,
                ..Default::default()
            },
            progress: None,
        })
        .unwrap()
    };
    assert_close_range(
        &go(EngineKind::Gpu),
        &go(EngineKind::Cpu),
        "per input, × 1e-12",
    );
}

/// Hidden activations beyond f32's range for a⁸ (here ≈ 1e6 through an identity layer) are
/// refused with a message that names the CPU engine, never infinities in the report, while
/// the f64 CPU engine still answers.
#[test]
fn gpu_f32_range_refusal_names_the_cpu_engine() {
    if gpu().is_none() {
        return;
    }
    let mut model = random_model(&[3, 4, 2], &[Identity], 1.0, 71, true);
    model.layers_mut()[0].weight.mapv_inplace(|w| w * 1e6);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(4, 3, 72).mapv(|v| v + 2.0);
    let go = |engine| {
        diagfim::analyze(&Request {
            model: &model,
            family: family.as_dyn(),
            inputs: x.view(),
            labels: None,
            options: AnalysisOptions {
                samples: 4,
                engine,
                ..Default::default()
            },
            progress: None,
        })
    };
    let err = go(EngineKind::Gpu).expect_err("activations of 1e6 must be refused");
    // The range refusal is the error kind `auto` falls back on (engine::auto_fallback).
    assert!(matches!(err, diagfim::Error::GpuRange(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("f32") && msg.contains("--engine cpu"), "{msg}");
    let cpu = go(EngineKind::Cpu).unwrap();
    assert!(cpu.tensors().all(|(_, v)| v.iter().all(|x| x.is_finite())));
}

/// A model too deep for the GPU engine's recorded Hessian pass is refused before any device
/// work, with a message naming the CPU engine.
#[test]
fn gpu_refuses_very_deep_models() {
    if gpu().is_none() {
        return;
    }
    let widths = vec![2; 3001];
    let acts = vec![Tanh; 2999];
    let model = random_model(&widths, &acts, 0.9, 3, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(2, 2, 4);
    let err = diagfim::analyze(&Request {
        model: &model,
        family: family.as_dyn(),
        inputs: x.view(),
        labels: None,
        options: AnalysisOptions {
            samples: 2,
            engine: EngineKind::Gpu,
            ..Default::default()
        },
        progress: None,
    })
    .expect_err("3000 layers must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("3000-layer") && msg.contains("--engine cpu"),
        "{msg}"
    );
}

/// Training gradients on the GPU equal −(1/B) Σ scores of the CPU reference engine.
#[test]
fn gpu_training_gradient_matches_cpu_scores() {
    if gpu().is_none() {
        return;
    }
    use diagfim::engine::cpu::sample_derivatives;
    use diagfim::engine::gpu::train::GpuTrainer;
    let model = random_model(&[5, 8, 6, 3], &[Tanh, Sigmoid], 1.0, 91, true);
    let b = 7;
    let x = random_inputs(b, 5, 92);
    let labels: Vec<usize> = (0..b).map(|i| (i * 2) % 3).collect();
    let family = Family::from_name("categorical", 1.0).unwrap();
    let trainer = GpuTrainer::new(gpu().unwrap(), &model, b, true).unwrap();
    let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
    let lf: Vec<f32> = labels.iter().map(|&c| c as f32).collect();
    let got = trainer.run(&model, &xf, &lf).unwrap();
    let mut want: Vec<f64> = vec![0.0; model.num_params()];
    let mut loss = 0.0;
    for (i, &c) in labels.iter().enumerate() {
        let y = Label::Class(c);
        let sd = sample_derivatives(&model, family.as_dyn(), x.row(i), &y).unwrap();
        for (w, s) in want.iter_mut().zip(sd.score.iter().flatten()) {
            *w -= s / b as f64;
        }
        let h = model.forward(x.row(i)).to_vec();
        loss -= family.as_dyn().log_lik(&h, &y).unwrap();
    }
    let got_flat: Vec<f64> = got
        .weight
        .iter()
        .zip(&got.bias)
        .flat_map(|(w, bb)| {
            w.iter()
                .chain(bb.iter().flatten())
                .map(|v| f64::from(*v))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        rel_err(&got_flat, &want) < 1e-5,
        "{:e}",
        rel_err(&got_flat, &want)
    );
    assert!((got.loss_sum - loss).abs() < 1e-5 * loss.abs());
}

/// The CLI gives the same answers with `--engine gpu` as with `--engine cpu`.
#[test]
fn cli_gpu_matches_cli_cpu() {
    if gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(&[6, 12, 9, 4], &[Softplus, Tanh], 1.0, 123, true);
    let mpath = dir.path().join("m.safetensors");
    diagfim::model::save_safetensors(&model, &mpath, diagfim::model::StoreDtype::F32).unwrap();
    let x = random_inputs(9, 6, 124).mapv(|v| v as f32);
    let xpath = dir.path().join("x.npy");
    ndarray_npy::write_npy(&xpath, &x).unwrap();
    let ypath = dir.path().join("y.npy");
    ndarray_npy::write_npy(
        &ypath,
        &ndarray::Array1::from_iter((0..9i64).map(|i| i % 4)),
    )
    .unwrap();
    let summary = |engine: &str| dir.path().join(format!("{engine}.json"));
    let read = |engine: &str| -> Vec<(String, Vec<f64>)> {
        let out = dir.path().join(format!("{engine}.safetensors"));
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_diagfim"))
            .args([
                "analyze",
                "--model",
                mpath.to_str().unwrap(),
                "--inputs",
                xpath.to_str().unwrap(),
            ])
            .args([
                "--labels",
                ypath.to_str().unwrap(),
                "--samples",
                "6",
                "--engine",
                engine,
            ])
            .args(["--out", out.to_str().unwrap()])
            .args(["--summary", summary(engine).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let bytes = std::fs::read(&out).unwrap();
        let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, Vec<f64>)> = t
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                (
                    n,
                    v.data()
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (g, c) = (read("gpu"), read("cpu"));
    // The GPU run's summary has the host time and, with timestamp queries (lavapipe has
    // them), every phase's device time.
    let run = |engine: &str| {
        let text = std::fs::read_to_string(summary(engine)).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let (rg, rc) = (run("gpu"), run("cpu"));
    assert!(
        rg["host_theory_s"].as_f64().is_some_and(|t| t > 0.0),
        "{rg}"
    );
    assert!(rc["host_theory_s"].is_null(), "{rc}");
    if gpu().is_some_and(|ctx| ctx.has_timestamps()) {
        let phases = rg["device_phase_s"].as_object().unwrap();
        for p in diagfim::engine::gpu::Phase::ALL {
            assert!(phases[p.name()].as_f64().is_some(), "{rg}");
        }
    }
    assert_eq!(g.len(), c.len());
    assert!(g.iter().any(|(n, _)| n.starts_with("ef/")));
    for ((ng, vg), (nc, vc)) in g.iter().zip(&c) {
        assert_eq!(ng, nc);
        let scale = vc.iter().map(|v| v.abs()).sum::<f64>() / vc.len() as f64;
        for (a, b) in vg.iter().zip(vc) {
            assert!(
                (a - b).abs() <= 2e-3 * b.abs() + 2e-3 * scale + 1e-30,
                "{ng}: gpu {a:e} cpu {b:e}"
            );
        }
    }
}

/// The GPU training backend gives the CPU backend's loss and gradient to f32 precision.
#[test]
fn gpu_training_backend_matches_cpu_backend() {
    if gpu().is_none() {
        return;
    }
    use diagfim::model::Dense;
    use diagfim::train::{Backend, CpuBackend, GpuBackend};
    let base = random_model(&[6, 9, 5, 4], &[Sigmoid, Relu], 0.8, 211, true);
    // The last layer without a bias.
    let mut layers = base.layers().to_vec();
    layers[2] = Dense {
        bias: None,
        ..layers[2].clone()
    };
    let model = Mlp::new(layers, base.activations().to_vec()).unwrap();
    let x = random_inputs(13, 6, 212);
    let labels: Vec<usize> = (0..13).map(|i| (i * 3) % 4).collect();
    let (sc, gc) = CpuBackend::default()
        .loss_and_gradient(&model, x.view(), &labels)
        .unwrap();
    let gpu = GpuBackend::new(gpu().unwrap());
    let (sg, gg) = gpu.loss_and_gradient(&model, x.view(), &labels).unwrap();
    assert_eq!((sg.count, sg.correct), (sc.count, sc.correct));
    assert!((sg.loss_sum - sc.loss_sum).abs() < 1e-5 * sc.loss_sum);
    let (c, g): (Vec<f64>, Vec<f64>) = (gc.values().collect(), gg.values().collect());
    assert!(rel_err(&g, &c) < 1e-5, "{:e}", rel_err(&g, &c));
    let ev = gpu.evaluate(&model, x.view(), &labels).unwrap();
    assert_eq!(ev.correct, sc.correct);
}

/// Without XDG_RUNTIME_DIR, the CLI's GPU engine prints nothing but its own output: Mesa's
/// "XDG_RUNTIME_DIR is invalid or not set" warning never reaches the user (the CLI points
/// the variable at a private folder before any thread starts).
#[test]
fn cli_gpu_prints_no_xdg_runtime_dir_warning() {
    if gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(&[3, 4, 2], &[Sigmoid], 1.0, 7, true);
    let mpath = dir.path().join("m.safetensors");
    diagfim::model::save_safetensors(&model, &mpath, diagfim::model::StoreDtype::F32).unwrap();
    ndarray_npy::write_npy(dir.path().join("x.npy"), &random_inputs(3, 3, 8)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diagfim"))
        .args(["analyze", "--model", "m.safetensors", "--inputs", "x.npy"])
        .args([
            "--engine",
            "gpu",
            "--samples",
            "2",
            "--out",
            "r.safetensors",
        ])
        .current_dir(dir.path())
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
}

/// Key selection on the GPU engine: every key computed alone (a Welford key such as var_x
/// alone leaves no channel to accumulate) equals the full GPU run's value bit for bit.
#[test]
fn gpu_each_key_alone_equals_the_full_run() {
    if gpu().is_none() {
        return;
    }
    let model = random_model(&[4, 6, 5, 3], &[Sigmoid, Tanh], 1.0, 83, true);
    let family = Family::from_name("categorical", 1.0).unwrap();
    let x = random_inputs(5, 4, 84);
    let labels: Vec<Label> = (0..5).map(|i| Label::Class(i % 3)).collect();
    for per_input in [false, true] {
        let run = |keys: diagfim::KeySet| {
            analyze(&Request {
                model: &model,
                family: family.as_dyn(),
                inputs: x.view(),
                labels: Some(&labels),
                options: AnalysisOptions {
                    samples: 4,
                    seed: 3,
                    per_input,
                    engine: EngineKind::Gpu,
                    keys,
                    ..Default::default()
                },
                progress: None,
            })
            .unwrap()
        };
        let full = run(diagfim::KeySet::ALL);
        for name in &full.run.keys {
            let key = diagfim::Key::from_name(name).unwrap();
            let alone = run(diagfim::KeySet::from_iter([key]));
            assert_eq!(alone.run.keys, std::slice::from_ref(name));
            for (p, q) in alone.params.iter().zip(&full.params) {
                assert!(
                    p.values[&key] == q.values[&key],
                    "{name} of {} alone differs from the full GPU run ({per_input})",
                    p.info.name
                );
            }
        }
    }
}

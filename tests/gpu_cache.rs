//! The GPU engine keeps the device state of the most recent analysis shape in the explicit
//! device (`GpuContext`) and only uploads new weights for the next analysis of that shape on
//! that device; another device has its own cache.

mod common;
use common::*;
use diagfim::engine::gpu::{AdapterChoice, GpuContext};
use diagfim::engine::{AnalysisOptions, EngineKind};
use diagfim::{Activation, Family, Label, Mlp};
use std::sync::Arc;

fn run(
    ctx: &Arc<GpuContext>,
    model: &Mlp,
    x: &ndarray::Array2<f64>,
    labels: &[Label],
) -> diagfim::Report {
    let family = Family::from_name("categorical", 1.0).unwrap();
    let options = AnalysisOptions {
        samples: 5,
        seed: 7,
        batch_size: 3,
        engine: EngineKind::Gpu,
        gpu: Some(ctx.clone()),
        ..Default::default()
    };
    analyze_opts(model, family.as_dyn(), x.view(), Some(labels), options)
}

/// A reused shape gives bit-identical results to a fresh one, for new weights.
#[test]
fn reused_device_state_gives_fresh_results() {
    let ctx = match GpuContext::new(AdapterChoice::Best) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            if std::env::var("DIAGFIM_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("DIAGFIM_REQUIRE_GPU=1 but {e}");
            }
            eprintln!("skipping GPU test: {e}");
            return;
        }
    };
    let acts = [Activation::Tanh, Activation::Sigmoid];
    let a = random_model(&[4, 7, 5, 3], &acts, 1.0, 301, true);
    let b = random_model(&[4, 7, 5, 3], &acts, 1.0, 302, true);
    // 7 inputs in batches of 3: two batch shapes (3 and 1), both kept.
    let x = random_inputs(7, 4, 303);
    let labels: Vec<Label> = (0..7).map(|i| Label::Class(i % 3)).collect();
    assert_eq!(ctx.cache_reuses(), 0);
    let ra = run(&ctx, &a, &x, &labels);
    let rb = run(&ctx, &b, &x, &labels);
    assert_eq!(
        ctx.cache_reuses(),
        1,
        "the second analysis reused the first's state"
    );
    // Another device has its own cache.
    let other = Arc::new(GpuContext::new(AdapterChoice::Best).unwrap());
    let rb_other = run(&other, &b, &x, &labels);
    assert_eq!(other.cache_reuses(), 0);
    assert_eq!(ctx.cache_reuses(), 1);
    ctx.release_cache();
    let rb_fresh = run(&ctx, &b, &x, &labels);
    assert_eq!(ctx.cache_reuses(), 1, "released: nothing to reuse");
    // The same analysis on another device agrees to f32 rounding (measured on lavapipe: the
    // over-input Welford keys var_x, var_joint*, var_ef differ by ≤ 4e-8 of their scale
    // between two devices; every other key is bit-identical).
    for ((n1, v1), (_, v2)) in rb.tensors().zip(rb_other.tensors()) {
        let scale = v1.iter().map(|v| v.abs()).fold(0.0, f64::max);
        let diff = v1
            .iter()
            .zip(v2.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            diff <= 1e-6 * scale,
            "{n1}: another device's run differs by {diff:e}"
        );
    }
    let mut differs = false;
    for (((n1, v1), (n2, v2)), (_, va)) in rb.tensors().zip(rb_fresh.tensors()).zip(ra.tensors()) {
        assert_eq!(n1, n2);
        assert!(v1 == v2, "{n1}: reused state differs from a fresh run");
        differs |= v1 != va;
    }
    assert!(differs, "the second model's weights were not used");
}

//! The GPU engine keeps the device state of the most recent analysis shape and only uploads
//! new weights for the next analysis of that shape. This file runs in its own process so that
//! no other test replaces the cached shape in between.

mod common;
use common::*;
use diagfim::engine::gpu::{cache_reuses, release_cache, GpuContext};
use diagfim::engine::{AnalysisOptions, EngineKind};
use diagfim::{Activation, Family, Label, Mlp};

fn run(model: &Mlp, x: &ndarray::Array2<f64>, labels: &[Label]) -> diagfim::Report {
    let family = Family::from_name("categorical", 1.0).unwrap();
    let options = AnalysisOptions {
        samples: 5,
        seed: 7,
        batch_size: 3,
        engine: EngineKind::Gpu,
        ..Default::default()
    };
    analyze_opts(model, family.as_dyn(), x.view(), Some(labels), options)
}

/// A reused shape gives bit-identical results to a fresh one, for new weights.
#[test]
fn reused_device_state_gives_fresh_results() {
    if let Err(e) = GpuContext::shared() {
        if std::env::var("DIAGFIM_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("DIAGFIM_REQUIRE_GPU=1 but {e}");
        }
        eprintln!("skipping GPU test: {e}");
        return;
    }
    let acts = [Activation::Tanh, Activation::Sigmoid];
    let a = random_model(&[4, 7, 5, 3], &acts, 1.0, 301, true);
    let b = random_model(&[4, 7, 5, 3], &acts, 1.0, 302, true);
    // 7 inputs in batches of 3: two batch shapes (3 and 1), both kept.
    let x = random_inputs(7, 4, 303);
    let labels: Vec<Label> = (0..7).map(|i| Label::Class(i % 3)).collect();
    let before = cache_reuses();
    let ra = run(&a, &x, &labels);
    let rb = run(&b, &x, &labels);
    assert_eq!(
        cache_reuses(),
        before + 1,
        "the second analysis reused the first's state"
    );
    release_cache();
    let rb_fresh = run(&b, &x, &labels);
    assert_eq!(cache_reuses(), before + 1, "released: nothing to reuse");
    let mut differs = false;
    for (((n1, v1), (n2, v2)), (_, va)) in rb.tensors().zip(rb_fresh.tensors()).zip(ra.tensors()) {
        assert_eq!(n1, n2);
        assert!(v1 == v2, "{n1}: reused state differs from a fresh run");
        differs |= v1 != va;
    }
    assert!(differs, "the second model's weights were not used");
}

//! GPU engine benchmarks (criterion): the tiled GEMM (through `engine::gpu::gemm_benchmark`,
//! wall time per GEMM from submission to completion), the output-Hessian pass and the full
//! analysis. Throughput "elem/s" is FLOP/s for the GEMM and inputs/s for the analyses. Sizes are
//! small so that the benchmarks also run on lavapipe; use `examples/bench_analysis.rs` for the
//! paper-sized model on a real GPU. Without an adapter the benchmarks are skipped.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diagfim::engine::gpu::{gemm_benchmark, GpuContext};
use diagfim::engine::{analyze, AnalysisOptions, EngineKind, Request};
use diagfim::{Activation, Family, Mlp};
use ndarray::Array2;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let ctx = match GpuContext::shared() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("no GPU adapter, skipping GPU benchmarks: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("gpu_gemm");
    g.sample_size(10);
    for size in [128usize, 512] {
        g.throughput(Throughput::Elements(2 * (size as u64).pow(3)));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |bch, &s| {
            // Each call uploads the operands and warms up untimed, then times `iters` GEMMs.
            bch.iter_custom(|iters| {
                let t = gemm_benchmark(&ctx, s, s, s, iters as usize).expect("GEMM benchmark");
                Duration::from_secs_f64(t.total_wall_seconds)
            })
        });
    }
    g.finish();

    let family = Family::from_name("categorical", 1.0).expect("family");
    let mut g = c.benchmark_group("gpu_analysis");
    g.sample_size(10);
    // N = 2 isolates the Hessian pass (sampling is negligible); N = 16 is the full analysis.
    for (name, samples) in [("hessian_pass", 2usize), ("full_N16", 16)] {
        let widths = [196, 64, 32, 10];
        let model = Mlp::init(&widths, vec![Activation::Sigmoid; 2], 0).expect("model");
        let b = 32;
        let x = Array2::from_shape_fn((b, widths[0]), |(i, k)| ((i + k) % 7) as f64 / 7.0);
        g.throughput(Throughput::Elements(b as u64));
        g.bench_function(name, |bch| {
            bch.iter(|| {
                analyze(&Request {
                    model: &model,
                    family: family.as_dyn(),
                    inputs: x.view(),
                    labels: None,
                    options: AnalysisOptions {
                        samples,
                        engine: EngineKind::Gpu,
                        ..Default::default()
                    },
                    progress: None,
                })
                .expect("analysis")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! GPU engine benchmarks (criterion): the tiled GEMM, the output-Hessian pass and the full
//! analysis. Throughput "elem/s" is FLOP/s for the GEMM and inputs/s for the analyses. Sizes are
//! small so that the benchmarks also run on lavapipe; use `examples/bench_analysis.rs` for the
//! paper-sized model on a real GPU. Without an adapter the benchmarks are skipped.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diagfim::engine::gpu::kernels::{self, Gemm};
use diagfim::engine::gpu::GpuContext;
use diagfim::engine::{analyze, AnalysisOptions, EngineKind, Request};
use diagfim::{Activation, Family, Mlp};
use ndarray::Array2;

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
    for size in [128u32, 512] {
        let n = (size * size) as usize;
        let a = kernels::upload(&ctx, "a", &vec![0.5; n]).expect("upload");
        let b = kernels::upload(&ctx, "b", &vec![0.25; n]).expect("upload");
        let out = kernels::storage(&ctx, "c", n).expect("buffer");
        let d = Gemm::new(size, size, size, false, false)
            .dispatch(&ctx, &a, &b, &out, &a)
            .expect("dispatch");
        g.throughput(Throughput::Elements(2 * u64::from(size).pow(3)));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |bch, _| {
            bch.iter(|| {
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    d.record(&mut pass);
                }
                ctx.queue.submit([enc.finish()]);
                ctx.device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .expect("poll");
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

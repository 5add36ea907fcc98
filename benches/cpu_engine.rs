//! CPU reference engine benchmarks: one input's forward + exact Hessian recursion (MATH §6.2),
//! reported as FLOP/s of the recursion ("elem/s" = FLOP/s), and the whole analysis of a batch
//! (elem/s = inputs/s).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diagfim::engine::{analyze, cpu, AnalysisOptions, EngineKind, Request};
use diagfim::{Activation, Family, Mlp};
use ndarray::Array2;
use std::hint::black_box;

fn model(widths: &[usize]) -> Mlp {
    Mlp::init(widths, vec![Activation::Sigmoid; widths.len() - 2], 0).expect("valid widths")
}

fn inputs(b: usize, n: usize) -> Array2<f64> {
    Array2::from_shape_fn((b, n), |(i, k)| ((i * 31 + k * 17) % 97) as f64 / 97.0)
}

/// FLOPs of the §6.2 recursion for one input: stepping from layer l (H^a_l of size n_l²,
/// W_l of n_l × n_{l−1}) costs per output H·W = 2·n_l²·n_{l−1}, then Wᵀ(HW) = 2·n_l·n_{l−1}²
/// while the recursion continues, or only the diagonal, 2·n_l·n_{l−1}, for layer 1. The head
/// has H = 0 and costs nothing.
fn recursion_flops(w: &[usize]) -> u64 {
    let o = *w.last().expect("widths") as u64;
    let layers = w.len() - 1;
    (1..layers - 1)
        .map(|l| {
            let (nl, nm) = (w[l + 1] as u64, w[l] as u64);
            o * (2 * nl * nl * nm + if l > 1 { 2 * nl * nm * nm } else { 2 * nl * nm })
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let family = Family::from_name("categorical", 1.0).expect("known family");
    let mut g = c.benchmark_group("cpu_derivatives_one_input");
    for widths in [vec![784, 128, 64, 10], vec![784, 256, 128, 64, 10]] {
        let m = model(&widths);
        let x = inputs(1, widths[0]);
        g.throughput(Throughput::Elements(recursion_flops(&widths)));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{widths:?}")),
            &m,
            |b, m| b.iter(|| black_box(cpu::derivatives(m, family.as_dyn(), x.row(0)))),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("cpu_analysis");
    g.sample_size(10);
    let widths = [784, 128, 64, 10];
    let m = model(&widths);
    let b = 64;
    let x = inputs(b, widths[0]);
    g.throughput(Throughput::Elements(b as u64));
    g.bench_function("784-128-64-10 B=64 N=16", |bch| {
        bch.iter(|| {
            analyze(&Request {
                model: &m,
                family: family.as_dyn(),
                inputs: x.view(),
                labels: None,
                options: AnalysisOptions {
                    samples: 16,
                    engine: EngineKind::Cpu,
                    ..Default::default()
                },
                progress: None,
            })
            .expect("valid request")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! CPU reference engine benchmarks: one input's forward + exact Hessian recursion (MATH §6.2),
//! reported as FLOP/s of the recursion ("elem/s" = FLOP/s), and the whole analysis of a batch
//! (elem/s = inputs/s). Then `blocked::block_derivatives` (the reverse form of DESIGN §2) against
//! the per-input `cpu::derivatives` on blocks of inputs, with 1 and 2 threads: "elem/s" = FLOP/s
//! of the reverse form, so both groups of a size compare directly (same FLOP count per input);
//! a summary line per case gives GFLOP/s and inputs/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diagfim::engine::{analyze, blocked, cpu, AnalysisOptions, EngineKind, Request};
use diagfim::{Activation, Family, Mlp};
use ndarray::Array2;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

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

/// FLOPs of the reverse form (DESIGN §2) for one input, with the Hessian: the forward pass
/// `2·n_{l−1}·n_l` per layer, `G_l = W_{l+1}ᵀ Δ_{l+1}` (`2·n_l·n_{l+1}·O`) per hidden layer, and
/// along each chain `Hd_l += (B ⊙ B)ᵀ C_m` (`2·n_l·n_m·O`) and the step to m+1
/// (`2·n_l·n_m·n_{m+1}`) while m+1 is hidden. Without the Hessian only the first two terms.
fn reverse_flops(w: &[usize], hessian: bool) -> u64 {
    let w: Vec<u64> = w.iter().map(|&v| v as u64).collect();
    let layers = w.len() - 1;
    let o = w[layers];
    let forward: u64 = (0..layers).map(|l| 2 * w[l] * w[l + 1]).sum();
    // Hidden unit layers l = 1 … L−1 have width w[l].
    let backward: u64 = (1..layers).map(|l| 2 * w[l] * w[l + 1] * o).sum();
    let chain: u64 = (1..layers)
        .map(|l| {
            (l + 1..layers)
                .map(|m| {
                    2 * w[l] * w[m] * o
                        + if m + 1 < layers {
                            2 * w[l] * w[m] * w[m + 1]
                        } else {
                            0
                        }
                })
                .sum::<u64>()
        })
        .sum();
    forward + backward + if hessian { chain } else { 0 }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// CPU time of the whole process (all threads), in seconds (NaN off Unix).
#[cfg(not(unix))]
fn cpu_seconds() -> f64 {
    f64::NAN
}

/// CPU time of the whole process (all threads), in seconds (NaN off Unix).
#[cfg(unix)]
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// `f` timed `reps` times after one warm-up run, printed as GFLOP/s and inputs/s of the best
/// wall time, and GFLOP/s per CPU-second (all threads) of the run with the least CPU time, which
/// a machine shared with other work disturbs less.
fn summary(label: &str, inputs: usize, flops: u64, reps: usize, f: &mut dyn FnMut()) {
    f();
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps {
        let (t, c) = (Instant::now(), cpu_seconds());
        f();
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_seconds() - c);
    }
    println!(
        "{label}: {wall:.3} s, {:.2} GFLOP/s (reverse-form FLOPs), {:.0} inputs/s; \
         CPU {cpu:.3} s, {:.2} GFLOP/s per CPU-second",
        flops as f64 / wall / 1e9,
        inputs as f64 / wall,
        flops as f64 / cpu / 1e9
    );
}

fn bench_blocked(c: &mut Criterion) {
    let family = Family::from_name("categorical", 1.0).expect("known family");
    let widths = [784, 256, 128, 64, 10];
    let m = model(&widths);
    let mut g = c.benchmark_group("cpu_blocked_derivatives");
    g.sample_size(10);
    for threads in [1, 2] {
        let p = pool(threads);
        for b in [256, 1024] {
            let x = inputs(b, widths[0]);
            for hessian in [true, false] {
                let flops = b as u64 * reverse_flops(&widths, hessian);
                let label = format!("784-256-128-64-10 B={b} hessian={hessian} threads={threads}");
                g.throughput(Throughput::Elements(flops));
                let run = || {
                    p.install(|| {
                        black_box(blocked::block_derivatives(
                            &m,
                            family.as_dyn(),
                            x.view(),
                            hessian,
                        ));
                    })
                };
                g.bench_function(&label, |bch| bch.iter(run));
                summary(&format!("blocked   {label}"), b, flops, 3, &mut || run());
            }
        }
        // The per-input reference (always with the Hessian) on fewer inputs: it is slow.
        let b = 16;
        let x = inputs(b, widths[0]);
        let flops = b as u64 * reverse_flops(&widths, true);
        let label = format!("784-256-128-64-10 B={b} hessian=true threads={threads}");
        let mut reference = || {
            p.install(|| {
                let d: Vec<_> = (0..b)
                    .into_par_iter()
                    .map(|i| cpu::derivatives(&m, family.as_dyn(), x.row(i)))
                    .collect();
                black_box(d);
            })
        };
        g.throughput(Throughput::Elements(flops));
        g.bench_function(format!("reference {label}"), |bch| bch.iter(&mut reference));
        summary(&format!("reference {label}"), b, flops, 2, &mut reference);
    }
    g.finish();
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

criterion_group!(benches, bench, bench_blocked);
criterion_main!(benches);

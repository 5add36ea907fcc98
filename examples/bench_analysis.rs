//! Throughput of the full analysis (everything in the contract except `ef`): median wall time
//! over repetitions, device time and achieved GFLOP/s of each phase (from the cost model
//! `engine::gpu::phase_flops` and timestamp queries when the adapter has them), and the size
//! of the work buffers.
//!
//! `cargo run --release --example bench_analysis -- [--layers 784,512,256,128,10]
//!  [--activation sigmoid] [--inputs 256] [--samples 16] [--engine gpu|cpu] [--reps 10]
//!  [--bounds all|keys|none] [--keys fisher,var1,…|all] [--peak-gflops P] [--save-model PATH]`
//!
//! `--gemm N` instead times the WGSL GEMM on N×N×N with `engine::gpu::gemm_benchmark` (device
//! time from timestamp queries when available, else wall time) and prints its GFLOP/s.

use diagfim::engine::gpu::{self, GpuContext, Phase};
use diagfim::engine::{analyze, AnalysisOptions, EngineKind, Request};
use diagfim::{Activation, Family, Mlp};
use ndarray::Array2;
use std::time::Instant;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// The GPU device this benchmark uses: `DIAGFIM_ADAPTER` (a substring of the adapter's
/// name) and `DIAGFIM_GEMM_R=8` (the wide GEMM blocking), as the CLI maps them; the library
/// itself reads no environment variable.
fn device() -> diagfim::Result<std::sync::Arc<GpuContext>> {
    let wide_gemm = match std::env::var("DIAGFIM_GEMM_R")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("") | Some("4") => false,
        Some("8") => true,
        Some(v) => {
            return Err(diagfim::Error::Input(format!(
                "DIAGFIM_GEMM_R='{v}': use 4 or 8"
            )))
        }
    };
    let adapter = match std::env::var("DIAGFIM_ADAPTER") {
        Ok(name) if !name.trim().is_empty() => gpu::AdapterChoice::Named(name),
        _ => gpu::AdapterChoice::Best,
    };
    Ok(std::sync::Arc::new(GpuContext::with_options(
        &gpu::GpuOptions { adapter, wide_gemm },
    )?))
}

fn main() -> diagfim::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bad = |what: &str| diagfim::Error::Input(format!("bad value for {what}"));
    let widths: Vec<usize> = arg(&args, "--layers", "784,512,256,128,10")
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| bad("--layers")))
        .collect::<diagfim::Result<_>>()?;
    let act: Activation = arg(&args, "--activation", "sigmoid").parse()?;
    let b: usize = arg(&args, "--inputs", "256")
        .parse()
        .map_err(|_| bad("--inputs"))?;
    let n: usize = arg(&args, "--samples", "16")
        .parse()
        .map_err(|_| bad("--samples"))?;
    let reps: usize = arg(&args, "--reps", "10")
        .parse()
        .map_err(|_| bad("--reps"))?;
    let engine: EngineKind = arg(&args, "--engine", "gpu").parse()?;
    // The adapter's f32 peak in GFLOP/s (the roofline the phases are compared with).
    let peak: f64 = arg(&args, "--peak-gflops", "0")
        .parse()
        .map_err(|_| bad("--peak-gflops"))?;
    let gemm: usize = arg(&args, "--gemm", "0")
        .parse()
        .map_err(|_| bad("--gemm"))?;
    if gemm > 0 {
        return bench_gemm(gemm, reps.max(1));
    }
    let bounds: diagfim::Bounds = arg(&args, "--bounds", "all").parse()?;
    let keys = diagfim::KeySet::parse(&arg(&args, "--keys", "all"))?;

    let model = Mlp::init(&widths, vec![act; widths.len() - 2], 0)?;
    // --save-model PATH writes the model (and PATH.x.npy the inputs) for benches/compare_pytorch.py.
    let save = arg(&args, "--save-model", "");
    let x = Array2::from_shape_fn((b, widths[0]), |(i, k)| {
        ((i * 131 + k * 71) % 255) as f64 / 255.0
    });
    if !save.is_empty() {
        diagfim::model::save_safetensors(&model, save.as_ref(), diagfim::model::StoreDtype::F32)?;
        ndarray_npy::write_npy(format!("{save}.x.npy"), &x.mapv(|v| v as f32)).map_err(|e| {
            diagfim::Error::Output {
                path: format!("{save}.x.npy").into(),
                msg: e.to_string(),
            }
        })?;
    }
    let family = Family::from_name("categorical", 1.0)?;
    let req = Request {
        model: &model,
        family: family.as_dyn(),
        inputs: x.view(),
        labels: None,
        options: AnalysisOptions {
            samples: n,
            engine,
            batch_size: b,
            bounds,
            keys,
            gpu: match engine {
                EngineKind::Cpu => None,
                _ => Some(device()?),
            },
            ..Default::default()
        },
        progress: None,
    };
    println!(
        "MLP {widths:?} {act}, {} parameters, B = {b} inputs, N = {n} labels, bounds {bounds:?}, keys {keys:?}",
        model.num_params(),
    );
    // Warm-up (pipeline compilation, allocation), then timed repetitions.
    let first = analyze(&req)?;
    println!("engine: {}", first.run.adapter);
    let mut times = Vec::new();
    let mut phases = gpu::PhaseTimes::default();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        if engine == EngineKind::Cpu {
            analyze(&req)?;
        } else {
            let (_, p) = gpu::analyze_timed(&req)?;
            for (a, v) in phases.seconds.iter_mut().zip(p.seconds) {
                *a += v / reps.max(1) as f64;
            }
            phases.measured = p.measured;
            phases.host_seconds += p.host_seconds / reps.max(1) as f64;
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let channels = gpu::accumulated_channels(family.as_dyn().kind(), req.needs().channels);
    let flops = gpu::phase_flops(&widths, n, channels);
    let total_flops: f64 = flops.iter().sum::<f64>() * b as f64;
    println!(
        "median wall time {:.3} ms over {} runs (min {:.3} ms); {:.2} GFLOP in all (the GPU engine's cost model), {:.1} GFLOP/s",
        median * 1e3,
        times.len(),
        times[0] * 1e3,
        total_flops * 1e-9,
        total_flops / median * 1e-9
    );
    if engine != EngineKind::Cpu {
        let ctx = req.options.gpu.clone().map_or_else(device, Ok)?;
        let bb = gpu::batch_size(&ctx, &widths, n, b)?;
        println!(
            "batch {bb} inputs, work buffers {:.1} MiB",
            gpu::work_bytes(&widths, bb, n, channels) as f64 / 1048576.0
        );
        println!(
            "host: per-input spectra and bounds {:.3} ms (overlaps the device's next batch)",
            phases.host_seconds * 1e3
        );
        if phases.measured {
            println!(
                "{:<12} {:>10} {:>12} {:>10} {:>9}",
                "phase", "device ms", "GFLOP", "GFLOP/s", "of peak"
            );
            for (i, p) in Phase::ALL.iter().enumerate() {
                let f = flops[i] * b as f64;
                let s = phases.seconds[i];
                let rate = if s > 0.0 { f / s * 1e-9 } else { 0.0 };
                let share = if peak > 0.0 {
                    format!("{:.1} %", 100.0 * rate / peak)
                } else {
                    "-".into()
                };
                println!(
                    "{:<12} {:>10.3} {:>12.3} {:>10.1} {:>9}",
                    p.name(),
                    s * 1e3,
                    f * 1e-9,
                    rate,
                    share
                );
            }
            let total: f64 = phases.seconds.iter().sum();
            println!(
                "device total {:.3} ms; {} (f32 FMA peak from --peak-gflops)",
                total * 1e3,
                if peak > 0.0 {
                    format!(
                        "{:.1} % of {peak:.0} GFLOP/s",
                        100.0 * total_flops / total * 1e-9 / peak
                    )
                } else {
                    "no peak given".into()
                }
            );
        } else {
            println!("(no timestamp queries on this adapter: per-phase times unavailable)");
        }
    }
    Ok(())
}

/// Median time of an N×N×N GEMM over `reps` runs after a warm-up, and its GFLOP/s
/// (`engine::gpu::gemm_benchmark`).
fn bench_gemm(size: usize, reps: usize) -> diagfim::Result<()> {
    let ctx = device()?;
    let t = gpu::gemm_benchmark(&ctx, size, size, size, reps)?;
    println!(
        "GEMM {size}³ on {}: median {:.3} ms ({}), {:.1} GFLOP/s",
        ctx.describe(),
        t.device_seconds.unwrap_or(t.wall_seconds) * 1e3,
        if t.device_seconds.is_some() {
            "device time"
        } else {
            "wall time"
        },
        t.gflops
    );
    Ok(())
}

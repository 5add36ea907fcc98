//! The kernels against Rust, on the GPU (lavapipe in CI): the tiled GEMM against ndarray on
//! odd sizes with every transpose and register blocking, its fused operand transforms, and the
//! WGSL Philox generator bit for bit against `crate::rng`. Without an adapter the tests are
//! skipped, unless `DIAGFIM_REQUIRE_GPU=1` (set by CI), in which case they fail.

use super::context::GpuContext;
use super::kernels::{self, Dispatch, Epilogue, Gemm, Prologue};
use super::shaders::{GemmTile, RngTestParams, Shader};
use std::sync::Arc;

/// The shared context, or None (test skipped) without an adapter unless
/// `DIAGFIM_REQUIRE_GPU=1`.
fn gpu() -> Option<Arc<GpuContext>> {
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

/// max |a − b| / max |b|.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// `n` deterministic values in [−1, 1).
fn det(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (2.0 * crate::rng::uniform(crate::rng::block(7, 5, seed, i as u32, 0)[0]) - 1.0) as f32
        })
        .collect()
}

/// Runs one recorded dispatch and reads `len` values of `out` back (as f64).
fn run_one(ctx: &GpuContext, d: &Dispatch, out: &wgpu::Buffer, len: usize) -> Vec<f64> {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    let got = kernels::read_back(ctx, &[(out, len)]).unwrap().remove(0);
    got.iter().map(|v| f64::from(*v)).collect()
}

#[test]
fn gemm_matches_ndarray_on_odd_sizes() {
    let Some(ctx) = gpu() else { return };
    for &(m, n, k) in &[
        (1, 1, 1),
        (7, 65, 257),
        (65, 7, 1),
        (257, 65, 7),
        (65, 257, 65),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = det(m * k, 1);
            let b = det(k * n, 2);
            let am = if ta {
                ndarray::Array2::from_shape_vec((k, m), a.clone())
                    .unwrap()
                    .t()
                    .to_owned()
            } else {
                ndarray::Array2::from_shape_vec((m, k), a.clone()).unwrap()
            };
            let bm = if tb {
                ndarray::Array2::from_shape_vec((n, k), b.clone())
                    .unwrap()
                    .t()
                    .to_owned()
            } else {
                ndarray::Array2::from_shape_vec((k, n), b.clone()).unwrap()
            };
            let want = am.mapv(f64::from).dot(&bm.mapv(f64::from));
            let ba = kernels::upload(&ctx, "a", &a).unwrap();
            let bb = kernels::upload(&ctx, "b", &b).unwrap();
            let bc = kernels::storage(&ctx, "c", m * n).unwrap();
            let want: Vec<f64> = want.iter().copied().collect();
            for tile in [GemmTile::R4, GemmTile::R8, GemmTile::Narrow] {
                let mut g = Gemm::new(m as u32, n as u32, k as u32, ta, tb);
                g.tile = Some(tile);
                let d = g.dispatch(&ctx, &ba, &bb, &bc, &ba).unwrap();
                let got = run_one(&ctx, &d, &bc, m * n);
                let err = rel_err(&got, &want);
                assert!(err < 1e-5, "{m}x{n}x{k} ta={ta} tb={tb} {tile:?}: {err:e}");
            }
        }
    }
}

/// The fused operand transforms of the accumulation GEMMs: C += Aᵀ·[B^p | 1] (powers 2, 4
/// and 8, one padded column of ones), against ndarray in f64, with both register blockings.
#[test]
fn gemm_fused_powers_and_ones_column() {
    let Some(ctx) = gpu() else { return };
    let (m, k, n_in) = (67, 9, 65);
    for power in [2u32, 4, 8] {
        let a = det(k * m, 3);
        let b = det(k * n_in, 4);
        let c0 = det(m * (n_in + 1), 5);
        let am = ndarray::Array2::from_shape_vec((k, m), a.clone())
            .unwrap()
            .mapv(f64::from);
        let bm = ndarray::Array2::from_shape_fn((k, n_in + 1), |(x, j)| {
            if j < n_in {
                f64::from(b[x * n_in + j]).powi(power as i32)
            } else {
                1.0
            }
        });
        let want = am.t().dot(&bm)
            + ndarray::Array2::from_shape_vec((m, n_in + 1), c0.clone())
                .unwrap()
                .mapv(f64::from);
        let ba = kernels::upload(&ctx, "a", &a).unwrap();
        let bb = kernels::upload(&ctx, "b", &b).unwrap();
        let want: Vec<f64> = want.iter().copied().collect();
        for tile in [GemmTile::R4, GemmTile::R8, GemmTile::Narrow] {
            let bc = kernels::upload(&ctx, "c", &c0).unwrap();
            let mut g = Gemm::new(m as u32, (n_in + 1) as u32, k as u32, true, false);
            g.params.ldb = n_in as u32;
            g.params.b_cols = n_in as u32;
            g.pow_b = power;
            g.epilogue = Epilogue::Accumulate;
            g.tile = Some(tile);
            let d = g.dispatch(&ctx, &ba, &bb, &bc, &ba).unwrap();
            let got = run_one(&ctx, &d, &bc, m * (n_in + 1));
            let err = rel_err(&got, &want);
            assert!(err < 1e-5, "power {power} {tile:?}: {err:e}");
        }
    }
}

/// The fused operand transforms of the Jacobian chain (DESIGN §2): one chain step
/// (σ' ⊙ B)·Wᵀ with σ' broadcast over each input's rows, and the batched contraction
/// Hd[x] += (B[x] ⊙ B[x])·C[x] accumulated at an offset, against ndarray in f64.
#[test]
fn gemm_fused_chain_step_and_squared_contraction() {
    let Some(ctx) = gpu() else { return };
    let (bb, nl, width, next, o) = (3, 5, 70, 6, 4);
    let rows = bb * nl;
    let t = det(rows * width, 6);
    let s1 = det(bb * width, 7);
    let w = det(next * width, 9);
    let up = |v: &[f32]| kernels::upload(&ctx, "operand", v).unwrap();
    let f = |v: f32| f64::from(v);

    // Chain step.
    let scaled = ndarray::Array2::from_shape_fn((rows, width), |(r, u)| {
        f(s1[(r / nl) * width + u]) * f(t[r * width + u])
    });
    let wm = ndarray::Array2::from_shape_vec((next, width), w.clone())
        .unwrap()
        .mapv(f64::from);
    let want: Vec<f64> = scaled.dot(&wm.t()).iter().copied().collect();
    let (bt, bs1, bw) = (up(&t), up(&s1), up(&w));
    let out = kernels::storage(&ctx, "out", rows * next).unwrap();
    let mut g = Gemm::new(rows as u32, next as u32, width as u32, false, true);
    g.prologue = Prologue::ScaleRows;
    g.params.pro_nl = nl as u32;
    let d = g.dispatch_scaled(&ctx, &bt, &bw, &out, &bs1).unwrap();
    let got = run_one(&ctx, &d, &out, rows * next);
    let err = rel_err(&got, &want);
    assert!(err < 1e-5, "chain step: {err:e}");

    // Squared, batched contraction into the second half of an output buffer.
    let c = det(bb * width * o, 10);
    let hd0 = det(2 * rows * o, 11);
    let mut want = hd0.iter().map(|v| f(*v)).collect::<Vec<f64>>();
    for x in 0..bb {
        for j in 0..nl {
            for a in 0..o {
                let sum: f64 = (0..width)
                    .map(|u| f(t[(x * nl + j) * width + u]).powi(2) * f(c[(x * width + u) * o + a]))
                    .sum();
                want[(rows + x * nl + j) * o + a] += sum;
            }
        }
    }
    let (bc, bhd) = (up(&c), up(&hd0));
    let mut g = Gemm::new(nl as u32, o as u32, width as u32, false, false);
    g.batch = bb as u32;
    g.pow_a = 2;
    g.epilogue = Epilogue::Accumulate;
    g.params.stride_a = (nl * width) as u32;
    g.params.stride_b = (width * o) as u32;
    g.params.off_c = (rows * o) as u32;
    g.params.stride_c = (nl * o) as u32;
    let d = g.dispatch(&ctx, &bt, &bc, &bhd, &bt).unwrap();
    let got = run_one(&ctx, &d, &bhd, 2 * rows * o);
    let err = rel_err(&got, &want);
    assert!(err < 1e-5, "contraction: {err:e}");
}

#[test]
fn wgsl_philox_is_bit_identical_to_rust() {
    let Some(ctx) = gpu() else { return };
    let seed: u64 = 0x1234_5678_9abc_def0;
    let count = 1000u32;
    let out = kernels::storage(&ctx, "out", 4 * count as usize).unwrap();
    let p = RngTestParams {
        count,
        sample: 17,
        block: 3,
        stream: 0,
        key_lo: seed as u32,
        key_hi: (seed >> 32) as u32,
        _p: [0; 2],
    };
    let d = kernels::dispatch(
        &ctx,
        Shader::RngTest,
        "main",
        &[],
        &p,
        &[&out],
        kernels::groups_1d(count as u64).unwrap(),
    )
    .unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    let got = kernels::read_back(&ctx, &[(&out, 4 * count as usize)])
        .unwrap()
        .remove(0);
    for i in 0..count {
        let want = crate::rng::block(seed, 0, i, 17, 3);
        let g: [u32; 4] = std::array::from_fn(|q| got[(4 * i) as usize + q].to_bits());
        assert_eq!(g, want, "draw {i}");
    }
}

/// The benchmark entry point runs the GEMM and reports consistent timings.
#[test]
fn gemm_benchmark_reports_timings() {
    let Some(ctx) = gpu() else { return };
    let t = super::gemm_benchmark(&ctx, 65, 33, 17, 3).unwrap();
    assert!(t.wall_seconds > 0.0 && t.total_wall_seconds >= t.wall_seconds);
    assert_eq!(t.device_seconds.is_some(), ctx.has_timestamps());
    let secs = t.device_seconds.unwrap_or(t.wall_seconds);
    if secs > 0.0 {
        let want = 2.0 * 65.0 * 33.0 * 17.0 / secs * 1e-9;
        assert!((t.gflops - want).abs() <= 1e-9 * want, "{t:?}");
    }
}

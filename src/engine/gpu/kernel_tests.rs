//! The kernels against Rust, on the GPU (lavapipe in CI): the tiled GEMM against ndarray on
//! odd sizes with every transpose and register blocking, its fused operand transforms, the
//! WGSL Philox generator bit for bit against `crate::rng`, and family.wgsl's Bernoulli and
//! Poisson label samplers draw for draw against the Rust samplers. Without an adapter the
//! tests are skipped, unless `DIAGFIM_REQUIRE_GPU=1` (set by CI), in which case they fail.

use super::context::GpuContext;
use super::kernels::{self, Dispatch, Epilogue, Gemm, Prologue};
use super::plan::FamilyParams;
use super::shaders::{GemmTile, GpuFamily, RngTestParams, Shader, WgslEnum};
use crate::family::{poisson_draw, Bernoulli, ExpFamily};
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

/// One batch of family.wgsl on the GPU: h ([bb, o]) → η (eta_main), then residuals of
/// samples `sample0..sample0 + ns` of inputs `input0..input0 + bb` (sample_main, r
/// [bb, ns, o]) and of the data labels (data_main). Returns (η, r, r_data).
#[allow(clippy::too_many_arguments)]
fn run_family(
    ctx: &GpuContext,
    family: GpuFamily,
    h: &[f32],
    labels: &[f32],
    o: usize,
    ns: usize,
    input0: u32,
    sample0: u32,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let bb = h.len() / o;
    assert_eq!(labels.len(), bb * o);
    let bh = kernels::upload(ctx, "h", h).unwrap();
    let eta = kernels::storage(ctx, "eta", bb * o).unwrap();
    let r = kernels::storage(ctx, "r", bb * ns * o).unwrap();
    let bl = kernels::upload(ctx, "labels", labels).unwrap();
    let r_data = kernels::storage(ctx, "r_data", bb * o).unwrap();
    let p = FamilyParams {
        bb: bb as u32,
        o: o as u32,
        ns: ns as u32,
        sample0,
        input0,
        key_lo: seed as u32,
        key_hi: (seed >> 32) as u32,
        sigma2: 1.0,
        ..Default::default()
    };
    let consts = [family.constant()];
    let buffers = [&bh, &eta, &r, &bl, &r_data];
    let one_d = kernels::groups_1d(bb as u64).unwrap();
    let entries = [
        ("eta_main", one_d),
        ("sample_main", [ns.div_ceil(64) as u32, bb as u32, 1]),
        ("data_main", one_d),
    ];
    let ds: Vec<Dispatch> = entries
        .iter()
        .map(|&(entry, groups)| {
            kernels::dispatch(ctx, Shader::Family, entry, &consts, &p, &buffers, groups).unwrap()
        })
        .collect();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in &ds {
            d.record(&mut pass);
        }
    }
    ctx.queue.submit([enc.finish()]);
    let mut got =
        kernels::read_back(ctx, &[(&eta, bb * o), (&r, bb * ns * o), (&r_data, bb * o)]).unwrap();
    let r_data = got.pop().unwrap();
    let r = got.pop().unwrap();
    (got.pop().unwrap(), r, r_data)
}

/// The label y = r + η of a residual, which must be a whole number (exact in f64: r and η
/// are f32 and r = y − η was rounded once).
fn label_of(r: f32, eta: f32) -> u32 {
    let y = f64::from(r) + f64::from(eta);
    let k = y.round();
    assert!((y - k).abs() < 1e-3 * k.max(1.0) && k >= 0.0, "y = {y}");
    k as u32
}

/// Bernoulli: η = σ(h) on both signs, and every sampled label y_a = [u_a < η_a] with the
/// uniforms of `rng::label_uniforms`, for the GPU's own η (the comparison is exact, so every
/// draw must agree); the label frequencies match η; the data residuals are label − η.
#[test]
fn wgsl_bernoulli_labels_match_rust() {
    let Some(ctx) = gpu() else { return };
    let seed: u64 = 0x0bad_cafe_1234_5678;
    // o = 7 outputs: two Philox blocks, the second partly used; saturated logits included.
    let logits = [-30.0f32, -6.5, -1.2, 0.0, 0.3, 2.9, 17.0];
    let (o, bb, ns, input0, sample0) = (logits.len(), 48, 320, 1000u32, 70u32);
    let h: Vec<f32> = (0..bb).flat_map(|_| logits).collect();
    let labels: Vec<f32> = (0..bb * o)
        .map(|i| ((i * 7) % 3 == 0) as u32 as f32)
        .collect();
    let (eta, r, r_data) = run_family(
        &ctx,
        GpuFamily::Bernoulli,
        &h,
        &labels,
        o,
        ns,
        input0,
        sample0,
        seed,
    );
    // η is stored signed: e = η ≤ ½, or e = −(1 − η) (family.wgsl, eta_main); p = η and
    // q = 1 − η, both exact in f64 from the f32 e.
    let pq = |e: f32| {
        let e = f64::from(e);
        if e >= 0.0 {
            (e, 1.0 - e)
        } else {
            (1.0 + e, -e)
        }
    };
    for (a, &hv) in logits.iter().enumerate() {
        let (p, q) = pq(eta[a]);
        let want_p = ExpFamily::eta(&Bernoulli, &[f64::from(hv)])[0];
        let want_q = ExpFamily::eta(&Bernoulli, &[-f64::from(hv)])[0];
        // The device's exp is accurate to a few ulps (lavapipe: 1.2e-6 relative at h = −30);
        // 1 − η keeps that accuracy at h = 17 too (4e-8, lost entirely by 1 − f32(η)).
        assert!(
            (p - want_p).abs() <= 1e-5 * want_p && (q - want_q).abs() <= 1e-5 * want_q,
            "σ({hv}): (p, q) = ({p}, {q}) vs ({want_p}, {want_q})"
        );
    }
    let mut ones = vec![0usize; o];
    let mut u = vec![0.0; o];
    for x in 0..bb {
        for s in 0..ns {
            crate::rng::label_uniforms(seed, input0 + x as u32, sample0 + s as u32, &mut u);
            for a in 0..o {
                let e = eta[x * o + a];
                let (p, q) = pq(e);
                let y = f64::from(r[(x * ns + s) * o + a]) + p;
                let k = y.round();
                assert!((y - k).abs() < 1e-6 && (k == 0.0 || k == 1.0), "y = {y}");
                let y = k as u32;
                // Exact in f64: u and p = e or 1 + e are exact.
                let want = u32::from(u[a] < p);
                // The residual keeps q's accuracy: 1 − p = q exactly for y = 1.
                if y == 1 && e < 0.0 {
                    assert_eq!(f64::from(r[(x * ns + s) * o + a]), q);
                }
                assert_eq!(y, want, "input {x} sample {s} output {a} (η = {e})");
                ones[a] += y as usize;
            }
        }
    }
    let n = (bb * ns) as f64;
    for (a, &k) in ones.iter().enumerate() {
        let (p, q) = pq(eta[a]);
        let se = (p * q / n).sqrt();
        assert!(
            (k as f64 / n - p).abs() <= 5.0 * se + 1e-12,
            "output {a}: frequency {} vs η = {p}",
            k as f64 / n
        );
    }
    for i in 0..bb * o {
        let e = eta[i];
        let want = if e >= 0.0 {
            labels[i] - e
        } else {
            (labels[i] - 1.0) - e
        };
        assert_eq!(r_data[i], want, "data residual {i}");
    }
}

/// Poisson: η = λ = exp(h), and every sampled count equals `poisson_draw::draw::<f32>` run on
/// the GPU's own f32 λ with the same coordinates, over rates in both regimes (inversion below
/// 10, PTRS from 10 up to the f32 range's 2²⁰, each jittered per input so that λ's fraction
/// varies); the counts' means and variances match λ within a few standard errors and their
/// histogram the exact pmf (χ²), which catches a port faithful to a wrong Rust sampler; the
/// data residuals are count − λ.
#[test]
fn wgsl_poisson_labels_match_rust() {
    let Some(ctx) = gpu() else { return };
    let seed: u64 = 0xfeed_0001_dead_beef;
    let rates = [
        0.05f64, 0.7, 3.0, 9.9, 10.0, 10.6, 37.0, 480.0, 9000.0, 2e5, 1e6,
    ];
    let (o, bb, ns, input0, sample0) = (rates.len(), 64, 320, 77u32, 1000u32);
    // h = ln λ + x·2⁻¹⁶: λ moves by ≤ 0.1% across the inputs.
    let h: Vec<f32> = (0..bb)
        .flat_map(|x| rates.map(|l| (l.ln() + x as f64 / 65536.0) as f32))
        .collect();
    let labels: Vec<f32> = (0..bb * o).map(|i| (i % 5) as f32).collect();
    let (lam, r, r_data) = run_family(
        &ctx,
        GpuFamily::Poisson,
        &h,
        &labels,
        o,
        ns,
        input0,
        sample0,
        seed,
    );
    for (i, &hv) in h.iter().enumerate() {
        let want = f64::from(hv).exp();
        let got = f64::from(lam[i]);
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "exp({hv}) = {got} vs {want}"
        );
    }
    // Per rate: count, Σ(y − λ), Σ(y − λ)², Σλ; the histogram of the counts.
    let mut moments = vec![[0.0f64; 4]; o];
    let mut hist = vec![std::collections::BTreeMap::<u32, f64>::new(); o];
    let mut differ = Vec::new();
    for x in 0..bb {
        for s in 0..ns {
            let (input, sample) = (input0 + x as u32, sample0 + s as u32);
            for (a, m) in moments.iter_mut().enumerate() {
                let l = lam[x * o + a];
                let y = label_of(r[(x * ns + s) * o + a], l);
                let want = poisson_draw::draw::<f32>(l, seed, input, sample, a as u32);
                if y != want {
                    differ.push((input, sample, a, l, y, want));
                }
                let d = f64::from(y) - f64::from(l);
                m[0] += 1.0;
                m[1] += d;
                m[2] += d * d;
                m[3] += f64::from(l);
                *hist[a].entry(y).or_default() += 1.0;
            }
        }
    }
    let draws = bb * ns * o;
    eprintln!(
        "Poisson: {} of {draws} GPU draws differ from Rust: {:?}",
        differ.len(),
        &differ[..differ.len().min(10)]
    );
    // Both sides run the same f32 operations on the same λ; only a draw within a few ulps of a
    // boundary (the CDF at u, an acceptance test) could flip where the device's exp/log round
    // differently from the host's (or the driver fuses a multiply-add). On lavapipe every draw
    // agrees; elsewhere at most 1e-4 of the draws may flip.
    let allowed = if ctx.is_software() { 0 } else { draws / 10_000 };
    assert!(differ.len() <= allowed, "{} draws differ", differ.len());
    for m in &moments {
        let (n, l) = (m[0], m[3] / m[0]);
        let mean = m[1] / n;
        let var = m[2] / n - mean * mean;
        // Standard errors: √(λ/n) for the mean, √((μ4 − σ⁴)/n) = √((λ + 2λ²)/n) for the
        // variance.
        let se_mean = (l / n).sqrt();
        let se_var = ((l + 2.0 * l * l) / n).sqrt();
        assert!(
            mean.abs() <= 5.0 * se_mean,
            "λ = {l}: mean − λ = {mean} ({} se)",
            mean / se_mean
        );
        assert!(
            (var - l).abs() <= 5.0 * se_var,
            "λ = {l}: variance {var} ({} se)",
            (var - l) / se_var
        );
    }
    for (a, counts) in hist.iter().enumerate() {
        let lams: Vec<f64> = (0..bb).map(|x| f64::from(lam[x * o + a])).collect();
        let (chi2, df) = poisson_chi2(&lams, ns as f64, counts);
        // χ² with df degrees of freedom: mean df, sd √(2 df); 6 sd is far in the tail.
        assert!(
            chi2 <= df + 6.0 * (2.0 * df).sqrt(),
            "λ ≈ {}: χ² = {chi2} with {df} degrees of freedom",
            lams[0]
        );
    }
    for i in 0..bb * o {
        assert_eq!(r_data[i], labels[i] - lam[i], "data residual {i}");
    }
}

/// ln k! in f64 (Stirling's series beyond 30, error < 1e-15).
fn ln_factorial(k: u32) -> f64 {
    if k < 30 {
        return (2..=k).map(|i| f64::from(i).ln()).sum();
    }
    let n = f64::from(k);
    let n2 = n * n;
    (n + 0.5) * n.ln() - n
        + 0.5 * std::f64::consts::TAU.ln()
        + (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * n2)) / n2) / n
}

/// Pearson's χ² of a histogram of counts drawn with `per_rate` draws from Poisson(λ) for each
/// λ of `lams` (the expected counts of the mixture from the exact pmf in f64), over bins of
/// consecutive counts with ≥ 40 expected draws each (the tails in the end bins); returns
/// (χ², degrees of freedom).
fn poisson_chi2(
    lams: &[f64],
    per_rate: f64,
    counts: &std::collections::BTreeMap<u32, f64>,
) -> (f64, f64) {
    let (lo, hi) = lams
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    let first = (lo - 12.0 * lo.sqrt() - 10.0).max(0.0) as u32;
    let last = (hi + 12.0 * hi.sqrt() + 20.0) as u32;
    // Bins [start, end) of counts with their expected draws.
    let mut bins: Vec<(u32, f64)> = Vec::new();
    let mut acc = 0.0;
    let mut start = 0u32;
    for k in first..=last {
        let lf = ln_factorial(k);
        acc += lams
            .iter()
            .map(|&l| per_rate * (f64::from(k) * l.ln() - l - lf).exp())
            .sum::<f64>();
        if acc >= 40.0 {
            bins.push((start, acc));
            start = k + 1;
            acc = 0.0;
        }
    }
    // The leftover upper tail joins the last bin.
    bins.last_mut().expect("some bins").1 += acc;
    let observed = |from: u32, to: Option<u32>| -> f64 {
        counts
            .range(from..)
            .take_while(|(k, _)| to.is_none_or(|t| **k < t))
            .map(|(_, c)| c)
            .sum()
    };
    let chi2 = (0..bins.len())
        .map(|i| {
            let (from, e) = bins[i];
            let o = observed(from, bins.get(i + 1).map(|b| b.0));
            (o - e) * (o - e) / e
        })
        .sum();
    (chi2, (bins.len() - 1) as f64)
}

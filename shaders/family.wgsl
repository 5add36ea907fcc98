// Exponential-family moments, label sampling and residuals (MATH §2, §6.6 step 1).
// FAMILY: FAMILY_CATEGORICAL (η = softmax(h)), FAMILY_GAUSSIAN (η = h/σ²), FAMILY_BERNOULLI
// (independent outputs, η = σ(h), stored signed: see eta_main) or FAMILY_POISSON (independent counts, η = λ = exp(h)),
// constants of the generated prelude. Needs rng.wgsl. The Bernoulli and Poisson samplers mirror
// src/family/bernoulli.rs and src/family/poisson_draw.rs (draw::<f32>) operation by operation.
// Host launcher: src/engine/gpu/plan.rs (Plan::family; the uniforms are rewritten per batch by Plan::prepare).

override FAMILY: u32;

struct Params {
    bb: u32, o: u32, ns: u32, sample0: u32,
    input0: u32, key_lo: u32, key_hi: u32, _p0: u32,
    sigma2: f32, _p1: u32, _p2: u32, _p3: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read_write> eta: array<f32>;
@group(0) @binding(3) var<storage, read_write> r: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<f32>;
@group(0) @binding(5) var<storage, read_write> r_data: array<f32>;

// σ(h), stable for both signs (bernoulli::sigmoid).
fn sigmoid(h: f32) -> f32 {
    if (h >= 0.0) {
        return 1.0 / (1.0 + exp(-h));
    }
    let e = exp(h);
    return e / (1.0 + e);
}

// Poisson sampler: a line-by-line port of poisson_draw::draw::<f32> (src/family/poisson_draw.rs).
// Every constant is an f32 literal (suffix f: parsed straight to f32, as rustc does, and folded
// in f32) equal to the Rust one, and the operations come in the same order, except that PTRS
// takes ⌊λ⌋ and its fraction from λ's bits and adds a proposal's count in integers
// (poisson_split, poisson_count: the same numbers, out of the compiler's reach). The kernel tests
// (src/engine/gpu/kernel_tests.rs) compare every draw with the Rust's.

// Rates below this use inversion, at and above it PTRS (poisson_draw::INVERSION_MAX_RATE).
const POISSON_INVERSION_MAX_RATE: f32 = 10.0f;
// PTRS attempts before the mode ⌊λ⌋ is returned (poisson_draw::MAX_ATTEMPTS).
const POISSON_MAX_ATTEMPTS: u32 = 64u;
// ln(k!) for k < 10 (poisson_draw::LN_FACT).
const POISSON_LN_FACT = array<f32, 10>(
    0.0f, 0.0f, 0.6931472f, 1.7917595f, 3.178054f, 4.787492f, 6.579251f, 8.525162f, 10.604603f,
    12.801827f,
);

// Block k of the Poisson label of output a (rng::poisson_block): counter
// (input, sample, a, STREAM_LABELS + 256·k).
fn poisson_block(key: vec2<u32>, input: u32, sample: u32, a: u32, k: u32) -> vec4<u32> {
    return philox(vec4<u32>(input, sample, a, STREAM_LABELS + (k << 8u)), key);
}

// Stirling's error δ(k) for k ≥ 1 (poisson_draw::stirlerr).
fn poisson_stirlerr(k: u32) -> f32 {
    let n = f32(k);
    if (k < 10u) {
        let half_ln_2pi = 0.9189385f;
        var ln_fact = POISSON_LN_FACT;
        return ln_fact[k] - ((n + 0.5f) * log(n) - n + half_ln_2pi);
    }
    let n2 = n * n;
    return (1.0f / 12.0f - (1.0f / 360.0f - 1.0f / (1260.0f * n2)) / n2) / n;
}

// Loader's bd0(x, m) = x ln(x/m) + m − x (poisson_draw::bd0).
fn poisson_bd0(x: f32, m: f32) -> f32 {
    let d = x - m;
    if (abs(d) < 0.1f * (x + m)) {
        let v = d / (x + m);
        var s = d * v;
        var ej = 2.0f * x * v;
        let v2 = v * v;
        for (var j = 1u; j < 64u; j++) {
            ej = ej * v2;
            let s1 = s + ej / f32(2u * j + 1u);
            if (s1 == s) {
                break;
            }
            s = s1;
        }
        return s;
    }
    return x * log(x / m) + m - x;
}

// ln P(K = k) for K ~ Poisson(λ) (poisson_draw::log_pmf).
fn poisson_log_pmf(k: u32, lam: f32) -> f32 {
    if (k == 0u) {
        return -lam;
    }
    let n = f32(k);
    return -0.5f * log(6.2831855f * n) - poisson_stirlerr(k) - poisson_bd0(n, lam);
}

// λ = whole + frac with whole = ⌊λ⌋ (poisson_draw: `lam.floor()`, `lam - whole`), for λ ≥ 10.
struct PoissonSplit { whole: u32, frac: f32 }

// The split from λ's bits: frac is exact, as in the Rust, but is not the f32 expression
// λ − ⌊λ⌋. A shader compiler may reassociate the sum t·u + (λ − ⌊λ⌋) + 0.43 of the proposal
// (rounding at the scale of λ); lavapipe does, and about 1% of the counts at λ ≈ 2·10⁵ came
// out one too high or too low.
fn poisson_split(lam: f32) -> PoissonSplit {
    let bits = bitcast<u32>(lam);
    let e = (bits >> 23u) - 127u;
    if (e >= 23u) {
        // Integral (λ ≥ 2²³; beyond 2³² the engine refuses the rate anyway).
        return PoissonSplit(u32(min(lam, 4294967040.0f)), 0.0f);
    }
    let shift = 23u - e;
    let mant = (bits & 0x7FFFFFu) | 0x800000u;
    let low = mant & ((1u << shift) - 1u);
    // f32(low) · 2^−shift, both exact.
    return PoissonSplit(mant >> shift, f32(low) * bitcast<f32>((127u - shift) << 23u));
}

// The count ⌊λ⌋ + g of a PTRS proposal (g integral, whole + g ≥ 0), in integers: the Rust's
// f32 sum is exact below 2²⁴, the only counts that can be accepted for λ ≤ 2²⁰.
fn poisson_count(whole: u32, g: f32) -> u32 {
    if (g >= 0.0f) {
        return whole + u32(g);
    }
    return whole - u32(-g);
}

// One Poisson(λ) draw of output a of (input, sample) (poisson_draw::draw): inversion for
// λ < 10, PTRS (Hörmann 1993) with λ = ⌊λ⌋ + frac above.
fn poisson_draw(lam: f32, key: vec2<u32>, input: u32, sample: u32, a: u32) -> u32 {
    if (lam < POISSON_INVERSION_MAX_RATE) {
        let u = uniform01(poisson_block(key, input, sample, a, 0u).x);
        var k = 0u;
        var p = exp(-lam);
        var f = p;
        // Stop in the far tail (k > λ and P(k) < 1e-9): f32 sums stall short of 1.
        while (u > f && (f32(k) <= lam || p > 1e-9f)) {
            k += 1u;
            p = p * lam / f32(k);
            f = f + p;
        }
        return k;
    }
    let slam = sqrt(lam);
    let b = 0.931f + 2.53f * slam;
    let a_ = -0.059f + 0.02483f * b;
    let inv_alpha = 1.1239f + 1.1328f / (b - 3.4f);
    let vr = 0.9277f - 3.6224f / (b - 2.0f);
    let split = poisson_split(lam);
    let whole = f32(split.whole);
    let frac = split.frac;
    for (var i = 0u; i < POISSON_MAX_ATTEMPTS; i++) {
        let w = poisson_block(key, input, sample, a, i / 2u);
        let q = 2u * (i % 2u);
        let u = uniform01(w[q]) - 0.5f;
        let v = uniform01(w[q + 1u]);
        let us = 0.5f - abs(u);
        let g = floor((2.0f * a_ / us + b) * u + frac + 0.43f);
        let kf = whole + g;
        if (us >= 0.07f && v <= vr) {
            return poisson_count(split.whole, g);
        }
        if (kf < 0.0f || (us < 0.013f && v > us)) {
            continue;
        }
        // Proposals beyond u32 (kf > 4294967295, i.e. ≥ 2³² in f32) have pmf 0.
        if (kf >= 4294967296.0f) {
            continue;
        }
        let k = poisson_count(split.whole, g);
        if (log(v) + log(inv_alpha) - log(a_ / (us * us) + b) <= poisson_log_pmf(k, lam)) {
            return k;
        }
    }
    return split.whole;
}

// Bernoulli η is stored as e = σ(h) for h ≤ 0 and e = −σ(−h) = −(1 − η) for h > 0: the
// smaller of p = η and q = 1 − η is always the one stored, so both are accurate in f32 even for
// saturated logits (1 − η computed from η would lose every digit beyond h ≈ 17): p = e, q = 1 − e
// for e ≥ 0, and p = 1 + e, q = −e for e < 0 (unit_stats.wgsl reads it the same way).

// y = [u < p] for the stored e, exactly: for e < 0, u ≤ ½ < p, and for u > ½, 1 − u is exact
// in f32, so u < 1 − q ⇔ 1 − u > q.
fn bernoulli_label(e: f32, u: f32) -> f32 {
    if (e >= 0.0) {
        return select(0.0, 1.0, u < e);
    }
    return select(0.0, 1.0, u <= 0.5 || 1.0 - u > -e);
}

// t − p for a 0/1 label t, from the stored e without cancellation (t − p = (t − 1) + q).
fn bernoulli_residual(t: f32, e: f32) -> f32 {
    if (e >= 0.0) {
        return t - e;
    }
    return (t - 1.0) - e;
}

// η of input x.
@compute @workgroup_size(64)
fn eta_main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    if (x >= p.bb) { return; }
    let base = x * p.o;
    if (FAMILY == FAMILY_CATEGORICAL) {
        var m = h[base];
        for (var a = 1u; a < p.o; a++) { m = max(m, h[base + a]); }
        var s = 0.0;
        for (var a = 0u; a < p.o; a++) { s += exp(h[base + a] - m); }
        let lse = m + log(s);
        for (var a = 0u; a < p.o; a++) { eta[base + a] = exp(h[base + a] - lse); }
    } else if (FAMILY == FAMILY_GAUSSIAN) {
        for (var a = 0u; a < p.o; a++) { eta[base + a] = h[base + a] / p.sigma2; }
    } else if (FAMILY == FAMILY_BERNOULLI) {
        // Signed storage: the smaller of η and 1 − η, negated for 1 − η.
        for (var a = 0u; a < p.o; a++) {
            let v = h[base + a];
            let small = sigmoid(-abs(v));
            eta[base + a] = select(small, -small, v > 0.0);
        }
    } else {
        for (var a = 0u; a < p.o; a++) { eta[base + a] = exp(h[base + a]); }
    }
}

// Residual r = t(y) − η of sample s (of this chunk) of input x: r[(x·ns + s)·o + a].
@compute @workgroup_size(64)
fn sample_main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = gid.x;
    let x = gid.y;
    if (s >= p.ns || x >= p.bb) { return; }
    let key = vec2<u32>(p.key_lo, p.key_hi);
    let input = p.input0 + x;
    let sample = p.sample0 + s;
    let out = (x * p.ns + s) * p.o;
    let base = x * p.o;
    if (FAMILY == FAMILY_CATEGORICAL) {
        // Inverse CDF on the softmax.
        let u = uniform01(philox(vec4<u32>(input, sample, 0u, STREAM_LABELS), key).x);
        var cum = 0.0;
        var y = p.o - 1u;
        for (var a = 0u; a < p.o; a++) {
            cum += eta[base + a];
            if (u < cum) { y = a; break; }
        }
        for (var a = 0u; a < p.o; a++) {
            r[out + a] = select(0.0, 1.0, a == y) - eta[base + a];
        }
    } else if (FAMILY == FAMILY_GAUSSIAN) {
        // y = h + σε, r = ε/σ; normals 4 per Philox block (Box–Muller on word pairs).
        let sigma = sqrt(p.sigma2);
        let blocks = (p.o + 3u) / 4u;
        for (var b = 0u; b < blocks; b++) {
            let w = philox(vec4<u32>(input, sample, b, STREAM_LABELS), key);
            let n01 = box_muller(w.x, w.y);
            let n23 = box_muller(w.z, w.w);
            let nv = array<f32, 4>(n01.x, n01.y, n23.x, n23.y);
            for (var q = 0u; q < 4u; q++) {
                let a = 4u * b + q;
                if (a < p.o) { r[out + a] = nv[q] / sigma; }
            }
        }
    } else if (FAMILY == FAMILY_BERNOULLI) {
        // y_a = 1 iff u_a < η_a, u_a from word a % 4 of block a / 4 (rng::label_uniforms).
        // η is stored signed (see bernoulli_label).
        let blocks = (p.o + 3u) / 4u;
        for (var b = 0u; b < blocks; b++) {
            let w = philox(vec4<u32>(input, sample, b, STREAM_LABELS), key);
            for (var q = 0u; q < 4u; q++) {
                let a = 4u * b + q;
                if (a < p.o) {
                    let e = eta[base + a];
                    r[out + a] = bernoulli_residual(bernoulli_label(e, uniform01(w[q])), e);
                }
            }
        }
    } else {
        // Every output's count from its own blocks (rng::poisson_block).
        for (var a = 0u; a < p.o; a++) {
            let lam = eta[base + a];
            r[out + a] = f32(poisson_draw(lam, key, input, sample, a)) - lam;
        }
    }
}

// Residual of the data label: labels are class indices (categorical, one per input) or
// o numbers per input (Gaussian targets, Bernoulli 0/1 indicators, Poisson counts).
@compute @workgroup_size(64)
fn data_main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    if (x >= p.bb) { return; }
    let base = x * p.o;
    for (var a = 0u; a < p.o; a++) {
        if (FAMILY == FAMILY_CATEGORICAL) {
            let y = u32(labels[x]);
            r_data[base + a] = select(0.0, 1.0, a == y) - eta[base + a];
        } else if (FAMILY == FAMILY_GAUSSIAN) {
            r_data[base + a] = (labels[base + a] - h[base + a]) / p.sigma2;
        } else if (FAMILY == FAMILY_BERNOULLI) {
            r_data[base + a] = bernoulli_residual(labels[base + a], eta[base + a]);
        } else {
            // Poisson: r = y − λ.
            r_data[base + a] = labels[base + a] - eta[base + a];
        }
    }
}

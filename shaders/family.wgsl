// Exponential-family moments, label sampling and residuals (MATH §2, §6.6 step 1).
// FAMILY: FAMILY_CATEGORICAL (η = softmax(h)) or FAMILY_GAUSSIAN (η = h/σ²), constants of
// the generated prelude. Needs rng.wgsl.
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
    } else {
        for (var a = 0u; a < p.o; a++) { eta[base + a] = h[base + a] / p.sigma2; }
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
    } else {
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
    }
}

// Residual of the data label: labels are class indices (categorical, one per input) or
// targets (Gaussian, o per input).
@compute @workgroup_size(64)
fn data_main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    if (x >= p.bb) { return; }
    let base = x * p.o;
    for (var a = 0u; a < p.o; a++) {
        if (FAMILY == FAMILY_CATEGORICAL) {
            let y = u32(labels[x]);
            r_data[base + a] = select(0.0, 1.0, a == y) - eta[base + a];
        } else {
            r_data[base + a] = (labels[base + a] - h[base + a]) / p.sigma2;
        }
    }
}

// Forward activation with derivatives: a = σ(z), s1 = σ'(z), s2 = σ''(z) (MATH §6.4), in
// overflow-free forms. ACT is one of the ACT_* constants of the generated prelude (the
// activation's code in src/engine/gpu/shaders.rs).
// Host launcher: src/engine/gpu/forward.rs (Forward::record, after each layer's GEMM).

override ACT: u32;

struct Params { count: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> act: array<f32>;
@group(0) @binding(3) var<storage, read_write> s1: array<f32>;
@group(0) @binding(4) var<storage, read_write> s2: array<f32>;

fn sigm(x: f32) -> f32 {
    if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
    let e = exp(x);
    return e / (1.0 + e);
}

// log(1 + e^x) without overflow, accurate for very negative x.
fn softplus(x: f32) -> f32 {
    let e = exp(-abs(x));
    var l = log(1.0 + e);
    if (e < 1e-4) { l = e - 0.5 * e * e; }
    return max(x, 0.0) + l;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    if (i >= p.count) { return; }
    let x = z[i];
    var v = x;
    var d1 = 1.0;
    var d2 = 0.0;
    switch ACT {
        case ACT_SIGMOID: {
            let s = sigm(x);
            v = s; d1 = s * (1.0 - s); d2 = d1 * (1.0 - 2.0 * s);
        }
        case ACT_TANH: {
            let t = tanh(x);
            v = t; d1 = 1.0 - t * t; d2 = -2.0 * t * d1;
        }
        case ACT_RELU: {
            if (x > 0.0) { v = x; d1 = 1.0; } else { v = 0.0; d1 = 0.0; }
            d2 = 0.0;
        }
        case ACT_SOFTPLUS: {
            let s = sigm(x);
            v = softplus(x); d1 = s; d2 = s * (1.0 - s);
        }
        case ACT_LOGSIGMOID: {
            let s = sigm(x);
            let sm = sigm(-x);
            v = -softplus(-x); d1 = sm; d2 = -s * sm;
        }
        case ACT_IDENTITY, default: {}
    }
    act[i] = v;
    s1[i] = d1;
    s2[i] = d2;
}

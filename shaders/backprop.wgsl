// Back-propagation helpers for training with softmax cross-entropy (shares the forward pass
// and GEMMs of the analysis):
//  ce_main:   per input x, p = softmax(h); δ = (p − e_y)/scale; loss[x] = −log p_y;
//             correct[x] = 1 if arg-max h = y.
//  mul_main:  g[i] *= s1[i]   (δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1})).
// Host launcher: src/engine/gpu/train.rs (GpuTrainer::new).

struct Params { bb: u32, o: u32, count: u32, _p0: u32, scale: f32, _p1: u32, _p2: u32, _p3: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;
@group(0) @binding(3) var<storage, read_write> delta: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;   // [bb, 2]: loss, correct

@compute @workgroup_size(64)
fn ce_main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    if (x >= p.bb) { return; }
    let base = x * p.o;
    let y = u32(labels[x]);
    var m = h[base];
    var best = 0u;
    for (var a = 1u; a < p.o; a++) {
        if (h[base + a] > m) { m = h[base + a]; best = a; }
    }
    var s = 0.0;
    for (var a = 0u; a < p.o; a++) { s += exp(h[base + a] - m); }
    let lse = m + log(s);
    for (var a = 0u; a < p.o; a++) {
        let pa = exp(h[base + a] - lse);
        delta[base + a] = (pa - select(0.0, 1.0, a == y)) / p.scale;
    }
    stats[2u * x] = lse - h[base + y];
    stats[2u * x + 1u] = select(0.0, 1.0, best == y);
}

// Here `h` is σ' of the layer and `delta` the back-propagated gradient.
@compute @workgroup_size(64)
fn mul_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    if (i >= p.count) { return; }
    delta[i] = delta[i] * h[i];
}

// Output-Hessian diagonals by forward-over-forward propagation (DESIGN §2): for the units u of
// a layer l, the tangent T = ∂z_m/∂z_{l,u} and second-order term S = ∂²z_m/∂z_{l,u}² are pushed
// towards the head, all units and all inputs of a batch at once. Layout of a TS buffer:
// T rows (x, u) at [0, bb·nl), S rows at [bb·nl, 2·bb·nl), `cols` values each. At the head
// T rows are Δ_l (n_l × O per input) and S rows Hd_l. This file writes the first step; each
// further step through a hidden layer m is one GEMM with the fused prologue
// [σ'_m⊙T; σ'_m⊙S + σ''_m⊙T⊙T] (gemm.wgsl, PROLOGUE 1).

struct Params { bb: u32, nl: u32, cols: u32, identity: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;      // W_{l+1}: [cols, nl] (init)
@group(0) @binding(2) var<storage, read> s1: array<f32>;     // σ' of the layer: [bb, ·]
@group(0) @binding(3) var<storage, read> s2: array<f32>;     // σ'' of the layer: [bb, ·]
@group(0) @binding(4) var<storage, read> ts: array<f32>;     // TS (prologue input)
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

fn linear(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// First step from layer l to l+1: T = σ'_l[x,u] W_{l+1}[v,u], S = σ''_l[x,u] W_{l+1}[v,u];
// with `identity` (the head itself), T = I and S = 0.
@compute @workgroup_size(64)
fn init_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    let rows = p.bb * p.nl;
    if (i >= rows * p.cols) { return; }
    let row = i / p.cols;
    let v = i % p.cols;
    let x = row / p.nl;
    let u = row % p.nl;
    var t = 0.0;
    var s = 0.0;
    if (p.identity != 0u) {
        t = select(0.0, 1.0, u == v);
    } else {
        let wv = w[v * p.nl + u];
        t = s1[x * p.nl + u] * wv;
        s = s2[x * p.nl + u] * wv;
    }
    out[i] = t;
    out[rows * p.cols + i] = s;
}

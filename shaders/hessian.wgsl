// Output Jacobians Δ_l and Hessian diagonals Hd_l of a batch by the reverse (inter-layer
// Jacobian) form of DESIGN §2, all units and inputs at once, with cost independent of O:
//   G_l = W_{l+1}ᵀ Δ_{l+1},  Δ_l = σ'_l ⊙ G_l,  C_l = σ''_l ⊙ G_l  (one batched GEMM + this file),
//   Hd_l = C_l + Σ_{m>l} (B_{l→m} ⊙ B_{l→m})ᵀ C_m,  B_{l→m} = ∂z_m/∂z_l,
// where B_{l→l+1} = W_{l+1} diag(σ'_l) (`chain_init_main`) and B_{l→m+1} = W_{m+1} diag(σ'_m)
// B_{l→m} and the contractions are GEMMs with fused prologues (gemm.wgsl). Layouts: Δ_l and
// Hd_l share a buffer, rows (x, j) of O values, Δ rows at [0, bb·nl), Hd rows after them;
// G_l and C_l are [bb·nl, O]; a chain buffer holds B_{l→m}ᵀ as rows (x, j) of n_m values.
// Host launcher: src/engine/gpu/plan.rs (Plan::hessian: Plan::backward and Plan::chains).

struct Params { bb: u32, nl: u32, cols: u32, _p: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;      // W_{l+1}: [cols, nl]
@group(0) @binding(2) var<storage, read> s1: array<f32>;     // σ'_l: [bb, nl]
@group(0) @binding(3) var<storage, read> s2: array<f32>;     // σ''_l: [bb, nl]
@group(0) @binding(4) var<storage, read> g: array<f32>;      // G_l: [bb·nl, cols = O]
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> cm: array<f32>; // C_l: [bb·nl, O]

// The head (nl = cols = O): Δ = I and Hd = 0 for every input.
@compute @workgroup_size(64)
fn head_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    let rows = p.bb * p.nl;
    if (i >= rows * p.cols) { return; }
    out[i] = select(0.0, 1.0, (i / p.cols) % p.nl == i % p.cols);
    out[rows * p.cols + i] = 0.0;
}

// Δ_l = σ'_l ⊙ G_l, C_l = σ''_l ⊙ G_l and the m = l term of Hd_l (B_{l→l} = I): Hd_l = C_l.
@compute @workgroup_size(64)
fn backward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    let rows = p.bb * p.nl;
    if (i >= rows * p.cols) { return; }
    let row = i / p.cols;     // (x, u) = x·nl + u, the index of σ'_l[x, u]
    let c = s2[row] * g[i];
    out[i] = s1[row] * g[i];
    out[rows * p.cols + i] = c;
    cm[i] = c;
}

// B_{l→l+1}ᵀ: row (x, u), column v: σ'_l[x, u] · W_{l+1}[v, u].
@compute @workgroup_size(64)
fn chain_init_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    if (i >= p.bb * p.nl * p.cols) { return; }
    let row = i / p.cols;
    let v = i % p.cols;
    out[i] = s1[row] * w[v * p.nl + row % p.nl];
}

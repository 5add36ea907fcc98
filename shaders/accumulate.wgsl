// Accumulation over the inputs of a batch (DESIGN §1, MATH §6.5). Every per-parameter channel
// is Σ_x a_k(x)^p · s_c(x) · base_c[x, j]: `scale_main` forms the left operand
// U[x, c·nl + j] = s_c(x)·base_c[x, j] for a chunk of channels (table: (base, scalar) per
// channel), and a GEMM Uᵀ·(a^p, 1) with the power fused into its operand load adds it to the
// sums (gemm.wgsl). `welford_main` keeps, per entry (j, k) of the layer ([W | b] rows), the
// Welford mean and M2 over inputs of the Fisher a_k²·q_j and of the empirical Fisher
// a_k²·ef_j in f32, and merges the batch into the running state by Chan's formula
// (`merged` inputs so far; the host merges blocks in f64). NS (scalars per input) and the
// BASE_* rows come from the generated prelude.
// Host launcher: src/engine/gpu/accumulate.rs (AccumPlan::new records scale_main and welford_main).

struct Params { bb: u32, nl: u32, nch: u32, n_in: u32, row: u32, merged: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> bases: array<f32>;    // [bb, NB, nl]
@group(0) @binding(2) var<storage, read> scalars: array<f32>;  // [bb, NS]
@group(0) @binding(3) var<storage, read> a: array<f32>;        // layer input [bb, n_in]
@group(0) @binding(4) var<storage, read> table: array<u32>;    // [nch, 2]: base, scalar
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn scale_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    let width = p.nch * p.nl;
    if (i >= p.bb * width) { return; }
    let x = i / width;
    let c = (i % width) / p.nl;
    let j = i % p.nl;
    let base = table[2u * c];
    let scalar = table[2u * c + 1u];
    out[i] = scalars[x * NS + scalar] * bases[(x * NB + base) * p.nl + j];
}

@compute @workgroup_size(64)
fn welford_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    if (i >= p.nl * p.row) { return; }
    let j = i / p.row;
    let k = i % p.row;
    var mf = 0.0;
    var qf = 0.0;
    var me = 0.0;
    var qe = 0.0;
    // bb ≤ MAX_BATCH = 4096 (plan.rs), so the loop stays short.
    for (var x = 0u; x < p.bb; x++) {
        var av = 1.0;
        if (k < p.n_in) { av = a[x * p.n_in + k]; }
        let a2 = av * av;
        let b0 = x * NB * p.nl + j;
        let f = a2 * bases[b0 + BASE_Q * p.nl];
        let e = a2 * bases[b0 + BASE_EF * p.nl];
        let inv = 1.0 / f32(x + 1u);
        let df = f - mf;
        mf += df * inv;
        qf += df * (f - mf);
        let de = e - me;
        me += de * inv;
        qe += de * (e - me);
    }
    let o = 4u * i;
    if (p.merged != 0u) {
        let na = f32(p.merged);
        let nb = f32(p.bb);
        let n = na + nb;
        let df = mf - out[o];
        let de = me - out[o + 2u];
        mf = out[o] + df * nb / n;
        qf = out[o + 1u] + qf + df * df * na * nb / n;
        me = out[o + 2u] + de * nb / n;
        qe = out[o + 3u] + qe + de * de * na * nb / n;
    }
    out[o] = mf;
    out[o + 1u] = qf;
    out[o + 2u] = me;
    out[o + 3u] = qe;
}

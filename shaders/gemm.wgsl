// Tiled, register-blocked f32 GEMM: C = op(A) · op(B) (+ epilogue), batched over z.
// op(A) is M×K, op(B) is K×N. A 16×16 workgroup computes a TM×TN tile of C (TM = 16·RM,
// TN = 16·RN), each invocation an RM×RN block of rows lid.y + 16r and columns lid.x + 16s
// (conflict-free workgroup reads, coalesced stores); K is walked in tiles of KT = 16 through
// workgroup memory (rows padded by one against bank conflicts), loaded along each operand's
// contiguous dimension, so every loop is bounded. RM and RN (4×4, 8×8, or 4×1 for N ≤ 16)
// are set by src/engine/gpu/shaders.rs.
// TRANS_A / TRANS_B read A (K×M) / B (N×K) stored row-major. EPILOGUE: EPILOGUE_STORE,
// EPILOGUE_ADD_BIAS (bias[col]) or EPILOGUE_ACCUMULATE (into C); the EPILOGUE_* and
// PROLOGUE_* constants come from the Rust enums (generated prelude).
// Fused elementwise operand transforms, applied while a tile is loaded:
// * PROLOGUE_SCALE_ROWS, one step of the inter-layer Jacobian chain of DESIGN §2 (A not
//   transposed, rows (x, j) with pro_nl rows per input x, K = width of layer m, σ'_m in s1 as
//   [bb, K]):
//   op(A)[(x, j), u] = σ'_m[x, u] · A[(x, j), u].
// * POW_A ∈ {1, 2}: op(A) squared elementwise (B_{l→m} ⊙ B_{l→m} of DESIGN §2).
// * POW_B ∈ {1, 2, 4, 8}: op(B) = B^POW_B elementwise (a², a⁴, a⁸ of MATH §6.5); when b_cols > 0,
//   the columns j ≥ b_cols of op(B) are 1 (the bias entries' "input" a = 1).
// Host launcher: src/engine/gpu/kernels.rs (Gemm::dispatch, generated per blocking by shaders.rs); used by forward.rs, plan.rs, accumulate.rs, train.rs and bench.rs.

override TRANS_A: bool;
override TRANS_B: bool;
override EPILOGUE: u32;
override PROLOGUE: u32;
override POW_A: u32;
override POW_B: u32;

struct Params {
    m: u32, n: u32, k: u32,
    lda: u32, ldb: u32, ldc: u32,
    off_a: u32, off_b: u32, off_c: u32,
    stride_a: u32, stride_b: u32, stride_c: u32,
    off_bias: u32, b_cols: u32, pro_nl: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> s1: array<f32>;

const TM: u32 = 16u * RM;
const TN: u32 = 16u * RN;
const KT: u32 = 16u;

var<workgroup> As: array<f32, KT * (TM + 1u)>; // [KT][TM], padded rows
var<workgroup> Bs: array<f32, KT * (TN + 1u)>; // [KT][TN], padded rows

fn load_a(z: u32, i: u32, kk: u32) -> f32 {
    if (i >= p.m || kk >= p.k) { return 0.0; }
    let base = p.off_a + z * p.stride_a;
    var v: f32;
    if (TRANS_A) { v = a[base + kk * p.lda + i]; } else { v = a[base + i * p.lda + kk]; }
    if (PROLOGUE == PROLOGUE_SCALE_ROWS) { v *= s1[(i / p.pro_nl) * p.k + kk]; }
    if (POW_A == 2u) { return v * v; }
    return v;
}

fn load_b(z: u32, kk: u32, j: u32) -> f32 {
    if (kk >= p.k || j >= p.n) { return 0.0; }
    if (p.b_cols != 0u && j >= p.b_cols) { return 1.0; }
    let base = p.off_b + z * p.stride_b;
    var v: f32;
    if (TRANS_B) { v = b[base + j * p.ldb + kk]; } else { v = b[base + kk * p.ldb + j]; }
    if (POW_B == 2u) { return v * v; }
    if (POW_B == 4u) { let v2 = v * v; return v2 * v2; }
    if (POW_B == 8u) { let v2 = v * v; let v4 = v2 * v2; return v4 * v4; }
    return v;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = wg.z;
    let row0 = wg.y * TM;
    let col0 = wg.x * TN;
    let t = lid.y * 16u + lid.x;
    var acc: array<f32, RM * RN>;
    for (var q = 0u; q < RM * RN; q++) { acc[q] = 0.0; }
    let ntiles = (p.k + KT - 1u) / KT;
    for (var kt = 0u; kt < ntiles; kt++) {
        let k0 = kt * KT;
        // 256 invocations load the KT·TM elements of A (RM each) and the KT·TN of B (RN each),
        // consecutive invocations along the operand's contiguous dimension in memory.
        for (var e = 0u; e < RM; e++) {
            let idx = t + e * 256u;
            var kk = idx / TM;
            var mm = idx % TM;
            if (!TRANS_A) { kk = idx % KT; mm = idx / KT; }
            As[kk * (TM + 1u) + mm] = load_a(z, row0 + mm, k0 + kk);
        }
        for (var e = 0u; e < RN; e++) {
            let idx = t + e * 256u;
            var kk = idx / TN;
            var nn = idx % TN;
            if (TRANS_B) { kk = idx % KT; nn = idx / KT; }
            Bs[kk * (TN + 1u) + nn] = load_b(z, k0 + kk, col0 + nn);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            var av: array<f32, RM>;
            var bv: array<f32, RN>;
            for (var r = 0u; r < RM; r++) { av[r] = As[kk * (TM + 1u) + lid.y + 16u * r]; }
            for (var s = 0u; s < RN; s++) { bv[s] = Bs[kk * (TN + 1u) + lid.x + 16u * s]; }
            for (var r = 0u; r < RM; r++) {
                for (var s = 0u; s < RN; s++) {
                    acc[r * RN + s] = fma(av[r], bv[s], acc[r * RN + s]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < RM; r++) {
        let i = row0 + lid.y + 16u * r;
        if (i >= p.m) { continue; }
        for (var s = 0u; s < RN; s++) {
            let j = col0 + lid.x + 16u * s;
            if (j >= p.n) { continue; }
            let at = p.off_c + z * p.stride_c + i * p.ldc + j;
            var v = acc[r * RN + s];
            if (EPILOGUE == EPILOGUE_ADD_BIAS) { v += bias[p.off_bias + j]; }
            if (EPILOGUE == EPILOGUE_ACCUMULATE) { v += c[at]; }
            c[at] = v;
        }
    }
}

// Per-sample scores and negative Hessians reduced over the sampled labels per unit
// (MATH §6.6): LANES invocations per unit (x, j) form β_s = Δ_jᵀ r_s and g_s = Hd_jᵀ r_s for
// a strided share of the chunk's samples (Δ_j, Hd_j: the T and S rows of unit j; r: the chunk's
// residuals [bb, ns, o]), keeps for v1 = β² and v2 = g the count, mean and central sums
// M2, M3, M4 (Welford/Pébay updates, no raw powers), merges the shares by Chan/Pébay in a
// tree, merges the chunk into the running statistics, and on the last chunk writes the bases
// ScoreSqMean, ScoreSqVar, ScoreSqVarVar (of β²), NegHessMean = q − mean(g), HessRVar and
// HessRVarVar (of g); *VarVar estimates Var(s²) (unbiased for n ≥ 4).
// Each invocation does ⌈ns/LANES⌉·o multiply-adds (the host bounds ns accordingly).
// Host launcher: src/engine/gpu/plan.rs (Plan::samples).

struct Params { bb: u32, nl: u32, ns: u32, first: u32, last: u32, o: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ts: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<f32>;
@group(0) @binding(3) var<storage, read_write> running: array<f32>;  // [bb·nl, W]
@group(0) @binding(4) var<storage, read_write> bases: array<f32>;

// LANES invocations (a power of two ≤ 64) share one unit, so a 64-wide workgroup reduces
// 64 / LANES units at once; with LANES = 1 (many units) there is no tree and no barrier.
override LANES: u32;

// Per invocation: count, then (mean, M2, M3, M4) of v1 and of v2.
const W: u32 = 9u;
var<workgroup> sh: array<f32, 576>;

// Adds value v to the moments at offset o of `m` (n: the count after adding).
fn push(m: ptr<function, array<f32, 9>>, o: u32, n: f32, v: f32) {
    let n1 = n - 1.0;
    let d = v - (*m)[o];
    let dn = d / n;
    let dn2 = dn * dn;
    let t1 = d * dn * n1;
    (*m)[o] += dn;
    (*m)[o + 3u] += t1 * dn2 * (n * n - 3.0 * n + 3.0) + 6.0 * dn2 * (*m)[o + 1u] - 4.0 * dn * (*m)[o + 2u];
    (*m)[o + 2u] += t1 * dn * (n - 2.0) - 3.0 * dn * (*m)[o + 1u];
    (*m)[o + 1u] += t1;
}

// Merges the moments `b` into `a` (Chan / Pébay pairwise formulas).
fn merge(a: ptr<function, array<f32, 9>>, b: array<f32, 9>) {
    let na = (*a)[0];
    let nb = b[0];
    if (nb == 0.0) { return; }
    let n = na + nb;
    for (var q = 0u; q < 2u; q++) {
        let o = 1u + 4u * q;
        let d = b[o] - (*a)[o];
        let dn = d / n;
        let m2a = (*a)[o + 1u];
        let m3a = (*a)[o + 2u];
        let m4a = (*a)[o + 3u];
        let m2b = b[o + 1u];
        let m3b = b[o + 2u];
        let m4b = b[o + 3u];
        (*a)[o] += dn * nb;
        (*a)[o + 1u] = m2a + m2b + d * dn * na * nb;
        (*a)[o + 2u] = m3a + m3b + d * dn * dn * na * nb * (na - nb)
            + 3.0 * dn * (na * m2b - nb * m2a);
        (*a)[o + 3u] = m4a + m4b + d * dn * dn * dn * na * nb * (na * na - na * nb + nb * nb)
            + 6.0 * dn * dn * (na * na * m2b + nb * nb * m2a)
            + 4.0 * dn * (na * m3b - nb * m3a);
    }
    (*a)[0] = n;
}

fn load(slot: u32) -> array<f32, 9> {
    var m: array<f32, 9>;
    for (var q = 0u; q < W; q++) { m[q] = sh[slot * W + q]; }
    return m;
}

fn store(slot: u32, m: array<f32, 9>) {
    for (var q = 0u; q < W; q++) { sh[slot * W + q] = m[q]; }
}

// Estimate of Var(s²) from the central sums M2, M4 of n values (channels::sample_var_var):
// unbiased for n ≥ 4, the plug-in (m4 − s⁴(n−3)/(n−1))/n for n = 2, 3.
fn var_of_var(n: f32, m2: f32, m4: f32) -> f32 {
    if (n >= 4.0) {
        let n1 = n - 1.0;
        return (n1 * n1 * m4 - (n * n - 3.0) * m2 * m2 / n) / (n1 * n1 * (n - 2.0) * (n - 3.0));
    }
    let s2 = m2 / (n - 1.0);
    return (m4 / n - s2 * s2 * (n - 3.0) / (n - 1.0)) / n;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let lane = t % LANES;
    let unit = (wg.x + wg.y * nwg.x) * (64u / LANES) + t / LANES;   // (x, j) flattened
    let valid = unit < p.bb * p.nl;
    var m: array<f32, 9>;
    for (var q = 0u; q < W; q++) { m[q] = 0.0; }
    if (valid) {
        let x = unit / p.nl;
        let t0 = unit * p.o;
        let s0 = (p.bb * p.nl + unit) * p.o;
        for (var s = lane; s < p.ns; s += LANES) {
            let r0 = (x * p.ns + s) * p.o;
            var b = 0.0;
            var v2 = 0.0;
            for (var a = 0u; a < p.o; a++) {
                b = fma(ts[t0 + a], r[r0 + a], b);
                v2 = fma(ts[s0 + a], r[r0 + a], v2);
            }
            m[0] += 1.0;
            push(&m, 1u, m[0], b * b);
            push(&m, 5u, m[0], v2);
        }
    }
    var acc = m;
    if (LANES > 1u) {
        store(t, m);
        workgroupBarrier();
        for (var stride = LANES / 2u; stride > 0u; stride >>= 1u) {
            if (lane < stride) {
                var a = load(t);
                merge(&a, load(t + stride));
                store(t, a);
            }
            workgroupBarrier();
        }
        acc = load(t);
    }
    if (lane != 0u || !valid) { return; }
    let r0 = unit * W;
    if (p.first == 0u) {
        var run: array<f32, 9>;
        for (var q = 0u; q < W; q++) { run[q] = running[r0 + q]; }
        merge(&acc, run);
    }
    for (var q = 0u; q < W; q++) { running[r0 + q] = acc[q]; }
    if (p.last != 0u) {
        let x = unit / p.nl;
        let j = unit % p.nl;
        let out = x * NB * p.nl + j;
        let cnt = acc[0];
        bases[out + BASE_SCORE_SQ_MEAN * p.nl] = acc[1];
        bases[out + BASE_SCORE_SQ_VAR * p.nl] = acc[2] / (cnt - 1.0);
        bases[out + BASE_SCORE_SQ_VAR_VAR * p.nl] = var_of_var(cnt, acc[2], acc[4]);
        bases[out + BASE_NEG_HESS_MEAN * p.nl] = bases[out + BASE_Q * p.nl] - acc[5];
        bases[out + BASE_HESS_R_VAR * p.nl] = acc[6] / (cnt - 1.0);
        bases[out + BASE_HESS_R_VAR_VAR * p.nl] = var_of_var(cnt, acc[6], acc[8]);
    }
}

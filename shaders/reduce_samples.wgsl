// Per-sample scores and negative Hessians reduced over the sampled labels per unit
// (MATH §6.6): a 64-wide workgroup per (x, j) forms β_s = Δ_jᵀ r_s and g_s = Hd_jᵀ r_s for a
// strided share of the chunk's samples (Δ_j, Hd_j: the T and S rows of unit j; r: the chunk's
// residuals [bb, ns, o]), runs Welford on β² and g, merges the shares by Chan's formula in a
// tree, merges the chunk into the running statistics, and on the last chunk writes the bases
// ScoreSqMean, ScoreSqVar (of β²), NegHessMean = q − mean(g) and HessRVar (of g).
// Each invocation does ⌈ns/64⌉·o multiply-adds (the host bounds ns accordingly).

struct Params { bb: u32, nl: u32, ns: u32, first: u32, last: u32, o: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ts: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<f32>;
@group(0) @binding(3) var<storage, read_write> running: array<f32>;  // [bb·nl, 5]
@group(0) @binding(4) var<storage, read_write> bases: array<f32>;

// (count, mean1, m2_1, mean2, m2_2) per invocation.
var<workgroup> sh: array<f32, 320>;

fn merge(i: u32, j: u32) {
    let na = sh[i * 5u];
    let nb = sh[j * 5u];
    let n = na + nb;
    if (nb == 0.0) { return; }
    for (var q = 0u; q < 2u; q++) {
        let d = sh[j * 5u + 1u + 2u * q] - sh[i * 5u + 1u + 2u * q];
        sh[i * 5u + 1u + 2u * q] += d * nb / n;
        sh[i * 5u + 2u + 2u * q] += sh[j * 5u + 2u + 2u * q] + d * d * na * nb / n;
    }
    sh[i * 5u] = n;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let unit = wg.x + wg.y * nwg.x;   // (x, j) flattened
    let t = lid.x;
    let valid = unit < p.bb * p.nl;
    var n = 0.0;
    var m1 = 0.0;
    var q1 = 0.0;
    var m2 = 0.0;
    var q2 = 0.0;
    if (valid) {
        let x = unit / p.nl;
        let t0 = unit * p.o;
        let s0 = (p.bb * p.nl + unit) * p.o;
        for (var s = t; s < p.ns; s += 64u) {
            let r0 = (x * p.ns + s) * p.o;
            var b = 0.0;
            var v2 = 0.0;
            for (var a = 0u; a < p.o; a++) {
                b = fma(ts[t0 + a], r[r0 + a], b);
                v2 = fma(ts[s0 + a], r[r0 + a], v2);
            }
            let v1 = b * b;
            n += 1.0;
            let d1 = v1 - m1;
            m1 += d1 / n;
            q1 += d1 * (v1 - m1);
            let d2 = v2 - m2;
            m2 += d2 / n;
            q2 += d2 * (v2 - m2);
        }
    }
    sh[t * 5u] = n;
    sh[t * 5u + 1u] = m1;
    sh[t * 5u + 2u] = q1;
    sh[t * 5u + 3u] = m2;
    sh[t * 5u + 4u] = q2;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride >>= 1u) {
        if (t < stride) { merge(t, t + stride); }
        workgroupBarrier();
    }
    if (t != 0u || !valid) { return; }
    let r0 = unit * 5u;
    if (p.first == 0u) {
        // Merge the running statistics (slot 1 of sh) into this chunk's (slot 0).
        for (var q = 0u; q < 5u; q++) { sh[5u + q] = running[r0 + q]; }
        merge(0u, 1u);
    }
    for (var q = 0u; q < 5u; q++) { running[r0 + q] = sh[q]; }
    if (p.last != 0u) {
        let x = unit / p.nl;
        let j = unit % p.nl;
        let out = x * NB * p.nl + j;
        let cnt = sh[0];
        bases[out + BASE_SCORE_SQ_MEAN * p.nl] = sh[1];
        bases[out + BASE_SCORE_SQ_VAR * p.nl] = sh[2] / (cnt - 1.0);
        bases[out + BASE_NEG_HESS_MEAN * p.nl] = bases[out + BASE_Q * p.nl] - sh[3];
        bases[out + BASE_HESS_R_VAR * p.nl] = sh[4] / (cnt - 1.0);
    }
}

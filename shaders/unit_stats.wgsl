// Per-unit statistics of one layer for every input (MATH §6.5): with Δ_j and Hd_j the T and S
// rows of unit j (length O), writes bases[x, BASE_*, j] (the BASE_* indices and NB are
// generated from src/engine/channels.rs). FAMILY: FAMILY_CATEGORICAL, FAMILY_GAUSSIAN, or one of
// the families with independent outputs, FAMILY_BERNOULLI and FAMILY_POISSON (per-coordinate
// moments c, μ3, Var(s²) of η: src/family/independent.rs).
// Host launcher: src/engine/gpu/plan.rs (Plan::unit_stats).

override FAMILY: u32;

struct Params { bb: u32, nl: u32, o: u32, has_labels: u32, sigma2: f32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ts: array<f32>;
@group(0) @binding(2) var<storage, read> eta: array<f32>;
@group(0) @binding(3) var<storage, read> r_data: array<f32>;
@group(0) @binding(4) var<storage, read_write> bases: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear(gid, nwg);
    if (i >= p.bb * p.nl) { return; }
    let x = i / p.nl;
    let j = i % p.nl;
    let o = p.o;
    let t0 = i * o;                      // Δ_j
    let s0 = (p.bb * p.nl + i) * o;      // Hd_j
    let e0 = x * o;
    var dn2 = 0.0;
    var hn2 = 0.0;
    var ef = 0.0;
    var dsum = 0.0;
    for (var a = 0u; a < o; a++) {
        dsum += ts[t0 + a];
        dn2 += ts[t0 + a] * ts[t0 + a];
        hn2 += ts[s0 + a] * ts[s0 + a];
        if (p.has_labels != 0u) { ef += ts[t0 + a] * r_data[e0 + a]; }
    }
    var q = 0.0;
    var v = 0.0;
    var w = 0.0;
    var third = 0.0;
    if (FAMILY == FAMILY_CATEGORICAL) {
        // Means under p, then centred contractions (no cancellation).
        var ub = 0.0;
        var hb = 0.0;
        for (var a = 0u; a < o; a++) {
            ub += eta[e0 + a] * ts[t0 + a];
            hb += eta[e0 + a] * ts[s0 + a];
        }
        for (var a = 0u; a < o; a++) {
            let pa = eta[e0 + a];
            let du = ts[t0 + a] - ub;
            let dh = ts[s0 + a] - hb;
            q += pa * du * du;
            w += pa * dh * dh;
            third += pa * du * du * dh;
        }
        for (var a = 0u; a < o; a++) {
            let du = ts[t0 + a] - ub;
            let c = du * du - q;
            v += eta[e0 + a] * c * c;
        }
    } else if (FAMILY == FAMILY_GAUSSIAN) {
        q = dn2 / p.sigma2;
        v = 2.0 * q * q;
        w = hn2 / p.sigma2;
    } else {
        // Independent outputs (independent::{cov_quad, kurt_excess_quad, third_central}):
        // q = Σ c_a Δ_a², w = Σ c_a Hd_a², third = Σ μ3_a Δ_a² Hd_a and
        // v = Σ vs_a Δ_a⁴ + 4 Σ_{a<b} (c_a Δ_a²)(c_b Δ_b²), the pairs by a running prefix sum:
        // every term is ≥ 0, nothing cancels.
        var diag = 0.0;
        var prefix = 0.0;
        var pairs = 0.0;
        for (var a = 0u; a < o; a++) {
            let e = eta[e0 + a];
            var c: f32;
            var mu3: f32;
            var vs: f32;
            if (FAMILY == FAMILY_BERNOULLI) {
                // c = η(1−η), μ3 = c(1−2η), Var(s²) = c(1−2η)², from the stored e: e = η for
                // η ≤ ½, e = −(1 − η) above (family.wgsl, eta_main), so |e| = min(η, 1−η)
                // is accurate and 1 − 2η = ±(1 − 2|e|).
                let m = abs(e);
                c = m * (1.0 - m);
                let d = select(-(1.0 - 2.0 * m), 1.0 - 2.0 * m, e >= 0.0);
                mu3 = c * d;
                vs = c * d * d;
            } else {
                // Poisson: c = μ3 = λ, Var(s²) = λ + 2λ².
                c = e;
                mu3 = e;
                vs = e + 2.0 * e * e;
            }
            let du = ts[t0 + a];
            let dh = ts[s0 + a];
            let wa = c * du * du;
            q += wa;
            w += c * dh * dh;
            third += mu3 * du * du * dh;
            diag += vs * du * du * du * du;
            pairs += wa * prefix;
            prefix += wa;
        }
        v = diag + 4.0 * pairs;
    }
    let out = x * NB * p.nl + j;
    bases[out + BASE_Q * p.nl] = q;
    bases[out + BASE_V * p.nl] = v;
    bases[out + BASE_W * p.nl] = w;
    bases[out + BASE_DELTA_NORM2 * p.nl] = dn2;
    bases[out + BASE_HD_NORM2 * p.nl] = hn2;
    bases[out + BASE_THIRD * p.nl] = third;
    bases[out + BASE_EF * p.nl] = ef * ef;
    bases[out + BASE_DELTA_NORM4 * p.nl] = dn2 * dn2;
    bases[out + BASE_DELTA_CENTRED_NORM2 * p.nl] = max(dn2 - dsum * dsum / f32(o), 0.0);
}

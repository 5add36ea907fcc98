// Philox4x32-10, bit-identical to src/rng.rs: key = (seed lo, seed hi),
// counter = (input, sample, block, stream). WGSL has no u64, so the 32×32→64-bit
// products are assembled from 16-bit halves. STREAM_LABELS (rng::STREAM_LABELS) comes from the
// generated prelude.
// Host launcher: no launcher of its own: included by family.wgsl and rng_test.wgsl (shaders.rs).

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// (hi, lo) of the 64-bit product a·b.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let lo = (ll & 0xFFFFu) | (mid << 16u);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, lo);
}

fn philox(ctr_in: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var c = ctr_in;
    var k = key_in;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = vec2<u32>(k.x + PHILOX_W0, k.y + PHILOX_W1);
        }
        let p0 = mulhilo(PHILOX_M0, c.x);
        let p1 = mulhilo(PHILOX_M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Uniform in (0, 1) from the top 24 bits: ((w >> 8) + 0.5) · 2⁻²⁴, exact in f32.
fn uniform01(w: u32) -> f32 {
    return (f32(w >> 8u) + 0.5) * (1.0 / 16777216.0);
}

fn box_muller(w0: u32, w1: u32) -> vec2<f32> {
    let r = sqrt(-2.0 * log(uniform01(w0)));
    let t = 6.283185307179586 * uniform01(w1);
    return vec2<f32>(r * cos(t), r * sin(t));
}

//! Counter-based random numbers (Philox4x32-10, Salmon et al. 2011), keyed by
//! (seed, input index, sample index) so that every draw is a pure function of its
//! coordinates: results never depend on batch size, chunking or thread count (DESIGN §3).
//!
//! The layout is the contract shared with the GPU engine's WGSL port:
//! key = (seed low 32 bits, seed high 32 bits); counter = (input, sample, block, stream).

/// Stream word of the counter for sampled labels.
pub const STREAM_LABELS: u32 = 0;
/// Stream word of the counter for parameter initialisation.
pub const STREAM_INIT: u32 = 1;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32 block with 10 rounds.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The Philox key of a user seed.
pub fn seed_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Four random words at coordinates (input, sample, block) of a stream.
pub fn block(seed: u64, stream: u32, input: u32, sample: u32, block: u32) -> [u32; 4] {
    philox4x32_10([input, sample, block, stream], seed_key(seed))
}

/// A uniform number in the open interval (0, 1) from the top 24 bits of a word:
/// `(w >> 8) + 0.5) · 2⁻²⁴`, exactly representable in f32 and f64 alike.
#[inline]
pub fn uniform(w: u32) -> f64 {
    ((w >> 8) as f64 + 0.5) * (1.0 / 16_777_216.0)
}

/// Two independent standard normals from two words by the Box–Muller transform.
#[inline]
pub fn box_muller(w0: u32, w1: u32) -> (f64, f64) {
    let r = (-2.0 * uniform(w0).ln()).sqrt();
    let t = std::f64::consts::TAU * uniform(w1);
    (r * t.cos(), r * t.sin())
}

/// The uniform that drives the categorical label of (input, sample).
pub fn label_uniform(seed: u64, input: u32, sample: u32) -> f64 {
    uniform(block(seed, STREAM_LABELS, input, sample, 0)[0])
}

/// Fills `out` with standard normals for (input, sample): element `a` comes from block
/// `a / 4`, words `(2m, 2m+1)` with `m = (a % 4) / 2`, cosine for even `a`, sine for odd.
pub fn label_normals(seed: u64, input: u32, sample: u32, out: &mut [f64]) {
    for (b, chunk) in out.chunks_mut(4).enumerate() {
        let w = block(seed, STREAM_LABELS, input, sample, b as u32);
        let (n0, n1) = box_muller(w[0], w[1]);
        let (n2, n3) = box_muller(w[2], w[3]);
        for (o, n) in chunk.iter_mut().zip([n0, n1, n2, n3]) {
            *o = n;
        }
    }
}

/// Fills `out` with uniforms in (0, 1) for (input, sample), one per output: element `a` is
/// word `a % 4` of block `a / 4` (the Bernoulli labels: y_a = 1 iff u_a < η_a).
pub fn label_uniforms(seed: u64, input: u32, sample: u32, out: &mut [f64]) {
    for (b, chunk) in out.chunks_mut(4).enumerate() {
        let w = block(seed, STREAM_LABELS, input, sample, b as u32);
        for (o, w) in chunk.iter_mut().zip(w) {
            *o = uniform(w);
        }
    }
}

/// Block `k` of the Poisson label of output `a` of (input, sample): counter
/// (input, sample, a, STREAM_LABELS + 256·k), so every output has its own sequence of blocks
/// (`crate::family::poisson_draw`).
pub fn poisson_block(seed: u64, input: u32, sample: u32, a: u32, k: u32) -> [u32; 4] {
    block(seed, STREAM_LABELS + (k << 8), input, sample, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123 (kat_vectors, philox4x32_10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_are_open_and_normals_standard() {
        assert!(uniform(0) > 0.0 && uniform(u32::MAX) < 1.0);
        let n = 200_000;
        let mut buf = [0.0; 2];
        let (mut s1, mut s2) = (0.0, 0.0);
        for i in 0..n {
            label_normals(7, i, 3, &mut buf);
            s1 += buf[0] + buf[1];
            s2 += buf[0] * buf[0] + buf[1] * buf[1];
        }
        let m = s1 / (2 * n) as f64;
        let v = s2 / (2 * n) as f64 - m * m;
        // Standard errors: 1/sqrt(4e5) ≈ 1.6e-3 for the mean, ≈ 2.2e-3 for the variance.
        assert!(m.abs() < 8e-3, "mean {m}");
        assert!((v - 1.0).abs() < 1.2e-2, "variance {v}");
    }
}

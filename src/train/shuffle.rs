//! Deterministic shuffling with the crate's counter-based Philox generator: the order of
//! epoch `e` is a pure function of (seed, e), whatever the thread count.

use crate::rng;

/// Stream word of the Philox counter used for shuffling (and for picking study inputs).
/// It is far from the streams of `crate::rng` (labels 0, initialisation 1) so that the
/// streams stay independent if more are added there.
pub const STREAM_SHUFFLE: u32 = 0x5348_5546; // "SHUF"

/// A uniform integer in `0..=bound` from a 64-bit word (Lemire's multiply-shift; the bias is
/// below 2⁻⁴⁰ for the sizes used here).
fn below(word: u64, bound: usize) -> usize {
    ((u128::from(word) * (bound as u128 + 1)) >> 64) as usize
}

/// A permutation of `0..n` by Fisher–Yates, keyed by (`seed`, `round`). `round` is the epoch
/// for mini-batch shuffling; other uses pick their own round (see `study`).
pub fn permutation(n: usize, seed: u64, round: u32) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    // Each Philox block gives two 64-bit words: block b serves swaps 2b and 2b + 1.
    let mut words = [0u64; 2];
    for (k, i) in (1..n).rev().enumerate() {
        if k % 2 == 0 {
            let w = rng::block(
                seed,
                STREAM_SHUFFLE,
                round,
                (k / 2) as u32,
                (k >> 33) as u32,
            );
            words = [
                u64::from(w[0]) << 32 | u64::from(w[1]),
                u64::from(w[2]) << 32 | u64::from(w[3]),
            ];
        }
        let j = below(words[k % 2], i);
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_permutation_and_depends_on_seed_and_round() {
        for n in [0, 1, 2, 7, 1000] {
            let mut p = permutation(n, 3, 0);
            p.sort_unstable();
            assert_eq!(p, (0..n).collect::<Vec<_>>());
        }
        let a = permutation(1000, 3, 0);
        assert_eq!(a, permutation(1000, 3, 0));
        assert_ne!(a, permutation(1000, 4, 0));
        assert_ne!(a, permutation(1000, 3, 1));
    }

    #[test]
    fn positions_are_roughly_uniform() {
        // Where element 0 lands over many rounds: each of 4 slots about 1/4 of the time.
        let mut counts = [0usize; 4];
        for round in 0..4000 {
            let p = permutation(4, 11, round);
            counts[p.iter().position(|&v| v == 0).unwrap()] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
    }
}

//! The file readers on deterministic mutations of valid files (the seeds of the cargo-fuzz
//! targets in fuzz/, run in every `cargo test`): bit flips, byte overwrites, truncations,
//! insertions and header-length rewrites must give a value or an error, never a panic or an
//! allocation driven by a lying header.

use std::path::Path;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `count` mutants of `seed`.
fn mutants(seed: &[u8], count: usize, salt: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(salt);
    (0..count)
        .map(|_| {
            let mut b = seed.to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(b.len());
                match rng.below(6) {
                    0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
                    1 if !b.is_empty() => b[at] = rng.next() as u8,
                    2 => b.truncate(at),
                    3 => b.insert(at.min(b.len()), rng.next() as u8),
                    // Header lengths (npy: bytes 8–9; safetensors: bytes 0–7) and digits.
                    4 if b.len() > 10 => {
                        let i = [0, 1, 8, 9][rng.below(4)];
                        b[i] = [0, 0xff, 0x7f, 1][rng.below(4)];
                    }
                    _ if !b.is_empty() => {
                        if b[at].is_ascii_digit() {
                            b[at] = b"0123456789"[rng.below(10)];
                        } else {
                            b[at] = b"9(),:'\" "[rng.below(8)];
                        }
                    }
                    _ => {}
                }
            }
            b
        })
        .collect()
}

fn fixtures(ext: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn npy_reader_survives_mutations() {
    let path = Path::new("mutant.npy");
    let mut read = 0;
    for (i, seed) in fixtures("npy").iter().enumerate() {
        for m in mutants(seed, 3000, 1 + i as u64) {
            let header = diagfim::io::parse_npy_header(&m);
            if let Ok(x) = diagfim::io::inputs_from_npy(path, &m) {
                let h = header.expect("inputs were read, so the header is valid");
                assert_eq!(x.shape(), h.shape.as_slice());
                assert_eq!(h.data_offset as u64 + h.data_bytes, m.len() as u64);
                read += 1;
            }
        }
    }
    // Some mutants (e.g. a changed value) are still valid arrays.
    assert!(read > 0);
}

#[test]
fn model_reader_survives_mutations() {
    let path = Path::new("mutant.safetensors");
    for (i, seed) in fixtures("safetensors").iter().enumerate() {
        for m in mutants(seed, 3000, 100 + i as u64) {
            if let Ok(model) = diagfim::model::model_from_bytes(path, &m, None) {
                let x = diagfim::ndarray::Array1::zeros(model.input_dim());
                let _ = model.forward(x.view());
            }
        }
    }
}

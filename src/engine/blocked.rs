//! Batched Jacobians and output-Hessian diagonals for the CPU engine, in f64, by the reverse
//! (inter-layer Jacobian) form of DESIGN §2, with dense products by faer.
//!
//! A block of inputs is cut into fixed chunks of [`CHUNK`] inputs (the last one padded with
//! zero inputs, whose results are dropped). Each chunk is one rayon task, and every product
//! inside it runs with `Par::Seq` on operands of the same shape whatever the block, so results
//! do not depend on the number of threads. They were also bit-identical across block sizes in
//! every test (faer gives a row the same operations wherever it sits in a product of one
//! shape); without the padding, products of other shapes differed by up to 3e-15 relative.
//! Per chunk:
//!
//! * forward: one GEMM per layer, `Z_l = A_{l−1} W_lᵀ` over the chunk's rows;
//! * backward: `G_l = W_{l+1}ᵀ Δ_{l+1}` as one GEMM over all inputs' O columns (for the last
//!   hidden layer `Δ_L = I`, so `G` is `W_L` itself: no product, no O × O identity), then
//!   `Δ_l = σ'_l ⊙ G_l` and `C_l = σ''_l ⊙ G_l`, with `Hd_l` started at `C_l`;
//! * chain (hidden layers below the last one): `B_{l→m+1}ᵀ = (B_{l→m}ᵀ diag(σ'_m)) W_{m+1}ᵀ` as
//!   one GEMM over all inputs' rows, and per input `Hd_l += (B_{l→m} ⊙ B_{l→m})ᵀ C_m`.
//!
//! The two chain buffers hold one chunk, `CHUNK · n_l · n_m` values each: about 25 MB per
//! worker for 784-512-256-128-10, whose block of 256 inputs peaks at 118 MB of resident memory
//! with two threads, outputs included. A worker keeps them (and the squares' buffer) from one
//! chunk to the next (`ChainBuffers`) instead of allocating and zeroing them per chunk.

use super::cpu::Derivatives;
use crate::family::ExpFamily;
use crate::model::Mlp;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{s, Array1, Array2, ArrayView2, CowArray, Ix2};
use rayon::prelude::*;

/// Inputs per chunk: the unit of parallel work and the row count of every batched product.
pub const CHUNK: usize = 16;

/// Derivatives of a block of inputs (one per row of `xs`) by the reverse (inter-layer Jacobian)
/// form of DESIGN §2: the same quantities as [`super::cpu::derivatives`] for each row, equal to
/// rounding, except the head's Δ_L = I and Hd_L = 0, which are left empty (0 × 0; see
/// [`Derivatives`]). With `hessian == false` only the forward pass and `Δ_l` are computed, and
/// every `hd` entry is an empty (0 × 0) array; `Δ_l` is bit-identical to the `hessian == true`
/// one.
///
/// Parallel over chunks of [`CHUNK`] inputs (rayon); the results do not depend on the number
/// of threads.
///
/// # Panics
/// If `xs` has not `model.input_dim()` columns.
pub fn block_derivatives(
    model: &Mlp,
    family: &dyn ExpFamily,
    xs: ArrayView2<f64>,
    hessian: bool,
) -> Vec<Derivatives> {
    block_derivatives_with(&Weights::new(model, hessian), model, family, xs, hessian)
}

/// [`block_derivatives`] with the weights laid out once ([`Weights::new`] with the same
/// `hessian`), for an engine that runs many blocks.
pub(crate) fn block_derivatives_with(
    weights: &Weights<'_>,
    model: &Mlp,
    family: &dyn ExpFamily,
    xs: ArrayView2<f64>,
    hessian: bool,
) -> Vec<Derivatives> {
    assert_eq!(
        xs.ncols(),
        model.input_dim(),
        "inputs have {} columns but the model expects {}",
        xs.ncols(),
        model.input_dim()
    );
    assert!(
        !hessian || weights.wt.len() == weights.w.len(),
        "the Hessian chain needs the transposed weights"
    );
    let b = xs.nrows();
    let chunks: Vec<Vec<Derivatives>> = (0..b.div_ceil(CHUNK))
        .into_par_iter()
        .map_init(ChainBuffers::default, |bufs, c| {
            let rows = c * CHUNK..((c + 1) * CHUNK).min(b);
            chunk_derivatives(
                model,
                weights,
                family,
                xs.slice(s![rows, ..]),
                hessian,
                bufs,
            )
        })
        .collect();
    chunks.into_iter().flatten().collect()
}

/// Every layer's weight `W_l` row-major (borrowed when the model's already is), and, for the
/// Hessian chain, its transpose; laid out once per analysis, not per block.
pub(crate) struct Weights<'a> {
    w: Vec<CowArray<'a, f64, Ix2>>,
    wt: Vec<Array2<f64>>,
}

impl<'a> Weights<'a> {
    /// The layout of `model`'s weights; the transposes only with `hessian`.
    pub(crate) fn new(model: &'a Mlp, hessian: bool) -> Weights<'a> {
        let layers = model.layers();
        Weights {
            w: layers
                .iter()
                .map(|d| d.weight.as_standard_layout())
                .collect(),
            wt: if hessian {
                layers
                    .iter()
                    .map(|d| d.weight.t().as_standard_layout().into_owned())
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// The chain's work buffers (`CHUNK · n_l · n_m` values each, megabytes) and the backward
/// product's, kept from one chunk to the next of a worker instead of being allocated, faulted
/// in and zeroed per chunk.
#[derive(Default)]
struct ChainBuffers {
    t: Vec<f64>,
    next: Vec<f64>,
    sq: Vec<f64>,
    /// The backward product `G_l` of the chunk (`CHUNK · O · n_l` values).
    g: Vec<f64>,
}

/// The first `len` values of `buf`, grown if needed (never shrunk, so that a worker zeroes
/// each buffer once); their previous contents are left (the caller overwrites them).
fn sized(buf: &mut Vec<f64>, len: usize) -> &mut [f64] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// `dst (= or +=) lhs · rhs`, sequential, by faer's GEMM; then the upper halves of the
/// vector registers are cleared ([`crate::simd::clear_upper`]: the scalar code after it would
/// otherwise run many times slower on some Intel CPUs).
pub(crate) fn gemm(dst: MatMut<'_, f64>, accum: Accum, lhs: MatRef<'_, f64>, rhs: MatRef<'_, f64>) {
    matmul(dst, accum, lhs, rhs, 1.0, Par::Seq);
    crate::simd::clear_upper();
}

/// One chunk of at most [`CHUNK`] inputs, computed as a full chunk (zero padding).
fn chunk_derivatives(
    model: &Mlp,
    weights: &Weights<'_>,
    family: &dyn ExpFamily,
    xs: ArrayView2<f64>,
    hessian: bool,
    bufs: &mut ChainBuffers,
) -> Vec<Derivatives> {
    let layers = model.layers();
    let nl = layers.len();
    let w = model.widths();
    let o = w[nl];
    let k = xs.nrows();
    let weight = |l: usize| weights.w[l].as_slice().expect("standard layout");

    // Forward, rows = inputs: acts[l] = a_l (CHUNK × w[l]); the last entry is h.
    let mut a0 = vec![0.0; CHUNK * w[0]];
    for (x, row) in xs.rows().into_iter().enumerate() {
        for (dst, &v) in a0[x * w[0]..(x + 1) * w[0]].iter_mut().zip(row) {
            *dst = v;
        }
    }
    let mut acts = vec![a0];
    let (mut s1, mut s2) = (Vec::new(), Vec::new());
    for (l, layer) in layers.iter().enumerate() {
        let (ni, no) = (w[l], w[l + 1]);
        let mut z = vec![0.0; CHUNK * no];
        gemm(
            MatMut::from_row_major_slice_mut(&mut z, CHUNK, no),
            Accum::Replace,
            MatRef::from_row_major_slice(&acts[l], CHUNK, ni),
            MatRef::from_column_major_slice(weight(l), ni, no),
        );
        if let Some(bias) = &layer.bias {
            for row in z.chunks_exact_mut(no) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
        if let Some(act) = model.activations().get(l) {
            let (mut d1, mut d2) = (vec![0.0; CHUNK * no], vec![0.0; CHUNK * no]);
            for ((v, p1), p2) in z.iter_mut().zip(&mut d1).zip(&mut d2) {
                (*v, *p1, *p2) = act.eval(*v);
            }
            s1.push(d1);
            s2.push(d2);
        }
        acts.push(z);
    }

    // Backward, rows = (input, output a), columns = units j: dt[l] = Δ_lᵀ, ct[l] = C_lᵀ,
    // hdt[l] = Hd_lᵀ, each input's block O × n_l.
    // The head's Δ_L = I is never formed: the last hidden layer's G = I·W_L is W_L for every
    // input (the same bits: the product adds exact zeros).
    let mut dt = vec![Vec::new(); nl];
    let mut ct = vec![Vec::new(); nl];
    let mut hdt = vec![Vec::new(); nl];
    for l in (0..nl - 1).rev() {
        let (n, np) = (w[l + 1], w[l + 2]);
        // Per input O × n: G_l, or None for the last hidden layer, whose G is W_L itself.
        // In the worker's buffer (every value overwritten by the product).
        let g = (l + 2 != nl).then(|| {
            let g = sized(&mut bufs.g, CHUNK * o * n);
            gemm(
                MatMut::from_row_major_slice_mut(g, CHUNK * o, n),
                Accum::Replace,
                MatRef::from_row_major_slice(&dt[l + 1], CHUNK * o, np),
                MatRef::from_row_major_slice(weight(l + 1), np, n),
            );
            &*g
        });
        let g = |x: usize| match &g {
            Some(g) => &g[x * o * n..(x + 1) * o * n],
            None => weight(l + 1),
        };
        // Written in order (no zero fill first): Δ_lᵀ = G_l·diag(σ'_l), C_lᵀ = G_l·diag(σ''_l).
        let mut d = Vec::with_capacity(CHUNK * o * n);
        let mut c = Vec::with_capacity(if hessian { CHUNK * o * n } else { 0 });
        for x in 0..CHUNK {
            let (sd1, sd2) = (&s1[l][x * n..(x + 1) * n], &s2[l][x * n..(x + 1) * n]);
            for gr in g(x).chunks_exact(n) {
                d.extend(sd1.iter().zip(gr).map(|(s, gv)| s * gv));
                if hessian {
                    c.extend(sd2.iter().zip(gr).map(|(s, gv)| s * gv));
                }
            }
        }
        dt[l] = d;
        if hessian {
            // C_m is read by the chain of the layers below m only.
            if l > 0 {
                ct[l] = c.clone();
            }
            hdt[l] = c;
        }
    }

    // The chain of every hidden layer l below the last hidden one (l ≤ nl − 3): t holds
    // B_{l→m}ᵀ, rows (input, unit u of layer l), columns the units of layer m.
    if hessian {
        for l in 0..nl.saturating_sub(2) {
            let n = w[l + 1];
            let nm0 = w[l + 2];
            // B_{l→l+1}ᵀ[x] = diag(σ'_l[x]) W_{l+1}ᵀ; the padding rows stay zero.
            let wt_next = weights.wt[l + 1].as_slice().expect("standard layout");
            let mut t = std::mem::take(&mut bufs.t);
            let mut next = std::mem::take(&mut bufs.next);
            let (filled, padding) = sized(&mut t, CHUNK * n * nm0).split_at_mut(k * n * nm0);
            padding.fill(0.0);
            for (x, block) in filled.chunks_exact_mut(n * nm0).enumerate() {
                for (u, row) in block.chunks_exact_mut(nm0).enumerate() {
                    let su = s1[l][x * n + u];
                    for (dst, wv) in row.iter_mut().zip(&wt_next[u * nm0..(u + 1) * nm0]) {
                        *dst = su * wv;
                    }
                }
            }
            let sq = sized(
                &mut bufs.sq,
                n * w[l + 2..nl].iter().max().copied().unwrap_or(0),
            );
            for m in l + 1..nl - 1 {
                let nm = w[m + 1];
                // Hd_l[x]ᵀ (O × n) += C_m[x]ᵀ (O × n_m) · (B_{l→m}[x] ⊙ B_{l→m}[x]) (n_m × n).
                let (hd_l, ct_m) = (&mut hdt[l], &ct[m]);
                let sq = &mut sq[..n * nm];
                let step = m + 1 < nl - 1;
                for x in 0..k {
                    // The squares for Hd_l, and while the chain continues the scaling
                    // B_{l→m}ᵀ diag(σ'_m) in place, in one pass over the input's rows.
                    let sd = &s1[m][x * nm..(x + 1) * nm];
                    let rows = t[x * n * nm..(x + 1) * n * nm].chunks_exact_mut(nm);
                    for (row, sq_row) in rows.zip(sq.chunks_exact_mut(nm)) {
                        for ((v, dst), s) in row.iter_mut().zip(sq_row).zip(sd) {
                            *dst = *v * *v;
                            if step {
                                *v *= s;
                            }
                        }
                    }
                    gemm(
                        MatMut::from_row_major_slice_mut(
                            &mut hd_l[x * o * n..(x + 1) * o * n],
                            o,
                            n,
                        ),
                        Accum::Add,
                        MatRef::from_row_major_slice(&ct_m[x * o * nm..(x + 1) * o * nm], o, nm),
                        MatRef::from_column_major_slice(sq, nm, n),
                    );
                }
                if step {
                    // B_{l→m+1}ᵀ = (B_{l→m}ᵀ diag(σ'_m)) W_{m+1}ᵀ, over all the chunk's rows.
                    let nn = w[m + 2];
                    gemm(
                        MatMut::from_row_major_slice_mut(
                            sized(&mut next, CHUNK * n * nn),
                            CHUNK * n,
                            nn,
                        ),
                        Accum::Replace,
                        MatRef::from_row_major_slice(&t[..CHUNK * n * nm], CHUNK * n, nm),
                        MatRef::from_column_major_slice(weight(m + 1), nm, nn),
                    );
                    std::mem::swap(&mut t, &mut next);
                }
            }
            (bufs.t, bufs.next) = (t, next);
        }
    }

    // Per input, in the layout of `cpu::derivatives` (n_l × O).
    // Gathered row by row of the output (no zero fill, sequential writes).
    let transposed = |buf: &[f64], x: usize, n: usize| {
        let blk = &buf[x * o * n..(x + 1) * o * n];
        let mut out = Vec::with_capacity(n * o);
        for j in 0..n {
            out.extend((0..o).map(|a| blk[a * n + j]));
        }
        Array2::from_shape_vec((n, o), out).expect("n × O values")
    };
    (0..k)
        .map(|x| {
            let h = acts[nl][x * o..(x + 1) * o].to_vec();
            let eta = family.eta(&h);
            let layer_inputs = (0..nl)
                .map(|l| Array1::from(acts[l][x * w[l]..(x + 1) * w[l]].to_vec()))
                .collect();
            // The head's Δ_L = I and Hd_L = 0 are not formed (empty, see `Derivatives`).
            let mut delta: Vec<Array2<f64>> = (0..nl - 1)
                .map(|l| transposed(&dt[l], x, w[l + 1]))
                .collect();
            delta.push(Array2::zeros((0, 0)));
            let hd = if hessian {
                let mut hd: Vec<Array2<f64>> = (0..nl - 1)
                    .map(|l| transposed(&hdt[l], x, w[l + 1]))
                    .collect();
                hd.push(Array2::zeros((0, 0)));
                hd
            } else {
                vec![Array2::zeros((0, 0)); nl]
            };
            Derivatives {
                h,
                eta,
                layer_inputs,
                delta,
                hd,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu;
    use crate::family::Family;
    use crate::model::{Activation, Dense};

    /// splitmix64 → uniform in [−1, 1).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    /// A random model with weights U(±1.5/√fan_in), hidden activations cycling through every
    /// [`Activation`] from `first`, biases U(±0.5) or none.
    fn model(widths: &[usize], first: usize, bias: bool, seed: u64) -> Mlp {
        let mut rng = Rng(seed);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(key, io)| {
                let scale = 1.5 / (io[0] as f64).sqrt();
                Dense {
                    key,
                    weight: Array2::from_shape_fn((io[1], io[0]), |_| scale * rng.next()),
                    bias: bias.then(|| Array1::from_shape_fn(io[1], |_| 0.5 * rng.next())),
                }
            })
            .collect();
        let acts = (0..widths.len() - 2)
            .map(|l| Activation::ALL[(first + l) % Activation::ALL.len()])
            .collect();
        Mlp::new(layers, acts).expect("valid model")
    }

    fn inputs(b: usize, n: usize, seed: u64) -> Array2<f64> {
        let mut rng = Rng(seed ^ 0xABCD);
        Array2::from_shape_fn((b, n), |_| 2.0 * rng.next())
    }

    fn family(o: usize) -> Family {
        Family::from_name(if o == 1 { "gaussian" } else { "categorical" }, 1.0).unwrap()
    }

    /// The test models: depth 2 … 5, widths 1 … 40, O ∈ {1, 3, 10}, every activation in
    /// every hidden position across the set, with and without biases.
    fn cases() -> Vec<(Mlp, Family)> {
        let shapes: [&[usize]; 8] = [
            &[5, 1],
            &[7, 12, 3],
            &[1, 40, 10],
            &[9, 20, 13, 1],
            &[6, 1, 17, 3],
            &[11, 33, 24, 17, 10],
            &[4, 25, 1, 30, 8, 3],
            &[40, 31, 40, 19, 23, 1],
        ];
        let mut out = Vec::new();
        for (i, widths) in shapes.iter().enumerate() {
            for first in 0..Activation::ALL.len() {
                for bias in [true, false] {
                    let seed = (i * 100 + first * 2 + bias as usize) as u64;
                    let m = model(widths, first, bias, seed);
                    out.push((m, family(*widths.last().unwrap())));
                }
            }
        }
        out
    }

    fn max_abs(a: &[f64]) -> f64 {
        a.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    /// Per layer l = 1 … L, the size of the terms summed into its pre-activation,
    /// `max_j Σ_i |W_l[j,i]| |a_{l−1,i}| + |b_{l,j}|`, from the layer inputs `a`: rounding
    /// errors of the forward pass scale with it, not with the (possibly cancelled) sum, and
    /// every activation has |σ'| ≤ 1.
    fn forward_terms(m: &Mlp, a: &[Array1<f64>]) -> Vec<f64> {
        m.layers()
            .iter()
            .zip(a)
            .map(|(layer, a)| {
                let z = layer.weight.mapv(f64::abs).dot(&a.mapv(f64::abs));
                let z = match &layer.bias {
                    Some(b) => z + b.mapv(f64::abs),
                    None => z,
                };
                max_abs(z.as_slice().unwrap())
            })
            .collect()
    }

    /// Largest |a − b| / scale over every array of two derivative sets, where the scale is
    /// max|b| of the array (for h, η and the layer outputs, at least the size of the summed
    /// terms, [`forward_terms`]).
    fn rel_diff(m: &Mlp, a: &Derivatives, b: &Derivatives) -> f64 {
        let terms = forward_terms(m, &b.layer_inputs);
        let out = *terms.last().unwrap();
        let mut pairs: Vec<(Vec<f64>, Vec<f64>, f64)> = vec![
            (a.h.clone(), b.h.clone(), out),
            (a.eta.clone(), b.eta.clone(), out),
        ];
        for (l, (x, y)) in a.layer_inputs.iter().zip(&b.layer_inputs).enumerate() {
            let floor = if l == 0 { 0.0 } else { terms[l - 1] };
            pairs.push((x.to_vec(), y.to_vec(), floor));
        }
        assert_eq!(a.delta.len(), b.delta.len());
        assert_eq!(a.hd.len(), b.hd.len());
        // The head: not formed by the blocked route (a), I and 0 in the reference (b).
        let o = b.h.len();
        let (ah, ad) = a.delta.split_last().unwrap();
        let (bh, bd) = b.delta.split_last().unwrap();
        let (a_hh, a_hd) = a.hd.split_last().unwrap();
        let (b_hh, b_hd) = b.hd.split_last().unwrap();
        assert!(
            ah.is_empty() && a_hh.is_empty(),
            "the head's Δ and Hd are not formed"
        );
        assert!(*bh == Array2::<f64>::eye(o) && *b_hh == Array2::<f64>::zeros((o, o)));
        for (x, y) in ad.iter().zip(bd).chain(a_hd.iter().zip(b_hd)) {
            assert_eq!(x.shape(), y.shape());
            pairs.push((
                x.iter().copied().collect(),
                y.iter().copied().collect(),
                0.0,
            ));
        }
        pairs
            .iter()
            .map(|(x, y, floor)| {
                assert_eq!(x.len(), y.len());
                let scale = max_abs(y).max(*floor).max(f64::MIN_POSITIVE);
                x.iter()
                    .zip(y)
                    .map(|(p, q)| (p - q).abs() / scale)
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    }

    fn bits(d: &[Derivatives]) -> Vec<u64> {
        let mut out = Vec::new();
        for d in d {
            out.extend(d.h.iter().chain(&d.eta).map(|v| v.to_bits()));
            for a in &d.layer_inputs {
                out.extend(a.iter().map(|v| v.to_bits()));
            }
            for a in d.delta.iter().chain(&d.hd) {
                out.extend(a.shape().iter().map(|&s| s as u64));
                out.extend(a.iter().map(|v| v.to_bits()));
            }
        }
        out
    }

    /// [`gemm`] leaves the upper halves of the vector registers in their initial state, so
    /// that the scalar code after it runs at full speed (where the CPU reports XINUSE; on CPUs
    /// whose GEMM kernels leave them dirty, e.g. AVX-512 ones, this fails without the
    /// `clear_upper` in `gemm`), and the product is right.
    #[test]
    fn gemm_leaves_the_upper_halves_clean() {
        let (m, k, n) = (96, 80, 112);
        let a: Vec<f64> = (0..m * k).map(|i| (i % 7) as f64 - 3.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i % 5) as f64 - 2.0).collect();
        let mut c = vec![1.0; m * n];
        for accum in [Accum::Replace, Accum::Add] {
            gemm(
                MatMut::from_row_major_slice_mut(&mut c, m, n),
                accum,
                MatRef::from_row_major_slice(&a, m, k),
                MatRef::from_row_major_slice(&b, k, n),
            );
            if let Some(dirty) = crate::simd::upper_in_use() {
                assert!(!dirty, "the upper halves are in use after gemm");
            }
        }
        // Small integers: the product is exact, and Add doubled it.
        for (i, j) in [(0, 0), (m - 1, n - 1), (37, 91)] {
            let want: f64 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            assert_eq!(c[i * n + j], 2.0 * want, "entry ({i}, {j})");
        }
    }

    /// Every array of every input equals the per-output recursion of `cpu::derivatives` to
    /// 1e-12 relative to the array's largest entry (for the forward quantities, at least the
    /// size of the summed terms).
    #[test]
    fn block_matches_reference() {
        let mut worst = 0.0f64;
        let mut models: Vec<(Mlp, Family, usize)> = cases()
            .into_iter()
            .map(|(m, f)| (m, f, CHUNK + 3))
            .collect();
        // Wide enough for the blocked (packed) product kernels; the reference is slow here.
        models.push((model(&[784, 256, 128, 64, 10], 1, true, 9), family(10), 3));
        for (m, fam, b) in models {
            let xs = inputs(b, m.input_dim(), m.num_params() as u64);
            let got = block_derivatives(&m, fam.as_dyn(), xs.view(), true);
            assert_eq!(got.len(), xs.nrows());
            for (x, g) in got.iter().enumerate() {
                let want = cpu::derivatives(&m, fam.as_dyn(), xs.row(x));
                let d = rel_diff(&m, g, &want);
                assert!(
                    d <= 1e-12,
                    "{:?} input {x}: relative difference {d:e}",
                    m.widths()
                );
                worst = worst.max(d);
            }
        }
        eprintln!("largest relative difference to cpu::derivatives: {worst:e}");
    }

    /// Without the Hessian: the same Δ_l (bit for bit), forward pass and η; hd empty.
    #[test]
    fn delta_only_is_bit_identical() {
        for (m, fam) in cases() {
            let xs = inputs(CHUNK + 5, m.input_dim(), 7);
            let full = block_derivatives(&m, fam.as_dyn(), xs.view(), true);
            let mut part = block_derivatives(&m, fam.as_dyn(), xs.view(), false);
            for (p, f) in part.iter_mut().zip(&full) {
                assert!(p.hd.iter().all(|a| a.shape() == [0, 0]));
                p.hd = f.hd.clone();
            }
            assert!(bits(&part) == bits(&full), "{:?}", m.widths());
        }
    }

    /// Bit-identical results for 1, 2 and 4 rayon threads.
    #[test]
    fn thread_count_invariant() {
        let pool = |t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        };
        let mut models: Vec<(Mlp, Family)> = cases().into_iter().step_by(5).collect();
        models.push((model(&[784, 256, 128, 64, 10], 1, true, 9), family(10)));
        for (i, (m, fam)) in models.into_iter().enumerate() {
            let xs = inputs(4 * CHUNK + 1, m.input_dim(), i as u64);
            let runs: Vec<Vec<u64>> = [1, 2, 4]
                .into_iter()
                .map(|t| {
                    pool(t).install(|| bits(&block_derivatives(&m, fam.as_dyn(), xs.view(), true)))
                })
                .collect();
            assert!(runs[0] == runs[1] && runs[0] == runs[2], "{:?}", m.widths());
        }
    }

    /// Bit-identical results whatever the block the inputs arrive in (the chunks are padded to
    /// one shape).
    #[test]
    fn block_size_invariant() {
        let mut models: Vec<(Mlp, Family)> = cases().into_iter().step_by(3).collect();
        // Wide enough for the blocked (packed) product kernels, not only the small ones.
        models.push((model(&[784, 256, 128, 64, 10], 1, true, 9), family(10)));
        for (i, (m, fam)) in models.into_iter().enumerate() {
            let b = 3 * CHUNK + 5;
            let xs = inputs(b, m.input_dim(), 100 + i as u64);
            let whole = bits(&block_derivatives(&m, fam.as_dyn(), xs.view(), true));
            for step in [1, 5, CHUNK - 1, CHUNK + 3] {
                let parts: Vec<Derivatives> = (0..b)
                    .step_by(step)
                    .flat_map(|s| {
                        let rows = s..(s + step).min(b);
                        block_derivatives(&m, fam.as_dyn(), xs.slice(s![rows, ..]), true)
                    })
                    .collect();
                assert!(bits(&parts) == whole, "{:?} blocks of {step}", m.widths());
            }
        }
    }
}

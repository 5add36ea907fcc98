//! Per-tensor trace bounds of one input (MATH §5.6): Corollary 4.6 (Eqs. 17–19, both terms of
//! each min) and Theorem C.1 (Ruhe's trace inequality, Eqs. 29–31), for S = the weight or the
//! bias tensor of one layer. Everything factorises per unit (MATH §6.5):
//! A_S = s₂·ΔᵀΔ, B_S = s₄·HdᵀHd, G_S = s₄·Σ_j (Δ_j⊗Δ_j)(Δ_j⊗Δ_j)ᵀ, with s₂ = Σ_k a_k² and
//! s₄ = Σ_k a_k⁴ for the weight (a = the layer input) and s₂ = s₄ = 1 for the bias. The
//! non-zero eigenvalues of G_S are those of the n_l×n_l Gram matrix Γ_ij = (Δ_iᵀΔ_j)², or of
//! G_S restricted to the symmetric subspace of R^{O²} (dimension O(O+1)/2), whichever is
//! smaller.
//!
//! This is the per-input hook of the theory layer: an engine calls [`input_theory`] with each
//! layer's Δ_l, Hd_l and layer input, and accumulates the result over inputs.

use super::eigen::{dot, dot4};
use super::moments::Runs;
use super::ql_lanes::sym_eigenvalues_ql_many;
use super::spectrum::Spectrum;
use crate::simd::{Lanes, WithLanes};
use crate::{Error, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use serde::Serialize;

/// Thm C.1 needs the whole spectrum of G_S: it is computed when the eigenproblem has size
/// min(n_l, O(O+1)/2) ≤ this; above it Thm C.1 is skipped and Cor. 4.6 uses the Schur bound
/// λ_max(Γ) ≤ max_j ‖Δ_j‖² · λ_max(ΔᵀΔ) for λ_max(G_S).
pub const RUHE_MAX_SIZE: usize = 256;

/// One layer's data for one input.
#[derive(Clone, Copy, Debug)]
pub struct LayerData<'a> {
    /// Δ_l (n_l × O).
    pub delta: ArrayView2<'a, f64>,
    /// Hd_l (n_l × O).
    pub hd: ArrayView2<'a, f64>,
    /// a_{l−1} (the layer's input).
    pub layer_input: ArrayView1<'a, f64>,
    /// The caller guarantees that this is the output layer, whose Δ = I and Hd = 0: the closed
    /// forms are used without reading Δ and Hd, which may then be empty (0 × 0, as
    /// [`crate::engine::blocked::block_derivatives`] leaves them). False: a head is still
    /// recognised from Δ and Hd (at the cost of reading them).
    pub head: bool,
}

/// Bounds on the sums over one parameter tensor S of I, N·Var Î1 and N·Var Î2, for one input
/// (or their means over inputs). Each sum is bounded by `*_min`, the min of the two terms
/// of Cor. 4.6, and sandwiched by `ruhe_*_lo ≤ · ≤ ruhe_*_hi` (Thm C.1) when `ruhe`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TensorBounds {
    /// λ_max(C)·‖J_S‖_F² (Eq. 17, first term).
    pub fisher_frob: f64,
    /// tr(C)·‖J_S‖_2² (Eq. 17, second term).
    pub fisher_spec: f64,
    /// min of the two.
    pub fisher_min: f64,
    /// λ_max(K−C⊗C)·Σ_{i∈S}‖J_i‖⁴ (Eq. 18, first term).
    pub var1_frob: f64,
    /// tr(M)·λ_max(G_S) (Eq. 18, second term; with the Schur bound when `!gram_exact`).
    pub var1_spec: f64,
    /// min of the two (Eq. 18).
    pub var1_min: f64,
    /// λ_max(C)·‖D_S‖_F² (Eq. 19, first term).
    pub var2_frob: f64,
    /// tr(C)·‖D_S‖_2² (Eq. 19, second term).
    pub var2_spec: f64,
    /// min of the two (Eq. 19).
    pub var2_min: f64,
    /// Thm C.1 (Eq. 29): Σ_k λ_k(C) λ_{O+1−k}(A_S) ≤ Σ I ≤ Σ_k λ_k(C) λ_k(A_S).
    pub ruhe_fisher_lo: f64,
    /// Upper end of the Eq. 29 bracket on Σ I.
    pub ruhe_fisher_hi: f64,
    /// Eq. 30, with M and G_S (n = O²).
    pub ruhe_var1_lo: f64,
    /// Upper end of the Eq. 30 bracket on Σ N·Var Î1.
    pub ruhe_var1_hi: f64,
    /// Eq. 31, with C and B_S.
    pub ruhe_var2_lo: f64,
    /// Upper end of the Eq. 31 bracket on Σ N·Var Î2.
    pub ruhe_var2_hi: f64,
    /// Whether the Thm C.1 fields were computed (they are 0 otherwise).
    pub ruhe: bool,
    /// Whether λ_max(G_S) is exact (else the Schur bound).
    pub gram_exact: bool,
    /// Size of the G_S eigenproblem, min(n_l, O(O+1)/2).
    pub gram_size: usize,
}

impl TensorBounds {
    /// Number of bound values (the f64 fields).
    pub(crate) const FIELDS: usize = 15;

    fn fields_mut(&mut self) -> [&mut f64; Self::FIELDS] {
        [
            &mut self.fisher_frob,
            &mut self.fisher_spec,
            &mut self.fisher_min,
            &mut self.var1_frob,
            &mut self.var1_spec,
            &mut self.var1_min,
            &mut self.var2_frob,
            &mut self.var2_spec,
            &mut self.var2_min,
            &mut self.ruhe_fisher_lo,
            &mut self.ruhe_fisher_hi,
            &mut self.ruhe_var1_lo,
            &mut self.ruhe_var1_hi,
            &mut self.ruhe_var2_lo,
            &mut self.ruhe_var2_hi,
        ]
    }
    /// The bound values in a fixed order (the flags aside).
    pub(crate) fn values(&self) -> [f64; Self::FIELDS] {
        let mut c = *self;
        c.fields_mut().map(|v| *v)
    }
    /// Bounds from [`TensorBounds::values`] (flags false/0).
    pub(crate) fn from_values(values: &[f64]) -> TensorBounds {
        let mut t = TensorBounds::default();
        for (a, b) in t.fields_mut().into_iter().zip(values) {
            *a = *b;
        }
        t
    }
    /// Adds another input's bounds (the flags are the same for every input).
    pub fn add(&mut self, other: &TensorBounds) {
        for (a, b) in self.fields_mut().into_iter().zip(other.values()) {
            *a += b;
        }
        self.ruhe = other.ruhe;
        self.gram_exact = other.gram_exact;
        self.gram_size = other.gram_size;
    }
    /// Multiplies every bound by `c` (e.g. 1/B for the mean over inputs).
    pub fn scale(&mut self, c: f64) {
        for a in self.fields_mut() {
            *a *= c;
        }
    }
    /// Whether every bound is finite.
    pub fn is_finite(&self) -> bool {
        self.values().iter().all(|v| v.is_finite())
    }
}

/// The bounds of a layer's weight and bias tensors for one input.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerBounds {
    /// The weight tensor (s₂ = Σ_k a_k², s₄ = Σ_k a_k⁴ of the layer input a).
    pub weight: TensorBounds,
    /// The bias tensor (s₂ = s₄ = 1); meaningless if the layer has no bias.
    pub bias: TensorBounds,
}

/// Per-layer bounds of one input, in layer order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputTheory {
    /// One entry per layer.
    pub layers: Vec<LayerBounds>,
}

/// Ruhe's trace inequality for PSD matrices with the given positive spectra (descending; the
/// remaining eigenvalues up to size n are 0): Σ_k α_k β_{n+1−k} ≤ tr(AB) ≤ Σ_k α_k β_k.
pub fn ruhe(alpha: &Runs, beta: &Runs, n: usize) -> (f64, f64) {
    let (p, q) = (alpha.len().min(n), beta.len().min(n));
    let hi: f64 = (0..p.min(q)).map(|k| alpha.get(k) * beta.get(k)).sum();
    // β_m (m < q) pairs with α_{n−1−m}; only α indices < p are non-zero.
    let lo: f64 = (0..q)
        .filter(|&m| n - 1 - m < p)
        .map(|m| beta.get(m) * alpha.get(n - 1 - m))
        .sum();
    (lo, hi)
}

/// Spectral data of one layer and input, shared by its weight and bias tensors.
#[derive(Debug, PartialEq)]
struct LayerSpectra {
    /// Eigenvalues of ΔᵀΔ and HdᵀHd (O×O).
    u: Runs,
    v: Runs,
    tr_u: f64,
    tr_v: f64,
    /// Σ_j ‖Δ_j‖⁴ = tr Γ.
    tr_gamma: f64,
    /// Positive eigenvalues of Γ when exact, else None.
    gamma: Option<Runs>,
    /// λ_max(Γ) or its Schur bound.
    gamma_max: f64,
    gram_size: usize,
}

fn gram(m: ArrayView2<f64>) -> Vec<f64> {
    m.t().dot(&m).iter().copied().collect()
}

/// m mᵀ (n×n for m n×O): its lower triangle by faer's triangular product (half the
/// multiply-adds of the full product, sequential), mirrored.
fn row_gram(m: ArrayView2<f64>) -> Array2<f64> {
    let (n, o) = m.dim();
    let rows = m.as_standard_layout();
    let src = rows.as_slice().expect("standard layout");
    let mut g = vec![0.0; n * n];
    if n > 0 && o > 0 {
        let mr = faer::MatRef::from_row_major_slice(src, n, o);
        faer::linalg::matmul::triangular::matmul(
            faer::MatMut::from_row_major_slice_mut(&mut g, n, n),
            faer::linalg::matmul::triangular::BlockStructure::TriangularLower,
            faer::Accum::Replace,
            mr,
            faer::linalg::matmul::triangular::BlockStructure::Rectangular,
            mr.transpose(),
            faer::linalg::matmul::triangular::BlockStructure::Rectangular,
            1.0,
            faer::Par::Seq,
        );
        crate::simd::clear_upper();
        for i in 0..n {
            for j in 0..i {
                g[j * n + i] = g[i * n + j];
            }
        }
    }
    Array2::from_shape_vec((n, n), g).expect("n × n")
}

/// G_S restricted to the symmetric subspace of R^{O²} ((O(O+1)/2)², row-major): with the
/// coordinates w_(ab) = s_ab Δ_a Δ_b (a ≤ b; s_aa = 1, s_ab = √2), the entry
/// G_(ab),(cd) = s_ab s_cd Σ_j Δ_ja Δ_jb Δ_jc Δ_jd depends on (ab),(cd) only through the
/// fourth moment T_abcd of the rows, which has C(O+3, 4) distinct entries. Each is one dot
/// product of length n_l of the column products P_ab = Δ_·a ⊙ Δ_·b: n_l·C(O+3, 4) multiply-adds
/// instead of the n_l·(O(O+1)/2)² of summing the outer products w_j w_jᵀ.
fn sym_gram(delta: ArrayView2<f64>) -> Vec<f64> {
    crate::simd::with_lanes(SymGram(delta))
}

/// [`sym_gram`] on lanes `V` (AVX where the CPU has it: the same results).
struct SymGram<'a>(ArrayView2<'a, f64>);

impl WithLanes for SymGram<'_> {
    type Elem = f64;
    type Output = Vec<f64>;
    #[inline(always)]
    fn run<V: Lanes<Elem = f64>>(self) -> Vec<f64> {
        sym_gram_body::<V>(self.0)
    }
}

#[inline(always)]
fn sym_gram_body<V: Lanes<Elem = f64>>(delta: ArrayView2<f64>) -> Vec<f64> {
    let (n, o) = delta.dim();
    let sym = o * (o + 1) / 2;
    // idx[a][b] (a ≤ b): the coordinate of (ab), in the order (0,0), (0,1), …, (1,1), ….
    let mut idx = vec![0usize; o * o];
    let mut c = 0;
    for a in 0..o {
        for b in a..o {
            idx[a * o + b] = c;
            idx[b * o + a] = c;
            c += 1;
        }
    }
    let cols: Vec<Vec<f64>> = delta.columns().into_iter().map(|c| c.to_vec()).collect();
    let mut pairs = vec![0.0; sym * n];
    for a in 0..o {
        for b in a..o {
            let dst = &mut pairs[idx[a * o + b] * n..(idx[a * o + b] + 1) * n];
            for ((p, x), y) in dst.iter_mut().zip(&cols[a]).zip(&cols[b]) {
                *p = x * y;
            }
        }
    }
    let pair = |q: usize| &pairs[q * n..(q + 1) * n];
    // (c, d) of coordinate q.
    let coords: Vec<(usize, usize)> = (0..o).flat_map(|c| (c..o).map(move |d| (c, d))).collect();
    let s = |a: usize, b: usize| {
        if a == b {
            1.0
        } else {
            std::f64::consts::SQRT_2
        }
    };
    let mut g = vec![0.0; sym * sym];
    let mut put = |(a, b): (usize, usize), (c, d): (usize, usize), t: f64| {
        for ((x, y), (z, w)) in [((a, b), (c, d)), ((a, c), (b, d)), ((a, d), (b, c))] {
            let v = s(x, y) * s(z, w) * t;
            let (i, j) = (idx[x * o + y], idx[z * o + w]);
            g[i * sym + j] = v;
            g[j * sym + i] = v;
        }
    };
    // For a ≤ b, the (c, d) with b ≤ c ≤ d are the coordinates from (b, b) on: dot P_ab with
    // them four at a time (four chains of additions, P_ab loaded once; each the bits of `dot`).
    for a in 0..o {
        for b in a..o {
            let p = pair(idx[a * o + b]);
            let mut q = idx[b * o + b];
            while q + 4 <= sym {
                let t = dot4::<V>([pair(q), pair(q + 1), pair(q + 2), pair(q + 3)], p);
                for (k, t) in t.into_iter().enumerate() {
                    put((a, b), coords[q + k], t);
                }
                q += 4;
            }
            for (q, &cd) in coords.iter().enumerate().skip(q) {
                put((a, b), cd, dot(pair(q), p));
            }
        }
    }
    g
}

/// The previous accumulation of [`sym_gram`] (Σ_j w_j w_jᵀ row by row), the test oracle.
#[cfg(test)]
fn sym_gram_reference(delta: ArrayView2<f64>) -> Vec<f64> {
    let o = delta.ncols();
    let sym = o * (o + 1) / 2;
    let mut g = vec![0.0; sym * sym];
    let mut w = vec![0.0; sym];
    for row in delta.rows() {
        let mut c = 0;
        for a in 0..o {
            w[c] = row[a] * row[a];
            c += 1;
            for b in a + 1..o {
                w[c] = std::f64::consts::SQRT_2 * row[a] * row[b];
                c += 1;
            }
        }
        for (i, wi) in w.iter().enumerate() {
            if *wi != 0.0 {
                for (gij, wj) in g[i * sym..(i + 1) * sym].iter_mut().zip(&w) {
                    *gij += wi * wj;
                }
            }
        }
    }
    g
}

/// A spectrum, or the symmetric matrix (size, row-major entries) whose eigenvalues it is.
enum Eig {
    Known(Runs),
    Solve(usize, Vec<f64>),
}

/// The positive eigenvalues of mᵀm (m is n×O), or the smaller of the Gram matrices mᵀm (O×O)
/// and m mᵀ (n×n) that share them: O(n·O·min(n, O)) to form, min(n, O)³ to solve, at most
/// O(n·O²) in all. When every row of m has at most one non-zero entry (the head's Δ = I, its
/// Hd = 0, saturated units), mᵀm is diagonal, with the column sums of squares as eigenvalues:
/// O(n·O). `mmt`: m mᵀ, when the caller has it.
fn gram_eig(m: ArrayView2<f64>, mmt: Option<&Array2<f64>>) -> Eig {
    let (n, o) = m.dim();
    let sparse = m
        .rows()
        .into_iter()
        .all(|r| r.iter().filter(|v| **v != 0.0).count() <= 1);
    if sparse {
        let mut d = vec![0.0; o];
        for r in m.rows() {
            for (d, v) in d.iter_mut().zip(r) {
                *d += v * v;
            }
        }
        return Eig::Known(Runs::from_values(d));
    }
    if n < o {
        let g: Vec<f64> = match mmt {
            Some(p) => p.iter().copied().collect(),
            None => row_gram(m).into_raw_vec_and_offset().0,
        };
        Eig::Solve(n, g)
    } else {
        Eig::Solve(o, gram(m))
    }
}

/// Whether the layer is a head: Δ = I (O×O) and Hd = 0. Stops at the first entry that
/// differs, so a hidden layer costs next to nothing.
fn is_head(delta: ArrayView2<f64>, hd: ArrayView2<f64>) -> bool {
    let (n, o) = delta.dim();
    let zero = |s: &[f64]| s.iter().all(|v| *v == 0.0);
    n == o
        && hd.dim() == (n, o)
        && delta.rows().into_iter().enumerate().all(|(j, r)| {
            r[j] == 1.0
                && match r.as_slice() {
                    Some(r) => zero(&r[..j]) && zero(&r[j + 1..]),
                    None => r.iter().enumerate().all(|(a, v)| a == j || *v == 0.0),
                }
        })
        && match hd.as_slice_memory_order() {
            Some(h) => zero(h),
            None => hd.iter().all(|v| *v == 0.0),
        }
}

/// [`layer_spectra`] of a head (Δ = I, Hd = 0, O outputs) in closed form, the values the
/// general route computes: ΔᵀΔ = Γ = I (O unit eigenvalues), HdᵀHd = 0.
fn head_spectra(o: usize) -> LayerSpectra {
    let ones = || Runs::from_values(vec![1.0; o]);
    // min(n, O(O+1)/2) with n = O.
    let gram_size = o;
    LayerSpectra {
        u: ones(),
        v: Runs::default(),
        tr_u: o as f64,
        tr_v: 0.0,
        tr_gamma: o as f64,
        gamma: (gram_size <= RUHE_MAX_SIZE).then(ones),
        gamma_max: if o == 0 { 0.0 } else { 1.0 },
        gram_size,
    }
}

/// Whether `ls` are the head's spectra ([`head_spectra`]) for O = `o`: ΔᵀΔ and Γ with O
/// eigenvalues 1 each, Hd = 0.
fn is_head_spectra(ls: &LayerSpectra, o: usize) -> bool {
    let ones = |r: &Runs| r.len() == o && r.0.iter().all(|r| r.0 == 1.0);
    ones(&ls.u) && ls.v.is_empty() && ls.gamma.as_ref().is_some_and(ones)
}

/// A layer's spectra before the eigenvalues of its Gram matrices are known: those of ΔᵀΔ,
/// HdᵀHd and (when Γ's spectrum is exact) Γ. [`input_theory`] solves the Gram matrices of all
/// layers together ([`sym_eigenvalues_ql_many`]: four at a time).
enum PendingSpectra {
    /// The head's closed forms.
    Known(LayerSpectra),
    General {
        u: Eig,
        v: Eig,
        gamma: Option<Eig>,
        tr_u: f64,
        tr_v: f64,
        tr_gamma: f64,
        /// max_j ‖Δ_j‖², for the Schur bound on λ_max(Γ) when Γ's spectrum is not computed.
        max_norm2: f64,
        gram_size: usize,
    },
}

/// The spectra of one layer, for O = `o` outputs.
fn layer_spectra(l: &LayerData<'_>, o: usize) -> PendingSpectra {
    let (delta, hd) = (l.delta, l.hd);
    debug_assert!(
        !l.head
            || (delta.is_empty() && hd.is_empty())
            || (delta.ncols() == o && is_head(delta, hd)),
        "a declared head has Δ = I, Hd = 0 (O × O), or both empty"
    );
    if l.head || is_head(delta, hd) {
        return PendingSpectra::Known(head_spectra(o));
    }
    general_spectra(delta, hd)
}

/// [`layer_spectra`] of any layer, from Δ and Hd.
fn general_spectra(delta: ArrayView2<f64>, hd: ArrayView2<f64>) -> PendingSpectra {
    let (n, o) = delta.dim();
    let sym = o * (o + 1) / 2;
    let gram_size = n.min(sym);
    // ΔΔᵀ (n × n) serves both the spectrum of ΔᵀΔ (when n < O) and Γ = (ΔΔᵀ)∘² (when
    // n ≤ O(O+1)/2, which n < O implies): formed once.
    let ddt = (n < o && n <= RUHE_MAX_SIZE).then(|| row_gram(delta));
    let u = gram_eig(delta, ddt.as_ref());
    let v = gram_eig(hd, None);
    let norms2: Vec<f64> = delta.rows().into_iter().map(|r| r.dot(&r)).collect();
    // Δ_j⊗Δ_j lies in the symmetric subspace of R^{O²}; in its orthonormal basis it has the
    // O(O+1)/2 coordinates Δ_a² and √2·Δ_aΔ_b (a < b), so G_S's non-zero spectrum is that of
    // an (O(O+1)/2)² matrix, or of the n_l×n_l Gram Γ, whichever is smaller.
    let gamma = if gram_size > RUHE_MAX_SIZE {
        None
    } else if n <= sym {
        let p = ddt.unwrap_or_else(|| row_gram(delta));
        Some(Eig::Solve(n, p.iter().map(|v| v * v).collect()))
    } else {
        Some(Eig::Solve(sym, sym_gram(delta)))
    };
    PendingSpectra::General {
        u,
        v,
        gamma,
        tr_u: norms2.iter().sum(),
        tr_v: hd.iter().map(|v| v * v).sum(),
        tr_gamma: norms2.iter().map(|v| v * v).sum(),
        max_norm2: norms2.iter().copied().fold(0.0, f64::max),
        gram_size,
    }
}

/// Every layer's spectra, with the eigenvalues of all their Gram matrices computed together.
fn all_layer_spectra(layers: &[LayerData<'_>], o: usize) -> Result<Vec<LayerSpectra>> {
    solve_grams(layers.iter().map(|l| layer_spectra(l, o)).collect())
}

/// Completes pending spectra with the eigenvalues of their Gram matrices, all solved together
/// ([`sym_eigenvalues_ql_many`]: four at a time).
fn solve_grams(pending: Vec<PendingSpectra>) -> Result<Vec<LayerSpectra>> {
    let eigs = pending.iter().flat_map(|p| match p {
        PendingSpectra::Known(_) => vec![],
        PendingSpectra::General { u, v, gamma, .. } => vec![Some(u), Some(v), gamma.as_ref()],
    });
    let grams: Vec<(usize, &[f64])> = eigs
        .flatten()
        .filter_map(|e| match e {
            Eig::Solve(n, g) => Some((*n, g.as_slice())),
            Eig::Known(_) => None,
        })
        .collect();
    let mut solved = sym_eigenvalues_ql_many(&grams)?.into_iter();
    let mut runs = |e: Eig| match e {
        Eig::Known(r) => r,
        Eig::Solve(..) => Runs::from_values(solved.next().expect("one spectrum per matrix")),
    };
    Ok(pending
        .into_iter()
        .map(|p| match p {
            PendingSpectra::Known(ls) => ls,
            PendingSpectra::General {
                u,
                v,
                gamma,
                tr_u,
                tr_v,
                tr_gamma,
                max_norm2,
                gram_size,
            } => {
                let (u, v, gamma) = (runs(u), runs(v), gamma.map(&mut runs));
                // λ_max(Γ), or its Schur bound.
                let gamma_max = gamma.as_ref().map_or(max_norm2 * u.max(), Runs::max);
                LayerSpectra {
                    u,
                    v,
                    tr_u,
                    tr_v,
                    tr_gamma,
                    gamma,
                    gamma_max,
                    gram_size,
                }
            }
        })
        .collect())
}

fn tensor_bounds(sp: &Spectrum, eig_c: &Runs, ls: &LayerSpectra, s2: f64, s4: f64) -> TensorBounds {
    let o = sp.eig_c.len();
    let fisher_frob = sp.lam_max_c * s2 * ls.tr_u;
    let fisher_spec = sp.trace_c * s2 * ls.u.max();
    let var1_frob = sp.lam_max_v * s4 * ls.tr_gamma;
    let var1_spec = sp.trace_m * s4 * ls.gamma_max;
    let var2_frob = sp.lam_max_c * s4 * ls.tr_v;
    let var2_spec = sp.trace_c * s4 * ls.v.max();
    let mut t = TensorBounds {
        fisher_frob,
        fisher_spec,
        fisher_min: fisher_frob.min(fisher_spec),
        var1_frob,
        var1_spec,
        var1_min: var1_frob.min(var1_spec),
        var2_frob,
        var2_spec,
        var2_min: var2_frob.min(var2_spec),
        gram_exact: ls.gamma.is_some(),
        gram_size: ls.gram_size,
        ..Default::default()
    };
    if sp.extremes.is_some() && is_head_spectra(ls, o) {
        // The head of a partial categorical spectrum: Ruhe with Δ = I pairs every eigenvalue
        // with 1 (C and M have at most O − 1 positive ones), which sums to the traces.
        (t.ruhe_fisher_lo, t.ruhe_fisher_hi) = (s2 * sp.trace_c, s2 * sp.trace_c);
        (t.ruhe_var1_lo, t.ruhe_var1_hi) = (0.0, s4 * sp.trace_m);
        t.ruhe = true;
    } else if let Some(gamma) = &ls.gamma {
        (t.ruhe_fisher_lo, t.ruhe_fisher_hi) = ruhe(eig_c, &ls.u.scaled(s2), o);
        (t.ruhe_var1_lo, t.ruhe_var1_hi) = ruhe(&sp.eig_m, &gamma.scaled(s4), o * o);
        (t.ruhe_var2_lo, t.ruhe_var2_hi) = ruhe(eig_c, &ls.v.scaled(s4), o);
        t.ruhe = true;
    }
    t
}

/// How many extreme eigenvalues of C and M ([`Spectrum::with_extremes`]) the per-tensor
/// bounds of an MLP with layer widths `widths` (input, hidden…, output) need: Thm C.1 pairs
/// them with the eigenvalues of Gram matrices of rank ≤ n_l, and the head's bounds need only
/// tr C and tr M. The widest hidden layer (0 without one).
pub fn trace_bound_extremes(widths: &[usize]) -> usize {
    let hidden = widths.get(1..widths.len().saturating_sub(1)).unwrap_or(&[]);
    hidden.iter().copied().max().unwrap_or(0)
}

/// The per-tensor bounds of every layer for one input (the per-input hook). A partial
/// spectrum ([`Spectrum::extremes`]) must hold the extremes that the layers need
/// ([`trace_bound_extremes`]).
pub fn input_theory(spectrum: &Spectrum, layers: &[LayerData<'_>]) -> Result<InputTheory> {
    // The spectrum of C as runs depends on the input only through η: once for all layers.
    let eig_c = Runs::from_descending(spectrum.eig_c.clone());
    let spectra = all_layer_spectra(layers, spectrum.eig_c.len())?;
    if let Some(r) = spectrum.extremes {
        let need = spectra
            .iter()
            .filter(|ls| ls.gamma.is_some() && !is_head_spectra(ls, spectrum.eig_c.len()))
            .flat_map(|ls| {
                [
                    ls.u.len(),
                    ls.v.len(),
                    ls.gamma.as_ref().map_or(0, Runs::len),
                ]
            })
            .max()
            .unwrap_or(0);
        if need > r {
            return Err(Error::Input(format!(
                "the spectrum holds its {r} extreme eigenvalues, the trace bounds of a layer \
                 need {need}: compute it with Spectrum::with_extremes(…, {need}) or \
                 Spectrum::new"
            )));
        }
    }
    let layers = layers
        .iter()
        .zip(&spectra)
        .map(|(l, ls)| {
            let s2: f64 = l.layer_input.iter().map(|a| a * a).sum();
            let s4: f64 = l.layer_input.iter().map(|a| a.powi(4)).sum();
            LayerBounds {
                weight: tensor_bounds(spectrum, &eig_c, ls, s2, s4),
                bias: tensor_bounds(spectrum, &eig_c, ls, 1.0, 1.0),
            }
        })
        .collect();
    Ok(InputTheory { layers })
}

/// [`input_theory`] from each layer's Δ_l, Hd_l and layer input, as owned arrays. `head`: the
/// caller guarantees that the last layer is the output layer (Δ = I, Hd = 0;
/// [`LayerData::head`]).
pub fn input_theory_of(
    spectrum: &Spectrum,
    delta: &[Array2<f64>],
    hd: &[Array2<f64>],
    layer_inputs: &[Array1<f64>],
    head: bool,
) -> Result<InputTheory> {
    let last = delta.len().saturating_sub(1);
    let layers: Vec<LayerData<'_>> = delta
        .iter()
        .zip(hd)
        .zip(layer_inputs)
        .enumerate()
        .map(|(l, ((delta, hd), a))| LayerData {
            delta: delta.view(),
            hd: hd.view(),
            layer_input: a.view(),
            head: head && l == last,
        })
        .collect();
    input_theory(spectrum, &layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn matrix(n: usize, o: usize, seed: u64) -> Array2<f64> {
        Array2::from_shape_fn((n, o), |(j, a)| {
            let w = crate::rng::block(seed, 9, j as u32, a as u32, 0);
            let v = crate::rng::box_muller(w[0], w[1]).0;
            // Some exact zeros, as in saturated units.
            if (j + a) % 7 == 3 {
                0.0
            } else {
                v
            }
        })
    }

    /// The spectrum of ΔᵀΔ from the smaller Gram matrix, or from the column sums of squares
    /// when every row has at most one non-zero entry, against the O×O eigensolve.
    #[test]
    fn gram_eig_matches_dense() {
        let mut cases = vec![matrix(3, 12, 1), matrix(12, 3, 2), matrix(7, 7, 3)];
        cases.push(Array2::eye(9));
        cases.push(Array2::zeros((4, 6)));
        // A scaled partial permutation with a zero row and a repeated column.
        let mut m = Array2::zeros((5, 4));
        for (j, a, v) in [(0, 2, 1.5), (1, 0, -0.5), (3, 2, 2.0), (4, 3, 0.25)] {
            m[[j, a]] = v;
        }
        cases.push(m);
        // Two non-zeros per row (not diagonal: must take the Gram route).
        let mut m = Array2::zeros((4, 5));
        for j in 0..4 {
            m[[j, j]] = 1.0 + j as f64;
            m[[j, j + 1]] = -0.5;
        }
        cases.push(m);
        for m in cases {
            let (n, o) = m.dim();
            let want = Runs::from_values(
                super::super::eigen::sym_eigenvalues(o, &gram(m.view())).unwrap(),
            );
            let got = match gram_eig(m.view(), None) {
                Eig::Known(r) => r,
                Eig::Solve(n, g) => {
                    Runs::from_values(super::super::eigen::sym_eigenvalues_ql(n, &g).unwrap())
                }
            };
            let scale = want.max().max(1e-300);
            for k in 0..o.max(want.len()).max(got.len()) {
                assert!(
                    (got.get(k) - want.get(k)).abs() <= 1e-13 * scale,
                    "{n}×{o}, eigenvalue {k}: {} vs {}",
                    got.get(k),
                    want.get(k)
                );
            }
        }
    }

    /// The head's Thm C.1 terms from tr C and tr M (partial spectra) only for the head: a
    /// hidden layer with ΔᵀΔ = I exactly but Γ ≠ I (Hadamard columns of ±1/4) needs the
    /// extremes like any other, and a partial spectrum with fewer is refused.
    #[test]
    fn partial_spectra_take_the_trace_shortcut_only_for_the_head() {
        let o = 8;
        let h: Vec<f64> = (0..o)
            .map(|a| 0.3 * a as f64 - 0.02 * (a * a) as f64)
            .collect();
        let fam = crate::Family::from_name("categorical", 1.0).unwrap();
        let p = fam.as_dyn().eta(&h);
        let part = Spectrum::with_extremes(fam.as_dyn(), &p, 0).unwrap();
        assert!(part.extremes.is_some() && part.eig_c.iter().any(|v| v.is_nan()));
        let full = Spectrum::new(fam.as_dyn(), &p).unwrap();
        // Sylvester's Hadamard matrix of order 16, columns 0..8, scaled to unit columns.
        let hadamard = Array2::from_shape_fn((16, o), |(j, a)| {
            if (j & a).count_ones() % 2 == 0 {
                0.25
            } else {
                -0.25
            }
        });
        let hd = Array2::<f64>::zeros((16, o));
        let act = ndarray::Array1::from_elem(3, 0.5);
        fn layer<'a>(
            head: bool,
            delta: ArrayView2<'a, f64>,
            hd: ArrayView2<'a, f64>,
            act: &'a ndarray::Array1<f64>,
        ) -> LayerData<'a> {
            LayerData {
                delta,
                hd,
                layer_input: act.view(),
                head,
            }
        }
        let hidden = [layer(false, hadamard.view(), hd.view(), &act)];
        assert!(input_theory(&part, &hidden).is_err());
        assert!(input_theory(&full, &hidden).is_ok());
        // The head (declared, or recognised from Δ = I): the same bounds from either spectrum.
        let (eye, zeros) = (Array2::<f64>::eye(o), Array2::<f64>::zeros((o, o)));
        for head in [true, false] {
            let l = [layer(head, eye.view(), zeros.view(), &act)];
            let (a, b) = (
                input_theory(&part, &l).unwrap(),
                input_theory(&full, &l).unwrap(),
            );
            for (x, y) in [
                (a.layers[0].weight, b.layers[0].weight),
                (a.layers[0].bias, b.layers[0].bias),
            ] {
                assert!(x.ruhe && y.ruhe);
                for (u, v) in [
                    (x.ruhe_fisher_lo, y.ruhe_fisher_lo),
                    (x.ruhe_fisher_hi, y.ruhe_fisher_hi),
                    (x.ruhe_var1_lo, y.ruhe_var1_lo),
                    (x.ruhe_var1_hi, y.ruhe_var1_hi),
                    (x.ruhe_var2_lo, y.ruhe_var2_lo),
                    (x.ruhe_var2_hi, y.ruhe_var2_hi),
                ] {
                    assert!((u - v).abs() <= 1e-14 * v.abs().max(1e-300), "{u} vs {v}");
                }
            }
        }
    }

    /// The head's closed forms are exactly what the general route computes from Δ = I and
    /// Hd = 0 (with and without the Thm C.1 spectrum of Γ), and a head is recognised from its
    /// values while a near-identity is not.
    #[test]
    fn head_closed_forms_match_the_general_route() {
        for o in [1usize, 2, 3, 10, 300] {
            let (delta, hd) = (Array2::<f64>::eye(o), Array2::<f64>::zeros((o, o)));
            let pending = general_spectra(delta.view(), hd.view());
            let general = solve_grams(vec![pending]).unwrap().remove(0);
            assert_eq!(head_spectra(o), general, "O = {o}");
            assert_eq!(general.gamma.is_some(), o <= RUHE_MAX_SIZE);
            assert!(is_head(delta.view(), hd.view()));
            let mut near = delta.clone();
            near[[0, o - 1]] = if o == 1 { 1.0 + f64::EPSILON } else { 1e-300 };
            assert!(!is_head(near.view(), hd.view()), "O = {o}");
            let mut hd1 = hd.clone();
            hd1[[o - 1, 0]] = -1e-300;
            assert!(!is_head(delta.view(), hd1.view()));
        }
        assert!(!is_head(
            matrix(3, 4, 1).view(),
            Array2::zeros((3, 4)).view()
        ));
    }

    /// The triangular product m mᵀ against ndarray's full product: equal to rounding, exactly
    /// symmetric, for standard and transposed layouts and empty shapes.
    #[test]
    fn row_gram_matches_the_full_product() {
        for (n, o, seed) in [
            (1, 1, 1),
            (3, 12, 2),
            (64, 1000, 3),
            (17, 5, 4),
            (0, 4, 5),
            (4, 0, 6),
        ] {
            let m = matrix(n, o, seed);
            let want = m.dot(&m.t());
            let scale = m.iter().map(|v| v * v).sum::<f64>().max(1e-300);
            for got in [row_gram(m.view()), row_gram(m.t().to_owned().t())] {
                assert_eq!(got.dim(), (n, n));
                for ((i, j), v) in got.indexed_iter() {
                    assert!(
                        (v - want[[i, j]]).abs() <= 1e-14 * scale,
                        "{n}×{o} ({i}, {j})"
                    );
                    assert_eq!(v.to_bits(), got[[j, i]].to_bits());
                }
            }
        }
    }

    /// The fourth-moment construction of G_S against the previous outer-product sum.
    #[test]
    fn sym_gram_matches_reference() {
        for (n, o, seed) in [(1, 1, 1), (5, 2, 2), (40, 3, 3), (300, 10, 4), (17, 12, 5)] {
            let d = matrix(n, o, seed);
            let (g, r) = (sym_gram(d.view()), sym_gram_reference(d.view()));
            assert_eq!(g.len(), r.len());
            let scale = d.iter().map(|v| v * v).sum::<f64>().powi(2);
            for (x, y) in g.iter().zip(&r) {
                assert!((x - y).abs() <= 1e-13 * scale, "n {n} o {o}: {x} vs {y}");
            }
            // Non-contiguous input (a transposed view).
            let t = d.t().to_owned();
            let g2 = sym_gram(t.t());
            assert_eq!(g, g2);
        }
    }
}

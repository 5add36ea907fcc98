//! Extreme Z-eigenvalues λ = `max/min_{‖u‖=1} T[u⁴]` of symmetric 4-tensors by the adaptive
//! shifted symmetric higher-order power method (GEAP, Kolda & Mayo 2014) with B = I and
//! order m = 4 (MATH §5.1, §7), matrix-free through the oracles T x³ and T x².
//!
//! The method is local: from each start it converges to a Z-eigenpair, so the best of many
//! starts is a lower estimate of λ_max (an upper estimate of λ_min). Certified values come
//! from closed forms or λ_max(M) (see [`super::spectrum`]).

use super::eigen::{dot, sym_eigen, sym_min_eigenvalue};
use super::moments::{categorical_step, categorical_unit, Moments};
use super::probe::CategoricalProbe;
use crate::family::FamilyKind;
use crate::{rng, Error, Result};

/// A symmetric 4-tensor given by its contractions.
pub trait SymTensor4 {
    /// The dimension O.
    fn dim(&self) -> usize;
    /// g = T x³, g_a = Σ_bcd T_abcd x_b x_c x_d.
    fn apply3(&self, x: &[f64], g: &mut [f64]);
    /// G = T x² (O×O, row-major), G_ab = Σ_cd T_abcd x_c x_d.
    fn apply2(&self, x: &[f64], gm: &mut [f64]);
    /// A bound c ≥ max over unit x of the largest eigenvalue of `−β T x²` (β = +1 to maximise,
    /// −1 to minimise), if the tensor knows one. With it, the shift α = β(τ + 12c)/4 makes
    /// `β T[x⁴] + |α| ‖x‖⁴` convex on all of R^O, so that one fixed shift makes every step of the
    /// power method monotone (Kolda & Mayo 2011, Thm 4.4) and no per-iteration eigenproblem
    /// is needed (docs/theory.md, "Spectra that scale in O"). None: the adaptive shift.
    fn shift_bound(&self, _maximize: bool) -> Option<f64> {
        None
    }
    /// One step of the fixed-shift power method: `out` = [xn, gn] with xn = (βg + αx)/‖βg + αx‖
    /// and gn = T xn³, from the unit iterate x and g = T x³ (`xg`) and \[β, α\]; returns T\[xn⁴\],
    /// or None when βg + αx is zero or not finite. The family tensors fuse the passes.
    fn step(&self, xg: [&[f64]; 2], [beta, alpha]: [f64; 2], out: [&mut [f64]; 2]) -> Option<f64> {
        plain_step(self, xg, [beta, alpha], out)
    }
    /// g = T e_a³ and the return value T\[e_a⁴\] in closed form, if the tensor has one (the
    /// unit starts of the power method then skip their first contraction).
    fn unit_contraction(&self, _a: usize, _g: &mut [f64]) -> Option<f64> {
        None
    }
    /// The value after `opts.probe_iter` fixed-shift steps from every start that is not zero,
    /// with the start's index, by a cheaper route than the f64 steps (the f32 probes of
    /// `theory::probe`) where the tensor has one; None: [`extreme_z_eigenvalue`] probes with
    /// the f64 steps.
    fn probe_values(
        &self,
        _starts: &Starts,
        _maximize: bool,
        _opts: &GeapOptions,
    ) -> Option<Result<Vec<(f64, usize)>>> {
        None
    }
    /// `T[x⁴]`.
    fn value(&self, x: &[f64]) -> f64 {
        let mut g = vec![0.0; self.dim()];
        self.apply3(x, &mut g);
        g.iter().zip(x).map(|(g, x)| g * x).sum()
    }
}

/// [`SymTensor4::step`] through [`SymTensor4::apply3`].
fn plain_step<T: SymTensor4 + ?Sized>(
    t: &T,
    [x, g]: [&[f64]; 2],
    [beta, alpha]: [f64; 2],
    [xn, gn]: [&mut [f64]; 2],
) -> Option<f64> {
    for ((xn, g), x) in xn.iter_mut().zip(g).zip(x) {
        *xn = beta * g + alpha * x;
    }
    let n = dot(xn, xn).sqrt();
    if !(n.is_finite() && n > 0.0) {
        return None;
    }
    let inv = 1.0 / n;
    xn.iter_mut().for_each(|v| *v *= inv);
    t.apply3(xn, gn);
    Some(dot(gn, xn))
}

/// A dense O⁴ tensor (row-major), symmetrised over all 24 index permutations on construction.
#[derive(Clone, Debug)]
pub struct Dense4 {
    o: usize,
    t: Vec<f64>,
}

impl Dense4 {
    /// The O×O×O×O tensor `data` (row-major, O⁴ entries), symmetrised.
    pub fn new(o: usize, data: &[f64]) -> Result<Dense4> {
        if data.len() != o * o * o * o {
            return Err(Error::Input(format!(
                "a dense 4-tensor of dimension {o} needs {} entries, got {}",
                o * o * o * o,
                data.len()
            )));
        }
        let at = |i: [usize; 4]| data[((i[0] * o + i[1]) * o + i[2]) * o + i[3]];
        let perms = permutations4();
        let mut t = vec![0.0; data.len()];
        for (flat, v) in t.iter_mut().enumerate() {
            let idx = [
                flat / (o * o * o),
                (flat / (o * o)) % o,
                (flat / o) % o,
                flat % o,
            ];
            *v = perms
                .iter()
                .map(|p| at([idx[p[0]], idx[p[1]], idx[p[2]], idx[p[3]]]))
                .sum::<f64>()
                / 24.0;
        }
        Ok(Dense4 { o, t })
    }
    /// Entry T_abcd.
    pub fn get(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        let o = self.o;
        self.t[((a * o + b) * o + c) * o + d]
    }
}

fn permutations4() -> Vec<[usize; 4]> {
    let mut out = Vec::with_capacity(24);
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let p = [a, b, c, d];
                    if (0..4).all(|k| p.contains(&k)) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

impl SymTensor4 for Dense4 {
    fn dim(&self) -> usize {
        self.o
    }
    fn apply3(&self, x: &[f64], g: &mut [f64]) {
        let o = self.o;
        let mut gm = vec![0.0; o * o];
        self.apply2(x, &mut gm);
        for a in 0..o {
            g[a] = (0..o).map(|b| gm[a * o + b] * x[b]).sum();
        }
    }
    fn apply2(&self, x: &[f64], gm: &mut [f64]) {
        let o = self.o;
        for (g, row) in gm.iter_mut().zip(self.t.chunks_exact(o * o)) {
            *g = row
                .chunks_exact(o)
                .zip(x)
                .map(|(r, xc)| xc * r.iter().zip(x).map(|(t, xd)| t * xd).sum::<f64>())
                .sum();
        }
    }
}

/// [`SymTensor4::step`] and [`SymTensor4::unit_contraction`] of a family tensor whose moments
/// are the field `$m`: the fused categorical forms of K (`$excess` false) or sym(K − C⊗C)
/// (true), the general route for the other families.
macro_rules! family_steps {
    ($m:tt, $excess:expr) => {
        fn step(&self, xg: [&[f64]; 2], ba: [f64; 2], out: [&mut [f64]; 2]) -> Option<f64> {
            match self.$m.kind {
                FamilyKind::Categorical => {
                    let [xn, gn] = out;
                    categorical_step(self.$m.eta, xg, ba[0], ba[1], $excess, xn, gn)
                }
                _ => plain_step(self, xg, ba, out),
            }
        }
        fn probe_values(
            &self,
            starts: &Starts,
            maximize: bool,
            opts: &GeapOptions,
        ) -> Option<Result<Vec<(f64, usize)>>> {
            if self.$m.kind != FamilyKind::Categorical || !opts.fixed_shift {
                return None;
            }
            let shift = (opts.tau + 12.0 * self.shift_bound(maximize)?) / 4.0;
            Some(categorical_probes(
                self.$m.eta,
                $excess,
                starts,
                maximize,
                opts,
                shift,
            ))
        }
        fn unit_contraction(&self, a: usize, g: &mut [f64]) -> Option<f64> {
            let p = self.$m.eta;
            (self.$m.kind == FamilyKind::Categorical && a < p.len() && g.len() == p.len())
                .then(|| categorical_unit(p, a, $excess, g))
        }
    };
}

/// The fourth central moment K of a family at one input (matrix-free, MATH §7).
#[derive(Clone, Copy, Debug)]
pub struct FourthMoment<'a>(pub Moments<'a>);

impl SymTensor4 for FourthMoment<'_> {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn apply3(&self, x: &[f64], g: &mut [f64]) {
        self.0.kurt_x3(x, g)
    }
    fn apply2(&self, x: &[f64], gm: &mut [f64]) {
        self.0.kurt_x2(x, gm)
    }
    family_steps!(0, false);
    fn shift_bound(&self, maximize: bool) -> Option<f64> {
        // K x² = E[(xᵀs)² s sᵀ] ⪰ 0 for every x: K[x⁴] is convex, c = 0.
        maximize.then_some(0.0)
    }
}

/// sym(K − C⊗C)_abcd = K_abcd − (C_ab C_cd + C_ac C_bd + C_ad C_bc)/3, whose quartic form is
/// that of K − C⊗C: `(K − C⊗C)[u⁴] = Var[(uᵀs)²]` (MATH §5.1).
#[derive(Clone, Debug)]
pub struct ExcessMoment<'a> {
    m: Moments<'a>,
    /// An upper bound on λ_max(C).
    lam_c: f64,
}

impl<'a> ExcessMoment<'a> {
    /// sym(K − C⊗C) of the moments `m`.
    pub fn new(m: Moments<'a>) -> Self {
        ExcessMoment {
            lam_c: m.cov_max_bound(),
            m,
        }
    }
}

impl SymTensor4 for ExcessMoment<'_> {
    fn dim(&self) -> usize {
        self.m.dim()
    }
    fn apply3(&self, x: &[f64], g: &mut [f64]) {
        // K x³ − (xᵀCx) C x.
        self.m.excess_x3(x, g)
    }
    fn apply2(&self, x: &[f64], gm: &mut [f64]) {
        // K x² − ((xᵀCx) C + 2 (Cx)(Cx)ᵀ)/3.
        let o = self.dim();
        self.m.kurt_x2(x, gm);
        let c = self.m.cov_matrix();
        let cx = self.m.cov_apply(x);
        let q: f64 = cx.iter().zip(x).map(|(c, x)| c * x).sum();
        for a in 0..o {
            for b in 0..o {
                gm[a * o + b] -= (q * c[a * o + b] + 2.0 * cx[a] * cx[b]) / 3.0;
            }
        }
    }
    family_steps!(m, true);
    fn shift_bound(&self, maximize: bool) -> Option<f64> {
        // At unit x, (K − C⊗C) x² ⪰ −((xᵀCx) C + 2 (Cx)(Cx)ᵀ)/3 ⪰ −λ_max(C)² I, since
        // K x² ⪰ 0, xᵀCx ≤ λ_max(C) and ‖Cx‖² ≤ λ_max(C)².
        maximize.then_some(self.lam_c * self.lam_c)
    }
}

/// Options of the power method.
#[derive(Clone, Copy, Debug)]
pub struct GeapOptions {
    /// τ of the adaptive shift: the shifted function's Hessian is kept ⪰ τ I (MATH §7: 1e-6).
    pub tau: f64,
    /// Stop when |λ_new − λ| ≤ tol · |λ|.
    pub tol: f64,
    /// Iteration cap per start.
    pub max_iter: usize,
    /// The adaptive shift is recomputed (one O×O eigensolve) every this many iterations, and
    /// whenever a step with the previous shift fails to improve f.
    pub shift_every: usize,
    /// Multi-start: every start first runs `probe_iter` iterations, then the `keep` best
    /// (distinct) ones run to convergence.
    pub probe_iter: usize,
    /// Number of probed starts run to convergence.
    pub keep: usize,
    /// Use the tensor's fixed shift ([`SymTensor4::shift_bound`]) where it has one; false:
    /// always the adaptive shift (the previous method, O(O³) per shift).
    pub fixed_shift: bool,
}

impl Default for GeapOptions {
    fn default() -> Self {
        GeapOptions {
            tau: 1e-6,
            tol: 1e-14,
            max_iter: 5000,
            shift_every: 4,
            probe_iter: 3,
            keep: 3,
            fixed_shift: true,
        }
    }
}

/// A Z-eigenpair T x³ = λ x, ‖x‖ = 1, from one run of the method.
#[derive(Clone, Debug, PartialEq)]
pub struct ZEigenpair {
    /// The Z-eigenvalue λ = `T[x⁴]`.
    pub value: f64,
    /// The unit Z-eigenvector x.
    pub vector: Vec<f64>,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the tolerance was met within the iteration cap.
    pub converged: bool,
}

fn normalise(x: &mut [f64]) -> bool {
    let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(n.is_finite() && n > 0.0) {
        return false;
    }
    x.iter_mut().for_each(|v| *v /= n);
    true
}

/// The vectors of one run of the method: the iterate x, g = T x³, and the candidates xn, gn.
/// Allocated once per [`extreme_z_eigenvalue`] and reused by every start.
struct Work {
    x: Vec<f64>,
    g: Vec<f64>,
    xn: Vec<f64>,
    gn: Vec<f64>,
}

impl Work {
    fn new(o: usize) -> Work {
        Work {
            x: vec![0.0; o],
            g: vec![0.0; o],
            xn: vec![0.0; o],
            gn: vec![0.0; o],
        }
    }
}

/// How one run ended: λ, the iterations and whether the tolerance was met (x is in the work).
#[derive(Clone, Copy, Debug)]
struct Run {
    value: f64,
    iterations: usize,
    converged: bool,
}

/// Accepts a GEAP step: the new iterate and its gradient (`xn`, `gn`) replace the old ones and
/// λ becomes `ln`; true when |ln − λ| ≤ tol·|λ| (converged).
fn accept_step(w: &mut Work, lambda: &mut f64, ln: f64, tol: f64) -> bool {
    std::mem::swap(&mut w.x, &mut w.xn);
    std::mem::swap(&mut w.g, &mut w.gn);
    let done = (ln - *lambda).abs() <= tol * lambda.abs();
    *lambda = ln;
    done
}

/// GEAP from `x0` (normalised here): β = +1 ascends to a local maximum of `T[x⁴]` on the
/// sphere, β = −1 descends to a local minimum. At most `max_iter` iterations.
pub fn geap(
    t: &dyn SymTensor4,
    x0: &[f64],
    maximize: bool,
    opts: &GeapOptions,
    max_iter: usize,
) -> Result<ZEigenpair> {
    let o = t.dim();
    if x0.len() != o {
        return Err(Error::Input(format!(
            "a start vector has {} entries, the tensor has dimension {o}",
            x0.len()
        )));
    }
    let mut w = Work::new(o);
    w.x.copy_from_slice(x0);
    let r = geap_in(t, &mut w, None, maximize, opts, max_iter)?;
    Ok(ZEigenpair {
        value: r.value,
        vector: w.x,
        iterations: r.iterations,
        converged: r.converged,
    })
}

/// [`geap`] from the start in `w.x` (of length O), which it normalises; the final iterate is
/// left in `w.x`. `unit`: the start is e_a (then its contraction may come in closed form).
fn geap_in(
    t: &dyn SymTensor4,
    w: &mut Work,
    unit: Option<usize>,
    maximize: bool,
    opts: &GeapOptions,
    max_iter: usize,
) -> Result<Run> {
    let beta = if maximize { 1.0 } else { -1.0 };
    if opts.fixed_shift {
        if let Some(c) = t.shift_bound(maximize) {
            // The start e_a contracted in closed form, or any start normalised and contracted
            // in one step (β = 0, α = 1; x stands in for g).
            let lambda = match unit.and_then(|a| t.unit_contraction(a, &mut w.g)) {
                Some(lambda) => lambda,
                None => {
                    let lambda = t
                        .step([&w.x, &w.x], [0.0, 1.0], [&mut w.xn, &mut w.gn])
                        .ok_or_else(zero_start)?;
                    std::mem::swap(&mut w.x, &mut w.xn);
                    std::mem::swap(&mut w.g, &mut w.gn);
                    lambda
                }
            };
            return geap_fixed(
                t,
                w,
                lambda,
                beta,
                opts,
                max_iter,
                (opts.tau + 12.0 * c) / 4.0,
            );
        }
    }
    if !normalise(&mut w.x) {
        return Err(zero_start());
    }
    let o = t.dim();
    let mut gm = vec![0.0; o * o];
    let mut hm = vec![0.0; o * o];
    t.apply3(&w.x, &mut w.g);
    let mut lambda = dot(&w.g, &w.x);
    let mut converged = false;
    let mut it = 0;
    let (mut alpha, mut age, mut refresh) = (0.0, 0usize, true);
    while it < max_iter {
        it += 1;
        let fresh = refresh || age >= opts.shift_every.max(1);
        let (x, g) = (&w.x, &w.g);
        if fresh {
            t.apply2(x, &mut gm);
            // Hessian of f(x) = T[x⁴]/‖x‖⁴ at the unit x (MATH §7), times β.
            for a in 0..o {
                for b in 0..o {
                    let mut h = 12.0 * gm[a * o + b] - 16.0 * (g[a] * x[b] + x[a] * g[b])
                        + 24.0 * lambda * x[a] * x[b];
                    if a == b {
                        h -= 4.0 * lambda;
                    }
                    hm[a * o + b] = beta * h;
                }
            }
            alpha = beta * ((opts.tau - sym_min_eigenvalue(o, &hm)?) / 4.0).max(0.0);
            age = 0;
        }
        age += 1;
        for ((xn, g), x) in w.xn.iter_mut().zip(g).zip(x) {
            *xn = beta * (g + alpha * x);
        }
        if !normalise(&mut w.xn) {
            converged = true;
            break;
        }
        t.apply3(&w.xn, &mut w.gn);
        let ln = dot(&w.gn, &w.xn);
        if !ln.is_finite() {
            return Err(Error::NonFinite {
                what: "a tensor eigenvalue iteration".into(),
                index: it,
            });
        }
        // A reused shift must still give monotone progress; otherwise redo the step with the
        // exact adaptive shift.
        if !fresh && beta * (ln - lambda) < -opts.tol * lambda.abs() {
            refresh = true;
            continue;
        }
        refresh = false;
        if accept_step(w, &mut lambda, ln, opts.tol) {
            converged = true;
            break;
        }
    }
    Ok(Run {
        value: lambda,
        iterations: it,
        converged,
    })
}

/// The iterate of the fixed-shift power method, with its candidate step: the f64 [`Work`] of
/// a [`SymTensor4`] or the f32 probes of `theory::probe`.
pub(crate) trait ShiftedIterate {
    /// The candidate step [xn, gn] from the current iterate with \[β, α\]: returns T\[xn⁴\], or
    /// None when βg + αx is zero or not finite.
    fn candidate(&mut self, beta: f64, alpha: f64) -> Option<f64>;
    /// Makes the candidate the current iterate.
    fn accept(&mut self);
}

/// A tensor and its f64 work vectors.
struct TensorIterate<'a> {
    t: &'a dyn SymTensor4,
    w: &'a mut Work,
}

impl ShiftedIterate for TensorIterate<'_> {
    fn candidate(&mut self, beta: f64, alpha: f64) -> Option<f64> {
        let w = &mut *self.w;
        self.t
            .step([&w.x, &w.g], [beta, alpha], [&mut w.xn, &mut w.gn])
    }
    fn accept(&mut self) {
        std::mem::swap(&mut self.w.x, &mut self.w.xn);
        std::mem::swap(&mut self.w.g, &mut self.w.gn);
    }
}

/// GEAP with a certified fixed shift `shift` (> 0; [`SymTensor4::shift_bound`]), O(O) per step
/// for the family tensors, from the unit `w.x` with `w.g` = T x³ and λ = T\[x⁴\].
fn geap_fixed(
    t: &dyn SymTensor4,
    w: &mut Work,
    lambda: f64,
    beta: f64,
    opts: &GeapOptions,
    max_iter: usize,
    shift: f64,
) -> Result<Run> {
    fixed_shift_run(
        &mut TensorIterate { t, w },
        lambda,
        beta,
        opts.tol,
        max_iter,
        shift,
    )
}

/// The fixed-shift method from an iterate of value λ. Every step first tries a smaller shift
/// (halved after each success, from the certified one) and keeps it if f does not decrease;
/// otherwise the step is redone with the certified shift, with which f never decreases. A
/// smaller shift is a longer step: the probes and the final convergence advance about as fast
/// as with the adaptive shift.
fn fixed_shift_run(
    it: &mut impl ShiftedIterate,
    mut lambda: f64,
    beta: f64,
    tol: f64,
    max_iter: usize,
    shift: f64,
) -> Result<Run> {
    let mut iterations = 0;
    let mut trial = 0.5 * shift;
    while iterations < max_iter {
        iterations += 1;
        let mut ln = f64::NAN;
        for a in [trial, shift] {
            let Some(v) = it.candidate(beta, a) else {
                return Ok(Run {
                    value: lambda,
                    iterations,
                    converged: true,
                });
            };
            ln = v;
            if !ln.is_finite() {
                return Err(Error::NonFinite {
                    what: "a tensor eigenvalue iteration".into(),
                    index: iterations,
                });
            }
            if a == shift {
                // The certified shift: monotone up to round-off.
                trial = (4.0 * trial).min(0.5 * shift);
                break;
            }
            if beta * (ln - lambda) >= -tol * lambda.abs() {
                trial *= 0.5;
                break;
            }
        }
        it.accept();
        let done = (ln - lambda).abs() <= tol * lambda.abs();
        lambda = ln;
        if done {
            return Ok(Run {
                value: lambda,
                iterations,
                converged: true,
            });
        }
    }
    Ok(Run {
        value: lambda,
        iterations,
        converged: false,
    })
}

/// [`SymTensor4::probe_values`] of the categorical K (`excess` false) or sym(K − C⊗C) (true)
/// at class probabilities `p`, in f32 ([`CategoricalProbe`]) with the fixed shift `shift`.
fn categorical_probes(
    p: &[f64],
    excess: bool,
    starts: &Starts,
    maximize: bool,
    opts: &GeapOptions,
    shift: f64,
) -> Result<Vec<(f64, usize)>> {
    let beta = if maximize { 1.0 } else { -1.0 };
    // The tolerance of f32 values: with f64's, rounding alone would fail the trial shifts.
    let tol = opts.tol.max(PROBE_TOL);
    crate::simd::with_denormals_flushed(|| {
        categorical_probes_flushed(p, excess, starts, beta, opts.probe_iter, shift, tol)
    })
}

/// The body of [`categorical_probes`], run with denormals flushed to zero
/// ([`crate::simd::with_denormals_flushed`]: the probes only rank the starts).
fn categorical_probes_flushed(
    p: &[f64],
    excess: bool,
    starts: &Starts,
    beta: f64,
    probe_iter: usize,
    shift: f64,
    tol: f64,
) -> Result<Vec<(f64, usize)>> {
    let mut probe = CategoricalProbe::new(p, excess);
    let mut x = vec![0.0; p.len()];
    let mut out = Vec::with_capacity(starts.len());
    for i in 0..starts.len() {
        let lambda = match starts.unit(i) {
            Some(a) if a < p.len() => probe.start_unit(p, a),
            Some(_) => continue,
            None => {
                if !starts.write(i, &mut x) {
                    continue;
                }
                // Normalised in f64 first: entries that are tiny but not zero stay in f32 range.
                normalise(&mut x)
                    .then(|| probe.start_vector(&x))
                    .flatten()
                    .ok_or_else(zero_start)?
            }
        };
        let run = fixed_shift_run(&mut probe, lambda, beta, tol, probe_iter, shift)?;
        out.push((run.value, i));
    }
    Ok(out)
}

/// The relative tolerance of the f32 probes' values (16 f32 ulps).
const PROBE_TOL: f64 = 16.0 * f32::EPSILON as f64;

/// The error of a start that is zero or not finite.
fn zero_start() -> Error {
    Error::Input("a start vector of the power method is zero or not finite".into())
}

/// Start vectors of the power method: the unit vectors e_0 … e_{units−1} (implicit: O of
/// them cost nothing to store), then explicit vectors of length O.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Starts {
    units: usize,
    dense: Vec<Vec<f64>>,
}

impl Starts {
    /// The number of starts.
    pub fn len(&self) -> usize {
        self.units + self.dense.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Some(a) when start `i` is the unit vector e_a.
    fn unit(&self, i: usize) -> Option<usize> {
        (i < self.units).then_some(i)
    }
    /// Writes start `i` (< [`Starts::len`]) into `out` (of the starts' length O); false if
    /// the start is zero.
    fn write(&self, i: usize, out: &mut [f64]) -> bool {
        if i < self.units {
            if i >= out.len() {
                return false;
            }
            out.fill(0.0);
            out[i] = 1.0;
            return true;
        }
        let v = &self.dense[i - self.units];
        if v.iter().all(|v| *v == 0.0) {
            return false;
        }
        out.copy_from_slice(v);
        true
    }
}

impl From<Vec<Vec<f64>>> for Starts {
    /// Explicit starts only.
    fn from(dense: Vec<Vec<f64>>) -> Starts {
        Starts { units: 0, dense }
    }
}

/// The standard starts (MATH §7): e_a, 1/√O, (e_a − e_b)/√2 for pairs among the `pair_top`
/// entries with the largest `weights` (all pairs when `weights` is None), the `extra`
/// vectors (e.g. eigenvectors of C) and `random` Gaussian vectors from the counter-based RNG.
pub fn standard_starts(
    o: usize,
    weights: Option<&[f64]>,
    pair_top: usize,
    extra: &[Vec<f64>],
    random: usize,
) -> Starts {
    let mut dense = vec![vec![1.0 / (o as f64).sqrt(); o]];
    let mut order: Vec<usize> = (0..o).collect();
    if let Some(w) = weights {
        order.sort_by(|&a, &b| w[b].total_cmp(&w[a]));
        order.truncate(pair_top.max(2).min(o));
    }
    for (i, &a) in order.iter().enumerate() {
        for &b in &order[i + 1..] {
            let mut v = vec![0.0; o];
            v[a] = std::f64::consts::FRAC_1_SQRT_2;
            v[b] = -std::f64::consts::FRAC_1_SQRT_2;
            dense.push(v);
        }
    }
    dense.extend(extra.iter().filter(|v| v.len() == o).cloned());
    for r in 0..random {
        let v: Vec<f64> = (0..o.div_ceil(2))
            .flat_map(|k| {
                let w = rng::block(0x7A3E_16E0, 0x5EED, r as u32, k as u32, 0);
                let (a, b) = rng::box_muller(w[0], w[1]);
                [a, b]
            })
            .take(o)
            .collect();
        dense.push(v);
    }
    Starts { units: o, dense }
}

/// The extreme Z-eigenvalue over several starts: every start runs `probe_iter` iterations,
/// then the `keep` best distinct ones run to convergence; the best value wins. Starts that
/// are zero or of another length than the tensor's are skipped.
pub fn extreme_z_eigenvalue(
    t: &dyn SymTensor4,
    starts: &Starts,
    maximize: bool,
    opts: &GeapOptions,
) -> Result<ZEigenpair> {
    let sign = if maximize { 1.0 } else { -1.0 };
    // The probe steps always use the exact adaptive shift (or the fixed one): they decide
    // which starts are kept.
    let exact = GeapOptions {
        shift_every: 1,
        ..*opts
    };
    let o = t.dim();
    if let Some(v) = starts.dense.iter().find(|v| v.len() != o) {
        return Err(Error::Input(format!(
            "a start vector has {} entries, the tensor has dimension {o}",
            v.len()
        )));
    }
    let mut w = Work::new(o);
    // Only the values are kept (not O vectors of length O): the kept probes are run again,
    // with the same result, as the method is deterministic.
    let mut probes = match t.probe_values(starts, maximize, &exact) {
        Some(probes) => probes?,
        None => {
            let mut probes: Vec<(f64, usize)> = Vec::with_capacity(starts.len());
            for i in 0..starts.len() {
                if starts.write(i, &mut w.x) {
                    probes.push((
                        geap_in(t, &mut w, starts.unit(i), maximize, &exact, opts.probe_iter)?
                            .value,
                        i,
                    ));
                }
            }
            probes
        }
    };
    probes.sort_by(|a, b| (sign * b.0).total_cmp(&(sign * a.0)));
    let mut kept: Vec<ZEigenpair> = Vec::new();
    for (_, i) in probes {
        if kept.len() >= opts.keep.max(1) {
            break;
        }
        starts.write(i, &mut w.x);
        let r = geap_in(t, &mut w, starts.unit(i), maximize, &exact, opts.probe_iter)?;
        // Distinct up to sign (T[x⁴] is even).
        let same = kept
            .iter()
            .any(|k| dot(&k.vector, &w.x).abs() > 1.0 - 1e-10);
        if !same {
            kept.push(ZEigenpair {
                value: r.value,
                vector: w.x.clone(),
                iterations: r.iterations,
                converged: r.converged,
            });
        }
    }
    let mut best: Option<ZEigenpair> = None;
    for k in kept {
        let r = if k.converged {
            k
        } else {
            let more = geap(t, &k.vector, maximize, opts, opts.max_iter)?;
            ZEigenpair {
                iterations: k.iterations + more.iterations,
                ..more
            }
        };
        if best
            .as_ref()
            .is_none_or(|b| sign * r.value > sign * b.value)
        {
            best = Some(r);
        }
    }
    best.ok_or_else(|| Error::Input("the power method needs at least one non-zero start".into()))
}

/// Eigenvectors of a symmetric O×O matrix (row-major), as extra starts.
pub fn eigenvector_starts(o: usize, m: &[f64], count: usize) -> Result<Vec<Vec<f64>>> {
    let (_, vecs) = sym_eigen(o, m)?;
    Ok(vecs.into_iter().take(count).collect())
}

//! Independent oracle for the tests: exact first and second derivatives of the network output
//! with respect to each parameter by hyper-dual numbers (forward-mode autodiff, no shared code
//! with the engine's recursions or activation derivatives), and the family moments as dense
//! C (O×O) and K (O⁴) tensors built from their definitions (MATH §2).
#![allow(dead_code, clippy::needless_range_loop)]

use diagfim::model::Dense;
use diagfim::{Activation, Label, Mlp};
use ndarray::{Array1, Array2};
use std::ops::{Add, Div, Mul, Neg, Sub};

/// a + b ε1 + c ε2 + d ε1ε2 with ε1² = ε2² = 0; seeding b = c = 1 along θ_i gives
/// d = ∂²f/∂θ_i² exactly.
#[derive(Clone, Copy, Debug)]
pub struct Hd {
    pub re: f64,
    pub e1: f64,
    pub e2: f64,
    pub e12: f64,
}

impl Hd {
    pub fn c(v: f64) -> Hd {
        Hd {
            re: v,
            e1: 0.0,
            e2: 0.0,
            e12: 0.0,
        }
    }
    pub fn var(v: f64) -> Hd {
        Hd {
            re: v,
            e1: 1.0,
            e2: 1.0,
            e12: 0.0,
        }
    }
    /// f(self) given f, f', f'' at self.re (the chain rule for hyper-duals).
    fn chain(self, f: f64, d1: f64, d2: f64) -> Hd {
        Hd {
            re: f,
            e1: d1 * self.e1,
            e2: d1 * self.e2,
            e12: d1 * self.e12 + d2 * self.e1 * self.e2,
        }
    }
    pub fn exp(self) -> Hd {
        let e = self.re.exp();
        self.chain(e, e, e)
    }
    pub fn ln(self) -> Hd {
        let r = self.re;
        self.chain(r.ln(), 1.0 / r, -1.0 / (r * r))
    }
}

impl Add for Hd {
    type Output = Hd;
    fn add(self, o: Hd) -> Hd {
        Hd {
            re: self.re + o.re,
            e1: self.e1 + o.e1,
            e2: self.e2 + o.e2,
            e12: self.e12 + o.e12,
        }
    }
}
impl Sub for Hd {
    type Output = Hd;
    fn sub(self, o: Hd) -> Hd {
        self + (-o)
    }
}
impl Neg for Hd {
    type Output = Hd;
    fn neg(self) -> Hd {
        Hd {
            re: -self.re,
            e1: -self.e1,
            e2: -self.e2,
            e12: -self.e12,
        }
    }
}
impl Mul for Hd {
    type Output = Hd;
    fn mul(self, o: Hd) -> Hd {
        Hd {
            re: self.re * o.re,
            e1: self.re * o.e1 + self.e1 * o.re,
            e2: self.re * o.e2 + self.e2 * o.re,
            e12: self.re * o.e12 + self.e1 * o.e2 + self.e2 * o.e1 + self.e12 * o.re,
        }
    }
}
impl Div for Hd {
    type Output = Hd;
    fn div(self, o: Hd) -> Hd {
        let r = o.re;
        self * o.chain(1.0 / r, -1.0 / (r * r), 2.0 / (r * r * r))
    }
}

/// Activations written from exp and ln only (not from the library's closed forms).
pub fn act(a: Activation, z: Hd) -> Hd {
    let one = Hd::c(1.0);
    match a {
        Activation::Identity => z,
        Activation::Sigmoid => one / (one + (-z).exp()),
        Activation::Tanh => {
            let e = (z * Hd::c(2.0)).exp();
            (e - one) / (e + one)
        }
        Activation::Relu => {
            if z.re > 0.0 {
                z
            } else {
                Hd::c(0.0)
            }
        }
        Activation::Softplus => (one + z.exp()).ln(),
        Activation::LogSigmoid => -(one + (-z).exp()).ln(),
    }
}

/// h(x) in hyper-dual numbers, parameter number `idx` (flat index over [`Mlp::params`] order)
/// entering as `seed(value, idx)`.
fn forward_seeded(model: &Mlp, x: &[f64], seed: impl Fn(f64, usize) -> Hd) -> Vec<Hd> {
    let mut a: Vec<Hd> = x.iter().map(|&v| Hd::c(v)).collect();
    let mut flat = 0usize;
    let nl = model.layers().len();
    for (l, d) in model.layers().iter().enumerate() {
        let (n_out, n_in) = (d.outputs(), d.inputs());
        let b_base = flat + n_out * n_in;
        let mut z = Vec::with_capacity(n_out);
        for j in 0..n_out {
            let mut s = match &d.bias {
                Some(b) => seed(b[j], b_base + j),
                None => Hd::c(0.0),
            };
            for k in 0..n_in {
                s = s + seed(d.weight[[j, k]], flat + j * n_in + k) * a[k];
            }
            z.push(s);
        }
        flat = b_base + if d.bias.is_some() { n_out } else { 0 };
        a = if l + 1 < nl {
            z.into_iter()
                .map(|v| act(model.activations()[l], v))
                .collect()
        } else {
            z
        };
    }
    a
}

/// h(x) with parameter number `target` seeded on both ε1 and ε2.
fn forward_hd(model: &Mlp, x: &[f64], target: usize) -> Vec<Hd> {
    forward_seeded(
        model,
        x,
        |v, idx| if idx == target { Hd::var(v) } else { Hd::c(v) },
    )
}

/// J (P×O) and D (P×O): ∂h_a/∂θ_i and ∂²h_a/∂θ_i², in flat [`Mlp::params`] order.
pub fn jac_and_diag_hess(model: &Mlp, x: &[f64]) -> (Array2<f64>, Array2<f64>) {
    let p = model.num_params();
    let o = model.output_dim();
    let mut j = Array2::zeros((p, o));
    let mut d = Array2::zeros((p, o));
    for i in 0..p {
        let h = forward_hd(model, x, i);
        for a in 0..o {
            j[[i, a]] = h[a].e1;
            d[[i, a]] = h[a].e12;
        }
    }
    (j, d)
}

/// The network output from the oracle (real part).
pub fn output(model: &Mlp, x: &[f64]) -> Vec<f64> {
    forward_hd(model, x, usize::MAX)
        .iter()
        .map(|v| v.re)
        .collect()
}

/// Dense moments of the sufficient statistic: η, C (O×O) and K (O⁴, flattened).
pub struct DenseMoments {
    pub eta: Vec<f64>,
    pub c: Array2<f64>,
    pub k: Vec<f64>,
    pub o: usize,
}

impl DenseMoments {
    pub fn kk(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        let o = self.o;
        self.k[((a * o + b) * o + c) * o + d]
    }
    /// K[u⁴] − (uᵀCu)².
    pub fn var1(&self, u: &[f64]) -> f64 {
        let o = self.o;
        let mut k4 = 0.0;
        for a in 0..o {
            for b in 0..o {
                for c in 0..o {
                    for d in 0..o {
                        k4 += self.kk(a, b, c, d) * u[a] * u[b] * u[c] * u[d];
                    }
                }
            }
        }
        k4 - self.quad(u).powi(2)
    }
    pub fn quad(&self, u: &[f64]) -> f64 {
        let u = Array1::from(u.to_vec());
        u.dot(&self.c.dot(&u))
    }
}

/// Categorical moments from the definition K_abcd = Σ_y p_y Π (δ_ya − p_a).
pub fn categorical_moments(h: &[f64]) -> DenseMoments {
    let o = h.len();
    let m = h.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = h.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|v| v / z).collect();
    let s = |y: usize, a: usize| if y == a { 1.0 - p[a] } else { -p[a] };
    let mut c = Array2::zeros((o, o));
    let mut k = vec![0.0; o * o * o * o];
    for y in 0..o {
        for a in 0..o {
            for b in 0..o {
                c[[a, b]] += p[y] * s(y, a) * s(y, b);
                for cc in 0..o {
                    for d in 0..o {
                        k[((a * o + b) * o + cc) * o + d] +=
                            p[y] * s(y, a) * s(y, b) * s(y, cc) * s(y, d);
                    }
                }
            }
        }
    }
    DenseMoments { eta: p, c, k, o }
}

/// Gaussian moments: C = I/σ², K by Isserlis' theorem.
pub fn gaussian_moments(h: &[f64], sigma2: f64) -> DenseMoments {
    let o = h.len();
    let dl = |a: usize, b: usize| if a == b { 1.0 } else { 0.0 };
    let mut k = vec![0.0; o * o * o * o];
    for a in 0..o {
        for b in 0..o {
            for c in 0..o {
                for d in 0..o {
                    k[((a * o + b) * o + c) * o + d] =
                        (dl(a, b) * dl(c, d) + dl(a, c) * dl(b, d) + dl(a, d) * dl(b, c))
                            / (sigma2 * sigma2);
                }
            }
        }
    }
    DenseMoments {
        eta: h.iter().map(|v| v / sigma2).collect(),
        c: Array2::eye(o) / sigma2,
        k,
        o,
    }
}

/// Bernoulli moments by enumerating all 2^O label vectors y ∈ {0,1}^O with their
/// probabilities Π p_a^y_a (1−p_a)^(1−y_a): C and K from the definition, no independence used.
pub fn bernoulli_moments(h: &[f64]) -> DenseMoments {
    let o = h.len();
    let p: Vec<f64> = h.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    let mut c = Array2::zeros((o, o));
    let mut k = vec![0.0; o * o * o * o];
    for bits in 0..(1usize << o) {
        let y: Vec<f64> = (0..o).map(|a| ((bits >> a) & 1) as f64).collect();
        let w: f64 = (0..o)
            .map(|a| if y[a] == 1.0 { p[a] } else { 1.0 - p[a] })
            .product();
        let s: Vec<f64> = (0..o).map(|a| y[a] - p[a]).collect();
        add_outer(&mut c, &mut k, w, &s);
    }
    DenseMoments { eta: p, c, k, o }
}

/// Poisson moments from truncated series: the 1-D central moments E[(y − λ)^m], m ≤ 4, by
/// summing the pmf to Y = λ + 40 + 20√λ (the tail beyond is < 1e-30 of the total), then
/// K_abcd = E[s_a s_b s_c s_d] as the product over distinct coordinates (independence).
pub fn poisson_moments(h: &[f64]) -> DenseMoments {
    let o = h.len();
    let lam: Vec<f64> = h.iter().map(|v| v.exp()).collect();
    let m: Vec<[f64; 5]> = lam
        .iter()
        .map(|&l| {
            let top = (l + 40.0 + 20.0 * l.sqrt()).ceil() as u64;
            // ln P(y) = −λ + y ln λ − ln y! (log space: e^−λ underflows for λ > 745).
            let mut ln_fact = 0.0;
            let mut mom = [0.0; 5];
            for y in 0..=top {
                if y > 0 {
                    ln_fact += (y as f64).ln();
                }
                let pmf = (-l + y as f64 * l.ln() - ln_fact).exp();
                let d = y as f64 - l;
                for (e, mm) in mom.iter_mut().enumerate() {
                    *mm += pmf * d.powi(e as i32);
                }
            }
            mom
        })
        .collect();
    let mut c = Array2::zeros((o, o));
    let mut k = vec![0.0; o * o * o * o];
    for a in 0..o {
        c[[a, a]] = m[a][2];
    }
    for a in 0..o {
        for b in 0..o {
            for cc in 0..o {
                for d in 0..o {
                    let mut mult = vec![0usize; o];
                    for i in [a, b, cc, d] {
                        mult[i] += 1;
                    }
                    k[((a * o + b) * o + cc) * o + d] = (0..o).map(|i| m[i][mult[i]]).product();
                }
            }
        }
    }
    DenseMoments { eta: lam, c, k, o }
}

fn add_outer(c: &mut Array2<f64>, k: &mut [f64], w: f64, s: &[f64]) {
    let o = s.len();
    for a in 0..o {
        for b in 0..o {
            c[[a, b]] += w * s[a] * s[b];
            for cc in 0..o {
                for d in 0..o {
                    k[((a * o + b) * o + cc) * o + d] += w * s[a] * s[b] * s[cc] * s[d];
                }
            }
        }
    }
}

/// The dense moments of any family at h, from the definitions above.
pub fn family_moments(family: &diagfim::Family, h: &[f64]) -> DenseMoments {
    match family {
        diagfim::Family::Categorical(_) => categorical_moments(h),
        diagfim::Family::Gaussian(g) => gaussian_moments(h, g.sigma2()),
        diagfim::Family::Bernoulli(_) => bernoulli_moments(h),
        diagfim::Family::Poisson(_) => poisson_moments(h),
    }
}

/// Oracle values per parameter (flat order) for one input.
pub struct OracleInput {
    pub fisher: Vec<f64>,
    pub var1: Vec<f64>,
    pub var2: Vec<f64>,
    pub ef: Vec<f64>,
}

/// Exact I, N·Var Î1, N·Var Î2 (Eqs. 23–25 with dense tensors) and the empirical Fisher.
pub fn oracle_input(
    model: &Mlp,
    gaussian: Option<f64>,
    x: &[f64],
    label: Option<&Label>,
) -> OracleInput {
    let family = match gaussian {
        Some(s2) => diagfim::Family::from_name("gaussian", s2).unwrap(),
        None => diagfim::Family::from_name("categorical", 1.0).unwrap(),
    };
    oracle_input_family(model, &family, x, label)
}

/// [`oracle_input`] for any family (dense moments from [`family_moments`]).
pub fn oracle_input_family(
    model: &Mlp,
    family: &diagfim::Family,
    x: &[f64],
    label: Option<&Label>,
) -> OracleInput {
    let h = output(model, x);
    let mom = family_moments(family, &h);
    let (j, d) = jac_and_diag_hess(model, x);
    // t(y): one-hot, y/σ² (Gaussian) or y itself (Bernoulli, Poisson).
    let t: Option<Vec<f64>> = label.map(|y| match (y, family) {
        (Label::Class(c), _) => (0..h.len())
            .map(|a| if a == *c { 1.0 } else { 0.0 })
            .collect(),
        (Label::Target(v), diagfim::Family::Gaussian(g)) => {
            v.iter().map(|v| v / g.sigma2()).collect()
        }
        (Label::Target(v), _) => v.clone(),
    });
    let mut out = OracleInput {
        fisher: vec![],
        var1: vec![],
        var2: vec![],
        ef: vec![],
    };
    for i in 0..j.nrows() {
        let ji = j.row(i).to_vec();
        let di = d.row(i).to_vec();
        out.fisher.push(mom.quad(&ji));
        out.var1.push(mom.var1(&ji));
        out.var2.push(mom.quad(&di));
        if let Some(t) = &t {
            let g: f64 = (0..h.len()).map(|a| ji[a] * (t[a] - mom.eta[a])).sum();
            out.ef.push(g * g);
        }
    }
    out
}

/// A deterministic pseudo-random model with weights ~ scale·U(−√3, √3) (unit variance).
pub fn random_model(
    widths: &[usize],
    acts: &[Activation],
    scale: f64,
    seed: u64,
    biases: bool,
) -> Mlp {
    let mut layers = Vec::new();
    let mut counter = 0u32;
    let mut draw = || {
        counter += 1;
        let w = diagfim::rng::block(seed, 99, counter, 0, 0)[0];
        (2.0 * diagfim::rng::uniform(w) - 1.0) * 3f64.sqrt() * scale
    };
    for (l, w) in widths.windows(2).enumerate() {
        let weight = Array2::from_shape_fn((w[1], w[0]), |_| draw());
        let bias = biases.then(|| Array1::from_shape_fn(w[1], |_| draw()));
        layers.push(Dense {
            key: 2 * l,
            weight,
            bias,
        });
    }
    Mlp::new(layers, acts.to_vec()).unwrap()
}

/// Deterministic pseudo-random inputs [b, n].
pub fn random_inputs(b: usize, n: usize, seed: u64) -> Array2<f64> {
    Array2::from_shape_fn((b, n), |(i, k)| {
        let w = diagfim::rng::block(seed, 98, i as u32, k as u32, 0)[0];
        (2.0 * diagfim::rng::uniform(w) - 1.0) * 1.5
    })
}

/// Flat per-parameter values of a report key (in [`Mlp::params`] order).
pub fn flat(report: &diagfim::Report, key: diagfim::Key) -> Vec<f64> {
    report
        .params
        .iter()
        .flat_map(|p| p.values[&key].iter().copied().collect::<Vec<_>>())
        .collect()
}

/// max |a − b| / max(|b|_∞, tiny): relative to the largest magnitude of the reference.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Elementwise relative error with an absolute floor of `floor`·max|b|.
pub fn max_rel_elementwise(a: &[f64], b: &[f64], floor: f64) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (y.abs() + floor * scale + 1e-300))
        .fold(0.0, f64::max)
}

/// A copy of `model` with flat parameter `index` ([`Mlp::params`] order) moved by `delta`.
pub fn perturb(model: &Mlp, index: usize, delta: f64) -> Mlp {
    let mut layers = model.layers().to_vec();
    let mut i = index;
    for d in layers.iter_mut() {
        let nw = d.weight.len();
        if i < nw {
            let cols = d.weight.ncols();
            d.weight[[i / cols, i % cols]] += delta;
            return Mlp::new(layers, model.activations().to_vec()).unwrap();
        }
        i -= nw;
        if let Some(b) = d.bias.as_mut() {
            if i < b.len() {
                b[i] += delta;
                return Mlp::new(layers, model.activations().to_vec()).unwrap();
            }
            i -= b.len();
        }
    }
    panic!("parameter index {index} out of range");
}

/// Runs an analysis with the given options (no progress callback).
pub fn analyze_opts(
    model: &Mlp,
    family: &dyn diagfim::ExpFamily,
    x: ndarray::ArrayView2<f64>,
    labels: Option<&[Label]>,
    options: diagfim::AnalysisOptions,
) -> diagfim::Report {
    diagfim::analyze(&diagfim::Request {
        model,
        family,
        inputs: x,
        labels,
        options,
        progress: None,
    })
    .unwrap()
}

/// Runs the CPU engine with `per_input` results.
pub fn run_cpu(
    model: &Mlp,
    family: &dyn diagfim::ExpFamily,
    x: ndarray::ArrayView2<f64>,
    samples: usize,
    seed: u64,
) -> diagfim::Report {
    diagfim::analyze(&diagfim::Request {
        model,
        family,
        inputs: x,
        labels: None,
        options: diagfim::AnalysisOptions {
            samples,
            seed,
            per_input: true,
            engine: diagfim::EngineKind::Cpu,
            ..Default::default()
        },
        progress: None,
    })
    .unwrap()
}

/// Flat per-parameter values of a per-input report key for input `i` (keys with a leading
/// input axis; [`Mlp::params`] order).
pub fn per_input_flat(report: &diagfim::Report, key: diagfim::Key, i: usize) -> Vec<f64> {
    report
        .params
        .iter()
        .flat_map(|p| {
            let a = &p.values[&key];
            a.index_axis(ndarray::Axis(0), i)
                .iter()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Eigenvalues (descending) of a symmetric n×n matrix (row-major) by the cyclic Jacobi
/// method: an eigensolver independent of the library's (faer, QL).
pub fn jacobi_eigenvalues(n: usize, a: &[f64]) -> Vec<f64> {
    let mut m: Vec<f64> = (0..n * n)
        .map(|k| 0.5 * (a[k] + a[(k % n) * n + k / n]))
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        let scale: f64 = m.iter().map(|v| v * v).sum::<f64>().max(1e-300);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum().max(0.0) * 2.0 - 1.0;
                let t = t / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
            }
        }
    }
    let mut d: Vec<f64> = (0..n).map(|i| m[i * n + i]).collect();
    d.sort_by(|a, b| b.total_cmp(a));
    d
}

/// max_{‖u‖=1} f(u) by brute force: a deterministic sample of the sphere (a fine angle grid
/// for n = 2, random points otherwise), then a pattern search with shrinking steps from the
/// best points. Independent of the library's power method.
pub fn sphere_max(n: usize, f: &dyn Fn(&[f64]) -> f64) -> f64 {
    let normalise = |v: &mut Vec<f64>| {
        let s = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= s);
    };
    let mut pts: Vec<Vec<f64>> = Vec::new();
    if n == 1 {
        return f(&[1.0]);
    } else if n == 2 {
        for k in 0..20000 {
            let t = std::f64::consts::PI * k as f64 / 20000.0;
            pts.push(vec![t.cos(), t.sin()]);
        }
    } else {
        for k in 0..40000u32 {
            let mut v: Vec<f64> = (0..n)
                .map(|a| {
                    let w = diagfim::rng::block(4242, 77, k, a as u32, 0);
                    diagfim::rng::box_muller(w[0], w[1]).0
                })
                .collect();
            normalise(&mut v);
            pts.push(v);
        }
    }
    let mut scored: Vec<(f64, Vec<f64>)> = pts.into_iter().map(|p| (f(&p), p)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = f64::NEG_INFINITY;
    for (mut val, mut x) in scored.into_iter().take(12) {
        let mut r = 0.05;
        while r > 1e-10 {
            let mut improved = false;
            for a in 0..n {
                for sign in [1.0, -1.0] {
                    let mut y = x.clone();
                    y[a] += sign * r;
                    normalise(&mut y);
                    let fy = f(&y);
                    if fy > val {
                        val = fy;
                        x = y;
                        improved = true;
                    }
                }
            }
            if !improved {
                r *= 0.5;
            }
        }
        best = best.max(val);
    }
    best
}

/// h, J_i, J_j and the mixed second derivative ∂²h/∂θ_i∂θ_j by hyper-dual numbers seeded
/// on two parameters (flat [`Mlp::params`] indices `ti` on ε1 and `tj` on ε2).
pub fn mixed_derivatives_oracle(
    model: &Mlp,
    x: &[f64],
    ti: usize,
    tj: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let seed = |v: f64, idx: usize| Hd {
        re: v,
        e1: if idx == ti { 1.0 } else { 0.0 },
        e2: if idx == tj { 1.0 } else { 0.0 },
        e12: 0.0,
    };
    let a = forward_seeded(model, x, seed);
    (
        a.iter().map(|v| v.re).collect(),
        a.iter().map(|v| v.e1).collect(),
        a.iter().map(|v| v.e2).collect(),
        a.iter().map(|v| v.e12).collect(),
    )
}

/// The dense O²×O² matrix M_(ab),(cd) = K_abcd − C_ab C_cd.
pub fn dense_m(mom: &DenseMoments) -> Vec<f64> {
    let o = mom.o;
    let oo = o * o;
    let mut m = vec![0.0; oo * oo];
    for a in 0..o {
        for b in 0..o {
            for c in 0..o {
                for d in 0..o {
                    m[(a * o + b) * oo + c * o + d] =
                        mom.kk(a, b, c, d) - mom.c[[a, b]] * mom.c[[c, d]];
                }
            }
        }
    }
    m
}

/// K[u,v,u,v] = Σ K_abcd u_a v_b u_c v_d from the dense tensor.
pub fn dense_k_uvuv(mom: &DenseMoments, u: &[f64], v: &[f64]) -> f64 {
    let o = mom.o;
    let mut s = 0.0;
    for a in 0..o {
        for b in 0..o {
            for c in 0..o {
                for d in 0..o {
                    s += mom.kk(a, b, c, d) * u[a] * v[b] * u[c] * v[d];
                }
            }
        }
    }
    s
}

/// Labels with their probabilities: every class (categorical), a 3-point Gauss–Hermite
/// product rule (Gaussian; exact for polynomials of degree ≤ 5 per coordinate), every
/// y ∈ {0,1}^O (Bernoulli) or the product of per-output pmfs truncated at
/// λ + 40 + 20√λ (Poisson; the dropped tail is < 1e-30).
pub fn label_quadrature(family: &diagfim::Family, h: &[f64]) -> Vec<(f64, Label)> {
    match family {
        diagfim::Family::Categorical(c) => {
            let p = diagfim::ExpFamily::eta(c, h);
            (0..h.len()).map(|y| (p[y], Label::Class(y))).collect()
        }
        diagfim::Family::Gaussian(g) => {
            let nodes = [
                (-(3f64.sqrt()), 1.0 / 6.0),
                (0.0, 2.0 / 3.0),
                (3f64.sqrt(), 1.0 / 6.0),
            ];
            let o = h.len();
            let sigma = g.sigma2().sqrt();
            (0..3usize.pow(o as u32))
                .map(|mut idx| {
                    let mut w = 1.0;
                    let mut y = vec![0.0; o];
                    for a in 0..o {
                        let (z, wz) = nodes[idx % 3];
                        idx /= 3;
                        w *= wz;
                        y[a] = h[a] + sigma * z;
                    }
                    (w, Label::Target(y))
                })
                .collect()
        }
        diagfim::Family::Bernoulli(_) => {
            let o = h.len();
            let p: Vec<f64> = h.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
            (0..1usize << o)
                .map(|bits| {
                    let y: Vec<f64> = (0..o).map(|a| ((bits >> a) & 1) as f64).collect();
                    let w = (0..o)
                        .map(|a| if y[a] == 1.0 { p[a] } else { 1.0 - p[a] })
                        .product();
                    (w, Label::Target(y))
                })
                .collect()
        }
        diagfim::Family::Poisson(_) => {
            let pmfs: Vec<Vec<f64>> = h
                .iter()
                .map(|v| {
                    let l = v.exp();
                    let top = (l + 40.0 + 20.0 * l.sqrt()).ceil() as usize;
                    let mut p = vec![(-l).exp()];
                    for y in 1..=top {
                        p.push(p[y - 1] * l / y as f64);
                    }
                    p
                })
                .collect();
            let mut out = vec![(1.0, vec![])];
            for pmf in &pmfs {
                out = out
                    .into_iter()
                    .flat_map(|(w, y): (f64, Vec<f64>)| {
                        pmf.iter().enumerate().map(move |(k, p)| {
                            let mut y = y.clone();
                            y.push(k as f64);
                            (w * p, y)
                        })
                    })
                    .collect();
            }
            out.into_iter()
                .map(|(w, y)| (w, Label::Target(y)))
                .collect()
        }
    }
}

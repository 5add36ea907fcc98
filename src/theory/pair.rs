//! Off-diagonal FIM entries and the variances of their two estimators (App. B; MATH §4,
//! §5.9) for chosen parameter pairs, averaged over inputs:
//! `I(θ_ij|x) = J_iᵀ C J_j`, `N·Var Î1(θ_ij|x) = K[J_i,J_j,J_i,J_j] − I(θ_ij|x)²`,
//! N·Var Î2(θ_ij|x) = D^{(ij)ᵀ} C D^{(ij)}, with the bounds of Thm B.1 / Cor. B.3.
//! J_i, J_j and the mixed second derivative D^{(ij)} = ∂²h/∂θ_i∂θ_j come from one forward
//! pass in second-order forward mode (hyper-dual numbers) seeded on θ_i and θ_j.

use super::eigen::{sym_eigen, sym_eigenvalues};
use super::moments::Moments;
use crate::family::ExpFamily;
use crate::model::Mlp;
use crate::{Error, Result};
use ndarray::ArrayView2;
use serde::Serialize;

/// One parameter: its tensor, its index within the tensor and its flat index over the
/// model's parameters ([`Mlp::params`] order, row-major within a tensor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParamRef {
    /// `<tensor>[i,j]` or `<tensor>[i]`, e.g. `0.weight[3,5]`.
    pub spec: String,
    /// The tensor's name, e.g. `0.weight`.
    pub tensor: String,
    /// The index within the tensor (two entries for a weight, one for a bias).
    pub index: Vec<usize>,
    /// The flat index over all the model's parameters.
    pub flat: usize,
    #[serde(skip)]
    layer: usize,
    #[serde(skip)]
    is_bias: bool,
}

impl ParamRef {
    /// Parses `<tensor>[i,j]` (weight), `<tensor>[i]` (bias) or a flat index.
    pub fn parse(model: &Mlp, spec: &str) -> Result<ParamRef> {
        let spec = spec.trim();
        let params = model.params();
        let total: usize = params.iter().map(|p| p.numel()).sum();
        let usage = "give a parameter as <tensor>[i,j] (weight, e.g. 0.weight[3,5]), \
                     <tensor>[i] (bias, e.g. 0.bias[2]) or a flat index";
        if let Ok(flat) = spec.parse::<usize>() {
            let mut off = 0;
            for p in &params {
                if flat < off + p.numel() {
                    let local = flat - off;
                    let index = if p.is_bias {
                        vec![local]
                    } else {
                        vec![local / p.shape[1], local % p.shape[1]]
                    };
                    return Ok(ParamRef {
                        spec: format_spec(&p.name, &index),
                        tensor: p.name.clone(),
                        index,
                        flat,
                        layer: p.layer,
                        is_bias: p.is_bias,
                    });
                }
                off += p.numel();
            }
            return Err(Error::Input(format!(
                "flat parameter index {flat} is out of range: the model has {total} parameters (0..{})",
                total.saturating_sub(1)
            )));
        }
        let (name, rest) = spec
            .split_once('[')
            .ok_or_else(|| Error::Input(format!("cannot read parameter '{spec}': {usage}")))?;
        let inner = rest.strip_suffix(']').ok_or_else(|| {
            Error::Input(format!("parameter '{spec}' lacks a closing ']': {usage}"))
        })?;
        let index = inner
            .split(',')
            .map(|v| v.trim().parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| {
                Error::Input(format!(
                    "parameter '{spec}': indices must be integers ≥ 0; {usage}"
                ))
            })?;
        let mut off = 0;
        for p in &params {
            if p.name == name.trim() {
                if index.len() != p.shape.len() || index.iter().zip(&p.shape).any(|(i, n)| i >= n) {
                    return Err(Error::Input(format!(
                        "parameter '{spec}': '{}' has shape {:?}, so it needs {} indices within it",
                        p.name,
                        p.shape,
                        p.shape.len()
                    )));
                }
                let local = if p.is_bias {
                    index[0]
                } else {
                    index[0] * p.shape[1] + index[1]
                };
                return Ok(ParamRef {
                    spec: format_spec(&p.name, &index),
                    tensor: p.name.clone(),
                    index,
                    flat: off + local,
                    layer: p.layer,
                    is_bias: p.is_bias,
                });
            }
            off += p.numel();
        }
        Err(Error::Input(format!(
            "parameter '{spec}': the model has no tensor '{}' (it has {})",
            name.trim(),
            params
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn format_spec(name: &str, index: &[usize]) -> String {
    let idx: Vec<String> = index.iter().map(|i| i.to_string()).collect();
    format!("{name}[{}]", idx.join(","))
}

/// v + a ε_i + b ε_j + c ε_iε_j with ε_i² = ε_j² = 0.
#[derive(Clone, Copy, Debug, Default)]
struct Dual2 {
    v: f64,
    di: f64,
    dj: f64,
    dij: f64,
}

impl Dual2 {
    fn c(v: f64) -> Dual2 {
        Dual2 {
            v,
            ..Default::default()
        }
    }
    fn add(self, o: Dual2) -> Dual2 {
        Dual2 {
            v: self.v + o.v,
            di: self.di + o.di,
            dj: self.dj + o.dj,
            dij: self.dij + o.dij,
        }
    }
    fn mul(self, o: Dual2) -> Dual2 {
        Dual2 {
            v: self.v * o.v,
            di: self.v * o.di + self.di * o.v,
            dj: self.v * o.dj + self.dj * o.v,
            dij: self.v * o.dij + self.di * o.dj + self.dj * o.di + self.dij * o.v,
        }
    }
    /// f(self) given (f, f', f'') at self.v.
    fn chain(self, (f, d1, d2): (f64, f64, f64)) -> Dual2 {
        Dual2 {
            v: f,
            di: d1 * self.di,
            dj: d1 * self.dj,
            dij: d1 * self.dij + d2 * self.di * self.dj,
        }
    }
}

/// h, J_i = ∂h/∂θ_i, J_j and D^{(ij)} = ∂²h/∂θ_i∂θ_j at one input.
pub fn mixed_derivatives(
    model: &Mlp,
    x: &[f64],
    i: &ParamRef,
    j: &ParamRef,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let seed = |p: &ParamRef, layer: usize, is_bias: bool, r: usize, c: usize| {
        p.layer == layer && p.is_bias == is_bias && p.index[0] == r && (is_bias || p.index[1] == c)
    };
    let param = |v: f64, layer: usize, is_bias: bool, r: usize, c: usize| Dual2 {
        v,
        di: if seed(i, layer, is_bias, r, c) {
            1.0
        } else {
            0.0
        },
        dj: if seed(j, layer, is_bias, r, c) {
            1.0
        } else {
            0.0
        },
        dij: 0.0,
    };
    let mut a: Vec<Dual2> = x.iter().map(|&v| Dual2::c(v)).collect();
    let nl = model.layers().len();
    for (l, d) in model.layers().iter().enumerate() {
        let mut z = Vec::with_capacity(d.outputs());
        for r in 0..d.outputs() {
            let mut s = match &d.bias {
                Some(b) => param(b[r], l, true, r, 0),
                None => Dual2::c(0.0),
            };
            for (c, ac) in a.iter().enumerate() {
                s = s.add(param(d.weight[[r, c]], l, false, r, c).mul(*ac));
            }
            z.push(s);
        }
        a = if l + 1 < nl {
            let act = model.activations()[l];
            z.into_iter().map(|v| v.chain(act.eval(v.v))).collect()
        } else {
            z
        };
    }
    (
        a.iter().map(|v| v.v).collect(),
        a.iter().map(|v| v.di).collect(),
        a.iter().map(|v| v.dj).collect(),
        a.iter().map(|v| v.dij).collect(),
    )
}

/// λ̃_max(K − C⊗C) = max_{‖u‖=‖v‖=1} `(K − C⊗C)[u,v,u,v]` (Thm B.1) by alternating
/// maximisation: for fixed v the form is uᵀQ(v)u with the PSD Q(v) = K v² − (Cv)(Cv)ᵀ, so u
/// is Q(v)'s top eigenvector, and symmetrically. Local: a lower estimate of λ̃_max.
pub fn lambda_tilde_max(m: &Moments<'_>) -> Result<f64> {
    let o = m.dim();
    let q_of = |v: &[f64]| -> Vec<f64> {
        let mut q = vec![0.0; o * o];
        m.kurt_x2(v, &mut q);
        let cv = m.cov_apply(v);
        for a in 0..o {
            for b in 0..o {
                q[a * o + b] -= cv[a] * cv[b];
            }
        }
        q
    };
    let mut starts: Vec<Vec<f64>> = (0..o)
        .map(|a| (0..o).map(|b| if a == b { 1.0 } else { 0.0 }).collect())
        .collect();
    // Differences (categorical: the 1⊥ directions) and sums (independent outputs, whose
    // maxima may spread over several coordinates), and the all-ones vector.
    for a in 0..o {
        for b in a + 1..o.min(6) {
            for sign in [-1.0, 1.0] {
                starts.push(
                    (0..o)
                        .map(|c| f64::from(c == a) + sign * f64::from(c == b))
                        .collect(),
                );
            }
        }
    }
    starts.push(vec![1.0; o]);
    let mut best = 0.0f64;
    for s in starts {
        let norm = s.iter().map(|v| v * v).sum::<f64>().sqrt();
        let mut v: Vec<f64> = s.iter().map(|x| x / norm).collect();
        let mut val = f64::NEG_INFINITY;
        for _ in 0..500 {
            let (vals, vecs) = sym_eigen(o, &q_of(&v))?;
            let new = vals[0];
            v = vecs[0].clone();
            if (new - val).abs() <= 1e-15 * new.abs().max(1e-300) {
                val = new;
                break;
            }
            val = new;
        }
        best = best.max(val);
    }
    Ok(best)
}

/// The off-diagonal results of one pair, as means over the inputs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairReport {
    /// The first parameter θ_i.
    pub i: ParamRef,
    /// The second parameter θ_j.
    pub j: ParamRef,
    /// The output family, as a summary names it.
    pub family: String,
    /// Number of inputs the means are over.
    pub inputs: usize,
    /// I(θ_ij|x) (mean over inputs).
    pub fisher: f64,
    /// `N·Var Î1(θ_ij|x) = K[J_i,J_j,J_i,J_j] − I(θ_ij|x)²`.
    pub var1: f64,
    /// N·Var Î2(θ_ij|x) = D^{(ij)ᵀ} C D^{(ij)}.
    pub var2: f64,
    /// Mean of |I(θ_ij|x)|, bounded by `ub_abs_fisher`.
    pub abs_fisher: f64,
    /// ‖J_i‖‖J_j‖λ_max(C) (Cor. B.3, Eq. 28).
    pub ub_abs_fisher: f64,
    /// ‖J_i‖²‖J_j‖² λ̃_max(K − C⊗C) (Thm B.1, Eq. 27; λ̃ by alternating maximisation).
    pub ub_var1: f64,
    /// ‖J_i‖²‖J_j‖² λ_max(M), certified \[X\].
    pub ub_var1_cert: f64,
    /// ‖D^{(ij)}‖² λ_max(C) (Thm B.1).
    pub ub_var2: f64,
}

/// Means over the rows of `inputs` of the pair's FIM entry, estimator variances and bounds.
pub fn pair(
    model: &Mlp,
    family: &dyn ExpFamily,
    inputs: ArrayView2<'_, f64>,
    i: &ParamRef,
    j: &ParamRef,
) -> Result<PairReport> {
    let (b, width) = inputs.dim();
    if b == 0 {
        return Err(Error::Input(
            "there are no inputs (B = 0): give at least one row".into(),
        ));
    }
    if width != model.input_dim() {
        return Err(Error::Input(format!(
            "inputs have {width} columns but the model expects {} inputs",
            model.input_dim()
        )));
    }
    if let Some(index) = inputs.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "the inputs".into(),
            index,
        });
    }
    family.check_outputs(model.output_dim())?;
    let mut acc = [0.0f64; 8];
    for x in inputs.rows() {
        let x = x.to_vec();
        let (h, ji, jj, dij) = mixed_derivatives(model, &x, i, j);
        family.check_output(&h)?;
        let eta = family.eta(&h);
        let m = Moments::new(family, &eta);
        let o = m.dim();
        let cji = m.cov_apply(&ji);
        let fisher: f64 = cji.iter().zip(&jj).map(|(a, b)| a * b).sum();
        let mut kj = vec![0.0; o * o];
        m.kurt_x2(&jj, &mut kj);
        let k4: f64 = (0..o)
            .map(|a| (0..o).map(|c| ji[a] * kj[a * o + c] * ji[c]).sum::<f64>())
            .sum();
        let var1 = (k4 - fisher * fisher).max(0.0);
        let var2 = family.cov_quad(&eta, &dij);
        let lam_max_c = sym_eigenvalues(o, &m.cov_matrix())?[0].max(0.0);
        let lam_tilde = lambda_tilde_max(&m)?;
        let lam_max_m = m.m_spectrum()?.max();
        let n2 = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
        let (ni, nj) = (n2(&ji), n2(&jj));
        let vals = [
            fisher,
            var1,
            var2,
            fisher.abs(),
            (ni * nj).sqrt() * lam_max_c,
            ni * nj * lam_tilde,
            ni * nj * lam_max_m,
            n2(&dij) * lam_max_c,
        ];
        for (a, v) in acc.iter_mut().zip(vals) {
            *a += v;
        }
    }
    let m = acc.map(|v| v / b as f64);
    if let Some(index) = m.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "the pair's results (overflow: the model's weights or inputs are too large)"
                .into(),
            index,
        });
    }
    Ok(PairReport {
        i: i.clone(),
        j: j.clone(),
        family: family.name().into(),
        inputs: b,
        fisher: m[0],
        var1: m[1],
        var2: m[2],
        abs_fisher: m[3],
        ub_abs_fisher: m[4],
        ub_var1: m[5],
        ub_var1_cert: m[6],
        ub_var2: m[7],
    })
}

//! Off-diagonal entries (App. B): the library's `pair` against hyper-dual mixed derivatives and
//! dense C and K tensors, the bounds of Thm B.1 / Cor. B.3, λ̃_max against a brute force,
//! the diagonal case against the analysis, parameter parsing, and `diagfim pair` end to end.

#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
#[cfg(feature = "cli")]
use diagfim::model::{save_safetensors, StoreDtype};
use diagfim::theory::moments::Moments;
use diagfim::theory::pair::{lambda_tilde_max, pair, ParamRef};
use diagfim::{Activation, Family, Key, Mlp};
#[cfg(feature = "cli")]
use std::process::Command;
use Activation::*;

#[cfg(feature = "cli")]
const BIN: &str = env!("CARGO_BIN_EXE_diagfim");

fn cases() -> Vec<(Mlp, Family)> {
    vec![
        (
            random_model(&[3, 5, 4, 3], &[Tanh, Sigmoid], 1.1, 61, true),
            family_of("categorical"),
        ),
        (
            random_model(&[2, 4, 3, 2], &[Softplus, LogSigmoid], 1.0, 62, true),
            Family::from_name("gaussian", 0.7).unwrap(),
        ),
        (
            random_model(&[3, 6, 4], &[Sigmoid], 1.3, 63, false),
            family_of("categorical"),
        ),
        (
            random_model(&[3, 5, 3], &[Tanh], 1.2, 65, true),
            family_of("bernoulli"),
        ),
        (
            random_model(&[2, 4, 2], &[Softplus], 0.7, 66, true),
            family_of("poisson"),
        ),
    ]
}

fn family_of(name: &str) -> Family {
    Family::from_name(name, 0.5).unwrap()
}

#[test]
fn pairs_match_the_oracle_and_their_bounds() {
    for (ci, (model, family)) in cases().into_iter().enumerate() {
        let b = 3;
        let x = random_inputs(b, model.input_dim(), 64 + ci as u64);
        let np = model.num_params();
        // Pairs within a layer, across layers, with biases, and i = j.
        let pairs = [
            (0, 1),
            (2, np - 1),
            (np / 2, 3),
            (np - 2, np - 1),
            (5, 5),
            (np / 3, 2 * np / 3),
        ];
        for (a, bb) in pairs {
            let (pi, pj) = (
                ParamRef::parse(&model, &a.to_string()).unwrap(),
                ParamRef::parse(&model, &bb.to_string()).unwrap(),
            );
            let got = pair(&model, family.as_dyn(), x.view(), &pi, &pj).unwrap();
            let mut want = [0.0f64; 4];
            for i in 0..b {
                let xs = x.row(i).to_vec();
                let (h, ji, jj, dij) = mixed_derivatives_oracle(&model, &xs, a, bb);
                let mom = family_moments(&family, &h);
                let iij: f64 = (0..mom.o)
                    .map(|u| {
                        (0..mom.o)
                            .map(|v| ji[u] * mom.c[[u, v]] * jj[v])
                            .sum::<f64>()
                    })
                    .sum();
                want[0] += iij / b as f64;
                want[1] += (dense_k_uvuv(&mom, &ji, &jj) - iij * iij) / b as f64;
                want[2] += mom.quad(&dij) / b as f64;
                want[3] += iij.abs() / b as f64;
            }
            let have = [got.fisher, got.var1, got.var2, got.abs_fisher];
            let ctx = format!("case {ci} pair ({a}, {bb})");
            for k in 0..4 {
                assert!(
                    (have[k] - want[k]).abs() <= 1e-10 * want[k].abs() + 1e-16,
                    "{ctx}: quantity {k}: {} vs {}",
                    have[k],
                    want[k]
                );
            }
            let le = |lo: f64, hi: f64| lo <= hi * (1.0 + 1e-9) + 1e-15;
            assert!(le(got.abs_fisher, got.ub_abs_fisher), "{ctx}: Cor. B.3");
            assert!(
                le(got.var1, got.ub_var1) && le(got.ub_var1, got.ub_var1_cert),
                "{ctx}: Eq. 27"
            );
            assert!(le(got.var2, got.ub_var2), "{ctx}: Thm B.1 (Î2)");
            assert_eq!((got.i.flat, got.j.flat, got.inputs), (a, bb, b));
        }
        // The diagonal case equals the analysis' fisher, var1 and var2 (means over inputs).
        let report = run_cpu(&model, family.as_dyn(), x.view(), 2, 0);
        let (fi, v1, v2) = (
            flat_mean(&report, Key::Fisher),
            flat_mean(&report, Key::Var1),
            flat_mean(&report, Key::Var2),
        );
        for i in [0, np / 2, np - 1] {
            let p = ParamRef::parse(&model, &i.to_string()).unwrap();
            let d = pair(&model, family.as_dyn(), x.view(), &p, &p).unwrap();
            for (got, want) in [(d.fisher, fi[i]), (d.var1, v1[i]), (d.var2, v2[i])] {
                assert!(
                    (got - want).abs() <= 1e-10 * want.abs() + 1e-16,
                    "case {ci} param {i}: {got} vs {want} ({:?})",
                    (d.fisher, fi[i], d.var1, v1[i], d.var2, v2[i])
                );
            }
        }
    }
}

/// Means over the input axis of a per-input report key.
fn flat_mean(report: &diagfim::Report, key: Key) -> Vec<f64> {
    let b = report.run.inputs;
    let mut out = per_input_flat(report, key, 0);
    for i in 1..b {
        for (o, v) in out.iter_mut().zip(per_input_flat(report, key, i)) {
            *o += v;
        }
    }
    out.iter().map(|v| v / b as f64).collect()
}

#[test]
fn lambda_tilde_matches_brute_force() {
    for (o, temp, g) in [
        (2usize, 1.0, "categorical"),
        (3, 0.7, "categorical"),
        (3, 2.5, "categorical"),
        (4, 1.5, "categorical"),
        (3, 1.0, "gaussian"),
        (3, 1.2, "bernoulli"),
        (2, 0.3, "bernoulli"),
        (3, 0.8, "poisson"),
    ] {
        let h: Vec<f64> = (0..o)
            .map(|a| temp * ((a as f64 * 1.7 + 0.3).sin()))
            .collect();
        let family = family_of(g);
        let eta = family.as_dyn().eta(&h);
        let m = Moments::new(family.as_dyn(), &eta);
        let got = lambda_tilde_max(&m).unwrap();
        let mom = family_moments(&family, &h);
        // max_v λ_max(Q(v)), Q(v)_ac = K[e_a, v, e_c, v] − (Cv)_a (Cv)_c, by brute force over v.
        let top = |v: &[f64]| {
            let cv: Vec<f64> = (0..o)
                .map(|a| (0..o).map(|b| mom.c[[a, b]] * v[b]).sum())
                .collect();
            let mut q = vec![0.0; o * o];
            for a in 0..o {
                for c in 0..o {
                    let mut s = 0.0;
                    for b in 0..o {
                        for d in 0..o {
                            s += mom.kk(a, b, c, d) * v[b] * v[d];
                        }
                    }
                    q[a * o + c] = s - cv[a] * cv[c];
                }
            }
            jacobi_eigenvalues(o, &q)[0]
        };
        let want = sphere_max(o, &top);
        assert!((got - want).abs() <= 1e-7 * want, "O={o}: {got} vs {want}");
        // λ_max(K−C⊗C) ≤ λ̃_max ≤ λ_max(M).
        let v = sphere_max(o, &|u| dense_k_uvuv(&mom, u, u) - mom.quad(u).powi(2));
        let mmax = jacobi_eigenvalues(o * o, &dense_m(&mom))[0];
        assert!(v <= got * (1.0 + 1e-9) && got <= mmax * (1.0 + 1e-9));
    }
}

#[test]
fn parameters_parse_by_name_or_flat_index() {
    let model = random_model(&[3, 4, 2], &[Tanh], 1.0, 65, true);
    // 0.weight [4,3] (0..12), 0.bias [4] (12..16), 2.weight [2,4] (16..24), 2.bias (24..26).
    for (spec, flat, name) in [
        ("0.weight[1,2]", 5, "0.weight[1,2]"),
        (" 0.bias[3] ", 15, "0.bias[3]"),
        ("2.weight[ 1 , 0 ]", 20, "2.weight[1,0]"),
        ("25", 25, "2.bias[1]"),
        ("0", 0, "0.weight[0,0]"),
        ("13", 13, "0.bias[1]"),
    ] {
        let p = ParamRef::parse(&model, spec).unwrap();
        assert_eq!((p.flat, p.spec.as_str()), (flat, name), "{spec}");
        // Name and flat index agree.
        assert_eq!(ParamRef::parse(&model, &p.flat.to_string()).unwrap(), p);
    }
    for (bad, msg) in [
        ("26", "out of range"),
        ("0.weight[4,0]", "shape"),
        ("0.weight[1]", "indices"),
        ("0.bias[1,1]", "indices"),
        ("1.weight[0,0]", "no tensor '1.weight'"),
        ("0.weight[a,b]", "integers"),
        ("0.weight[1,2", "closing"),
        ("weight", "<tensor>[i,j]"),
        ("-1", "<tensor>[i,j]"),
    ] {
        let e = ParamRef::parse(&model, bad).unwrap_err().to_string();
        assert!(e.contains(msg), "{bad}: {e}");
    }
    let x = random_inputs(2, 3, 1);
    let p = ParamRef::parse(&model, "1").unwrap();
    let f = Family::from_name("categorical", 1.0).unwrap();
    assert!(pair(&model, f.as_dyn(), x.slice(ndarray::s![..0, ..]), &p, &p).is_err());
    assert!(pair(&model, f.as_dyn(), x.slice(ndarray::s![.., ..2]), &p, &p).is_err());
}

#[cfg(feature = "cli")]
#[test]
fn cli_pair_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(&[3, 4, 3], &[Sigmoid], 1.2, 66, true);
    let mpath = dir.path().join("m.safetensors");
    save_safetensors(&model, &mpath, StoreDtype::F64).unwrap();
    let x = random_inputs(4, 3, 67);
    let xpath = dir.path().join("x.npy");
    ndarray_npy::write_npy(&xpath, &x).unwrap();
    let run = |i: &str, j: &str, extra: &[&str]| {
        let mut args = vec![
            "pair",
            "--model",
            mpath.to_str().unwrap(),
            "--inputs",
            xpath.to_str().unwrap(),
            "--activations",
            "sigmoid",
            "--i",
            i,
            "--j",
            j,
        ];
        args.extend_from_slice(extra);
        Command::new(BIN).args(&args).output().unwrap()
    };
    let out = run("0.weight[1,2]", "2.bias[0]", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = Family::from_name("categorical", 1.0).unwrap();
    let (pi, pj) = (
        ParamRef::parse(&model, "0.weight[1,2]").unwrap(),
        ParamRef::parse(&model, "2.bias[0]").unwrap(),
    );
    let lib = pair(&model, f.as_dyn(), x.view(), &pi, &pj).unwrap();
    assert_eq!(json["i"]["spec"], "0.weight[1,2]");
    assert_eq!(json["j"]["flat"], pj.flat);
    assert_eq!(json["inputs"], 4);
    assert_eq!(json["family"], "categorical");
    for (k, v) in [
        ("fisher", lib.fisher),
        ("var1", lib.var1),
        ("var2", lib.var2),
        ("ub_var1_cert", lib.ub_var1_cert),
    ] {
        // Equal up to the last bits (faer's SIMD paths may round differently).
        let got = json[k].as_f64().unwrap();
        assert!((got - v).abs() <= 1e-13 * v.abs(), "{k}: {got} vs {v}");
    }
    let g = run("3", "3", &["--family", "gaussian", "--sigma2", "0.5"]);
    assert!(g.status.success());
    let gj: serde_json::Value = serde_json::from_slice(&g.stdout).unwrap();
    assert_eq!(gj["family"], "gaussian");
    for (bad, msg) in [("0.weight[9,0]", "shape"), ("99", "out of range")] {
        let e = run(bad, "0", &[]);
        assert_eq!(e.status.code(), Some(2));
        let err = String::from_utf8_lossy(&e.stderr);
        assert!(err.contains(msg), "{err}");
    }
}

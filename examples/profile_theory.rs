//! Host cost of the theory layer per input: `theory::Spectrum::new` (eigenvalues of C, GEAP
//! Z-eigenvalues of K and sym(K − C⊗C), spectrum of M) and `theory::input_theory` (per-tensor
//! trace bounds from Δ_l, Hd_l and the layer input), timed separately on one thread.
//!
//! Inputs: categorical η = softmax of random logits (a few peaked, a few flat, the rest
//! ordinary), random Δ_l and Hd_l (n_l × O) and sigmoid-like layer inputs for the given widths.
//!
//! `cargo run --release --example profile_theory -- [--layers 784,512,256,128,10]
//!  [--inputs 256] [--reps 5] [--only spectrum|theory] [--reference] [--all-eigenvalues]
//!  [--dump PATH] [--compare PATH]`
//!
//! The spectra are those the engines compute: `Spectrum::with_extremes` with the extreme
//! eigenvalues that the hidden layers' trace bounds need (NaN in the dump for the others).
//! `--all-eigenvalues` times `Spectrum::new` (every eigenvalue of C and M); `--reference`
//! times `Spectrum::reference` (the previous dense solver: O×O eigensolves and adaptive GEAP
//! shifts). `--dump` writes every output number
//! (shortest round-trip form, one per line); `--compare` reads such a file and reports the
//! largest relative difference to the current outputs, and the largest difference relative to
//! the scale of its input (the largest number of the same input).

use diagfim::theory::{input_theory, InputTheory, LayerData, Spectrum};
use diagfim::{rng, Family};
use ndarray::{Array1, Array2};
use std::time::Instant;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn normal(seed: u64, input: u32, k: u32) -> f64 {
    let w = rng::block(seed, 3, input, k / 2, 0);
    let (a, b) = rng::box_muller(w[0], w[1]);
    if k.is_multiple_of(2) {
        a
    } else {
        b
    }
}

fn softmax(h: &[f64]) -> Vec<f64> {
    let m = h.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = h.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// η of input i: every 8th input is peaked (logit scale 8), every 8th (offset 4) nearly flat
/// (scale 0.05), the others have scale 1.5.
fn eta(i: usize, o: usize) -> Vec<f64> {
    let scale = match i % 8 {
        0 => 8.0,
        4 => 0.05,
        _ => 1.5,
    };
    let h: Vec<f64> = (0..o)
        .map(|a| scale * normal(11, i as u32, a as u32))
        .collect();
    softmax(&h)
}

struct InputLayers {
    delta: Vec<Array2<f64>>,
    hd: Vec<Array2<f64>>,
    act: Vec<Array1<f64>>,
}

fn layers_of(i: usize, widths: &[usize]) -> InputLayers {
    let o = *widths.last().expect("widths");
    let mut out = InputLayers {
        delta: Vec::new(),
        hd: Vec::new(),
        act: Vec::new(),
    };
    for l in 1..widths.len() {
        let (nl, nin) = (widths[l], widths[l - 1]);
        let seed = 100 + l as u64;
        out.delta.push(Array2::from_shape_fn((nl, o), |(j, a)| {
            0.1 * normal(seed, i as u32, (j * o + a) as u32)
        }));
        out.hd.push(if l + 1 == widths.len() {
            Array2::zeros((nl, o)) // the head: D = 0
        } else {
            Array2::from_shape_fn((nl, o), |(j, a)| {
                0.02 * normal(seed + 50, i as u32, (j * o + a) as u32)
            })
        });
        out.act.push(Array1::from_shape_fn(nin, |k| {
            let z = normal(seed + 90, i as u32, k as u32);
            1.0 / (1.0 + (-z).exp())
        }));
    }
    out
}

fn numbers_spectrum(s: &Spectrum, out: &mut Vec<f64>) {
    out.extend(&s.eig_c);
    out.extend([
        s.lam_max_c,
        s.lam_min_c,
        s.lam_min_c_perp,
        s.trace_c,
        s.lam_max_k,
        s.lam_min_k,
        s.lam_max_v,
        s.lam_min_v,
        s.lam_max_m,
        s.trace_m,
        s.stat_bound2.unwrap_or(f64::NAN),
        s.rho.unwrap_or(f64::NAN),
    ]);
    // λ(M) as O numbers (M's non-zero spectrum has at most O − 1 entries): the count of
    // positive eigenvalues may differ by round-off of a zero one.
    out.extend((0..s.eig_c.len()).map(|k| s.eig_m.get(k)));
}

fn numbers_theory(t: &InputTheory, out: &mut Vec<f64>) {
    for l in &t.layers {
        for tb in [&l.weight, &l.bias] {
            let v = serde_json::to_value(tb).expect("serialisable");
            for (_, x) in v.as_object().expect("object") {
                out.push(match x {
                    serde_json::Value::Bool(b) => f64::from(u8::from(*b)),
                    x => x.as_f64().expect("number"),
                });
            }
        }
    }
}

fn main() -> diagfim::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let widths: Vec<usize> = arg(&args, "--layers", "784,512,256,128,10")
        .split(',')
        .map(|s| s.trim().parse().expect("--layers: comma-separated widths"))
        .collect();
    let b: usize = arg(&args, "--inputs", "256").parse().expect("--inputs");
    let reps: usize = arg(&args, "--reps", "5").parse().expect("--reps");
    let only = arg(&args, "--only", "");
    let reference = args.iter().any(|a| a == "--reference");
    let all_eigenvalues = args.iter().any(|a| a == "--all-eigenvalues");
    let extremes = diagfim::theory::trace_bound_extremes(&widths);
    let o = *widths.last().expect("widths");
    let family = Family::from_name("categorical", 1.0)?;
    let etas: Vec<Vec<f64>> = (0..b).map(|i| eta(i, o)).collect();
    let data: Vec<InputLayers> = (0..b).map(|i| layers_of(i, &widths)).collect();

    let mut spectra = Vec::new();
    let mut theories = Vec::new();
    let (mut t_spec, mut t_theory) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        if only != "theory" || spectra.is_empty() {
            let t0 = Instant::now();
            spectra = etas
                .iter()
                .map(|e| {
                    if reference {
                        Spectrum::reference(family.as_dyn(), e, &Default::default())
                    } else if all_eigenvalues {
                        Spectrum::new(family.as_dyn(), e)
                    } else {
                        Spectrum::with_extremes(family.as_dyn(), e, extremes)
                    }
                })
                .collect::<diagfim::Result<_>>()?;
            t_spec.push(t0.elapsed().as_secs_f64() / b as f64);
        }
        if only != "spectrum" {
            let t0 = Instant::now();
            theories = spectra
                .iter()
                .zip(&data)
                .map(|(s, d)| {
                    let layers: Vec<LayerData<'_>> = d
                        .delta
                        .iter()
                        .zip(&d.hd)
                        .zip(&d.act)
                        .map(|((delta, hd), a)| LayerData {
                            delta: delta.view(),
                            hd: hd.view(),
                            layer_input: a.view(),
                            head: false,
                        })
                        .collect();
                    input_theory(s, &layers)
                })
                .collect::<diagfim::Result<_>>()?;
            t_theory.push(t0.elapsed().as_secs_f64() / b as f64);
        }
    }
    // The minimum over repetitions is the least disturbed by other load on the machine.
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let med = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        let min = v.first().copied().unwrap_or(f64::NAN);
        format!("min {:.1} µs, median {:.1} µs", 1e6 * min, 1e6 * med)
    };
    println!(
        "widths {widths:?}, {b} inputs, {reps} reps, one thread, per input: \
         Spectrum::new {}; input_theory {}",
        stats(&mut t_spec),
        stats(&mut t_theory)
    );

    // Every input's spectrum, then every input's bounds; `groups` marks where each starts.
    let mut numbers = Vec::new();
    let mut groups = Vec::new();
    for s in &spectra {
        groups.push(numbers.len());
        numbers_spectrum(s, &mut numbers);
    }
    for t in &theories {
        groups.push(numbers.len());
        numbers_theory(t, &mut numbers);
    }
    groups.push(numbers.len());
    let dump = arg(&args, "--dump", "");
    if !dump.is_empty() {
        let text: String = numbers.iter().map(|v| format!("{v:?}\n")).collect();
        std::fs::write(&dump, text).expect("write --dump");
        println!("wrote {} numbers to {dump}", numbers.len());
    }
    let compare = arg(&args, "--compare", "");
    if !compare.is_empty() {
        let text = std::fs::read_to_string(&compare).expect("read --compare");
        let want: Vec<f64> = text
            .lines()
            .map(|l| l.parse().expect("a number per line"))
            .collect();
        assert_eq!(want.len(), numbers.len(), "different number of outputs");
        let (mut worst, mut at) = (0.0f64, 0);
        let (mut worst_scaled, mut at_scaled) = (0.0f64, 0);
        for w in groups.windows(2) {
            let scale = want[w[0]..w[1]]
                .iter()
                .filter(|v| v.is_finite())
                .fold(0.0f64, |m, v| m.max(v.abs()));
            for k in w[0]..w[1] {
                let (x, g) = (want[k], numbers[k]);
                if x == g || (x.is_nan() && g.is_nan()) {
                    continue;
                }
                let r = (x - g).abs() / x.abs().max(g.abs()).max(f64::MIN_POSITIVE);
                if r > worst {
                    (worst, at) = (r, k);
                }
                let r = (x - g).abs() / scale.max(f64::MIN_POSITIVE);
                if r > worst_scaled {
                    (worst_scaled, at_scaled) = (r, k);
                }
            }
        }
        println!(
            "compared {} numbers with {compare}: largest relative difference {worst:.3e} \
             (entry {at}: {} vs {}); relative to the input's largest number {worst_scaled:.3e} \
             (entry {at_scaled}: {} vs {})",
            numbers.len(),
            want[at],
            numbers[at],
            want[at_scaled],
            numbers[at_scaled]
        );
    }
    Ok(())
}

//! The main job of the README: analyse a sigmoid MLP (784-128-64-10, PyTorch-default
//! initialisation) on the first 256 MNIST test images with N = 16 sampled labels per image,
//! using the GPU engine when one exists and the CPU engine otherwise.
//!
//! It writes `out/quickstart/{model.safetensors, x.npy, y.npy, result.safetensors,
//! summary.json}` (the same files `diagfim analyze` reads and writes), prints the per-tensor
//! table and the throughput, and the equivalent `diagfim analyze` command line.
//!
//! `cargo run --release --example quickstart [-- --inputs 256 --samples 16 --engine auto]`

use diagfim::data::Mnist;
use diagfim::engine::{analyze, AnalysisOptions, EngineKind, Request};
use diagfim::model::{save_safetensors, StoreDtype};
use diagfim::{Activation, Family, Label, Mlp};
use std::path::Path;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> diagfim::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let parse = |name: &str, default: &str| -> diagfim::Result<usize> {
        let v = arg(&args, name, default);
        v.parse()
            .map_err(|_| diagfim::Error::Input(format!("{name} expects a number, got '{v}'")))
    };
    let b = parse("--inputs", "256")?;
    let samples = parse("--samples", "16")?;
    let engine: EngineKind = arg(&args, "--engine", "auto").parse()?;

    let out = Path::new("out/quickstart");
    std::fs::create_dir_all(out).map_err(|e| diagfim::Error::io("create", out, e))?;

    let mnist = Mnist::load(diagfim::data::default_dir())?;
    let b = b.min(mnist.test_images.count);
    let x = mnist.test_images.to_f32_normalised(0..b).mapv(f64::from);
    let labels: Vec<Label> = mnist.test_labels[..b]
        .iter()
        .map(|&c| Label::Class(c as usize))
        .collect();
    let model = Mlp::init(&[784, 128, 64, 10], vec![Activation::Sigmoid; 2], 0)?;

    save_safetensors(&model, &out.join("model.safetensors"), StoreDtype::F32)?;
    let save_npy = |name: &str, r: Result<(), ndarray_npy::WriteNpyError>| {
        r.map_err(|e| diagfim::Error::Output {
            path: out.join(name),
            msg: e.to_string(),
        })
    };
    save_npy(
        "x.npy",
        ndarray_npy::write_npy(out.join("x.npy"), &x.mapv(|v| v as f32)),
    )?;
    let y = ndarray::Array1::from_iter(mnist.test_labels[..b].iter().map(|&c| c as i64));
    save_npy("y.npy", ndarray_npy::write_npy(out.join("y.npy"), &y))?;

    let family = Family::from_name("categorical", 1.0)?;
    println!("{}", model.describe());
    let report = analyze(&Request {
        model: &model,
        family: family.as_dyn(),
        inputs: x.view(),
        labels: Some(&labels),
        options: AnalysisOptions {
            samples,
            engine,
            ..Default::default()
        },
        progress: None,
    })?;
    report.save(&out.join("result.safetensors"))?;
    report.save_summary(&out.join("summary.json"))?;
    print!("{}", report.table());
    let t = report.run.wall_time_s;
    println!(
        "\n{b} MNIST test images × N = {samples} labels on {} in {t:.3} s ({:.1} inputs/s, {:.0} sampled labels/s)",
        report.run.adapter,
        b as f64 / t,
        (b * samples) as f64 / t
    );
    println!(
        "results in {0}/result.safetensors and {0}/summary.json; the same with the CLI:\n  \
         cargo run --release -- analyze --model {0}/model.safetensors --inputs {0}/x.npy \
         --labels {0}/y.npy --samples {samples} --out {0}/result.safetensors --summary {0}/summary.json",
        out.display()
    );
    Ok(())
}

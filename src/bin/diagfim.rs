//! The `diagfim` command line (contract in README.md). Exit code 0 on success, 2 on any
//! error (bad files, shapes, options), with a message that says how to fix it.

use clap::{Args, Parser, Subcommand};
use diagfim::engine::{analyze, AnalysisOptions, Bounds, EngineKind, Request};
use diagfim::report::SummaryOptions;
use diagfim::theory::pair::{pair, ParamRef};
use diagfim::{io, model, Activation, Family};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "diagfim",
    version,
    about = "Diagonal Fisher information of MLPs, with the exact variances of its Monte-Carlo estimators (Soen & Sun, NeurIPS 2024)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exact FIM diagonal, estimator variances and Monte-Carlo estimates per parameter.
    Analyze(AnalyzeArgs),
    /// Off-diagonal FIM entry I(θ_ij) of a parameter pair, the exact variances of both
    /// estimators and the bounds of Thm B.1 / Cor. B.3, as JSON on stdout (means over inputs).
    Pair(PairArgs),
    /// Print a model's architecture and parameter count.
    Info {
        #[arg(long)]
        model: PathBuf,
        /// Hidden activations, overriding the file's metadata (e.g. sigmoid,sigmoid).
        #[arg(long)]
        activations: Option<String>,
    },
}

/// Model, inputs and output family: shared by `analyze` and `pair`.
#[derive(Args)]
struct DataArgs {
    /// Model: safetensors state_dict of an nn.Sequential of nn.Linear layers.
    #[arg(long)]
    model: PathBuf,
    /// Inputs X: .npy, float32 or float64, shape [B, in].
    #[arg(long)]
    inputs: PathBuf,
    /// Output family: categorical (logits) or gaussian (mean).
    #[arg(long, default_value = "categorical")]
    family: String,
    /// Variance σ² of the Gaussian family.
    #[arg(long, default_value_t = 1.0)]
    sigma2: f64,
    /// Hidden activations, overriding the model file's metadata.
    #[arg(long)]
    activations: Option<String>,
}

impl DataArgs {
    /// Loads the family, the model and the inputs, checking each.
    fn load(&self) -> diagfim::Result<(Family, diagfim::Mlp, ndarray::Array2<f64>)> {
        let family = Family::from_name(&self.family, self.sigma2)?;
        let mlp = load_model(&self.model, self.activations.as_deref())?;
        let inputs = io::read_inputs(&self.inputs)?;
        Ok((family, mlp, inputs))
    }
}

#[derive(Args)]
struct AnalyzeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// N, labels sampled per input.
    #[arg(long, default_value_t = 16)]
    samples: usize,
    /// Seed of the counter-based RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Data labels Y.npy (enables the empirical Fisher `ef`).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// auto (GPU when an adapter exists), cpu or gpu.
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Keep a leading input axis instead of averaging over inputs.
    #[arg(long)]
    per_input: bool,
    /// Inputs per block (memory only; results do not depend on it).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// CPU worker threads (0: all cores; results do not depend on it).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Bounds to compute: all; keys (skip SUMMARY.json's per-tensor trace bounds, about half
    /// of the host's per-input work); none (no bound keys and no per-input spectra). The other
    /// keys do not change.
    #[arg(long, default_value = "all")]
    bounds: String,
    /// RESULT.safetensors to write.
    #[arg(long)]
    out: PathBuf,
    /// SUMMARY.json to write.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Relative error ε of the summary's Chebyshev sample sizes.
    #[arg(long, default_value_t = 0.1)]
    eps: f64,
    /// Failure probability δ of the summary's Chebyshev sample sizes.
    #[arg(long, default_value_t = 0.05)]
    delta: f64,
    /// Cost of one input in labels, for the summary's N_x/N_y budget split.
    #[arg(long, default_value_t = 1.0)]
    input_cost: f64,
}

#[derive(Args)]
struct PairArgs {
    #[command(flatten)]
    data: DataArgs,
    /// First parameter: <tensor>[i,j] (weight), <tensor>[i] (bias) or a flat index.
    #[arg(long = "i")]
    i: String,
    /// Second parameter, in the same form.
    #[arg(long = "j")]
    j: String,
}

fn load_model(path: &Path, activations: Option<&str>) -> diagfim::Result<diagfim::Mlp> {
    let acts = activations.map(Activation::parse_list).transpose()?;
    model::load_safetensors(path, acts)
}

/// Fails early when an output file's folder does not exist, before any work is done.
fn check_output_dir(path: &Path) -> diagfim::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    if !dir.is_dir() {
        return Err(diagfim::Error::Output {
            path: path.to_path_buf(),
            msg: format!(
                "the folder '{}' does not exist; create it first",
                dir.display()
            ),
        });
    }
    Ok(())
}

fn run_pair(a: PairArgs) -> diagfim::Result<()> {
    let (family, mlp, inputs) = a.data.load()?;
    let i = ParamRef::parse(&mlp, &a.i)?;
    let j = ParamRef::parse(&mlp, &a.j)?;
    let report = pair(&mlp, family.as_dyn(), inputs.view(), &i, &j)?;
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| diagfim::Error::Input(format!("cannot format the pair's results: {e}")))?;
    println!("{text}");
    Ok(())
}

fn run_analyze(a: AnalyzeArgs) -> diagfim::Result<()> {
    let summary_opts = SummaryOptions {
        eps: a.eps,
        delta: a.delta,
        input_cost: a.input_cost,
    };
    summary_opts.validate()?;
    check_output_dir(&a.out)?;
    if let Some(s) = &a.summary {
        check_output_dir(s)?;
    }
    let engine: EngineKind = a.engine.parse()?;
    let bounds: Bounds = a.bounds.parse()?;
    let (family, mlp, inputs) = a.data.load()?;
    let labels = a
        .labels
        .as_ref()
        .map(|p| io::read_labels(p, family.as_dyn(), inputs.nrows(), mlp.output_dim()))
        .transpose()?;
    let bar =
        ProgressBar::with_draw_target(Some(inputs.nrows() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} analysing {pos}/{len} inputs [{bar:30}] {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let progress = |done: usize, _total: usize| bar.set_position(done as u64);
    let report = analyze(&Request {
        model: &mlp,
        family: family.as_dyn(),
        inputs: inputs.view(),
        labels: labels.as_deref(),
        options: AnalysisOptions {
            samples: a.samples,
            seed: a.seed,
            per_input: a.per_input,
            batch_size: a.batch_size,
            threads: a.threads,
            engine,
            bounds,
        },
        progress: Some(&progress),
    })?;
    bar.finish_and_clear();
    report.save(&a.out)?;
    if let Some(s) = &a.summary {
        report.save_summary_with(s, &summary_opts)?;
    }
    println!(
        "{} inputs, N = {} labels each, engine {}, {:.3} s; per-tensor means:",
        report.run.inputs, report.run.samples, report.run.adapter, report.run.wall_time_s
    );
    print!("{}", report.table());
    println!("results: {}", a.out.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(a) => run_analyze(a),
        Command::Pair(a) => run_pair(a),
        Command::Info { model, activations } => {
            load_model(&model, activations.as_deref()).map(|m| print!("{}", m.describe()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every message already names its cause.
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

//! The `diagfim` command line (contract in README.md). Exit code 0 on success, 2 on any
//! error (bad files, shapes, options), with a message that says how to fix it.

use clap::{Args, Parser, Subcommand};
use diagfim::engine::GpuContext;
use diagfim::engine::{
    analyze, analyze_partial, AnalysisOptions, Bounds, EngineKind, KeySet, Request,
};
use diagfim::output::Outputs;
use diagfim::report::SummaryOptions;
use diagfim::theory::pair::{pair, ParamRef};
use diagfim::{io, model, Activation, Family, Partial};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Environment variable: substring (case-insensitive) of the GPU adapter's name to use.
const ADAPTER_ENV: &str = "DIAGFIM_ADAPTER";
/// Environment variable: `1` makes a missing GPU adapter an error even for `--engine auto`.
const REQUIRE_GPU_ENV: &str = "DIAGFIM_REQUIRE_GPU";
/// Environment variable: the GEMM's register blocking, `4` (the default) or `8`.
const GEMM_R_ENV: &str = "DIAGFIM_GEMM_R";

/// A set, non-empty environment variable. A value that is not Unicode is an error.
fn env_value(name: &str) -> diagfim::Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(diagfim::Error::Input(format!(
            "{name}={}: the value is not valid Unicode; unset it or give a plain value",
            v.to_string_lossy()
        ))),
    }
}

/// A whole number ≥ 0 for an option (clap's value parser), with a message that says what
/// is wrong: negative, fractional or not a number.
fn whole<T: std::str::FromStr + std::fmt::Display>(s: &str, max: T) -> Result<T, String> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    t.parse::<T>().map_err(|_| {
        let what = if t.starts_with('-') && t[1..].parse::<f64>().is_ok() {
            "it is negative"
        } else if t.parse::<f64>().is_ok() {
            "it is not a whole number or is too large"
        } else {
            "it is not a number"
        };
        format!("{what}; give a whole number from 0 to {max}")
    })
}

fn parse_u64(s: &str) -> Result<u64, String> {
    whole(s, u64::MAX)
}

fn parse_usize(s: &str) -> Result<usize, String> {
    whole(s, usize::MAX)
}

/// Whether `DIAGFIM_REQUIRE_GPU` asks for a GPU (`1`; `0` or unset: no).
fn require_gpu() -> diagfim::Result<bool> {
    match env_value(REQUIRE_GPU_ENV)?.as_deref().map(str::trim) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => Err(diagfim::Error::Input(format!(
            "{REQUIRE_GPU_ENV}='{v}': use 1 (a missing GPU adapter is an error) or 0"
        ))),
    }
}

/// The GPU device the environment asks for (the library reads no environment variable; the
/// CLI maps them to a [`GpuContext`]): `DIAGFIM_ADAPTER` picks an adapter by name,
/// `DIAGFIM_GEMM_R=8` the wide GEMM blocking, and `DIAGFIM_REQUIRE_GPU=1` makes a missing
/// adapter an error for `--engine auto` too. `None`: the engine's default device.
#[cfg(feature = "gpu")]
fn gpu_from_env(engine: EngineKind) -> diagfim::Result<Option<Arc<GpuContext>>> {
    use diagfim::engine::gpu::{AdapterChoice, GpuOptions};
    let wide_gemm = match env_value(GEMM_R_ENV)?.as_deref().map(str::trim) {
        None | Some("4") => false,
        Some("8") => true,
        Some(v) => {
            return Err(diagfim::Error::Input(format!(
                "{GEMM_R_ENV}='{v}': use 4 (64×64 tiles, the default) or 8 (128×128 tiles)"
            )))
        }
    };
    let named = env_value(ADAPTER_ENV)?;
    let require = require_gpu()?;
    if engine == EngineKind::Cpu {
        return Ok(None);
    }
    if named.is_none() && !wide_gemm && !require && engine == EngineKind::Auto {
        return Ok(None);
    }
    let options = GpuOptions {
        adapter: named
            .clone()
            .map_or(AdapterChoice::Best, AdapterChoice::Named),
        wide_gemm,
    };
    match GpuContext::with_options(&options) {
        Ok(ctx) => Ok(Some(Arc::new(ctx))),
        Err(e) if engine == EngineKind::Gpu || require || named.is_some() => Err(match named {
            Some(n) => diagfim::Error::Gpu(match e {
                diagfim::Error::Gpu(msg) => format!("{msg} (from {ADAPTER_ENV}='{n}')"),
                other => format!("{other} (from {ADAPTER_ENV}='{n}')"),
            }),
            None => e,
        }),
        Err(_) => Ok(None),
    }
}

/// Without the `gpu` feature: no device; `DIAGFIM_REQUIRE_GPU=1` is an error.
#[cfg(not(feature = "gpu"))]
fn gpu_from_env(engine: EngineKind) -> diagfim::Result<Option<Arc<GpuContext>>> {
    env_value(ADAPTER_ENV)?;
    env_value(GEMM_R_ENV)?;
    if require_gpu()? && engine != EngineKind::Cpu {
        return Err(diagfim::Error::Gpu(format!(
            "{REQUIRE_GPU_ENV}=1 but this diagfim was built without the `gpu` feature"
        )));
    }
    Ok(None)
}

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
    Analyze(Box<AnalyzeArgs>),
    /// Off-diagonal FIM entry I(θ_ij) of a parameter pair, the exact variances of both
    /// estimators and the bounds of Thm B.1 / Cor. B.3, as JSON on stdout (means over inputs).
    Pair(PairArgs),
    /// Merge partial results (`analyze --partial`) of disjoint shards of the inputs into
    /// RESULT.safetensors and SUMMARY.json, exactly as one analysis of all the inputs.
    Merge(MergeArgs),
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
#[command(allow_negative_numbers = true)]
struct DataArgs {
    /// Model: safetensors state_dict of an nn.Sequential of nn.Linear layers.
    #[arg(long)]
    model: PathBuf,
    /// Inputs X: .npy, float32 or float64, shape [B, in].
    #[arg(long)]
    inputs: PathBuf,
    /// Output family: categorical (softmax over logits), gaussian (mean), bernoulli
    /// (multi-label: independent sigmoids over logits) or poisson (counts: log-rates).
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
        check_sigma2(&self.family, self.sigma2)?;
        let mlp = load_model(&self.model, self.activations.as_deref())?;
        let inputs = io::read_inputs(&self.inputs)?;
        Ok((family, mlp, inputs))
    }
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct AnalyzeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// N, labels sampled per input.
    #[arg(long, default_value_t = 16, value_parser = parse_usize)]
    samples: usize,
    /// Seed of the counter-based RNG.
    #[arg(long, default_value_t = 0, value_parser = parse_u64)]
    seed: u64,
    /// Data labels Y.npy (enables the empirical Fisher `ef`): classes [B] (categorical),
    /// targets [B, O] (gaussian), 0/1 [B, O] (bernoulli), counts [B, O] (poisson).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// auto (GPU when an adapter exists), cpu or gpu.
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Keep a leading input axis instead of averaging over inputs.
    #[arg(long)]
    per_input: bool,
    /// Inputs per block (memory only; results do not depend on it).
    #[arg(long, default_value_t = 256, value_parser = parse_usize)]
    batch_size: usize,
    /// CPU worker threads (0: all cores, at most 4 per core; results do not depend on it).
    #[arg(long, default_value_t = 0, value_parser = parse_usize)]
    threads: usize,
    /// Bounds to compute: all; keys (skip SUMMARY.json's per-tensor trace bounds, about half
    /// of the host's per-input work); none (no bound keys and no per-input spectra). The other
    /// keys do not change.
    #[arg(long, default_value = "all")]
    bounds: String,
    /// Keys to compute, comma-separated (e.g. `fisher` or `fisher,var1,var2,var_opt`), or all.
    /// Only what these keys need is computed (`--keys fisher`: one backward pass, no Hessian
    /// pass, no sampling, no spectra); the other keys are absent from RESULT and null in
    /// SUMMARY.json.
    #[arg(long, default_value = "all")]
    keys: String,
    /// Global index of the first input (a shard [K, K+B) of a data set): labels are sampled
    /// by global input index, so shards draw the labels of the whole run.
    #[arg(long, default_value_t = 0, value_parser = parse_u64)]
    input_offset: u64,
    /// Analyse only rows START..END of the inputs (and labels), as the shard of a data set:
    /// sets --input-offset to START (e.g. --rows 0:25000 --partial part0.safetensors).
    #[arg(long, value_name = "START:END", conflicts_with = "input_offset")]
    rows: Option<String>,
    /// RESULT.safetensors to write.
    #[arg(long, required_unless_present = "partial")]
    out: Option<PathBuf>,
    /// Write the partial result (sufficient statistics, for `diagfim merge`) to this
    /// safetensors file instead of RESULT and SUMMARY.
    #[arg(long, conflicts_with_all = ["out", "summary", "per_input"])]
    partial: Option<PathBuf>,
    #[command(flatten)]
    summary: SummaryArgs,
}

/// SUMMARY.json and its options: shared by `analyze` and `merge`.
#[derive(Args)]
struct SummaryArgs {
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

impl SummaryArgs {
    /// The summary options, validated.
    fn options(&self) -> diagfim::Result<SummaryOptions> {
        let opts = SummaryOptions {
            eps: self.eps,
            delta: self.delta,
            input_cost: self.input_cost,
        };
        opts.validate()?;
        Ok(opts)
    }

    /// RESULT (`--out`) and SUMMARY (`--summary`, when given) as labelled output paths.
    fn outputs<'a>(&'a self, out: &'a Path) -> Vec<(&'static str, &'a Path)> {
        let mut v = vec![("--out", out)];
        v.extend(self.summary.as_deref().map(|s| ("--summary", s)));
        v
    }

    /// Writes RESULT (and SUMMARY if asked) together, then prints the per-tensor table.
    fn write(
        &self,
        report: &diagfim::Report,
        outputs: &Outputs,
        out: &Path,
        opts: &SummaryOptions,
    ) -> diagfim::Result<()> {
        let mut contents = vec![report.result_bytes()?];
        if self.summary.is_some() {
            contents.push(report.summary_bytes(opts)?);
        }
        outputs.commit(&contents.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        println!(
            "{} inputs, N = {} labels each, engine {}, {:.3} s; per-tensor means:",
            report.run.inputs, report.run.samples, report.run.adapter, report.run.wall_time_s
        );
        print!("{}", report.table());
        println!("results: {}", out.display());
        Ok(())
    }
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct MergeArgs {
    /// Partial results written by `diagfim analyze --partial`, of disjoint input shards.
    #[arg(required = true, num_args = 1..)]
    parts: Vec<PathBuf>,
    /// RESULT.safetensors to write.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    summary: SummaryArgs,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
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

/// Refuses a Gaussian σ² whose powers leave f64's range: the variances scale as 1/σ⁴
/// (K = 3/σ⁴), so σ² below about 1e-150 overflows them and above about 1e150 flushes them
/// to zero. ([`Family::from_name`] has already refused σ² ≤ 0 and non-finite values.)
fn check_sigma2(family: &str, sigma2: f64) -> diagfim::Result<()> {
    let inv4 = 1.0 / (sigma2 * sigma2);
    let gaussian = family.trim().eq_ignore_ascii_case("gaussian");
    if gaussian && sigma2 > 0.0 && !(inv4.is_normal() && (sigma2 * sigma2).is_normal()) {
        return Err(diagfim::Error::Input(format!(
            "--sigma2 {sigma2:e} is outside the range diagfim can compute with: the variances \
             scale as 1/σ⁴ = {inv4:e}, beyond f64's range; give σ² between 1e-150 and 1e150 \
             (rescale the targets and the model's last layer instead)"
        )));
    }
    Ok(())
}

fn load_model(path: &Path, activations: Option<&str>) -> diagfim::Result<diagfim::Mlp> {
    let acts = activations.map(Activation::parse_list).transpose()?;
    model::load_safetensors(path, acts)
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

/// Parses `START:END` (END may be empty for the last row) against `b` rows.
fn parse_rows(rows: &str, b: usize) -> diagfim::Result<(usize, usize)> {
    let bad = |why: &str| {
        diagfim::Error::Input(format!(
            "--rows '{rows}': {why}; give START:END with 0 ≤ START < END ≤ {b} (the inputs have \
             {b} rows), e.g. --rows 0:{}",
            b.div_ceil(2)
        ))
    };
    let (s, e) = rows.split_once(':').ok_or_else(|| bad("no ':'"))?;
    let start: usize = s.trim().parse().map_err(|_| bad("START is not a number"))?;
    let end: usize = match e.trim() {
        "" => b,
        e => e.parse().map_err(|_| bad("END is not a number"))?,
    };
    if start >= end || end > b {
        return Err(bad("the range is empty or past the last row"));
    }
    Ok((start, end))
}

fn run_merge(a: MergeArgs) -> diagfim::Result<()> {
    let summary_opts = a.summary.options()?;
    let inputs: Vec<(&str, &Path)> = a.parts.iter().map(|p| ("partial", p.as_path())).collect();
    let outputs = Outputs::check(&inputs, &a.summary.outputs(&a.out))?;
    let mut merged: Option<Partial> = None;
    for path in &a.parts {
        let part = Partial::load(path)?;
        match merged.as_mut() {
            None => merged = Some(part),
            Some(m) => m
                .merge(&part)
                .map_err(|e| diagfim::Error::Partial(format!("'{}': {e}", path.display())))?,
        }
    }
    let merged =
        merged.ok_or_else(|| diagfim::Error::Partial("no partial results given".into()))?;
    let report = merged.finish()?;
    println!(
        "merged {} partial results: inputs {}",
        a.parts.len(),
        merged
            .ranges()
            .iter()
            .map(|(s, e)| format!("[{s}, {e})"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    a.summary.write(&report, &outputs, &a.out, &summary_opts)
}

fn run_analyze(a: AnalyzeArgs) -> diagfim::Result<()> {
    let summary_opts = a.summary.options()?;
    diagfim::resources::check_threads(a.threads)?;
    let mut inputs = vec![
        ("--model", a.data.model.as_path()),
        ("--inputs", a.data.inputs.as_path()),
    ];
    inputs.extend(a.labels.as_deref().map(|l| ("--labels", l)));
    let outputs = match (&a.partial, &a.out) {
        (Some(p), _) => Outputs::check(&inputs, &[("--partial", p)])?,
        (None, Some(out)) => Outputs::check(&inputs, &a.summary.outputs(out))?,
        (None, None) => {
            return Err(diagfim::Error::Input(
                "give --out RESULT.safetensors (or --partial PART.safetensors)".into(),
            ))
        }
    };
    let started = std::time::Instant::now();
    let engine: EngineKind = a.engine.parse()?;
    let gpu = gpu_from_env(engine)?;
    let bounds: Bounds = a.bounds.parse()?;
    let keys = KeySet::parse(&a.keys).map_err(|e| match e {
        diagfim::Error::Input(m) => diagfim::Error::Input(format!("--keys: {m}")),
        other => other,
    })?;
    let (family, mlp, inputs) = a.data.load()?;
    let labels = a
        .labels
        .as_ref()
        .map(|p| io::read_labels(p, family.as_dyn(), inputs.nrows(), mlp.output_dim()))
        .transpose()?;
    let (inputs, labels, input_offset) = match &a.rows {
        None => (inputs, labels, a.input_offset),
        Some(rows) => {
            let (start, end) = parse_rows(rows, inputs.nrows())?;
            (
                inputs.slice(ndarray::s![start..end, ..]).to_owned(),
                labels.map(|l| l[start..end].to_vec()),
                start as u64,
            )
        }
    };
    let bar =
        ProgressBar::with_draw_target(Some(inputs.nrows() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} analysing {pos}/{len} inputs [{bar:30}] {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let progress = |done: usize, _total: usize| bar.set_position(done as u64);
    let req = Request {
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
            keys,
            input_offset,
            gpu,
        },
        progress: Some(&progress),
    };
    match (&a.partial, &a.out) {
        (Some(path), _) => {
            let partial = analyze_partial(&req)?;
            bar.finish_and_clear();
            outputs.commit(&[&partial.to_bytes()?])?;
            println!(
                "partial result of inputs [{}, {}) ({} inputs, engine {}, {:.3} s): {}",
                input_offset,
                input_offset + partial.inputs() as u64,
                partial.inputs(),
                partial.engine(),
                started.elapsed().as_secs_f64(),
                path.display()
            );
            Ok(())
        }
        (None, Some(out)) => {
            let report = analyze(&req)?;
            bar.finish_and_clear();
            a.summary.write(&report, &outputs, out, &summary_opts)
        }
        (None, None) => Err(diagfim::Error::Input(
            "give --out RESULT.safetensors (or --partial PART.safetensors)".into(),
        )),
    }
}

/// Longest error message printed, in characters (the start and the end are kept).
const MAX_MESSAGE: usize = 2000;

/// Mesa's Vulkan drivers warn on stderr when `XDG_RUNTIME_DIR` is unset. Before any thread
/// exists, point it at a private folder of this user's (`$TMPDIR/diagfim-runtime-UID`, mode
/// 0700, created when missing; one owned by someone else or open to others is not used).
#[cfg(all(unix, feature = "gpu"))]
fn private_runtime_dir() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("diagfim-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let private = std::fs::symlink_metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
    if private {
        // Still single-threaded: nothing else reads or writes the environment now.
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

#[cfg(not(all(unix, feature = "gpu")))]
fn private_runtime_dir() {}

/// On SIGINT, SIGTERM and SIGHUP: remove the temporary output files, then exit with
/// 128 + the signal's number, as the shell reports a killed process.
fn remove_temporaries_on_signals() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    diagfim::output::remove_temporary_files();
                    std::process::exit(128 + sig);
                }
            });
        }
    }
}

fn main() -> ExitCode {
    private_runtime_dir();
    let cli = Cli::parse();
    remove_temporaries_on_signals();
    let result = match cli.command {
        Command::Analyze(a) => run_analyze(*a),
        Command::Pair(a) => run_pair(a),
        Command::Merge(a) => run_merge(a),
        Command::Info { model, activations } => {
            load_model(&model, activations.as_deref()).map(|m| print!("{}", m.describe()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every message already names its cause.
            eprintln!(
                "error: {}",
                diagfim::resources::cap_message(&e.to_string(), MAX_MESSAGE)
            );
            ExitCode::from(2)
        }
    }
}

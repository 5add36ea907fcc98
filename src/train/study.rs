//! The MNIST study of Soen & Sun (2024), run by `examples/mnist_tradeoffs.rs`: train an MLP and,
//! at initialisation and after every epoch, analyse one fixed random test input and a fixed
//! set of test inputs (their mean), per parameter group (layer). Writes `curves.csv`,
//! `figure1.png`, `figure1.svg`, the final checkpoint `model.safetensors`, the analysed
//! inputs `x_fixed.npy` / `x_mean.npy` and `run.json` (settings and timings).

use super::curves::{bounds_available, group_values, write_csv, CurveRow, InputKind};
use super::{permutation, plot, Dataset, EpochStats, Optimizer, TrainConfig, Trainer};
use crate::data::Mnist;
use crate::engine::{analyze, AnalysisOptions, Request};
use crate::family::Categorical;
use crate::model::{save_safetensors, StoreDtype};
use crate::{Activation, EngineKind, Error, Mlp, Result};
use ndarray::{Array2, ArrayView2, Axis};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The command-line help of the study.
pub const USAGE: &str = "\
mnist_tradeoffs: train an MLP on MNIST and follow, per layer and epoch, the diagonal Fisher
information, the exact variances of its estimators Î1/Î2, their Theorem 4.1 upper bounds and
Monte-Carlo estimates (Soen & Sun, NeurIPS 2024).

  --epochs E             epochs to train (default 2; the paper's setting is 20)
  --layers W0,W1,..,WL   layer widths, 784 first and 10 last (default 784,256,128,64,10)
  --layers L             or a depth: L dense layers with hidden widths 256,128,64,32,..
                         (e.g. --layers 5 gives 784-256-128-64-32-10)
  --activation A         hidden activation: identity, sigmoid (default), tanh, relu,
                         softplus, logsigmoid; or one per hidden layer, comma-separated
  --samples N            labels sampled per input; variances are those of the N-label
                         estimators (default 16, at least 2)
  --seed S               seed of initialisation, batch order, analysed inputs and sampled
                         labels (default 0)
  --engine auto|cpu|gpu  engine of the analysis and of training (default auto; training has
                         no GPU path yet, so gpu is an error and auto trains on the CPU)
  --train-subset K       train on the first K training images (default: all 60000)
  --out DIR              output folder (default out/mnist_tradeoffs)
  --help                 this text

DIR receives curves.csv, figure1.png, figure1.svg, model.safetensors (the final model, f64),
x_fixed.npy, x_mean.npy (the analysed test images) and run.json (settings and timings).
`--activation logsigmoid --layers 5` is the setting of the paper's Appendix E.
";

/// Settings of the study. [`StudyConfig::default`] is the short default of the example.
#[derive(Clone, Debug, PartialEq)]
pub struct StudyConfig {
    /// Training epochs (the curves have epochs 0 = initialisation to `epochs`).
    pub epochs: usize,
    /// [784, hidden…, 10].
    pub widths: Vec<usize>,
    /// One per hidden layer.
    pub activations: Vec<Activation>,
    /// N, labels sampled per input.
    pub samples: usize,
    /// Seed of the initialisation, the mini-batch order, the analysed test inputs and the
    /// sampled labels.
    pub seed: u64,
    /// Engine of the training and of the analyses.
    pub engine: EngineKind,
    /// First K training images; `None` for all.
    pub train_subset: Option<usize>,
    /// Output folder (created if missing).
    pub out: PathBuf,
    /// Size of the fixed set of test inputs averaged in the `mean` rows.
    pub mean_inputs: usize,
    /// Training mini-batch size.
    pub batch_size: usize,
    /// Training optimiser (default Adam(1e-3)).
    pub optimizer: Optimizer,
    /// Progress bars on stderr (drawn only on a terminal).
    pub progress: bool,
    /// Folder of the four MNIST `.gz` files.
    pub data_dir: PathBuf,
}

/// The example's flags (each takes a value).
const FLAGS: [&str; 8] = [
    "--epochs",
    "--layers",
    "--activation",
    "--samples",
    "--seed",
    "--engine",
    "--train-subset",
    "--out",
];

/// Hidden widths used by `--layers L`.
const DEPTH_WIDTHS: [usize; 5] = [256, 128, 64, 32, 16];
const MNIST_INPUTS: usize = 784;
const MNIST_CLASSES: usize = 10;

impl Default for StudyConfig {
    fn default() -> Self {
        StudyConfig {
            epochs: 2,
            widths: vec![MNIST_INPUTS, 256, 128, 64, MNIST_CLASSES],
            activations: vec![Activation::Sigmoid; 3],
            samples: 16,
            seed: 0,
            engine: EngineKind::Auto,
            train_subset: None,
            out: PathBuf::from("out/mnist_tradeoffs"),
            mean_inputs: 100,
            batch_size: 64,
            optimizer: Optimizer::adam(1e-3),
            progress: true,
            data_dir: crate::data::default_dir(),
        }
    }
}

/// Widths from `--layers`: a comma-separated list, or a single depth L.
pub fn parse_layers(text: &str) -> Result<Vec<usize>> {
    let bad = |msg: String| Error::Input(format!("--layers '{text}': {msg}"));
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let numbers = parts
        .iter()
        .map(|p| p.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad("expected widths like 784,256,128,64,10 or a depth like 4".into()))?;
    let widths = match numbers.as_slice() {
        [0] => return Err(bad("a depth of 0 layers".into())),
        &[depth] => {
            let hidden = (0..depth - 1).map(|k| DEPTH_WIDTHS[k.min(DEPTH_WIDTHS.len() - 1)]);
            std::iter::once(MNIST_INPUTS)
                .chain(hidden)
                .chain(std::iter::once(MNIST_CLASSES))
                .collect()
        }
        list => list.to_vec(),
    };
    if widths.first() != Some(&MNIST_INPUTS) || widths.last() != Some(&MNIST_CLASSES) {
        return Err(bad(format!(
            "MNIST needs {MNIST_INPUTS} inputs first and {MNIST_CLASSES} classes last"
        )));
    }
    if widths.contains(&0) {
        return Err(bad("every width must be at least 1".into()));
    }
    Ok(widths)
}

impl StudyConfig {
    /// Parses the example's flags (without the program name). `Ok(None)` means `--help`.
    /// Flags take their value as the next argument or after `=`.
    pub fn from_args(args: &[String]) -> Result<Option<StudyConfig>> {
        let mut c = StudyConfig::default();
        let mut activation = "sigmoid".to_string();
        let mut i = 0;
        while i < args.len() {
            let (flag, inline) = match args[i].split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (args[i].clone(), None),
            };
            if flag == "--help" || flag == "-h" {
                return Ok(None);
            }
            if !FLAGS.contains(&flag.as_str()) {
                return Err(Error::Input(format!(
                    "unknown flag '{flag}'; the flags are {} (see --help)",
                    FLAGS.join(", ")
                )));
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| Error::Input(format!("{flag} needs a value (see --help)")))?
                }
            };
            let number = |what: &str| -> Result<u64> {
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| Error::Input(format!("{flag} expects {what}, got '{value}'")))
            };
            let count = |what: &str| -> Result<usize> {
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| Error::Input(format!("{flag} expects {what}, got '{value}'")))
            };
            match flag.as_str() {
                "--epochs" => c.epochs = count("a number of epochs")?,
                "--layers" => c.widths = parse_layers(&value)?,
                "--activation" => activation = value,
                "--samples" => c.samples = count("a number of labels (at least 2)")?,
                "--seed" => c.seed = number("a non-negative integer")?,
                "--engine" => c.engine = value.parse()?,
                "--train-subset" => c.train_subset = Some(count("a number of images")?),
                "--out" => c.out = PathBuf::from(value),
                other => return Err(Error::Input(format!("unknown flag '{other}'"))),
            }
            i += 1;
        }
        c.activations = expand_activations(&activation, c.widths.len().saturating_sub(2))?;
        c.validate()?;
        Ok(Some(c))
    }

    /// Checks the settings; every problem is an error that says how to fix it.
    pub fn validate(&self) -> Result<()> {
        if self.widths.len() < 2
            || self.widths[0] != MNIST_INPUTS
            || self.widths.last() != Some(&MNIST_CLASSES)
        {
            return Err(Error::Input(format!(
                "layer widths {:?}: MNIST needs {MNIST_INPUTS} inputs first and \
                 {MNIST_CLASSES} classes last",
                self.widths
            )));
        }
        if self.activations.len() + 2 != self.widths.len() {
            return Err(Error::Input(format!(
                "{} hidden layers need {} activations, got {}",
                self.widths.len() - 2,
                self.widths.len() - 2,
                self.activations.len()
            )));
        }
        if self.samples < crate::MIN_SAMPLES_FOR_VARIANCE {
            return Err(Error::Input(format!(
                "--samples {}: at least {} labels per input are needed",
                self.samples,
                crate::MIN_SAMPLES_FOR_VARIANCE
            )));
        }
        if self.train_subset == Some(0) {
            return Err(Error::Input(
                "--train-subset 0: train on at least 1 image".into(),
            ));
        }
        if self.mean_inputs == 0 || self.mean_inputs >= 10_000 {
            return Err(Error::Input(format!(
                "{} mean inputs: use 1 to 9999 of the 10000 test images",
                self.mean_inputs
            )));
        }
        self.optimizer.validate()
    }

    /// "784-256-128-64-10 sigmoid".
    pub fn describe_model(&self) -> String {
        let widths: Vec<String> = self.widths.iter().map(|w| w.to_string()).collect();
        let acts = match self.activations.first() {
            Some(a) if self.activations.iter().all(|b| b == a) => a.to_string(),
            Some(_) => Activation::join(&self.activations),
            None => "(no hidden layer)".into(),
        };
        format!("{} {acts}", widths.join("-"))
    }
}

/// One activation for every hidden layer, or a comma-separated list of exactly `hidden`.
fn expand_activations(text: &str, hidden: usize) -> Result<Vec<Activation>> {
    let list = Activation::parse_list(text)?;
    match list.len() {
        1 => Ok(vec![list[0]; hidden]),
        n if n == hidden => Ok(list),
        n => Err(Error::Input(format!(
            "--activation '{text}' names {n} activations for {hidden} hidden layers: give one \
             name for all of them or one per hidden layer"
        ))),
    }
}

/// Timings and scores of one epoch (epoch 0 is the initialisation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochRecord {
    /// 0 = initialisation, e = after epoch e.
    pub epoch: usize,
    /// Mean training loss over the epoch's mini-batches (NaN at epoch 0).
    pub train_loss: f64,
    /// Test-set accuracy after the epoch.
    pub test_accuracy: f64,
    /// Test-set mean cross-entropy after the epoch.
    pub test_loss: f64,
    /// Wall time of the epoch's optimisation steps (0 at epoch 0).
    pub train_seconds: f64,
    /// Wall time of the two analyses (fixed input and mean) of this epoch.
    pub analysis_seconds: f64,
}

/// What the study produced (the files are in `config.out`).
#[derive(Clone, Debug)]
pub struct StudyResult {
    /// The rows of `curves.csv`.
    pub rows: Vec<CurveRow>,
    /// One record per epoch, from 0.
    pub epochs: Vec<EpochRecord>,
    /// Whether the reports held the Theorem 4.1 bound keys (`ub_var1`, `ub_var2`).
    pub bounds_available: bool,
    /// Test-set index of the fixed input and of the inputs of the mean.
    pub fixed_index: usize,
    /// Test-set indices of the inputs of the mean.
    pub mean_indices: Vec<usize>,
    /// Engine and adapter reported by the analysis, and the training backend.
    pub analysis_engine: String,
    /// The training backend's description.
    pub training_backend: String,
    /// Wall time of the whole study, in seconds.
    pub total_seconds: f64,
}

/// Philox round (the `permutation` key) that picks the analysed test inputs; epochs use
/// rounds 0, 1, … for batch order, so this one stays apart.
const ROUND_INPUTS: u32 = u32::MAX;

fn write_npy(path: &Path, x: &Array2<f64>) -> Result<()> {
    ndarray_npy::write_npy(path, &x.mapv(|v| v as f32)).map_err(|e| Error::Output {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Analyses `x` and returns one row per layer.
fn analyse(
    model: &Mlp,
    x: ArrayView2<f64>,
    config: &StudyConfig,
    kind: InputKind,
    record: &EpochRecord,
) -> Result<(Vec<CurveRow>, bool, String)> {
    let report = analyze(&Request {
        model,
        family: &Categorical,
        inputs: x,
        labels: None,
        options: AnalysisOptions {
            samples: config.samples,
            seed: config.seed,
            engine: config.engine,
            ..Default::default()
        },
        progress: None,
    })?;
    let rows = group_values(&report, config.samples)
        .into_iter()
        .map(|values| CurveRow {
            epoch: record.epoch,
            input: kind,
            inputs: x.nrows(),
            samples: config.samples,
            test_accuracy: record.test_accuracy,
            test_loss: record.test_loss,
            values,
        })
        .collect();
    let engine = if report.run.adapter.starts_with(report.run.engine.as_str()) {
        report.run.adapter.clone()
    } else {
        format!("{} ({})", report.run.engine, report.run.adapter)
    };
    Ok((rows, bounds_available(&report), engine))
}

/// Saves the model next to its final name, then renames it, so that an interrupted run
/// never leaves a half-written checkpoint.
fn save_model(model: &Mlp, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.partial");
    save_safetensors(model, &tmp, StoreDtype::F64)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
}

/// Runs the study and writes its files into `config.out`. `log` receives one line per event
/// (the example prints them).
pub fn run(config: &StudyConfig, log: &mut dyn FnMut(&str)) -> Result<StudyResult> {
    let started = Instant::now();
    config.validate()?;
    // The model and trainer first: a bad engine choice fails before the data is read.
    let model = Mlp::init(&config.widths, config.activations.clone(), config.seed)?;
    let params = model.num_params();
    let mut trainer = Trainer::new(
        model,
        TrainConfig {
            epochs: config.epochs,
            batch_size: config.batch_size,
            optimizer: config.optimizer,
            seed: config.seed,
            engine: config.engine,
            // The default device, shared with the analyses below.
            gpu: None,
            progress: config.progress,
            checkpoint_dir: None,
        },
    )?;
    let out = &config.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io("create", out, e))?;
    let mnist = Mnist::load(&config.data_dir)?;
    let train = Dataset::mnist_train(&mnist, config.train_subset)?;
    let test = Dataset::mnist_test(&mnist)?;
    let order = permutation(test.len(), config.seed, ROUND_INPUTS);
    let fixed_index = order[0];
    let mean_indices = order
        .get(1..=config.mean_inputs)
        .ok_or_else(|| {
            Error::Input(format!(
                "{} mean inputs and a fixed one need more than the {} test images",
                config.mean_inputs,
                test.len()
            ))
        })?
        .to_vec();
    let x_fixed = test.inputs().select(Axis(0), &[fixed_index]);
    let x_mean = test.inputs().select(Axis(0), &mean_indices);
    write_npy(&out.join("x_fixed.npy"), &x_fixed)?;
    write_npy(&out.join("x_mean.npy"), &x_mean)?;

    let training_backend = trainer.backend_name();
    log(&format!(
        "MNIST: training on {} images, testing on {}; model {} ({params} parameters); \
         {:?} on mini-batches of {}; training backend {training_backend}",
        train.len(),
        test.len(),
        config.describe_model(),
        config.optimizer,
        config.batch_size,
    ));
    log(&format!(
        "analysis: N = {} labels per input, fixed test input #{fixed_index} (label {}), mean \
         over {} test inputs, seed {}",
        config.samples,
        test.labels()[fixed_index],
        config.mean_inputs,
        config.seed
    ));

    let mut rows = Vec::new();
    let mut epochs = Vec::new();
    let mut bounds = true;
    let mut analysis_engine = String::new();
    for epoch in 0..=config.epochs {
        let stats = if epoch == 0 {
            None
        } else {
            Some(trainer.train_epoch(&train)?)
        };
        let eval = trainer.evaluate(&test)?;
        let mut record = EpochRecord {
            epoch,
            train_loss: stats.map_or(f64::NAN, |s: EpochStats| s.train_loss),
            test_accuracy: eval.accuracy,
            test_loss: eval.loss,
            train_seconds: stats.map_or(0.0, |s| s.train_seconds),
            analysis_seconds: 0.0,
        };
        let t = Instant::now();
        for (kind, x) in [(InputKind::Fixed, &x_fixed), (InputKind::Mean, &x_mean)] {
            let (r, b, engine) = analyse(trainer.model(), x.view(), config, kind, &record)?;
            rows.extend(r);
            bounds &= b;
            analysis_engine = engine;
        }
        record.analysis_seconds = t.elapsed().as_secs_f64();
        if epoch == 0 {
            log(&format!("analysis engine: {analysis_engine}"));
        }
        epochs.push(record);
        write_csv(&out.join("curves.csv"), &rows)?;
        save_model(trainer.model(), &out.join("model.safetensors"))?;
        // Before the first epoch there is no training loss (NaN in the CSV).
        let train_loss = if epoch == 0 {
            "      —".to_string()
        } else {
            format!("{:>7.4}", record.train_loss)
        };
        log(&format!(
            "epoch {epoch:>3}/{}  train loss {train_loss}  test loss {:.4}  test acc {:.4}  \
             (train {:.1} s, analysis {:.1} s)",
            config.epochs,
            record.test_loss,
            record.test_accuracy,
            record.train_seconds,
            record.analysis_seconds
        ));
    }
    if !bounds {
        log(
            "note: this build's reports have no ub_var1/ub_var2 keys (Theorem 4.1 bounds); their \
             columns and the log-ratios are NaN",
        );
    }

    let title = format!(
        "MNIST {}, N = {}: FIM, sd of Î1/Î2 and Thm 4.1 bounds per layer",
        config.describe_model(),
        config.samples
    );
    plot::draw_figure(
        &rows,
        &title,
        &out.join("figure1.png"),
        &out.join("figure1.svg"),
    )?;
    let result = StudyResult {
        rows,
        epochs,
        bounds_available: bounds,
        fixed_index,
        mean_indices,
        analysis_engine,
        training_backend,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    write_run_json(&out.join("run.json"), config, &result)?;
    log(&format!(
        "wrote {0}/curves.csv, {0}/figure1.png, {0}/figure1.svg, {0}/model.safetensors in \
         {1:.1} s",
        out.display(),
        result.total_seconds
    ));
    Ok(result)
}

fn write_run_json(path: &Path, config: &StudyConfig, r: &StudyResult) -> Result<()> {
    let finite = |v: f64| if v.is_finite() { Some(v) } else { None };
    let epochs: Vec<_> = r
        .epochs
        .iter()
        .map(|e| {
            serde_json::json!({
                "epoch": e.epoch,
                "train_loss": finite(e.train_loss),
                "test_accuracy": e.test_accuracy,
                "test_loss": e.test_loss,
                "train_seconds": e.train_seconds,
                "analysis_seconds": e.analysis_seconds,
            })
        })
        .collect();
    let json = serde_json::json!({
        "model": config.describe_model(),
        "widths": config.widths,
        "activations": Activation::join(&config.activations),
        "epochs": config.epochs,
        "samples": config.samples,
        "seed": config.seed,
        "engine": format!("{:?}", config.engine).to_lowercase(),
        "train_subset": config.train_subset,
        "batch_size": config.batch_size,
        "optimizer": format!("{:?}", config.optimizer),
        "fixed_index": r.fixed_index,
        "mean_indices": r.mean_indices,
        "analysis_engine": r.analysis_engine,
        "training_backend": r.training_backend,
        "threads": rayon::current_num_threads(),
        "bounds_available": r.bounds_available,
        "total_seconds": r.total_seconds,
        "per_epoch": epochs,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::Output {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io("write", path, e))
}

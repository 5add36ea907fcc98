//! The training loop: shuffled mini-batches, optimiser steps, evaluation and checkpoints.

use super::optim::OptimState;
use super::progress::bar;
use super::{permutation, select_backend, Backend, BatchStats, Dataset, Optimizer};
use crate::engine::GpuContext;
use crate::model::{save_safetensors, Mlp, StoreDtype};
use crate::{EngineKind, Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Epochs run by [`Trainer::fit`].
    pub epochs: usize,
    /// Mini-batch size (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// The optimiser and its hyper-parameters.
    pub optimizer: Optimizer,
    /// Seed of the mini-batch order (epoch e uses `permutation(n, seed, e)`).
    pub seed: u64,
    /// Training engine: `Gpu` needs an adapter, `Auto` uses a hardware GPU when there is one
    /// and the CPU otherwise (see `select_backend`).
    pub engine: EngineKind,
    /// The GPU device to train on ([`crate::engine::GpuContext::new`]); `None` uses the
    /// default one when the engine is the GPU's.
    pub gpu: Option<Arc<GpuContext>>,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// With `Some(dir)`, [`Trainer::fit`] writes `dir/epoch-XXX.safetensors` after each epoch.
    pub checkpoint_dir: Option<PathBuf>,
}

impl Default for TrainConfig {
    /// 20 epochs of Adam(1e-3) on mini-batches of 64, seed 0, engine `Auto`, with a progress
    /// bar.
    fn default() -> Self {
        TrainConfig {
            epochs: 20,
            batch_size: 64,
            optimizer: Optimizer::default(),
            seed: 0,
            engine: EngineKind::Auto,
            gpu: None,
            progress: true,
            checkpoint_dir: None,
        }
    }
}

impl PartialEq for TrainConfig {
    /// Equal options on the same GPU device (the same context, or none).
    fn eq(&self, o: &Self) -> bool {
        let same_gpu = match (&self.gpu, &o.gpu) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.epochs == o.epochs
            && self.batch_size == o.batch_size
            && self.optimizer == o.optimizer
            && self.seed == o.seed
            && self.engine == o.engine
            && same_gpu
            && self.progress == o.progress
            && self.checkpoint_dir == o.checkpoint_dir
    }
}

/// Loss and accuracy of a model on a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy −log p(y|x).
    pub loss: f64,
    /// Fraction of inputs whose arg-max logit is the label.
    pub accuracy: f64,
    /// Number of inputs evaluated.
    pub count: usize,
}

impl From<BatchStats> for Evaluation {
    fn from(s: BatchStats) -> Self {
        Evaluation {
            loss: s.mean_loss(),
            accuracy: s.accuracy(),
            count: s.count,
        }
    }
}

/// What one epoch gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// 1-based epoch number (epochs completed so far).
    pub epoch: usize,
    /// Mean loss and accuracy over the epoch's mini-batches (with the parameters of each step).
    pub train_loss: f64,
    /// See `train_loss`.
    pub train_accuracy: f64,
    /// Test loss and accuracy after the epoch (NaN when no test set is given).
    pub test_loss: f64,
    /// See `test_loss`.
    pub test_accuracy: f64,
    /// Wall time of the epoch's optimisation steps (without evaluation), in seconds.
    pub train_seconds: f64,
}

/// A model being trained, with its backend and optimiser state.
pub struct Trainer {
    model: Mlp,
    backend: Box<dyn Backend>,
    state: OptimState,
    config: TrainConfig,
    epoch: usize,
}

impl Trainer {
    /// A trainer on the backend `config.engine` selects (see [`select_backend`]).
    pub fn new(model: Mlp, config: TrainConfig) -> Result<Trainer> {
        let backend = select_backend(config.engine, config.gpu.as_ref())?;
        Trainer::with_backend(model, config, backend)
    }

    /// A trainer on a given backend (e.g. a `CpuBackend` with another chunk size).
    pub fn with_backend(
        model: Mlp,
        config: TrainConfig,
        backend: Box<dyn Backend>,
    ) -> Result<Trainer> {
        if config.batch_size == 0 {
            return Err(Error::Input(
                "batch size 0: give at least 1 input per mini-batch".into(),
            ));
        }
        let state = OptimState::new(config.optimizer)?;
        Ok(Trainer {
            model,
            backend,
            state,
            config,
            epoch: 0,
        })
    }

    /// The current model.
    pub fn model(&self) -> &Mlp {
        &self.model
    }

    /// The model, ending training.
    pub fn into_model(self) -> Mlp {
        self.model
    }

    /// Epochs completed.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The optimiser (its hyper-parameters, without the state).
    pub fn optimizer(&self) -> Optimizer {
        self.state.optimizer()
    }

    /// The backend's description.
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    fn check_data(&self, data: &Dataset, what: &str) -> Result<()> {
        if data.input_dim() != self.model.input_dim() {
            return Err(Error::Input(format!(
                "the {what} set has inputs of width {} but the model expects {}",
                data.input_dim(),
                self.model.input_dim()
            )));
        }
        if data.classes() > self.model.output_dim() {
            return Err(Error::Input(format!(
                "the {what} set has {} classes but the model only {} outputs",
                data.classes(),
                self.model.output_dim()
            )));
        }
        Ok(())
    }

    /// One epoch over `data` in the order `permutation(n, seed, epoch)`. Returns the epoch's
    /// statistics (test fields NaN). The parameters must stay finite: a diverging run is an
    /// error that suggests a smaller learning rate.
    pub fn train_epoch(&mut self, data: &Dataset) -> Result<EpochStats> {
        self.check_data(data, "training")?;
        let started = Instant::now();
        let order = permutation(data.len(), self.config.seed, self.epoch as u32);
        let batches = data.len().div_ceil(self.config.batch_size);
        let pb = bar(
            batches,
            self.config.progress,
            &format!(
                "epoch {} {{bar:30}} {{pos}}/{{len}} batches  loss {{msg}}  {{eta}}",
                self.epoch + 1
            ),
        );
        let mut total = BatchStats::default();
        for (b, idx) in order.chunks(self.config.batch_size).enumerate() {
            let (x, y) = data.gather(idx)?;
            let (stats, grads) = self.backend.loss_and_gradient(&self.model, x.view(), &y)?;
            self.state.step(&mut self.model, &grads);
            total.add(stats);
            if b % 20 == 0 {
                pb.set_message(format!("{:.4}", total.mean_loss()));
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
        self.check_finite()?;
        self.epoch += 1;
        Ok(EpochStats {
            epoch: self.epoch,
            train_loss: total.mean_loss(),
            train_accuracy: total.accuracy(),
            test_loss: f64::NAN,
            test_accuracy: f64::NAN,
            train_seconds: started.elapsed().as_secs_f64(),
        })
    }

    fn check_finite(&self) -> Result<()> {
        for d in self.model.layers() {
            let values = d.weight.iter().chain(d.bias.iter().flatten());
            if let Some(index) = values.into_iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!(
                        "the parameters of layer '{}' after epoch {} (training diverged: lower \
                         the learning rate)",
                        d.key,
                        self.epoch + 1
                    ),
                    index,
                });
            }
        }
        Ok(())
    }

    /// Loss and accuracy of the current model on `data`.
    pub fn evaluate(&self, data: &Dataset) -> Result<Evaluation> {
        self.check_data(data, "evaluation")?;
        let stats = self
            .backend
            .evaluate(&self.model, data.inputs(), data.labels())?;
        Ok(stats.into())
    }

    /// Saves the current model in the contract format (float64, so `diagfim analyze` sees
    /// exactly the trained parameters).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        save_safetensors(&self.model, path, StoreDtype::F64)
    }

    /// Runs `config.epochs` epochs; after each, evaluates on `test` (when given), writes the
    /// checkpoint (when `config.checkpoint_dir` is set) and calls `on_epoch`, whose error
    /// stops training. Returns the statistics of every epoch.
    pub fn fit(
        &mut self,
        train: &Dataset,
        test: Option<&Dataset>,
        mut on_epoch: impl FnMut(&Trainer, &EpochStats) -> Result<()>,
    ) -> Result<Vec<EpochStats>> {
        if let Some(dir) = &self.config.checkpoint_dir {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        let mut all = Vec::with_capacity(self.config.epochs);
        for _ in 0..self.config.epochs {
            let mut stats = self.train_epoch(train)?;
            if let Some(test) = test {
                let e = self.evaluate(test)?;
                stats.test_loss = e.loss;
                stats.test_accuracy = e.accuracy;
            }
            if let Some(dir) = &self.config.checkpoint_dir {
                self.save_checkpoint(&dir.join(format!("epoch-{:03}.safetensors", self.epoch)))?;
            }
            on_epoch(self, &stats)?;
            all.push(stats);
        }
        Ok(all)
    }
}

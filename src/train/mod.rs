//! Training of MLPs: mini-batch SGD or Adam on the softmax cross-entropy (the categorical
//! family's negative log-likelihood, with the network output h as logits), and the MNIST
//! study of Soen & Sun (2024) built on it.
//!
//! - [`Dataset`]: inputs and class labels, validated once.
//! - [`Backend`]: the engine that computes the loss gradient of a mini-batch. [`CpuBackend`]
//!   (f64, batched ndarray GEMMs, parallel over fixed chunks of the batch) and [`GpuBackend`]
//!   (f32 WGSL kernels shared with the GPU analysis engine), chosen by [`select_backend`]:
//!   [`EngineKind::Gpu`] requires an adapter ([`Error::Gpu`] otherwise), `Auto` uses a
//!   hardware GPU when there is one and the CPU otherwise.
//! - [`Optimizer`]: SGD with momentum, or Adam, with PyTorch's update rules.
//! - [`Trainer`]: epochs of shuffled mini-batches ([`permutation`], counter-based Philox,
//!   so runs are deterministic given a seed and independent of the thread count), test
//!   accuracy per epoch, a progress bar on stderr when it is a terminal, and checkpoints in
//!   the safetensors contract format that `diagfim analyze` reads.
//! - [`study`], [`curves`], [`plot`]: the MNIST study of `examples/mnist_tradeoffs.rs`
//!   (per-epoch FIM, exact variances, bounds and Monte-Carlo estimates per layer; CSV and
//!   Figure 1).
//!
//! ```no_run
//! use diagfim::train::{Dataset, TrainConfig, Trainer};
//! use diagfim::{Activation, Mlp};
//! # fn main() -> diagfim::Result<()> {
//! let mnist = diagfim::data::Mnist::load(diagfim::data::default_dir())?;
//! let train = Dataset::mnist_train(&mnist, Some(1000))?;
//! let test = Dataset::mnist_test(&mnist)?;
//! let model = Mlp::init(&[784, 128, 10], vec![Activation::Sigmoid], 0)?;
//! let mut trainer = Trainer::new(model, TrainConfig { epochs: 5, ..Default::default() })?;
//! for stats in trainer.fit(&train, Some(&test), |_, _| Ok(()))? {
//!     println!("epoch {}: test accuracy {:.3}", stats.epoch, stats.test_accuracy);
//! }
//! trainer.save_checkpoint("model.safetensors".as_ref())?;
//! # Ok(()) }
//! ```
//!
//! [`EngineKind::Gpu`]: crate::EngineKind::Gpu
//! [`Error::Gpu`]: crate::Error::Gpu

mod backend;
mod cpu;
#[cfg(feature = "study")]
pub mod curves;
mod dataset;
#[cfg(feature = "gpu")]
mod gpu;
mod optim;
#[cfg(feature = "study")]
pub mod plot;
mod progress;
mod shuffle;
#[cfg(feature = "study")]
pub mod study;
mod trainer;

pub use backend::{select_backend, Backend, BatchStats, Gradients};
pub use cpu::CpuBackend;
pub use dataset::Dataset;
#[cfg(feature = "gpu")]
pub use gpu::GpuBackend;
pub use optim::Optimizer;
pub use shuffle::{permutation, STREAM_SHUFFLE};
pub use trainer::{EpochStats, Evaluation, TrainConfig, Trainer};

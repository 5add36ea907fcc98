//! The one error type of the crate. Every message says what was wrong and how to fix it.

use std::path::PathBuf;

/// Everything that can go wrong in diagfim. No public function panics on bad input.
///
/// `Debug` prints the same message as `Display`, so that an error returned from `main`
/// (`fn main() -> diagfim::Result<()>`) reads as a sentence, not as a struct dump.
#[derive(thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("cannot {action} '{path}': {source}")]
    Io {
        /// What was attempted ("open", "read", "write", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A model file is not a valid safetensors file or misses what the contract asks for.
    #[error("model file '{path}': {msg}")]
    ModelFile {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The model's layers are inconsistent (shapes that do not chain, missing tensors, ...).
    #[error("invalid model: {0}")]
    Model(String),
    /// An activation name that diagfim does not support.
    #[error("unknown activation '{name}': supported are identity, sigmoid, tanh, relu, softplus, logsigmoid")]
    UnknownActivation {
        /// The name as given.
        name: String,
    },
    /// A .npy array (inputs or labels) has the wrong dtype, shape or contents.
    #[error("array file '{path}': {msg}")]
    ArrayFile {
        /// The .npy file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// Inputs, labels or options that do not fit the model or each other.
    #[error("invalid input: {0}")]
    Input(String),
    /// NaN or infinity where finite numbers are required.
    #[error("non-finite value in {what} at index {index}: diagfim needs finite numbers; clean the data or the model")]
    NonFinite {
        /// Which data or tensor holds the value.
        what: String,
        /// Where in `what` the value is (a flat index, unless `what` says otherwise).
        index: usize,
    },
    /// An IDX (MNIST) data file that is missing, corrupt or not what was expected.
    #[error("IDX file '{path}': {msg}")]
    Idx {
        /// The IDX file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The GPU engine is unavailable or failed.
    #[error("GPU engine: {0}")]
    Gpu(String),
    /// The run leaves the f32 GPU engine's numeric range (scales, saturated units, Poisson
    /// rates): the CPU engine (f64) can run it, and [`crate::EngineKind::Auto`] falls back to
    /// it.
    #[error("GPU engine: {0}")]
    GpuRange(String),
    /// A partial result that cannot be read or merged (docs/scale-out.md).
    #[error("partial result: {0}")]
    Partial(String),
    /// A bug in diagfim, not in the caller's input: please report it.
    #[error("internal error (a bug in diagfim, please report it): {0}")]
    Internal(String),
    /// The run needs more memory (or other resources) than the machine has; the message
    /// says how to need less.
    #[error("not enough resources: {0}")]
    Resources(String),
    /// Writing results failed.
    #[error("cannot write results to '{path}': {msg}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error with the path it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

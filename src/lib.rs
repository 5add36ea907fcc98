//! diagfim: the diagonal of the Fisher information matrix of MLPs, the exact variances of its
//! two Monte-Carlo estimators Î1 (squared scores) and Î2 (negative Hessians), and the
//! estimators' Monte-Carlo values, following Soen & Sun, "Trade-Offs of Diagonal Fisher
//! Information Matrix Estimators" (NeurIPS 2024). Formulas are cited by equation number in
//! the paper; "MATH §n" and "DESIGN §n" refer to sections of docs/math.md and docs/design.md.
//!
//! ```no_run
//! use diagfim::{analyze, AnalysisOptions, Family, Request};
//! # fn main() -> diagfim::Result<()> {
//! let model = diagfim::model::load_safetensors("model.safetensors".as_ref(), None)?;
//! let inputs = diagfim::io::read_inputs("x.npy".as_ref())?;
//! let family = Family::from_name("categorical", 1.0)?;
//! let report = analyze(&Request {
//!     model: &model,
//!     family: family.as_dyn(),
//!     inputs: inputs.view(),
//!     labels: None,
//!     options: AnalysisOptions { samples: 16, ..Default::default() },
//!     progress: None,
//! })?;
//! println!("{}", report.table());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

#[cfg(feature = "study")]
pub mod data;
pub mod engine;
pub mod error;
pub mod family;
pub mod io;
pub mod model;
pub mod output;
pub mod report;
pub mod resources;
pub mod rng;
mod simd;
pub mod theory;
pub mod train;

pub use engine::partial::{self, Partial};
pub use engine::{
    analyze, analyze_model, analyze_partial, AnalysisOptions, Bounds, EngineKind, KeySet, Needs,
    Request,
};
pub use error::{Error, Result};
pub use family::{Categorical, ExpFamily, Family, Gaussian, Label};
pub use model::{Activation, Mlp};
pub use ndarray;
pub use report::{Engine, Estimator, Key, ParamKind, Report};

/// Sample variances need at least two sampled labels per input.
pub const MIN_SAMPLES_FOR_VARIANCE: usize = 2;

/// The README's Rust snippets, compiled by `cargo test` so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

//! Data sets.

pub mod idx;

pub use idx::{default_dir, read_idx_images, read_idx_labels, Images, Mnist};

//! PyTorch-default initialisation of `nn.Linear`: kaiming_uniform(a = √5) for the weight,
//! which is U(−1/√fan_in, 1/√fan_in), and the same bound for the bias.

use super::{Activation, Dense, Mlp};
use crate::{rng, Error, Result};
use ndarray::{Array1, Array2};

/// Uniform draws on (−bound, bound), keyed by (seed, layer, tensor, element).
fn uniform_tensor(seed: u64, layer: u32, tensor: u32, n: usize, bound: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    let mut blockno = 0u32;
    while out.len() < n {
        let w = rng::block(seed, rng::STREAM_INIT, layer, tensor, blockno);
        for word in w {
            if out.len() < n {
                out.push((2.0 * rng::uniform(word) - 1.0) * bound);
            }
        }
        blockno += 1;
    }
    out
}

pub(super) fn pytorch_default(
    widths: &[usize],
    activations: Vec<Activation>,
    seed: u64,
) -> Result<Mlp> {
    if widths.len() < 2 || widths.contains(&0) {
        return Err(Error::Model(format!(
            "widths must list at least an input and an output size, all > 0; got {widths:?}"
        )));
    }
    let layers = widths
        .windows(2)
        .enumerate()
        .map(|(l, w)| {
            let (fan_in, fan_out) = (w[0], w[1]);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let weight = uniform_tensor(seed, l as u32, 0, fan_in * fan_out, bound);
            let bias = uniform_tensor(seed, l as u32, 1, fan_out, bound);
            Dense {
                key: 2 * l, // nn.Sequential(Linear, act, Linear, act, …) numbering
                weight: Array2::from_shape_vec((fan_out, fan_in), weight)
                    .expect("length matches shape"),
                bias: Some(Array1::from(bias)),
            }
        })
        .collect();
    Mlp::new(layers, activations)
}

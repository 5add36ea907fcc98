//! Multi-layer perceptrons: dense layers z_l = W_l a_{l−1} + b_l, elementwise activations
//! between them and a linear head whose output h is the family's natural parameter (MATH §6.1).

mod activation;
mod init;
mod io;

pub use activation::{sigmoid, softplus, Activation};
pub use io::{load_safetensors, model_from_bytes, save_safetensors, StoreDtype};

use crate::{Error, Result};
use ndarray::{Array1, Array2, ArrayView1};

/// One dense layer. `key` is the integer k of the `<k>.weight` / `<k>.bias` tensor names.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// The integer k of the layer's tensor names.
    pub key: usize,
    /// Shape [out, in], as PyTorch stores it.
    pub weight: Array2<f64>,
    /// Shape `[out]`, when the layer has a bias.
    pub bias: Option<Array1<f64>>,
}

impl Dense {
    /// Input width (columns of the weight).
    pub fn inputs(&self) -> usize {
        self.weight.ncols()
    }
    /// Output width (rows of the weight).
    pub fn outputs(&self) -> usize {
        self.weight.nrows()
    }
    /// z = W a + b.
    pub fn apply(&self, a: ArrayView1<f64>) -> Array1<f64> {
        let mut z = self.weight.dot(&a);
        if let Some(b) = &self.bias {
            z += b;
        }
        z
    }
}

/// One input's forward pass with derivatives ([`Mlp::forward_with_derivatives`]).
#[derive(Clone, Debug)]
pub struct ForwardPass {
    /// Layer inputs a_{l−1} for every layer l (a_0 = x).
    pub layer_inputs: Vec<Array1<f64>>,
    /// σ'(z_l) of every hidden layer.
    pub d1: Vec<Array1<f64>>,
    /// σ''(z_l) of every hidden layer.
    pub d2: Vec<Array1<f64>>,
    /// The network output h.
    pub h: Array1<f64>,
}

/// A validated MLP: shapes chain, one activation per hidden layer, all weights finite.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    layers: Vec<Dense>,
    activations: Vec<Activation>,
}

/// One model parameter tensor (a weight or a bias), as named in the model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Tensor name, `<k>.weight` or `<k>.bias`.
    pub name: String,
    /// Index of the layer (0-based position, not the key k).
    pub layer: usize,
    /// Whether the tensor is a bias.
    pub is_bias: bool,
    /// Shape: `[out, in]` for a weight, `[out]` for a bias.
    pub shape: Vec<usize>,
}

impl ParamInfo {
    /// Number of entries.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Mlp {
    /// Builds and validates a model. `activations` has one entry per hidden layer.
    pub fn new(layers: Vec<Dense>, activations: Vec<Activation>) -> Result<Mlp> {
        if layers.is_empty() {
            return Err(Error::Model("the model has no layers".into()));
        }
        if activations.len() + 1 != layers.len() {
            return Err(Error::Model(format!(
                "{} layers need {} hidden activations, got {} ({}); give them in the file's \
                 'activations' metadata or with --activations",
                layers.len(),
                layers.len() - 1,
                activations.len(),
                Activation::join(&activations)
            )));
        }
        for (l, d) in layers.iter().enumerate() {
            if d.outputs() == 0 || d.inputs() == 0 {
                return Err(Error::Model(format!(
                    "layer {} ('{}.weight') has an empty shape {:?}",
                    l,
                    d.key,
                    d.weight.shape()
                )));
            }
            if let Some(b) = &d.bias {
                if b.len() != d.outputs() {
                    return Err(Error::Model(format!(
                        "'{}.bias' has {} entries but '{}.weight' has {} rows",
                        d.key,
                        b.len(),
                        d.key,
                        d.outputs()
                    )));
                }
            }
            if l > 0 && layers[l - 1].outputs() != d.inputs() {
                return Err(Error::Model(format!(
                    "layer shapes do not chain: '{}.weight' outputs {} values but '{}.weight' \
                     expects {} inputs",
                    layers[l - 1].key,
                    layers[l - 1].outputs(),
                    d.key,
                    d.inputs()
                )));
            }
            let values = d.weight.iter().chain(d.bias.iter().flatten());
            if let Some(index) = values.into_iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("the parameters of layer '{}' (weight then bias)", d.key),
                    index,
                });
            }
        }
        Ok(Mlp {
            layers,
            activations,
        })
    }

    /// A model with PyTorch's default `nn.Linear` initialisation (U(±1/√fan_in) for weight and
    /// bias), drawn from the counter-based RNG with `seed`. `widths` = [in, h1, …, out].
    pub fn init(widths: &[usize], activations: Vec<Activation>, seed: u64) -> Result<Mlp> {
        init::pytorch_default(widths, activations, seed)
    }

    /// The dense layers, input to output.
    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }
    /// Mutable layers (for training updates); callers must keep the shapes and finite values.
    pub fn layers_mut(&mut self) -> &mut [Dense] {
        &mut self.layers
    }
    /// The hidden activations, one per hidden layer (the head is linear).
    pub fn activations(&self) -> &[Activation] {
        &self.activations
    }
    /// Replaces the hidden activations (e.g. from `--activations`).
    pub fn with_activations(self, activations: Vec<Activation>) -> Result<Mlp> {
        Mlp::new(self.layers, activations)
    }
    /// Input width of the network.
    pub fn input_dim(&self) -> usize {
        self.layers[0].inputs()
    }
    /// Output width O of the network (the length of h).
    pub fn output_dim(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs()
    }
    /// [in, h1, …, out].
    pub fn widths(&self) -> Vec<usize> {
        std::iter::once(self.input_dim())
            .chain(self.layers.iter().map(Dense::outputs))
            .collect()
    }
    /// The parameter tensors in file order: per layer the weight, then the bias if any.
    pub fn params(&self) -> Vec<ParamInfo> {
        let mut out = Vec::new();
        for (l, d) in self.layers.iter().enumerate() {
            out.push(ParamInfo {
                name: format!("{}.weight", d.key),
                layer: l,
                is_bias: false,
                shape: vec![d.outputs(), d.inputs()],
            });
            if d.bias.is_some() {
                out.push(ParamInfo {
                    name: format!("{}.bias", d.key),
                    layer: l,
                    is_bias: true,
                    shape: vec![d.outputs()],
                });
            }
        }
        out
    }
    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(ParamInfo::numel).sum()
    }

    /// The forward pass of one input with the activations' first and second derivatives
    /// (MATH §6.1): the layer inputs a_{l−1} of every layer, σ'(z_l) and σ''(z_l) of every
    /// hidden layer, and the output h.
    pub fn forward_with_derivatives(&self, x: ArrayView1<f64>) -> ForwardPass {
        let nl = self.layers.len();
        let mut pass = ForwardPass {
            layer_inputs: Vec::with_capacity(nl),
            d1: Vec::with_capacity(nl - 1),
            d2: Vec::with_capacity(nl - 1),
            h: Array1::zeros(0),
        };
        let mut a = x.to_owned();
        for (l, layer) in self.layers.iter().enumerate() {
            let z = layer.apply(a.view());
            pass.layer_inputs.push(a);
            a = match self.activations.get(l) {
                Some(act) => {
                    let n = z.len();
                    let (mut out, mut s1, mut s2) =
                        (Array1::zeros(n), Array1::zeros(n), Array1::zeros(n));
                    for j in 0..n {
                        (out[j], s1[j], s2[j]) = act.eval(z[j]);
                    }
                    pass.d1.push(s1);
                    pass.d2.push(s2);
                    out
                }
                None => z,
            };
        }
        pass.h = a;
        pass
    }

    /// The network output h(x) (MATH §6.1).
    pub fn forward(&self, x: ArrayView1<f64>) -> Array1<f64> {
        let mut a = x.to_owned();
        for (l, d) in self.layers.iter().enumerate() {
            let z = d.apply(a.view());
            a = match self.activations.get(l) {
                Some(act) => z.mapv(|v| act.value(v)),
                None => z,
            };
        }
        a
    }

    /// A human-readable description (used by `diagfim info`).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "MLP {}  ({} layers, {} parameters)\n",
            self.widths()
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join("-"),
            self.layers.len(),
            self.num_params()
        );
        for (l, d) in self.layers.iter().enumerate() {
            let act = self
                .activations
                .get(l)
                .map_or("linear head (natural parameter h)".to_string(), |a| {
                    a.to_string()
                });
            s += &format!(
                "  layer {l}: '{}.weight' [{}, {}]{}  → {act}\n",
                d.key,
                d.outputs(),
                d.inputs(),
                if d.bias.is_some() {
                    format!(" + '{}.bias' [{}]", d.key, d.outputs())
                } else {
                    "  (no bias)".into()
                }
            );
        }
        s
    }
}

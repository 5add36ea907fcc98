//! Loading and saving models as PyTorch's `safetensors.torch.save_file` writes the
//! state_dict of an `nn.Sequential` of `nn.Linear` layers: `<k>.weight` `[out, in]` and
//! optional `<k>.bias` `[out]`, f32 or f64, hidden activations in the metadata key
//! `activations`.

use super::{Activation, Dense, Mlp};
pub use crate::io::StoreDtype;
use crate::io::{read_file, write_safetensors, NamedTensor};
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The weight and optional bias found for one layer key.
type LayerTensors = (Option<Array2<f64>>, Option<Array1<f64>>);

/// Metadata key holding the comma-separated hidden activations.
pub const ACTIVATIONS_KEY: &str = "activations";

fn file_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::ModelFile {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn to_f64(path: &Path, name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f64>> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()),
        Dtype::F64 => Ok(data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()),
        other => Err(file_error(
            path,
            format!(
                "tensor '{name}' has dtype {other:?}; diagfim reads float32 or float64 \
                 (convert with model.float() or model.double() before saving)"
            ),
        )),
    }
}

/// Loads a model. `activations` overrides the file's metadata when given.
pub fn load_safetensors(path: &Path, activations: Option<Vec<Activation>>) -> Result<Mlp> {
    model_from_bytes(path, &read_file(path)?, activations)
}

/// A model from the bytes of a safetensors file ([`load_safetensors`]); `path` names the
/// file in messages.
pub fn model_from_bytes(
    path: &Path,
    bytes: &[u8],
    activations: Option<Vec<Activation>>,
) -> Result<Mlp> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        file_error(
            path,
            format!("not a valid safetensors file ({e}); save it with safetensors.torch.save_file"),
        )
    })?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| file_error(path, format!("unreadable header: {e}")))?;

    // Group tensors by layer key k.
    let mut groups: BTreeMap<usize, LayerTensors> = BTreeMap::new();
    // The tensor name already read for each (layer key, kind), to reject '0.weight' and
    // '00.weight' in one file instead of silently keeping one of them.
    let mut seen: HashMap<(usize, String), String> = HashMap::new();
    for (name, view) in st.tensors() {
        let parsed = name
            .rsplit_once('.')
            .and_then(|(k, kind)| k.parse::<usize>().ok().map(|k| (k, kind)));
        let Some((k, kind)) = parsed else {
            return Err(file_error(
                path,
                format!(
                    "unexpected tensor '{name}': expected '<k>.weight' / '<k>.bias' of an \
                     nn.Sequential of nn.Linear layers"
                ),
            ));
        };
        let duplicate = matches!(kind, "weight" | "bias")
            .then(|| seen.insert((k, kind.to_string()), name.clone()))
            .flatten();
        if let Some(other) = duplicate {
            return Err(file_error(
                path,
                format!(
                    "tensors '{other}' and '{name}' both give the {kind} of the same layer {k}; \
                     keep only one"
                ),
            ));
        }
        let values = to_f64(path, &name, &view)?;
        let shape = view.shape().to_vec();
        let entry = groups.entry(k).or_default();
        match (kind, shape.as_slice()) {
            ("weight", &[rows, cols]) => {
                entry.0 = Some(
                    Array2::from_shape_vec((rows, cols), values)
                        .map_err(|e| file_error(path, format!("tensor '{name}': {e}")))?,
                )
            }
            ("bias", &[_]) => entry.1 = Some(Array1::from(values)),
            ("weight" | "bias", _) => {
                return Err(file_error(
                    path,
                    format!(
                        "tensor '{name}' has shape {shape:?}; a weight must be 2-D [out, in] \
                         and a bias 1-D [out]"
                    ),
                ))
            }
            _ => {
                return Err(file_error(
                    path,
                    format!("unexpected tensor '{name}': only '.weight' and '.bias' are supported"),
                ))
            }
        }
    }
    if groups.is_empty() {
        return Err(file_error(path, "the file holds no tensors"));
    }
    let mut layers = Vec::with_capacity(groups.len());
    for (key, (weight, bias)) in groups {
        let weight = weight.ok_or_else(|| {
            file_error(
                path,
                format!("'{key}.bias' exists but '{key}.weight' is missing"),
            )
        })?;
        layers.push(Dense { key, weight, bias });
    }
    let activations = match activations {
        Some(a) => a,
        None => match meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(ACTIVATIONS_KEY))
        {
            Some(list) => Activation::parse_list(list).map_err(|e| {
                file_error(
                    path,
                    format!(
                        "'{ACTIVATIONS_KEY}' metadata \"{list}\": {e}; fix the metadata or \
                         override it with --activations"
                    ),
                )
            })?,
            None if layers.len() == 1 => Vec::new(),
            None => {
                return Err(file_error(
                    path,
                    format!(
                        "no '{ACTIVATIONS_KEY}' metadata: pass --activations with {} name{} \
                         (one per hidden layer), e.g. --activations {}",
                        layers.len() - 1,
                        if layers.len() == 2 { "" } else { "s" },
                        vec!["sigmoid"; layers.len() - 1].join(",")
                    ),
                ))
            }
        },
    };
    Mlp::new(layers, activations)
}

/// Saves a model in the same format (with `format = pt` and the activations as metadata).
pub fn save_safetensors(model: &Mlp, path: &Path, dtype: StoreDtype) -> Result<()> {
    let mut tensors = Vec::new();
    for d in model.layers() {
        tensors.push(NamedTensor {
            name: format!("{}.weight", d.key),
            shape: vec![d.outputs(), d.inputs()],
            values: d.weight.as_slice().ok_or_else(|| {
                Error::Model("weights must be in standard (row-major) layout".into())
            })?,
        });
        if let Some(b) = &d.bias {
            tensors.push(NamedTensor {
                name: format!("{}.bias", d.key),
                shape: vec![d.outputs()],
                values: b
                    .as_slice()
                    .ok_or_else(|| Error::Model("biases must be contiguous".into()))?,
            });
        }
    }
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            ACTIVATIONS_KEY.to_string(),
            Activation::join(model.activations()),
        ),
    ]);
    write_safetensors(path, &tensors, dtype, Some(meta))
}

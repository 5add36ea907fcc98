//! File formats: safetensors writing shared by models and results, and .npy inputs/labels.

use crate::family::{ExpFamily, Label};
use crate::{Error, Result};
use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2};
use ndarray_npy::{ReadNpyError, ReadNpyExt, ReadableElement};
use safetensors::{Dtype, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Floating-point precision of a written safetensors tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
}

/// A tensor to write: name, shape and values (converted to the store dtype on write).
pub struct NamedTensor<'a> {
    /// The tensor's name in the file.
    pub name: String,
    /// Its shape (row-major).
    pub shape: Vec<usize>,
    /// Its values, row-major; `shape`'s product of them.
    pub values: &'a [f64],
}

/// A tensor owned as (name, shape, values), before it is written.
pub type OwnedTensor = (String, Vec<usize>, Vec<f64>);

/// Borrowed views of owned tensors, for [`write_safetensors`] and [`safetensors_bytes`].
pub fn named(owned: &[OwnedTensor]) -> Vec<NamedTensor<'_>> {
    owned
        .iter()
        .map(|(name, shape, values)| NamedTensor {
            name: name.clone(),
            shape: shape.clone(),
            values,
        })
        .collect()
}

struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Encodes tensors (little-endian, as safetensors requires) in the store dtype.
fn encode(tensors: &[NamedTensor<'_>], dtype: StoreDtype) -> Vec<(String, Encoded)> {
    tensors
        .iter()
        .map(|t| {
            let bytes = match dtype {
                StoreDtype::F64 => t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                StoreDtype::F32 => t
                    .values
                    .iter()
                    .flat_map(|v| (*v as f32).to_le_bytes())
                    .collect(),
            };
            let dtype = match dtype {
                StoreDtype::F64 => Dtype::F64,
                StoreDtype::F32 => Dtype::F32,
            };
            (
                t.name.clone(),
                Encoded {
                    dtype,
                    shape: t.shape.clone(),
                    bytes,
                },
            )
        })
        .collect()
}

/// Writes tensors (little-endian, as safetensors requires) with optional header metadata.
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor<'_>],
    dtype: StoreDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let encoded = encode(tensors, dtype);
    safetensors::serialize_to_file(encoded.iter().map(|(n, e)| (n, e)), metadata, path).map_err(
        |e| Error::Output {
            path: path.to_path_buf(),
            msg: e.to_string(),
        },
    )
}

/// The bytes of a safetensors file holding `tensors`, with optional header metadata.
pub fn safetensors_bytes(
    tensors: &[NamedTensor<'_>],
    dtype: StoreDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let encoded = encode(tensors, dtype);
    safetensors::serialize(encoded.iter().map(|(n, e)| (n, e)), metadata)
        .map_err(|e| Error::Partial(format!("cannot encode the tensors: {e}")))
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("read", path, e))
}

fn npy_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::ArrayFile {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Tries to read `bytes` as an .npy array of element type T and dimension D.
fn try_read<T, D>(bytes: &[u8]) -> std::result::Result<ndarray::Array<T, D>, ReadNpyError>
where
    T: ReadableElement,
    D: ndarray::Dimension,
{
    ndarray::Array::<T, D>::read_npy(bytes)
}

/// Describes the dtype and shape of an .npy file for error messages.
fn describe_npy(bytes: &[u8]) -> String {
    macro_rules! probe {
        ($($t:ty => $name:expr),*) => {
            $( if let Ok(a) = try_read::<$t, ndarray::IxDyn>(bytes) {
                return format!("dtype {} and shape {:?}", $name, a.shape());
            } )*
        };
    }
    probe!(f64 => "float64", f32 => "float32", i64 => "int64", i32 => "int32",
           u8 => "uint8", bool => "bool");
    try_read::<f64, ndarray::IxDyn>(bytes)
        .err()
        .map_or("an unreadable array".into(), |e| {
            format!("an unsupported layout ({e})")
        })
}

fn check_finite<'a>(what: &str, values: impl Iterator<Item = &'a f64>) -> Result<()> {
    for (index, v) in values.enumerate() {
        if !v.is_finite() {
            return Err(Error::NonFinite {
                what: what.to_string(),
                index,
            });
        }
    }
    Ok(())
}

/// Reads inputs X of shape [B, in] (float32 or float64) as f64, checking finiteness.
pub fn read_inputs(path: &Path) -> Result<Array2<f64>> {
    let bytes = read_file(path)?;
    let x = match try_read::<f64, Ix2>(&bytes) {
        Ok(a) => a,
        Err(_) => match try_read::<f32, Ix2>(&bytes) {
            Ok(a) => a.mapv(f64::from),
            Err(_) => {
                return Err(npy_error(
                    path,
                    format!(
                        "inputs must be a float32 or float64 array of shape [B, in]; found {}",
                        describe_npy(&bytes)
                    ),
                ))
            }
        },
    };
    check_finite(&format!("inputs '{}'", path.display()), x.iter())?;
    Ok(x)
}

/// Reads data labels for the empirical Fisher: integer classes of shape `[B]` (categorical),
/// float targets of shape `[B, O]` (Gaussian), 0/1 indicators `[B, O]` (Bernoulli: bool,
/// integer or float holding only 0/1) or counts `[B, O]` (Poisson: integer, or float holding
/// whole numbers ≥ 0); `[B]` is accepted for `[B, 1]`.
pub fn read_labels(
    path: &Path,
    family: &dyn ExpFamily,
    inputs: usize,
    outputs: usize,
) -> Result<Vec<Label>> {
    let bytes = read_file(path)?;
    let labels = if family.name() == "categorical" {
        let classes: Option<Array1<i64>> = try_read::<i64, Ix1>(&bytes)
            .ok()
            .or_else(|| try_read::<i32, Ix1>(&bytes).ok().map(|a| a.mapv(i64::from)))
            .or_else(|| try_read::<u8, Ix1>(&bytes).ok().map(|a| a.mapv(i64::from)));
        let classes = classes.ok_or_else(|| {
            npy_error(
                path,
                format!(
                    "categorical labels must be an integer (int64, int32 or uint8) array of \
                     shape [B]; found {}",
                    describe_npy(&bytes)
                ),
            )
        })?;
        classes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if c < 0 || c as usize >= outputs {
                    let valid = match outputs {
                        0 => "the model has no outputs".to_string(),
                        _ => format!(
                            "the model has {outputs} classes, so labels must be 0 to {}",
                            outputs - 1
                        ),
                    };
                    Err(npy_error(
                        path,
                        format!("label {c} at index {i} is out of range: {valid}"),
                    ))
                } else {
                    Ok(Label::Class(c as usize))
                }
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        let gaussian = family.name() == "gaussian";
        let (what, types) = if gaussian {
            ("Gaussian targets", "a float32 or float64")
        } else if family.name() == "bernoulli" {
            (
                "Bernoulli labels",
                "a bool, uint8, int32, int64, float32 or float64 (0/1)",
            )
        } else {
            (
                "Poisson counts",
                "a uint8, int32, int64, float32 or float64 (whole, ≥ 0)",
            )
        };
        let t: Option<ArrayD<f64>> = try_read::<f64, ndarray::IxDyn>(&bytes).ok().or_else(|| {
            try_read::<f32, ndarray::IxDyn>(&bytes)
                .ok()
                .map(|a| a.mapv(f64::from))
        });
        let t = match t {
            Some(t) => Some(t),
            None if gaussian => None,
            None => try_read::<i64, ndarray::IxDyn>(&bytes)
                .ok()
                .map(|a| a.mapv(|v| v as f64))
                .or_else(|| {
                    try_read::<i32, ndarray::IxDyn>(&bytes)
                        .ok()
                        .map(|a| a.mapv(f64::from))
                })
                .or_else(|| {
                    try_read::<u8, ndarray::IxDyn>(&bytes)
                        .ok()
                        .map(|a| a.mapv(f64::from))
                })
                .or_else(|| {
                    try_read::<bool, ndarray::IxDyn>(&bytes)
                        .ok()
                        .map(|a| a.mapv(|v| if v { 1.0 } else { 0.0 }))
                }),
        };
        let t = t.ok_or_else(|| {
            npy_error(
                path,
                format!(
                    "{what} must be {types} array of shape [B, {outputs}]; found {}",
                    describe_npy(&bytes)
                ),
            )
        })?;
        let t = match (t.ndim(), outputs) {
            (2, _) => t.into_dimensionality::<Ix2>().ok(),
            (1, 1) => t
                .into_dimensionality::<Ix1>()
                .ok()
                .map(|a| a.insert_axis(ndarray::Axis(1))),
            _ => None,
        }
        .filter(|t| t.ncols() == outputs)
        .ok_or_else(|| {
            npy_error(
                path,
                format!(
                    "{what} must have shape [B, {outputs}]; found {}",
                    describe_npy(&bytes)
                ),
            )
        })?;
        check_finite(&format!("labels '{}'", path.display()), t.iter())?;
        let labels: Vec<Label> = t
            .rows()
            .into_iter()
            .map(|r| Label::Target(r.to_vec()))
            .collect();
        // The family's own check names the first bad entry (0/1, whole counts).
        let (h, mut r) = (vec![0.0; outputs], vec![0.0; outputs]);
        let eta = family.eta(&h);
        for (i, y) in labels.iter().enumerate() {
            family.residual(&h, &eta, y, &mut r).map_err(|e| match e {
                Error::Input(m) => npy_error(path, format!("row {i}: {m}")),
                other => other,
            })?;
        }
        labels
    };
    if labels.len() != inputs {
        return Err(npy_error(
            path,
            format!(
                "there are {} labels but {inputs} inputs: give one label per input row",
                labels.len()
            ),
        ));
    }
    Ok(labels)
}

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

/// Writes tensors (little-endian, as safetensors requires) with optional header metadata,
/// atomically ([`crate::output::write_atomic`]).
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor<'_>],
    dtype: StoreDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = safetensors_bytes(tensors, dtype, metadata).map_err(|e| Error::Output {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    crate::output::write_atomic(path, &bytes)
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

/// Reads a whole regular file, naming it in the error. FIFOs, devices and directories are
/// refused (the file is opened non-blocking, so a FIFO never blocks), and so is a file larger
/// than the memory available.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let mut file = opts.open(path).map_err(|e| Error::io("read", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("read", path, e))?;
    if !meta.is_file() {
        return Err(Error::Input(format!(
            "cannot read '{}': it is {}, not a regular file; give the path of a file (models \
             and arrays are read from regular files only)",
            path.display(),
            crate::output::describe_kind(&meta)
        )));
    }
    let len = meta.len();
    let hint = "use a smaller file, or split the inputs into shards (--rows, --partial)";
    crate::resources::check_memory(&format!("reading '{}'", path.display()), len, hint)?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(|_| {
            Error::Resources(format!(
                "reading '{}' needs {}: {hint}",
                path.display(),
                crate::resources::human_bytes(len)
            ))
        })?;
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(bytes)
}

/// The header of an .npy file: dtype descriptor, memory order, shape and where the data
/// starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// numpy's dtype descriptor, e.g. `<f8`.
    pub descr: String,
    /// Whether the data is in column-major (Fortran) order.
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Byte offset of the data in the file.
    pub data_offset: usize,
    /// Bytes of data the header declares (elements × item size).
    pub data_bytes: u64,
}

impl NpyHeader {
    /// The dtype without its byte order, e.g. `f8`.
    pub fn kind(&self) -> &str {
        self.descr.trim_start_matches(['<', '>', '|', '='])
    }

    /// The dtype's name in numpy's words (`float64`, `int32`, …), or the descriptor itself.
    pub fn dtype_name(&self) -> String {
        match self.kind() {
            "f8" => "float64",
            "f4" => "float32",
            "f2" => "float16",
            "i8" => "int64",
            "i4" => "int32",
            "i2" => "int16",
            "i1" => "int8",
            "u8" => "uint64",
            "u4" => "uint32",
            "u2" => "uint16",
            "u1" => "uint8",
            "b1" => "bool",
            _ => return format!("'{}'", self.descr),
        }
        .to_string()
    }
}

/// The value that follows `'key':` in an .npy header dict (the rest of the header).
fn npy_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start();
    rest.strip_prefix(':').map(str::trim_start)
}

/// Parses and checks the header of an .npy file without allocating for its data: the magic
/// bytes, the version, the dict's `descr`, `fortran_order` and `shape`, and that the data
/// after the header is exactly as long as shape × item size declares. The error is a
/// sentence for [`Error::ArrayFile`].
pub fn parse_npy_header(bytes: &[u8]) -> std::result::Result<NpyHeader, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    let resave = "save the array with numpy.save";
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err(format!(
            "not an .npy file (it does not start with numpy's magic bytes \\x93NUMPY; {} \
             bytes); {resave}",
            bytes.len()
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (start, header_len): (usize, usize) = match major {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 if bytes.len() >= 12 => (
            12,
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        ),
        2 | 3 => return Err(format!("the file ends inside its header; {resave}")),
        _ => {
            return Err(format!(
                ".npy format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are); \
                 {resave}"
            ))
        }
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "the header declares {header_len} bytes but the file holds {} after the \
                 preamble: the file is truncated; {resave}",
                bytes.len() - start
            )
        })?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| format!("the header is not text; {resave}"))?;
    let bad = |what: &str| format!("the header's {what} cannot be read; {resave}");
    let descr_value = npy_field(header, "descr").ok_or_else(|| bad("'descr' (dtype)"))?;
    let quote = descr_value
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .ok_or_else(|| {
            "the dtype is structured (a record array); save a plain float or integer array"
                .to_string()
        })?;
    let descr = descr_value[1..]
        .split(quote)
        .next()
        .filter(|d| d.len() < descr_value.len() - 1)
        .ok_or_else(|| bad("'descr' (dtype)"))?
        .to_string();
    let fortran = npy_field(header, "fortran_order").ok_or_else(|| bad("'fortran_order'"))?;
    let fortran_order = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return Err(bad("'fortran_order'"));
    };
    let shape_value = npy_field(header, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split_once(')'))
        .ok_or_else(|| bad("'shape'"))?
        .0;
    let shape = shape_value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| bad("'shape'"))
        })
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let kind = descr.trim_start_matches(['<', '>', '|', '=']);
    let digits: String = kind.chars().skip(1).collect();
    let item = digits
        .parse::<u64>()
        .ok()
        .filter(|_| kind.len() > 1)
        .map(|n| if kind.starts_with('U') { n * 4 } else { n })
        .ok_or_else(|| {
            format!(
                "dtype '{descr}' is not supported: save a float32/float64 (inputs, Gaussian \
                 targets) or integer (class labels) array"
            )
        })?;
    let declared = shape
        .iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d as u64));
    let data = (bytes.len() - end) as u64;
    let shape_text = format!("{shape:?}");
    match declared {
        Some(d) if d == data => Ok(NpyHeader {
            descr,
            fortran_order,
            shape,
            data_offset: end,
            data_bytes: d,
        }),
        Some(d) if d > data => Err(format!(
            "declares {d} bytes of data (shape {shape_text} of '{descr}'); the file holds \
             {data}: it is truncated or its header is corrupt; {resave}"
        )),
        Some(d) => Err(format!(
            "holds {data} bytes of data but its header declares {d} (shape {shape_text} of \
             '{descr}'): the header is corrupt; {resave}"
        )),
        None => Err(format!(
            "declares shape {shape_text} of '{descr}', more bytes than can be addressed; the \
             file holds {data}: its header is corrupt; {resave}"
        )),
    }
}

/// Reads an .npy file whose header ([`parse_npy_header`]) agrees with its length: nothing
/// is allocated from a header that promises more data than the file holds.
pub fn read_npy_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file(path)?;
    parse_npy_header(&bytes).map_err(|msg| npy_error(path, msg))?;
    Ok(bytes)
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
    match parse_npy_header(bytes) {
        Ok(h) => format!(
            "dtype {} and shape {:?}{}",
            h.dtype_name(),
            h.shape,
            if h.fortran_order {
                " (Fortran order)"
            } else {
                ""
            }
        ),
        Err(e) => format!("an unreadable array ({e})"),
    }
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
    inputs_from_npy(path, &read_file(path)?)
}

/// Inputs X of shape [B, in] (float32 or float64) from the bytes of an .npy file, as f64,
/// checking the header against the data's length first and finiteness after; `path` names
/// the file in messages.
pub fn inputs_from_npy(path: &Path, bytes: &[u8]) -> Result<Array2<f64>> {
    let header = parse_npy_header(bytes).map_err(|msg| npy_error(path, msg))?;
    let read = match (header.kind(), header.shape.len()) {
        ("f8", 2) => try_read::<f64, Ix2>(bytes).map_err(|e| e.to_string()),
        ("f4", 2) => try_read::<f32, Ix2>(bytes)
            .map(|a| a.mapv(f64::from))
            .map_err(|e| e.to_string()),
        _ => Err(String::new()),
    };
    let x = read.map_err(|why| {
        npy_error(
            path,
            format!(
                "inputs must be a float32 or float64 array of shape [B, in]; found {}{}",
                describe_npy(bytes),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({why})")
                }
            ),
        )
    })?;
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
    let bytes = read_npy_file(path)?;
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

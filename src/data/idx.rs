//! IDX files (the MNIST format), plain or gzip-compressed, and the MNIST data set.
//!
//! An IDX file is a big-endian header (magic number, then one `u32` per dimension) followed by
//! the data. Images use magic 2051 (`u8`, 3 dimensions: count, rows, cols); labels use magic
//! 2049 (`u8`, 1 dimension: count). Gzip input is recognised by its magic bytes `1f 8b`.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::Array2;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Magic number of an IDX file of unsigned-byte images (3 dimensions).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (1 dimension).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// File name of the MNIST training images.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
/// File name of the MNIST training labels.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
/// File name of the MNIST test images.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
/// File name of the MNIST test labels.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// The four canonical MNIST files and their SHA-256 (lower-case hex).
pub const MNIST_SHA256: [(&str, &str); 4] = [
    (
        TRAIN_IMAGES,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    (
        TRAIN_LABELS,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    (
        TEST_IMAGES,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    (
        TEST_LABELS,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
];

const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// Images of `rows` x `cols` unsigned bytes, stored image after image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixel values, 0..=255.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels per image (`rows * cols`).
    pub fn pixels_per_image(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }

    /// The pixels of image `i`, or `None` if `i` is out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let p = self.pixels_per_image();
        if i >= self.count {
            return None;
        }
        self.pixels
            .get(i.checked_mul(p)?..i.checked_add(1)?.checked_mul(p)?)
    }

    /// Images `range` as an `[n, rows * cols]` array of `pixel / 255` in `[0, 1]`.
    ///
    /// The range is clamped to `0..count` (an empty or out-of-range range gives 0 rows).
    pub fn to_f32_normalised(&self, range: Range<usize>) -> Array2<f32> {
        let p = self.pixels_per_image();
        let available = self
            .pixels
            .len()
            .checked_div(p)
            .map_or(self.count, |k| self.count.min(k));
        let start = range.start.min(available);
        let end = range.end.clamp(start, available);
        let n = end - start;
        let values: Vec<f32> = self
            .pixels
            .get(start * p..end * p)
            .unwrap_or_default()
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect();
        Array2::from_shape_vec((n, p), values).unwrap_or_else(|_| Array2::zeros((0, 0)))
    }
}

/// Reads an IDX image file (magic 2051), gzip-compressed or plain.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Images> {
    let path = path.as_ref();
    let bytes = decode(read_file(path)?, path)?;
    parse_images(&bytes, path)
}

/// Reads an IDX label file (magic 2049), gzip-compressed or plain.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let bytes = decode(read_file(path)?, path)?;
    parse_labels(&bytes, path)
}

/// The MNIST training and test sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mnist {
    /// 60,000 training images of 28x28.
    pub train_images: Images,
    /// 60,000 training labels 0..=9.
    pub train_labels: Vec<u8>,
    /// 10,000 test images of 28x28.
    pub test_images: Images,
    /// 10,000 test labels 0..=9.
    pub test_labels: Vec<u8>,
}

impl Mnist {
    /// Loads the four canonical MNIST `.gz` files from `dir`, checking each file's SHA-256.
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        let train_images =
            parse_images(&load_verified(dir, TRAIN_IMAGES)?, &dir.join(TRAIN_IMAGES))?;
        let train_labels =
            parse_labels(&load_verified(dir, TRAIN_LABELS)?, &dir.join(TRAIN_LABELS))?;
        let test_images = parse_images(&load_verified(dir, TEST_IMAGES)?, &dir.join(TEST_IMAGES))?;
        let test_labels = parse_labels(&load_verified(dir, TEST_LABELS)?, &dir.join(TEST_LABELS))?;
        check_counts(
            &train_images,
            &train_labels,
            dir,
            TRAIN_IMAGES,
            TRAIN_LABELS,
        )?;
        check_counts(&test_images, &test_labels, dir, TEST_IMAGES, TEST_LABELS)?;
        Ok(Mnist {
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }

    /// Same as [`default_dir`].
    pub fn default_dir() -> PathBuf {
        default_dir()
    }
}

/// The `data/mnist` folder of this crate, where the MNIST files ship.
pub fn default_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn idx_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Idx {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            idx_err(
                path,
                "file not found; check the path (the MNIST files ship in the data/mnist folder \
                 of the diagfim repository, see data/mnist/README.md)",
            )
        } else {
            Error::io("read", path, e)
        }
    })
}

/// Decompresses gzip input (magic `1f 8b`); returns other input unchanged.
fn decode(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| {
            idx_err(
                path,
                format!(
                    "corrupt gzip data ({e}); the file is damaged or incomplete, restore it \
                     from the original distribution"
                ),
            )
        })?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_be_bytes(b)
}

fn check_magic(bytes: &[u8], path: &Path, expected: u32, what: &str) -> Result<()> {
    if bytes.len() < 4 {
        // Too short for a magic number; check_header_len reports it.
        return Ok(());
    }
    let magic = be_u32(bytes, 0);
    if magic == expected {
        return Ok(());
    }
    let hint = match magic {
        IDX_IMAGES_MAGIC => " (this is an IDX image file; use read_idx_images)".to_string(),
        IDX_LABELS_MAGIC => " (this is an IDX label file; use read_idx_labels)".to_string(),
        _ => String::new(),
    };
    Err(idx_err(
        path,
        format!(
            "wrong magic number {magic} ({magic:#010x}), expected {expected} ({expected:#010x}) \
             for an IDX {what} file{hint}; pass the right file"
        ),
    ))
}

fn check_header_len(bytes: &[u8], path: &Path, header: usize, what: &str) -> Result<()> {
    if bytes.len() < header {
        return Err(idx_err(
            path,
            format!(
                "only {} bytes, shorter than the {header}-byte IDX {what} header; the file is \
                 truncated or not an IDX file",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

fn check_data_len(path: &Path, actual: usize, expected: usize, described: &str) -> Result<()> {
    if actual < expected {
        Err(idx_err(
            path,
            format!(
                "truncated: the header announces {described} = {expected} data bytes, but only \
                 {actual} follow; the file is incomplete, restore it from the original distribution"
            ),
        ))
    } else if actual > expected {
        Err(idx_err(
            path,
            format!(
                "{} trailing bytes: the header announces {described} = {expected} data bytes, \
                 but {actual} follow; the file is corrupt or its header is wrong, restore it \
                 from the original distribution",
                actual - expected
            ),
        ))
    } else {
        Ok(())
    }
}

fn parse_images(bytes: &[u8], path: &Path) -> Result<Images> {
    check_magic(bytes, path, IDX_IMAGES_MAGIC, "image")?;
    check_header_len(bytes, path, IMAGES_HEADER, "image")?;
    let count = be_u32(bytes, 4) as usize;
    let rows = be_u32(bytes, 8) as usize;
    let cols = be_u32(bytes, 12) as usize;
    if rows == 0 || cols == 0 {
        return Err(idx_err(
            path,
            format!("image size {rows}x{cols} is empty; the header is corrupt"),
        ));
    }
    let described = format!("{count} images of {rows}x{cols}");
    let expected = count
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| {
            idx_err(
                path,
                format!("{described} is too large to address; the header is corrupt"),
            )
        })?;
    let data = &bytes[IMAGES_HEADER..];
    check_data_len(path, data.len(), expected, &described)?;
    Ok(Images {
        count,
        rows,
        cols,
        pixels: data.to_vec(),
    })
}

fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    check_magic(bytes, path, IDX_LABELS_MAGIC, "label")?;
    check_header_len(bytes, path, LABELS_HEADER, "label")?;
    let count = be_u32(bytes, 4) as usize;
    let data = &bytes[LABELS_HEADER..];
    check_data_len(path, data.len(), count, &format!("{count} labels"))?;
    Ok(data.to_vec())
}

/// Reads `dir/name`, checks its SHA-256 against the canonical value and decompresses it.
fn load_verified(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let raw = read_file(&path)?;
    let expected = MNIST_SHA256
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
        .unwrap_or_default();
    let actual = sha256_hex(&raw);
    if actual != expected {
        return Err(idx_err(
            &path,
            format!(
                "sha256 mismatch for {name}: expected {expected}, got {actual}; the file is \
                 corrupt or not the canonical MNIST file, restore it from data/mnist of the \
                 diagfim repository (see data/mnist/README.md)"
            ),
        ));
    }
    decode(raw, &path)
}

fn check_counts(
    images: &Images,
    labels: &[u8],
    dir: &Path,
    images_name: &str,
    labels_name: &str,
) -> Result<()> {
    if images.count != labels.len() {
        return Err(idx_err(
            &dir.join(labels_name),
            format!(
                "{} labels but {images_name} has {} images; use matching image and label files",
                labels.len(),
                images.count
            ),
        ));
    }
    Ok(())
}

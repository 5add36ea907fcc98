//! IDX reader and MNIST loader: the real files, and the errors on bad files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use diagfim::data::idx::{sha256_hex, MNIST_SHA256, TEST_LABELS, TRAIN_IMAGES};
use diagfim::data::{default_dir, read_idx_images, read_idx_labels, Images, Mnist};
use diagfim::Error;
use flate2::write::GzEncoder;
use flate2::Compression;

fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| Mnist::load(default_dir()).expect("load MNIST from data/mnist"))
}

fn histogram(labels: &[u8]) -> [usize; 10] {
    let mut h = [0; 10];
    for &l in labels {
        h[l as usize] += 1;
    }
    h
}

fn images_bytes(count: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2051, count, rows, cols] {
        b.extend_from_slice(&u32::to_be_bytes(v));
    }
    b.extend_from_slice(data);
    b
}

fn labels_bytes(count: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2049, count] {
        b.extend_from_slice(&u32::to_be_bytes(v));
    }
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The message of an `Error::Idx` about `path`; fails on any other error or on `Ok`.
fn idx_msg<T: std::fmt::Debug>(r: diagfim::Result<T>, path: &Path) -> String {
    match r {
        Err(Error::Idx { path: p, msg }) => {
            assert_eq!(p, path);
            msg
        }
        other => panic!("expected Error::Idx, got {other:?}"),
    }
}

#[test]
fn real_mnist_shapes_and_labels() {
    let m = mnist();
    assert_eq!(m.train_images.count, 60_000);
    assert_eq!(m.test_images.count, 10_000);
    assert_eq!(m.train_labels.len(), 60_000);
    assert_eq!(m.test_labels.len(), 10_000);
    for im in [&m.train_images, &m.test_images] {
        assert_eq!((im.rows, im.cols), (28, 28));
        assert_eq!(im.pixels.len(), im.count * 784);
        assert_eq!(im.pixels.iter().min(), Some(&0));
        assert_eq!(im.pixels.iter().max(), Some(&255));
    }
    assert_eq!(m.train_labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(m.test_labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    assert_eq!(
        histogram(&m.test_labels),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(
        histogram(&m.train_labels),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
}

#[test]
fn real_mnist_normalised() {
    let im = &mnist().test_images;
    let x = im.to_f32_normalised(0..100);
    assert_eq!(x.shape(), [100, 784]);
    assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!(x.iter().any(|&v| v == 1.0));
    for (i, row) in x.outer_iter().enumerate() {
        let raw = im.image(i).unwrap();
        for (&a, &b) in row.iter().zip(raw) {
            assert_eq!(a, f32::from(b) / 255.0);
        }
    }
    let tail = im.to_f32_normalised(9_990..20_000);
    assert_eq!(tail.shape(), [10, 784]);
    assert_eq!(im.to_f32_normalised(20_000..30_000).shape(), [0, 784]);
    assert!(im.image(10_000).is_none());
}

#[test]
fn free_readers_match_loader() {
    let labels = read_idx_labels(default_dir().join(TEST_LABELS)).unwrap();
    assert_eq!(labels, mnist().test_labels);
    let images = read_idx_images(default_dir().join(TRAIN_IMAGES)).unwrap();
    assert_eq!(images, mnist().train_images);
}

#[test]
fn plain_and_gzip_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..2 * 3 * 4).map(|v| (v * 11) as u8).collect();
    let raw = images_bytes(2, 3, 4, &pixels);
    let expected = Images {
        count: 2,
        rows: 3,
        cols: 4,
        pixels: pixels.clone(),
    };
    let plain = write(dir.path(), "im.idx", &raw);
    let gz = write(dir.path(), "im.idx.gz", &gzip(&raw));
    assert_eq!(read_idx_images(&plain).unwrap(), expected);
    assert_eq!(read_idx_images(&gz).unwrap(), expected);
    let x = expected.to_f32_normalised(1..2);
    assert_eq!(x.shape(), [1, 12]);
    assert_eq!(x[[0, 0]], 132.0 / 255.0);

    let lab = labels_bytes(3, &[7, 0, 9]);
    let plain = write(dir.path(), "lab.idx", &lab);
    let gz = write(dir.path(), "lab.idx.gz", &gzip(&lab));
    assert_eq!(read_idx_labels(&plain).unwrap(), [7, 0, 9]);
    assert_eq!(read_idx_labels(&gz).unwrap(), [7, 0, 9]);

    // Zero images is a valid (empty) file.
    let empty = write(dir.path(), "empty.idx", &images_bytes(0, 28, 28, &[]));
    assert_eq!(read_idx_images(&empty).unwrap().count, 0);
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let lab = write(dir.path(), "lab.gz", &gzip(&labels_bytes(2, &[1, 2])));
    let msg = idx_msg(read_idx_images(&lab), &lab);
    assert!(msg.contains("wrong magic number 2049"), "{msg}");
    assert!(msg.contains("expected 2051"), "{msg}");
    assert!(msg.contains("use read_idx_labels"), "{msg}");

    let im = write(dir.path(), "im", &images_bytes(1, 1, 1, &[3]));
    let msg = idx_msg(read_idx_labels(&im), &im);
    assert!(msg.contains("wrong magic number 2051"), "{msg}");
    assert!(msg.contains("expected 2049"), "{msg}");

    let mut junk = images_bytes(1, 1, 1, &[3]);
    junk[..4].copy_from_slice(b"PK\x03\x04");
    let junk = write(dir.path(), "junk", &junk);
    let msg = idx_msg(read_idx_images(&junk), &junk);
    assert!(msg.contains("wrong magic number"), "{msg}");
}

#[test]
fn short_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "short", &images_bytes(1, 2, 2, &[])[..10]);
    let msg = idx_msg(read_idx_images(&p), &p);
    assert!(msg.contains("only 10 bytes"), "{msg}");
    assert!(msg.contains("16-byte IDX image header"), "{msg}");
    let p = write(dir.path(), "empty", &[]);
    let msg = idx_msg(read_idx_labels(&p), &p);
    assert!(msg.contains("8-byte IDX label header"), "{msg}");
}

#[test]
fn truncated_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "im.gz", &gzip(&images_bytes(3, 2, 2, &[0; 11])));
    let msg = idx_msg(read_idx_images(&p), &p);
    assert!(msg.starts_with("truncated"), "{msg}");
    assert!(msg.contains("3 images of 2x2 = 12 data bytes"), "{msg}");
    assert!(msg.contains("only 11 follow"), "{msg}");

    let p = write(dir.path(), "lab", &labels_bytes(5, &[1, 2]));
    let msg = idx_msg(read_idx_labels(&p), &p);
    assert!(msg.starts_with("truncated"), "{msg}");
    assert!(msg.contains("5 labels = 5 data bytes"), "{msg}");

    // A gzip stream cut short.
    let gz = gzip(&labels_bytes(100, &[1; 100]));
    let p = write(dir.path(), "cut.gz", &gz[..gz.len() / 2]);
    let msg = idx_msg(read_idx_labels(&p), &p);
    assert!(msg.contains("corrupt gzip data"), "{msg}");
}

#[test]
fn trailing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "im", &images_bytes(1, 2, 2, &[0; 6]));
    let msg = idx_msg(read_idx_images(&p), &p);
    assert!(msg.starts_with("2 trailing bytes"), "{msg}");
    assert!(msg.contains("1 images of 2x2 = 4 data bytes"), "{msg}");

    let p = write(dir.path(), "lab.gz", &gzip(&labels_bytes(2, &[1, 2, 3])));
    let msg = idx_msg(read_idx_labels(&p), &p);
    assert!(msg.starts_with("1 trailing bytes"), "{msg}");
}

#[test]
fn corrupt_header_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "zero", &images_bytes(1, 0, 28, &[]));
    let msg = idx_msg(read_idx_images(&p), &p);
    assert!(msg.contains("image size 0x28 is empty"), "{msg}");
    let p = write(
        dir.path(),
        "huge",
        &images_bytes(u32::MAX, u32::MAX, u32::MAX, &[1, 2]),
    );
    let msg = idx_msg(read_idx_images(&p), &p);
    assert!(
        msg.contains("too large") || msg.starts_with("truncated"),
        "{msg}"
    );
}

#[test]
fn wrong_sha256() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in MNIST_SHA256 {
        std::fs::copy(default_dir().join(name), dir.path().join(name)).unwrap();
    }
    let target = dir.path().join(TEST_LABELS);
    let mut bytes = std::fs::read(&target).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&target, &bytes).unwrap();
    let actual = sha256_hex(&bytes);
    let expected = MNIST_SHA256
        .iter()
        .find(|(n, _)| *n == TEST_LABELS)
        .unwrap()
        .1;
    let msg = idx_msg(Mnist::load(dir.path()), &target);
    assert!(msg.contains("sha256 mismatch"), "{msg}");
    assert!(msg.contains(TEST_LABELS), "{msg}");
    assert!(msg.contains(&format!("expected {expected}")), "{msg}");
    assert!(msg.contains(&format!("got {actual}")), "{msg}");
    // The full error also names the file path.
    let full = Mnist::load(dir.path()).unwrap_err().to_string();
    assert!(full.contains(&target.display().to_string()), "{full}");
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let msg = idx_msg(Mnist::load(dir.path()), &dir.path().join(TRAIN_IMAGES));
    assert!(msg.contains("file not found"), "{msg}");
    assert!(msg.contains("data/mnist"), "{msg}");

    let p = dir.path().join("nope.gz");
    let msg = idx_msg(read_idx_labels(&p), &p);
    assert!(msg.contains("file not found"), "{msg}");
}

#[test]
fn default_dir_points_at_crate_data() {
    assert_eq!(default_dir(), Mnist::default_dir());
    assert!(default_dir().ends_with("data/mnist"));
    for (name, sha) in MNIST_SHA256 {
        assert_eq!(sha.len(), 64);
        assert!(default_dir().join(name).is_file(), "{name}");
    }
}

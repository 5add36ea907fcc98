//! Hostile use of the CLI: malformed, huge and edge-case models, inputs, labels, options and
//! output paths. Every case must end with exit code 2 (no panic, no abort, no hang), a
//! message that names the problem, and a scratch folder exactly as it was: every input file
//! byte for byte, the old RESULT and SUMMARY untouched, and no new or temporary file.

#![cfg(unix)]

use diagfim::model::{save_safetensors, StoreDtype};
use diagfim::{Activation, Mlp};
use ndarray::{Array1, Array2};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_diagfim");
/// No case may run longer than this.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The bytes of an .npy file with the given header fields and data.
fn npy(descr: &str, fortran: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    npy_header(
        1,
        &format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}"),
        data,
    )
}

/// An .npy file of format `major`.0 with a raw header dict.
fn npy_header(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    let pre = if major == 1 { 10 } else { 12 };
    while !(pre + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY".to_vec();
    b.extend([major, 0]);
    if major == 1 {
        b.extend((header.len() as u16).to_le_bytes());
    } else {
        b.extend((header.len() as u32).to_le_bytes());
    }
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

fn f64s(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A hand-made safetensors file: 8-byte header length, header JSON, data.
fn safetensors_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

/// The state of a folder: regular files by name with their bytes, other entries by kind.
fn snapshot(dir: &Path) -> BTreeMap<String, Result<Vec<u8>, String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let value = if meta.is_file() {
            Ok(std::fs::read(e.path()).unwrap())
        } else if meta.is_symlink() {
            Err(format!(
                "link to {}",
                std::fs::read_link(e.path()).unwrap().display()
            ))
        } else if meta.is_dir() {
            let inner = snapshot(&e.path());
            Err(format!("dir {inner:?}"))
        } else {
            Err(format!("{:?}", meta.file_type()))
        };
        out.insert(name, value);
    }
    out
}

/// One hostile run: the standard arguments with some replaced or added, extra files, an
/// environment, and the phrases its message must hold.
struct Case {
    name: String,
    args: Vec<(String, Option<String>)>,
    raw: Option<Vec<String>>,
    files: Vec<(String, Vec<u8>)>,
    fifos: Vec<String>,
    links: Vec<(String, String)>,
    hard_links: Vec<(String, String)>,
    dirs: Vec<String>,
    env: Vec<(String, String)>,
    expect: Vec<String>,
    max_message: Option<usize>,
}

impl Case {
    /// The standard run: the valid model and inputs, old RESULT and SUMMARY to replace.
    fn new(name: &str) -> Case {
        let args = [
            ("--model", "model.safetensors"),
            ("--inputs", "x.npy"),
            ("--out", "result.safetensors"),
            ("--summary", "summary.json"),
            ("--engine", "cpu"),
            ("--samples", "4"),
        ];
        Case {
            name: name.to_string(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect(),
            raw: None,
            files: vec![],
            fifos: vec![],
            links: vec![],
            hard_links: vec![],
            dirs: vec![],
            env: vec![],
            expect: vec![],
            max_message: None,
        }
    }
    /// Sets (or adds) `--flag value`.
    fn arg(mut self, flag: &str, value: &str) -> Case {
        match self.args.iter_mut().find(|(k, _)| k == flag) {
            Some(slot) => slot.1 = Some(value.to_string()),
            None => self.args.push((flag.to_string(), Some(value.to_string()))),
        }
        self
    }
    /// Adds a flag without a value.
    fn flag(mut self, flag: &str) -> Case {
        self.args.push((flag.to_string(), None));
        self
    }
    /// Removes `--flag` and its value.
    fn without(mut self, flag: &str) -> Case {
        self.args.retain(|(k, _)| k != flag);
        self
    }
    fn raw(mut self, args: &[&str]) -> Case {
        self.raw = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }
    fn file(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Case {
        self.files.push((name.to_string(), bytes.into()));
        self
    }
    fn fifo(mut self, name: &str) -> Case {
        self.fifos.push(name.to_string());
        self
    }
    fn link(mut self, name: &str, target: &str) -> Case {
        self.links.push((name.to_string(), target.to_string()));
        self
    }
    fn hard_link(mut self, name: &str, target: &str) -> Case {
        self.hard_links.push((name.to_string(), target.to_string()));
        self
    }
    fn dir(mut self, name: &str) -> Case {
        self.dirs.push(name.to_string());
        self
    }
    fn env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
    fn says(mut self, phrases: &[&str]) -> Case {
        self.expect.extend(phrases.iter().map(|s| s.to_string()));
        self
    }
    fn at_most(mut self, chars: usize) -> Case {
        self.max_message = Some(chars);
        self
    }

    /// Runs the case in a fresh scratch folder; returns what went wrong, if anything.
    fn run(&self) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        standard_files(d);
        for (name, bytes) in &self.files {
            std::fs::write(d.join(name), bytes).unwrap();
        }
        for name in &self.dirs {
            std::fs::create_dir_all(d.join(name)).unwrap();
        }
        for name in &self.fifos {
            let c = std::ffi::CString::new(d.join(name).to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        }
        for (name, target) in &self.links {
            std::os::unix::fs::symlink(target, d.join(name)).unwrap();
        }
        for (name, target) in &self.hard_links {
            std::fs::hard_link(d.join(target), d.join(name)).unwrap();
        }
        let before = snapshot(d);
        let args: Vec<String> = match &self.raw {
            Some(raw) => raw.clone(),
            None => std::iter::once("analyze".to_string())
                .chain(
                    self.args
                        .iter()
                        .flat_map(|(k, v)| std::iter::once(k.clone()).chain(v.clone())),
                )
                .collect(),
        };
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .current_dir(d)
            .env_remove("DIAGFIM_REQUIRE_GPU")
            .env_remove("DIAGFIM_GEMM_R")
            .env_remove("DIAGFIM_ADAPTER")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Some(format!("{}: still running after {TIMEOUT:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut problems = vec![];
        if status.code() != Some(2) {
            problems.push(format!("exit {:?}, not 2", status.code()));
        }
        if !stderr.starts_with("error: ") || stderr.contains("panicked") {
            problems.push("stderr is not one 'error: …' message".into());
        }
        for p in &self.expect {
            if !stderr.contains(p.as_str()) {
                problems.push(format!("the message lacks '{p}'"));
            }
        }
        if let Some(max) = self.max_message {
            if stderr.chars().count() > max {
                problems.push(format!("the message has {} characters", stderr.len()));
            }
        }
        let after = snapshot(d);
        if after != before {
            let changed: Vec<&String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            problems.push(format!("the folder changed: {changed:?}"));
        }
        (!problems.is_empty()).then(|| {
            format!(
                "{}: {}\n  args {args:?}\n  stderr: {}",
                self.name,
                problems.join("; "),
                stderr.chars().take(600).collect::<String>()
            )
        })
    }
}

/// The valid 3 → 4 → 2 sigmoid model, 5 inputs, labels, targets, and an old RESULT and
/// SUMMARY.
fn standard_files(d: &Path) {
    let model = Mlp::init(&[3, 4, 2], vec![Activation::Sigmoid], 7).unwrap();
    save_safetensors(&model, &d.join("model.safetensors"), StoreDtype::F64).unwrap();
    let x = Array2::from_shape_fn((5, 3), |(i, k)| (i as f64 - 2.0) * 0.3 + k as f64 * 0.1);
    ndarray_npy::write_npy(d.join("x.npy"), &x).unwrap();
    ndarray_npy::write_npy(d.join("y.npy"), &Array1::from(vec![0i64, 1, 1, 0, 1])).unwrap();
    ndarray_npy::write_npy(d.join("t.npy"), &Array2::<f64>::zeros((5, 2))).unwrap();
    std::fs::write(d.join("result.safetensors"), b"OLD RESULT").unwrap();
    std::fs::write(d.join("summary.json"), b"{\"old\": true}\n").unwrap();
}

/// Runs every case and fails with the list of those that misbehaved.
fn run_all(cases: Vec<Case>) {
    let n = cases.len();
    eprintln!("{n} hostile cases");
    let failures: Vec<String> = cases.iter().filter_map(Case::run).collect();
    assert!(
        failures.is_empty(),
        "{} of {n} hostile cases misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn valid_x() -> Vec<u8> {
    f64s(&(0..15).map(|i| i as f64 * 0.1).collect::<Vec<_>>())
}

/// A model file with one layer whose weight has the given header entry.
fn one_tensor_model(entry: &str, data: &[u8]) -> Vec<u8> {
    safetensors_raw(&format!("{{\"0.weight\":{entry}}}"), data)
}

#[test]
fn hostile_models() {
    let m = |name: &str| Case::new(name).arg("--model", "bad.safetensors");
    let wide = Mlp::init(&[3, 4, 2], vec![Activation::Sigmoid], 1).unwrap();
    let _ = wide;
    run_all(vec![
        m("missing model").says(&["cannot read", "bad.safetensors"]),
        m("model is a directory")
            .dir("bad.safetensors")
            .says(&["is a directory", "not a regular file"]),
        m("model is a FIFO")
            .fifo("bad.safetensors")
            .says(&["FIFO", "not a regular file"]),
        Case::new("model is a device")
            .arg("--model", "/dev/zero")
            .says(&["character device"]),
        m("empty model")
            .file("bad.safetensors", b"".to_vec())
            .says(&["not a valid safetensors file"]),
        m("text model")
            .file("bad.safetensors", b"hello, I am not a model\n".to_vec())
            .says(&["not a valid safetensors file"]),
        m("header length past the end")
            .file("bad.safetensors", safetensors_raw("{}", b"").split_at(4).0.to_vec())
            .says(&["not a valid safetensors file"]),
        m("header length u64::MAX")
            .file("bad.safetensors", {
                let mut b = u64::MAX.to_le_bytes().to_vec();
                b.extend(b"{}");
                b
            })
            .says(&["not a valid safetensors file"]),
        m("header is not JSON")
            .file("bad.safetensors", safetensors_raw("{not json", b""))
            .says(&["not a valid safetensors file"]),
        m("tensor data past the end")
            .file(
                "bad.safetensors",
                one_tensor_model(
                    r#"{"dtype":"F64","shape":[100000,100000],"data_offsets":[0,80000000000]}"#,
                    &[0; 64],
                ),
            )
            .says(&["not a valid safetensors file"]),
        m("huge shape, small offsets")
            .file(
                "bad.safetensors",
                one_tensor_model(
                    r#"{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}"#,
                    &[0; 8],
                ),
            )
            .says(&["not a valid safetensors file"]),
        m("unexpected tensor name")
            .file(
                "bad.safetensors",
                safetensors_raw(
                    r#"{"foo":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
            )
            .says(&["unexpected tensor 'foo'"]),
        m("3-D weight")
            .file(
                "bad.safetensors",
                one_tensor_model(
                    r#"{"dtype":"F64","shape":[1,1,1],"data_offsets":[0,8]}"#,
                    &[0; 8],
                ),
            )
            .says(&["must be 2-D"]),
        m("integer weight")
            .file(
                "bad.safetensors",
                one_tensor_model(r#"{"dtype":"I32","shape":[2,3],"data_offsets":[0,24]}"#, &[0; 24]),
            )
            .says(&["has dtype", "float32 or float64"]),
        m("NaN weight")
            .file(
                "bad.safetensors",
                one_tensor_model(
                    r#"{"dtype":"F64","shape":[2,3],"data_offsets":[0,48]}"#,
                    &f64s(&[0.1, f64::NAN, 0.2, 0.3, 0.4, 0.5]),
                ),
            )
            .says(&["non-finite"]),
        m("shapes that do not chain")
            .file(
                "bad.safetensors",
                safetensors_raw(
                    r#"{"__metadata__":{"activations":"sigmoid"},"0.weight":{"dtype":"F64","shape":[4,3],"data_offsets":[0,96]},"1.weight":{"dtype":"F64","shape":[2,5],"data_offsets":[96,176]}}"#,
                    &f64s(&[0.1; 22]),
                ),
            )
            .says(&["do not chain"]),
        m("unknown activation in metadata")
            .file(
                "bad.safetensors",
                safetensors_raw(
                    r#"{"__metadata__":{"activations":"swish"},"0.weight":{"dtype":"F64","shape":[4,3],"data_offsets":[0,96]},"1.weight":{"dtype":"F64","shape":[2,4],"data_offsets":[96,160]}}"#,
                    &f64s(&[0.1; 20]),
                ),
            )
            .says(&["unknown activation 'swish'"]),
        m("duplicate layer key")
            .file(
                "bad.safetensors",
                safetensors_raw(
                    r#"{"0.weight":{"dtype":"F64","shape":[2,3],"data_offsets":[0,48]},"00.weight":{"dtype":"F64","shape":[2,3],"data_offsets":[48,96]}}"#,
                    &f64s(&[0.1; 12]),
                ),
            )
            .says(&["both give"]),
        m("no tensors")
            .file("bad.safetensors", safetensors_raw("{}", b""))
            .says(&["holds no tensors"]),
        Case::new("model is an .npy file")
            .arg("--model", "x.npy")
            .says(&["not a valid safetensors file"]),
        Case::new("info on a FIFO")
            .fifo("bad.safetensors")
            .raw(&["info", "--model", "bad.safetensors"])
            .says(&["FIFO"]),
    ]);
}

#[test]
fn hostile_inputs() {
    let x = |name: &str, bytes: Vec<u8>| {
        Case::new(name)
            .arg("--inputs", "bad.npy")
            .file("bad.npy", bytes)
    };
    run_all(vec![
        Case::new("missing inputs")
            .arg("--inputs", "nope.npy")
            .says(&["cannot read", "nope.npy"]),
        Case::new("inputs are a directory")
            .arg("--inputs", "sub")
            .dir("sub")
            .says(&["is a directory"]),
        Case::new("inputs are a FIFO")
            .arg("--inputs", "bad.npy")
            .fifo("bad.npy")
            .says(&["FIFO"]),
        Case::new("inputs are /dev/urandom")
            .arg("--inputs", "/dev/urandom")
            .says(&["character device"]),
        x("empty inputs", vec![]).says(&["not an .npy file"]),
        x("text inputs", b"1,2,3\n4,5,6\n".to_vec()).says(&["not an .npy file"]),
        x("magic only", b"\x93NUMPY\x01\x00".to_vec()).says(&["not an .npy file"]),
        x(
            "huge declared shape",
            npy("<f8", "False", "(10000000000, 8)", &[0; 128]),
        )
        .says(&["declares 640000000000 bytes of data", "the file holds 128"]),
        x("truncated data", npy("<f8", "False", "(5, 3)", &[0; 100])).says(&[
            "declares 120 bytes of data",
            "the file holds 100",
            "truncated",
        ]),
        x("extra data", npy("<f8", "False", "(5, 3)", &[0; 160]))
            .says(&["holds 160 bytes of data but its header declares 120"]),
        x("header past the end", {
            let mut b = npy("<f8", "False", "(5, 3)", &[]);
            b.truncate(40);
            b
        })
        .says(&["the header declares", "truncated"]),
        x("format version 9", {
            let mut b = npy("<f8", "False", "(5, 3)", &valid_x());
            b[6] = 9;
            b
        })
        .says(&["version 9.0 is not supported"]),
        x(
            "version 2 truncated",
            npy_header(
                2,
                "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 3), }",
                &[0; 8],
            ),
        )
        .says(&["declares 120 bytes of data", "holds 8"]),
        x(
            "structured dtype",
            npy_header(
                1,
                "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (5,), }",
                &[0; 40],
            ),
        )
        .says(&["structured"]),
        x("object dtype", npy("|O", "False", "(5, 3)", &[0; 120]))
            .says(&["dtype '|O' is not supported"]),
        x("unicode dtype", npy("<U2", "False", "(5, 3)", &[0; 120]))
            .says(&["must be a float32 or float64", "'<U2'"]),
        x("int64 inputs", npy("<i8", "False", "(5, 3)", &[0; 120]))
            .says(&["must be a float32 or float64", "int64"]),
        x("float16 inputs", npy("<f2", "False", "(5, 3)", &[0; 30]))
            .says(&["must be a float32 or float64", "float16"]),
        x("1-D inputs", npy("<f8", "False", "(15,)", &valid_x()))
            .says(&["shape [B, in]", "shape [15]"]),
        x("3-D inputs", npy("<f8", "False", "(5, 3, 1)", &valid_x()))
            .says(&["shape [B, in]", "shape [5, 3, 1]"]),
        x(
            "negative dimension",
            npy("<f8", "False", "(-1, 3)", &valid_x()),
        )
        .says(&["'shape' cannot be read"]),
        x(
            "overflowing shape",
            npy(
                "<f8",
                "False",
                "(1099511627776, 1099511627776, 1099511627776)",
                &[0; 8],
            ),
        )
        .says(&["more bytes than can be addressed"]),
        x(
            "bad fortran_order",
            npy("<f8", "Maybe", "(5, 3)", &valid_x()),
        )
        .says(&["'fortran_order' cannot be read"]),
        x(
            "no shape key",
            npy_header(1, "{'descr': '<f8', 'fortran_order': False}", &valid_x()),
        )
        .says(&["'shape' cannot be read"]),
        x("header not text", {
            let mut b = npy("<f8", "False", "(5, 3)", &valid_x());
            b[12] = 0xff;
            b
        })
        .says(&["not text"]),
        x("NaN input", {
            let mut v: Vec<f64> = (0..15).map(|i| i as f64).collect();
            v[7] = f64::NAN;
            npy("<f8", "False", "(5, 3)", &f64s(&v))
        })
        .says(&["non-finite", "index 7"]),
        x("infinite input", {
            let mut v: Vec<f64> = (0..15).map(|i| i as f64).collect();
            v[14] = f64::NEG_INFINITY;
            npy("<f8", "False", "(5, 3)", &f64s(&v))
        })
        .says(&["non-finite"]),
        x("wrong width", npy("<f8", "False", "(3, 5)", &valid_x()))
            .says(&["5 columns but the model expects 3"]),
        x("no rows", npy("<f8", "False", "(0, 3)", &[])).says(&["B = 0"]),
    ]);
}

#[test]
fn hostile_labels() {
    let y = |name: &str, bytes: Vec<u8>| {
        Case::new(name)
            .arg("--labels", "bad.npy")
            .file("bad.npy", bytes)
    };
    let ints = |v: &[i64]| v.iter().flat_map(|c| c.to_le_bytes()).collect::<Vec<u8>>();
    run_all(vec![
        Case::new("missing labels")
            .arg("--labels", "nope.npy")
            .says(&["cannot read", "nope.npy"]),
        Case::new("labels are a FIFO")
            .arg("--labels", "bad.npy")
            .fifo("bad.npy")
            .says(&["FIFO"]),
        y("truncated labels", npy("<i8", "False", "(5,)", &[0; 16]))
            .says(&["declares 40 bytes of data", "holds 16"]),
        y(
            "huge labels",
            npy("<i8", "False", "(100000000000,)", &[0; 40]),
        )
        .says(&["declares 800000000000 bytes of data"]),
        y("float labels", npy("<f8", "False", "(5,)", &[0; 40]))
            .says(&["categorical labels must be an integer", "float64"]),
        y(
            "label out of range",
            npy("<i8", "False", "(5,)", &ints(&[0, 1, 7, 0, 1])),
        )
        .says(&["label 7 at index 2 is out of range"]),
        y(
            "negative label",
            npy("<i8", "False", "(5,)", &ints(&[0, -1, 1, 0, 1])),
        )
        .says(&["label -1", "out of range"]),
        y(
            "too few labels",
            npy("<i8", "False", "(4,)", &ints(&[0, 1, 1, 0])),
        )
        .says(&["4 labels but 5 inputs"]),
        y(
            "2-D class labels",
            npy("<i8", "False", "(5, 1)", &ints(&[0, 1, 1, 0, 1])),
        )
        .says(&["shape [B]", "shape [5, 1]"]),
        y(
            "Gaussian targets of the wrong width",
            npy("<f8", "False", "(5, 3)", &[0; 120]),
        )
        .arg("--family", "gaussian")
        .says(&["Gaussian targets must have shape [B, 2]"]),
        y("NaN Gaussian target", {
            let mut v = vec![0.0; 10];
            v[3] = f64::NAN;
            npy("<f8", "False", "(5, 2)", &f64s(&v))
        })
        .arg("--family", "gaussian")
        .says(&["non-finite"]),
        Case::new("labels are the model")
            .arg("--labels", "model.safetensors")
            .says(&["not an .npy file"]),
    ]);
}

#[test]
fn hostile_options() {
    let many = vec!["sigmoid"; 2_000_000].join(",");
    // A model of 600k parameters (3 → 100000 → 2) and 1000 inputs: --per-input needs
    // ≈ 475 GB.
    let big = tempfile::tempdir().unwrap();
    let model = Mlp::init(&[3, 100_000, 2], vec![Activation::Sigmoid], 3).unwrap();
    save_safetensors(&model, &big.path().join("m.safetensors"), StoreDtype::F32).unwrap();
    let big_model = std::fs::read(big.path().join("m.safetensors")).unwrap();
    let big_x = npy("<f8", "False", "(1000, 3)", &f64s(&vec![0.5; 3000]));
    run_all(vec![
        Case::new("negative seed")
            .arg("--seed", "-1")
            .says(&["--seed", "it is negative"]),
        Case::new("negative samples")
            .arg("--samples", "-5")
            .says(&["--samples", "it is negative"]),
        Case::new("fractional samples")
            .arg("--samples", "1.5")
            .says(&["not a whole number"]),
        Case::new("one sample").arg("--samples", "1").says(&["at least 2"]),
        Case::new("samples beyond the RNG counter")
            .arg("--samples", "10000000000")
            .says(&["2³² sample counter"]),
        Case::new("a billion samples on the CPU engine")
            .arg("--samples", "1000000000")
            .says(&["--samples 1000000000", "of memory", "use fewer --samples"]),
        Case::new("a hundred thousand threads")
            .arg("--threads", "100000")
            .says(&["--threads 100000 is more than"]),
        Case::new("negative threads")
            .arg("--threads", "-2")
            .says(&["it is negative"]),
        Case::new("negative batch size")
            .arg("--batch-size", "-8")
            .says(&["it is negative"]),
        Case::new("negative σ²")
            .arg("--family", "gaussian")
            .arg("--sigma2", "-1")
            .says(&["σ² must be finite and > 0"]),
        Case::new("zero σ²")
            .arg("--family", "gaussian")
            .arg("--sigma2", "0")
            .says(&["σ² must be finite and > 0"]),
        Case::new("NaN σ²")
            .arg("--family", "gaussian")
            .arg("--sigma2", "nan")
            .says(&["σ² must be finite and > 0"]),
        Case::new("tiny σ²")
            .arg("--family", "gaussian")
            .arg("--sigma2", "1e-300")
            .says(&["--sigma2 1e-300 is outside the range", "1/σ⁴"]),
        Case::new("huge σ²")
            .arg("--family", "gaussian")
            .arg("--sigma2", "1e300")
            .says(&["is outside the range"]),
        Case::new("unknown family")
            .arg("--family", "weird")
            .says(&["unknown family 'weird'"]),
        Case::new("unknown engine")
            .arg("--engine", "quantum")
            .says(&["unknown engine 'quantum'"]),
        Case::new("unknown bounds")
            .arg("--bounds", "some")
            .says(&["unknown bounds 'some'"]),
        Case::new("zero ε").arg("--eps", "0").says(&["ε must be finite and > 0"]),
        Case::new("negative ε").arg("--eps", "-0.1").says(&["ε must be finite and > 0"]),
        Case::new("δ of 2").arg("--delta", "2").says(&["δ must lie in (0, 1)"]),
        Case::new("negative input cost")
            .arg("--input-cost", "-1")
            .says(&["input cost must be finite and ≥ 0"]),
        Case::new("empty row range")
            .arg("--rows", "4:2")
            .says(&["--rows '4:2'", "empty or past"]),
        Case::new("rows without a colon")
            .arg("--rows", "abc")
            .says(&["no ':'"]),
        Case::new("input offset past the RNG counter")
            .arg("--input-offset", "4294967295")
            .says(&["2³² input counter"]),
        Case::new("negative input offset")
            .arg("--input-offset", "-3")
            .says(&["it is negative"]),
        Case::new("unknown activation override")
            .arg("--activations", "sigmoid,foo")
            .says(&["unknown activation"]),
        Case::new("two million activations in the model's metadata")
            .arg("--model", "bad.safetensors")
            .file(
                "bad.safetensors",
                safetensors_raw(
                    &format!(
                        r#"{{"__metadata__":{{"activations":"{many}"}},"0.weight":{{"dtype":"F64","shape":[4,3],"data_offsets":[0,96]}},"1.weight":{{"dtype":"F64","shape":[2,4],"data_offsets":[96,160]}}}}"#
                    ),
                    &f64s(&[0.1; 20]),
                ),
            )
            .says(&["more characters"])
            .at_most(2100),
        Case::new("a long activation list on the command line")
            .arg("--activations", &vec!["tanh"; 10_000].join(","))
            .says(&["activation"])
            .at_most(2100),
        Case::new("DIAGFIM_GEMM_R=abc")
            .env("DIAGFIM_GEMM_R", "abc")
            .says(&["DIAGFIM_GEMM_R='abc'", "use 4"]),
        Case::new("DIAGFIM_ADAPTER names no adapter")
            .arg("--engine", "auto")
            .env("DIAGFIM_ADAPTER", "no-such-adapter-xyz")
            .says(&["DIAGFIM_ADAPTER='no-such-adapter-xyz'"]),
        Case::new("DIAGFIM_REQUIRE_GPU=yes")
            .env("DIAGFIM_REQUIRE_GPU", "yes")
            .says(&["DIAGFIM_REQUIRE_GPU='yes'", "use 1"]),
        Case::new("--per-input beyond memory")
            .arg("--model", "big.safetensors")
            .arg("--inputs", "big.npy")
            .flag("--per-input")
            .file("big.safetensors", big_model)
            .file("big.npy", big_x)
            .says(&["--per-input", "needs", "of memory", "drop --per-input"]),
        Case::new("--per-input with --partial")
            .without("--out")
            .without("--summary")
            .arg("--partial", "part.safetensors")
            .flag("--per-input")
            .says(&["cannot be used with"]),
    ]);
}

#[test]
fn hostile_outputs() {
    run_all(vec![
        Case::new("--out is the model")
            .arg("--out", "model.safetensors")
            .says(&["--out is the same file as the input --model"]),
        Case::new("--out is the inputs")
            .arg("--out", "x.npy")
            .says(&["--out is the same file as the input --inputs"]),
        Case::new("--summary is the inputs")
            .arg("--summary", "x.npy")
            .says(&["--summary is the same file as the input --inputs"]),
        Case::new("--summary is the labels")
            .arg("--labels", "y.npy")
            .arg("--summary", "./y.npy")
            .says(&["same file as the input --labels"]),
        Case::new("--out and --summary the same")
            .arg("--summary", "result.safetensors")
            .says(&["--out and --summary name the same file"]),
        Case::new("--out and --summary the same new file")
            .arg("--out", "sub/new.bin")
            .arg("--summary", "sub/../sub/./new.bin")
            .dir("sub")
            .says(&["name the same file"]),
        Case::new("--summary through a symlink to the model")
            .link("s.json", "model.safetensors")
            .arg("--summary", "s.json")
            .says(&["same file as the input --model"]),
        Case::new("--out through a symlink chain to the inputs")
            .link("l1", "x.npy")
            .link("l2", "l1")
            .arg("--out", "l2")
            .says(&["same file as the input --inputs"]),
        Case::new("--out a hard link of the inputs")
            .hard_link("h.npy", "x.npy")
            .arg("--out", "h.npy")
            .says(&["same file as the input --inputs"]),
        Case::new("--out is a directory")
            .dir("sub")
            .arg("--out", "sub")
            .says(&["--out is a directory"]),
        Case::new("--summary is a directory")
            .arg("--summary", ".")
            .says(&["--summary is a directory"]),
        Case::new("--out in a missing folder")
            .arg("--out", "nowhere/r.safetensors")
            .says(&["the folder 'nowhere' does not exist"]),
        Case::new("--out names a folder")
            .arg("--out", "newdir/")
            .says(&["names a folder"]),
        Case::new("--out is /dev/null")
            .arg("--out", "/dev/null")
            .says(&["leads into /dev or /proc"]),
        Case::new("--out is /dev/stdout")
            .arg("--out", "/dev/stdout")
            .says(&["leads into /dev or /proc"]),
        Case::new("--summary links to /dev/null")
            .link("dev.json", "/dev/null")
            .arg("--summary", "dev.json")
            .says(&["leads into /dev or /proc"]),
        Case::new("--out is a FIFO")
            .fifo("pipe")
            .arg("--out", "pipe")
            .says(&["FIFO", "not a regular file"]),
        Case::new("--out is a dangling symlink")
            .link("dangling", "gone/nowhere.bin")
            .arg("--out", "dangling")
            .says(&["does not exist"]),
        Case::new("--out is empty")
            .arg("--out", "")
            .says(&["a value is required"]),
        Case::new("--partial is the inputs")
            .without("--out")
            .without("--summary")
            .arg("--partial", "x.npy")
            .says(&["--partial is the same file as the input --inputs"]),
        Case::new("merge --out onto a part")
            .file("part.safetensors", b"not really a part".to_vec())
            .raw(&["merge", "part.safetensors", "--out", "part.safetensors"])
            .says(&["same file as the input partial"]),
        Case::new("merge --summary is --out")
            .file("part.safetensors", b"not really a part".to_vec())
            .raw(&[
                "merge",
                "part.safetensors",
                "--out",
                "r.bin",
                "--summary",
                "r.bin",
            ])
            .says(&["name the same file"]),
        Case::new("an input error leaves the old outputs")
            .arg("--inputs", "nope.npy")
            .says(&["nope.npy"]),
    ]);
}

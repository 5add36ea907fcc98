//! Sharded runs through the CLI (docs/scale-out.md): four shards written with
//! `analyze --partial` (by `--rows` and by separate files with `--input-offset`) and joined by
//! `diagfim merge` equal one `analyze` of all the inputs, RESULT and SUMMARY; mismatched or
//! overlapping partials and per-input partials exit with code 2 and say why.

use diagfim::model::{save_safetensors, StoreDtype};
use diagfim::{Activation, Mlp};
use ndarray::{s, Array1, Array2};
use std::path::Path;
use std::process::{Command, Output};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_diagfim");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "diagfim {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Exit code 2 and a message naming `fragment`.
fn fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], fragment: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "diagfim {args:?}: {err}");
    assert!(err.contains(fragment), "'{fragment}' not in: {err}");
}

struct Setup {
    dir: TempDir,
}

impl Setup {
    /// A 6 → 8 → 5 → 3 model, 50 inputs and their labels.
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let model = Mlp::init(
            &[6, 8, 5, 3],
            vec![Activation::Tanh, Activation::Sigmoid],
            3,
        )
        .unwrap();
        save_safetensors(&model, &dir.path().join("m.safetensors"), StoreDtype::F32).unwrap();
        let x = Array2::from_shape_fn((50, 6), |(i, k)| ((i * 7 + k * 3) % 11) as f64 * 0.2 - 1.0);
        let y = Array1::from_shape_fn(50, |i| ((i * 5) % 3) as i64);
        ndarray_npy::write_npy(dir.path().join("x.npy"), &x).unwrap();
        ndarray_npy::write_npy(dir.path().join("y.npy"), &y).unwrap();
        for (i, w) in [0usize, 12, 13, 31, 50].windows(2).enumerate() {
            ndarray_npy::write_npy(
                dir.path().join(format!("x{i}.npy")),
                &x.slice(s![w[0]..w[1], ..]).to_owned(),
            )
            .unwrap();
            ndarray_npy::write_npy(
                dir.path().join(format!("y{i}.npy")),
                &y.slice(s![w[0]..w[1]]).to_owned(),
            )
            .unwrap();
        }
        Setup { dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

fn read_result(path: &Path) -> Vec<(String, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = st.tensor(n.as_str()).unwrap();
            let v = t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, v)
        })
        .collect()
}

/// RESULT of `got` equals `want` to 1e-12 relative (to |b| + the tensor's mean |b|), and the
/// SUMMARY recommendations and sample sizes agree.
fn assert_same(got: &Path, want: &Path, got_s: &Path, want_s: &Path) {
    let (g, w) = (read_result(got), read_result(want));
    assert_eq!(
        g.iter().map(|t| &t.0).collect::<Vec<_>>(),
        w.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for ((name, a), (_, b)) in g.iter().zip(&w) {
        let scale = b.iter().map(|v| v.abs()).sum::<f64>() / b.len() as f64;
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-12 * (y.abs() + scale) + 1e-300,
                "{name}: {x:e} vs {y:e}"
            );
        }
    }
    let load = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (gs, ws) = (load(got_s), load(want_s));
    assert_eq!(gs["inputs"], ws["inputs"]);
    let (gl, wl) = (
        gs["layers"].as_array().unwrap(),
        ws["layers"].as_array().unwrap(),
    );
    assert_eq!(gl.len(), wl.len());
    for (a, b) in gl.iter().zip(wl) {
        let (ra, rb) = (
            &a["theory"]["recommendation"],
            &b["theory"]["recommendation"],
        );
        assert_eq!(ra["estimator"], rb["estimator"]);
        for k in ["n_i1", "n_i2", "n_combination"] {
            match (ra[k].as_f64(), rb[k].as_f64()) {
                (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-12 * y.abs(), "{k}"),
                _ => assert_eq!(ra[k], rb[k]),
            }
        }
    }
}

#[test]
fn four_cli_shards_merge_to_the_single_run() {
    let t = Setup::new();
    let (m, x, y) = (t.p("m.safetensors"), t.p("x.npy"), t.p("y.npy"));
    let common = [
        "--model",
        &m,
        "--engine",
        "cpu",
        "--samples",
        "6",
        "--seed",
        "9",
    ];
    let (full_st, full_json) = (t.p("full.st"), t.p("full.json"));
    let full_args = [
        &["analyze"][..],
        &common,
        &[
            "--inputs",
            &x,
            "--labels",
            &y,
            "--out",
            &full_st,
            "--summary",
            &full_json,
        ],
    ]
    .concat();
    ok(&full_args);
    // Shards by --rows on the whole file.
    let mut parts = Vec::new();
    for (i, rows) in ["0:12", "12:13", "13:31", "31:"].iter().enumerate() {
        let part = t.p(&format!("rows{i}.partial"));
        let args = [
            &["analyze"][..],
            &common,
            &[
                "--inputs",
                &x,
                "--labels",
                &y,
                "--rows",
                rows,
                "--partial",
                &part,
            ],
        ]
        .concat();
        ok(&args);
        parts.push(part);
    }
    let merge = |parts: &[String], out: &str, summary: &str| {
        let mut args = vec!["merge"];
        args.extend(parts.iter().map(String::as_str));
        args.extend(["--out", out, "--summary", summary]);
        ok(&args);
    };
    // Reversed order: merging is commutative.
    let rev: Vec<String> = parts.iter().rev().cloned().collect();
    merge(&rev, &t.p("merged.st"), &t.p("merged.json"));
    let path = |n: &str| t.dir.path().join(n);
    assert_same(
        &path("merged.st"),
        &path("full.st"),
        &path("merged.json"),
        &path("full.json"),
    );
    // Shards as separate files with --input-offset, as a Slurm array writes them.
    let mut files = Vec::new();
    for (i, offset) in ["0", "12", "13", "31"].iter().enumerate() {
        let part = t.p(&format!("file{i}.partial"));
        let (xi, yi) = (t.p(&format!("x{i}.npy")), t.p(&format!("y{i}.npy")));
        let args = [
            &["analyze"][..],
            &common,
            &[
                "--inputs",
                &xi,
                "--labels",
                &yi,
                "--input-offset",
                offset,
                "--partial",
                &part,
            ],
        ]
        .concat();
        ok(&args);
        files.push(part);
    }
    merge(&files, &t.p("merged2.st"), &t.p("merged2.json"));
    assert_same(
        &path("merged2.st"),
        &path("full.st"),
        &path("merged2.json"),
        &path("full.json"),
    );

    // Overlapping shards, a shard analysed with another seed, and a RESULT given as a
    // partial are refused.
    fails(
        &["merge", &parts[0], &files[0], "--out", &t.p("bad.st")],
        "overlap",
    );
    let seed7 = t.p("seed7.partial");
    let args = [
        &[
            "analyze",
            "--model",
            &m,
            "--engine",
            "cpu",
            "--samples",
            "6",
            "--seed",
            "7",
        ][..],
        &[
            "--inputs",
            &x,
            "--labels",
            &y,
            "--rows",
            "12:13",
            "--partial",
            &seed7,
        ],
    ]
    .concat();
    ok(&args);
    fails(
        &["merge", &parts[0], &seed7, "--out", &t.p("bad.st")],
        "seed",
    );
    fails(
        &["merge", &parts[0], &t.p("full.st"), "--out", &t.p("bad.st")],
        "diagfim_partial",
    );
    assert!(!t.dir.path().join("bad.st").exists());
}

#[test]
fn partial_options_are_checked() {
    let t = Setup::new();
    let (m, x) = (t.p("m.safetensors"), t.p("x.npy"));
    let base = ["analyze", "--model", &m, "--inputs", &x, "--engine", "cpu"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|v| v.to_string()).collect()
    };
    fails(
        &with(&["--partial", &t.p("p"), "--per-input"]),
        "--per-input",
    );
    fails(
        &with(&["--partial", &t.p("p"), "--out", &t.p("r")]),
        "--out",
    );
    fails(&with(&["--rows", "5:3", "--partial", &t.p("p")]), "--rows");
    fails(
        &with(&["--rows", "0:51", "--partial", &t.p("p")]),
        "50 rows",
    );
    fails(
        &with(&[
            "--rows",
            "0:5",
            "--input-offset",
            "3",
            "--partial",
            &t.p("p"),
        ]),
        "--input-offset",
    );
    fails(
        &with(&["--input-offset", "4294967295", "--partial", &t.p("p")]),
        "2³²",
    );
    fails(&["merge", "--out", &t.p("r")], "PARTS");
    fails(&["merge", &t.p("missing"), "--out", &t.p("r")], "missing");
}

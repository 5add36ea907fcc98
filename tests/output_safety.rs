//! Outputs survive hostile conditions: `kill -9` and SIGTERM in the middle of a run leave
//! either the old RESULT/SUMMARY or complete new ones, and no temporary file; several
//! processes writing the same RESULT leave one complete result, never a mix; files get
//! permissions 0666 minus the umask.

#![cfg(unix)]

use diagfim::model::{save_safetensors, StoreDtype};
use diagfim::{Activation, Mlp};
use ndarray::Array2;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_diagfim");
const OLD: &[u8] = b"OLD RESULT";

/// A model and inputs whose CPU analysis takes about a second on 2 cores.
fn medium_files(d: &Path, inputs: usize) {
    let model = Mlp::init(
        &[32, 128, 128, 10],
        vec![Activation::Sigmoid, Activation::Tanh],
        5,
    )
    .unwrap();
    save_safetensors(&model, &d.join("model.safetensors"), StoreDtype::F32).unwrap();
    let x = Array2::from_shape_fn((inputs, 32), |(i, k)| ((i * 7 + k * 3) % 11) as f64 * 0.1);
    ndarray_npy::write_npy(d.join("x.npy"), &x).unwrap();
    std::fs::write(d.join("result.safetensors"), OLD).unwrap();
    std::fs::write(d.join("summary.json"), b"{\"old\": true}\n").unwrap();
}

fn command(d: &Path, out: &str, summary: &str, seed: u64) -> Command {
    command_with(d, out, summary, seed, &[])
}

fn command_with(d: &Path, out: &str, summary: &str, seed: u64, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "analyze",
        "--model",
        "model.safetensors",
        "--inputs",
        "x.npy",
    ])
    .args(["--out", out, "--summary", summary, "--engine", "cpu"])
    .args(extra)
    .args([
        "--seed",
        &seed.to_string(),
        "--samples",
        "8",
        "--threads",
        "2",
    ])
    .current_dir(d)
    .env_remove("DIAGFIM_REQUIRE_GPU")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn names(d: &Path) -> BTreeSet<String> {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The tensors of a complete RESULT file, by name (panics on a partial or mixed file).
fn tensors(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("a complete RESULT file");
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    assert!(v.iter().any(|(n, _)| n.starts_with("fisher/")));
    v
}

fn seed_of(bytes: &[u8]) -> String {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    meta.metadata().as_ref().unwrap()["seed"].clone()
}

/// Either the old RESULT or a complete new one; either the old SUMMARY or valid JSON.
fn assert_old_or_complete(d: &Path) {
    let r = std::fs::read(d.join("result.safetensors")).unwrap();
    if r != OLD {
        tensors(&r);
    }
    let s = std::fs::read_to_string(d.join("summary.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&s).expect("SUMMARY is complete JSON");
    let expected: BTreeSet<String> = [
        "model.safetensors",
        "x.npy",
        "result.safetensors",
        "summary.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        names(d),
        expected,
        "no temporary or partial file may be left"
    );
}

#[test]
fn kill_9_leaves_no_partial_or_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    medium_files(d, 400);
    // Kill at several points of the run, from loading to the end; the per-input runs write
    // a 180 MB RESULT, so that some kills land while it is being written.
    let per_input: &[&str] = &["--per-input", "--rows", "0:40"];
    for (delay_ms, extra) in [
        (30, &[][..]),
        (400, &[]),
        (1000, &[]),
        (1400, &[]),
        (500, per_input),
        (900, per_input),
        (1300, per_input),
        (1700, per_input),
    ] {
        let mut child = command_with(d, "result.safetensors", "summary.json", 1, extra)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no handler runs.
        child.kill().unwrap();
        child.wait().unwrap();
        assert_old_or_complete(d);
    }
    // Kill the moment RESULT changes: a writer that is not atomic is caught mid-write.
    for _ in 0..2 {
        std::fs::write(d.join("result.safetensors"), OLD).unwrap();
        let mut child = command_with(d, "result.safetensors", "summary.json", 1, per_input)
            .spawn()
            .unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let len = std::fs::metadata(d.join("result.safetensors")).map_or(0, |m| m.len());
            if len != OLD.len() as u64 {
                child.kill().unwrap();
                child.wait().unwrap();
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        assert_old_or_complete(d);
    }
    // A run that is never interrupted replaces both files.
    let out = command(d, "result.safetensors", "summary.json", 1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::read(d.join("result.safetensors")).unwrap(), OLD);
    assert_old_or_complete(d);
}

#[test]
fn sigterm_and_sigint_exit_cleanly_without_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    medium_files(d, 400);
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let mut child = command(d, "result.safetensors", "summary.json", 2)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        // Either it was still running (128 + signal) or it had already finished.
        assert!(
            status.code() == Some(code) || status.success(),
            "signal {sig}: {status:?}"
        );
        assert_old_or_complete(d);
    }
}

#[test]
fn concurrent_writers_leave_one_complete_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    medium_files(d, 60);
    let seeds = [11u64, 12, 13, 14];
    // Each seed writes the shared RESULT/SUMMARY and, as a reference, its own file.
    let mut children: Vec<_> = seeds
        .iter()
        .flat_map(|&s| {
            [
                command(d, "result.safetensors", "summary.json", s),
                command(
                    d,
                    &format!("ref{s}.safetensors"),
                    &format!("ref{s}.json"),
                    s,
                ),
            ]
        })
        .map(|mut c| c.spawn().unwrap())
        .collect();
    for c in children.iter_mut() {
        let status = c.wait().unwrap();
        assert!(status.success());
    }
    let shared = std::fs::read(d.join("result.safetensors")).unwrap();
    let seed: u64 = seed_of(&shared).parse().unwrap();
    assert!(seeds.contains(&seed));
    let reference = std::fs::read(d.join(format!("ref{seed}.safetensors"))).unwrap();
    assert_eq!(
        tensors(&shared),
        tensors(&reference),
        "RESULT must be exactly one writer's result"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap();
    assert!(summary.to_string().contains("\"seed\""));
    let leftovers: Vec<String> = names(d)
        .into_iter()
        .filter(|n| n.contains("diagfim-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn outputs_get_0666_minus_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    medium_files(d, 4);
    std::fs::remove_file(d.join("result.safetensors")).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 027 && exec '{BIN}' analyze --model model.safetensors --inputs x.npy \
             --out result.safetensors --summary summary.json --engine cpu --samples 2"
        ))
        .current_dir(d)
        .env_remove("DIAGFIM_REQUIRE_GPU")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    for f in ["result.safetensors", "summary.json"] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{f}: {mode:o}");
    }
}

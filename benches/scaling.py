"""How `diagfim analyze` scales: wall time, time per input and peak memory of the command line
against the number of inputs B, the hidden width W and the number of outputs O.

Run from the project root after `cargo build --release`:

    python3 benches/scaling.py [--quick] [--gpu] [--timeout 600] [--json scaling.json]

It writes random models (safetensors in PyTorch's nn.Sequential layout, float32, with the
`activations` metadata) and inputs (.npy, float32) to a temporary folder, then runs
`target/release/diagfim analyze --engine cpu` (and `--engine gpu` with --gpu) with
`--bounds all` and `--bounds none` on

    B sweep:  784-256-128-64-10 sigmoid, B = 64, 256, 1024, 4096, 16384
    W sweep:  784-W-W-10 sigmoid, W = 64, 256, 1024, B = 1024
    O sweep:  784-64-O sigmoid, O = 10, 100, 1000, B = 1024

(--quick: B = 64, 256, 1024; W = 64, 256; O = 10, 100; B = 256 for the W and O sweeps;
--b-list, --w-list, --o-list and --fixed-inputs change them). The full sweep takes about
3 minutes on 2 cores; its longest run is O = 1000 with `--bounds all` (≈ 7 ms per input).

Per run it reports the analysis' wall time as SUMMARY.json gives it (`wall_time_s`, without
reading the files and writing the results), the time per input, the theory layer's seconds
(`theory_s`, summed over threads; the GPU engine's `host_theory_s` marked "host"), the whole
process' wall time and CPU time (user + system), and the peak resident memory of the process
(`ru_maxrss` of the child, read with os.wait4). A run past --timeout seconds is killed and marked; the larger runs
of the same series are then skipped (and marked) too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def write_model(path, widths, activation, seed):
    """A random nn.Sequential state dict: Linear k = 0, 2, 4, … with activations between."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    state = {}
    for layer, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        k = 2 * layer
        bound = 1.0 / np.sqrt(n_in)  # torch's default Linear initialisation
        state[f"{k}.weight"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)
        state[f"{k}.bias"] = rng.uniform(-bound, bound, n_out).astype(np.float32)
    acts = ",".join([activation] * (len(widths) - 2))
    save_file(state, path, metadata={"activations": acts})


def write_inputs(path, b, n_in, seed):
    x = np.random.default_rng(seed).standard_normal((b, n_in), dtype=np.float32)
    np.save(path, x)


def run_once(cmd, timeout):
    """Runs `cmd`; returns (rc or None on timeout, process wall s, CPU s, peak RSS bytes,
    stderr tail)."""
    err = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                            start_new_session=True)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
    err.close()
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    rc = None if timed_out.is_set() else proc.returncode
    return rc, wall, usage.ru_utime + usage.ru_stime, rss, " | ".join(tail)


def series(quick, b_list=None, w_list=None, o_list=None, fixed_b=None):
    """(sweep, [(label, widths, B)]) per sweep; each sweep's runs grow."""
    bs = b_list or ([64, 256, 1024] if quick else [64, 256, 1024, 4096, 16384])
    fixed_b = fixed_b or (256 if quick else 1024)
    ws = w_list or ([64, 256] if quick else [64, 256, 1024])
    os_ = o_list or ([10, 100] if quick else [10, 100, 1000])
    return [
        ("B", [(f"B={b}", [784, 256, 128, 64, 10], b) for b in bs]),
        ("W", [(f"W={w}", [784, w, w, 10], fixed_b) for w in ws]),
        ("O", [(f"O={o}", [784, 64, o], fixed_b) for o in os_]),
    ]


def fmt_time(s):
    if s is None:
        return "–"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.1f} µs"


def theory_text(row):
    """SUMMARY's theory_s; the GPU engine's host_theory_s (the host's spectra and bounds,
    overlapping the device) marked "host" when theory_s is 0 there."""
    if row["engine"] == "gpu" and not row["theory_s"] and row["host_theory_s"] is not None:
        return fmt_time(row["host_theory_s"]) + " host"
    return fmt_time(row["theory_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/diagfim", help="the diagfim binary")
    ap.add_argument("--quick", action="store_true", help="a smaller sweep")
    ap.add_argument("--gpu", action="store_true", help="also run --engine gpu")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    ap.add_argument("--samples", type=int, default=16, help="N, labels per input")
    ap.add_argument("--threads", type=int, default=0, help="--threads (0: all cores)")
    ap.add_argument("--reps", type=int, default=1,
                    help="runs per configuration (median times, max peak RSS)")
    ap.add_argument("--activation", default="sigmoid")
    ap.add_argument("--sweeps", default="B,W,O", help="which sweeps, e.g. B or W,O")
    ap.add_argument("--bounds", default="all,none", help="bounds modes to run")
    ints = lambda text: [int(v) for v in text.split(",") if v.strip()]  # noqa: E731
    ap.add_argument("--b-list", type=ints, default=None, help="B values of the B sweep")
    ap.add_argument("--w-list", type=ints, default=None, help="W values of the W sweep")
    ap.add_argument("--o-list", type=ints, default=None, help="O values of the O sweep")
    ap.add_argument("--fixed-inputs", type=int, default=None,
                    help="B of the W and O sweeps (default 1024, --quick 256)")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    ap.add_argument("--keep", default=None,
                    help="write the models and inputs to this folder (kept) instead of a "
                    "temporary one")
    a = ap.parse_args()

    binary = os.path.abspath(a.bin)
    if not os.path.isfile(binary):
        sys.exit(f"scaling: {a.bin} does not exist: run `cargo build --release` first")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    engines = ["cpu"] + (["gpu"] if a.gpu else [])
    bounds_modes = [m.strip() for m in a.bounds.split(",") if m.strip()]
    sweeps = {s.strip() for s in a.sweeps.split(",")}
    work = a.keep or tempfile.mkdtemp(prefix="diagfim-scaling-")
    os.makedirs(work, exist_ok=True)
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    print(f"{version.strip()} ({binary}); CPU: {cpu}, {os.cpu_count()} logical cores; "
          f"N = {a.samples}, --threads {a.threads}, {a.activation}, timeout {a.timeout:g} s, "
          f"{a.reps} run(s) each")
    print()
    print("| sweep | model | B | engine | bounds | wall_time_s (SUMMARY) | per input | "
          "theory_s | process wall | process CPU | peak RSS | status |")
    print("|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    try:
        for sweep, runs in series(a.quick, a.b_list, a.w_list, a.o_list, a.fixed_inputs):
            if sweep not in sweeps:
                continue
            for engine in engines:
                for bounds in bounds_modes:
                    blocked = None  # a smaller run of this series timed out
                    for label, widths, b in runs:
                        arch = "-".join(map(str, widths))
                        model = os.path.join(work, f"model-{arch}.safetensors")
                        x = os.path.join(work, f"x-{widths[0]}-{b}.npy")
                        if not os.path.exists(model):
                            write_model(model, widths, a.activation, seed=len(widths) + sum(widths))
                        if not os.path.exists(x):
                            write_inputs(x, b, widths[0], seed=b)
                        row = dict(sweep=sweep, label=label, model=arch, inputs=b,
                                   engine=engine, bounds=bounds, samples=a.samples,
                                   wall_time_s=None, per_input_s=None, theory_s=None,
                                   host_theory_s=None,
                                   process_wall_s=None, process_cpu_s=None,
                                   peak_rss_bytes=None, status="ok")
                        if blocked:
                            row["status"] = f"skipped ({blocked} timed out)"
                        else:
                            summary = os.path.join(work, "summary.json")
                            result = os.path.join(work, "result.safetensors")
                            cmd = [binary, "analyze", "--model", model, "--inputs", x,
                                   "--engine", engine, "--bounds", bounds,
                                   "--samples", str(a.samples), "--threads", str(a.threads),
                                   "--out", result, "--summary", summary]
                            walls, totals, cpus, rss = [], [], [], 0
                            theory, host = [], []
                            for _ in range(a.reps):
                                for p in (summary, result):
                                    if os.path.exists(p):
                                        os.remove(p)
                                rc, total, cpu_s, peak, tail = run_once(cmd, a.timeout)
                                if rc is None:
                                    row["status"] = f"timeout (> {a.timeout:g} s)"
                                    blocked = label
                                    break
                                if rc != 0:
                                    row["status"] = f"failed (exit {rc}: {tail})"
                                    break
                                with open(summary) as f:
                                    s = json.load(f)
                                walls.append(s["wall_time_s"])
                                theory.append(s.get("theory_s"))
                                host.append(s.get("host_theory_s"))
                                totals.append(total)
                                cpus.append(cpu_s)
                                rss = max(rss, peak)
                            if row["status"] == "ok":
                                med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
                                row.update(
                                    wall_time_s=med(walls), per_input_s=med(walls) / b,
                                    theory_s=(med(theory) if None not in theory else None),
                                    host_theory_s=(med(host) if None not in host else None),
                                    process_wall_s=med(totals), process_cpu_s=med(cpus),
                                    peak_rss_bytes=rss,
                                )
                        rows.append(row)
                        r = row
                        rss_text = (f"{r['peak_rss_bytes'] / 2**20:.0f} MiB"
                                    if r["peak_rss_bytes"] else "–")
                        print(f"| {sweep} | {arch} | {b} | {engine} | {bounds} | "
                              f"{fmt_time(r['wall_time_s'])} | {fmt_time(r['per_input_s'])} | "
                              f"{theory_text(r)} | {fmt_time(r['process_wall_s'])} | "
                              f"{fmt_time(r['process_cpu_s'])} | {rss_text} | {r['status']} |",
                              flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(version=version.strip(), cpu=cpu, cpu_count=os.cpu_count(),
                           samples=a.samples, threads=a.threads, timeout_s=a.timeout,
                           reps=a.reps, activation=a.activation, rows=rows), f, indent=2)
        print(f"\nrows written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

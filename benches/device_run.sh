#!/usr/bin/env bash
# Issue #3's measurements on the lent NVIDIA machine (docs/gpu.md), in one device call of
# about 4 minutes. Prepare them here, from the project root:
#   cargo build --release --examples --bins
#   ../shared/gpu/kit.sh target/release/examples/bench_analysis target/release/diagfim \
#       benches/compare_pytorch.py benches/device_run.sh
#   cp .device/bin/device_run.sh .device/run.sh
# then call the device tool's run with command "bash .device/run.sh", carry [".device"] and
# timeout_s 420, and copy the logs it returns (under $OUT) into README's performance section.
# DRY=1 bash .device/run.sh checks the script here on lavapipe with a small model.
set -u
source "$(dirname "$0")/env.sh"
B="$(dirname "$0")/bin"
OUT="${OUT:-/tmp/diagfim_out}"
mkdir -p "$OUT"
model=(--layers 784,512,256,128,10 --activation sigmoid --inputs 256 --samples 16)
reps=20
gemm=4096
if [ "${DRY:-0}" = 1 ]; then
  model=(--layers 64,32,16,10 --activation sigmoid --inputs 32 --samples 16)
  reps=2
  gemm=256
fi
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
  nproc
} 2>&1 | tee "$OUT/machine.txt"
# f32 (non-tensor-core) peak: 67 TFLOP/s for the SXM H100/H200, 51 for the PCIe H100.
peak=67000
grep -q "PCIe" "$OUT/machine.txt" && peak=51200
roof=(--peak-gflops "$peak")

# Both GEMM register blockings (DIAGFIM_GEMM_R: 4 is the default, 8 is opt-in until measured).
for r in 4 8; do
  DIAGFIM_GEMM_R=$r timeout 60 "$B/bench_analysis" --gemm "$gemm" --reps 10 2>&1 \
    | tee "$OUT/gemm_r$r.txt"
  DIAGFIM_GEMM_R=$r timeout 120 "$B/bench_analysis" "${model[@]}" "${roof[@]}" --reps "$reps" 2>&1 \
    | tee "$OUT/analysis_r$r.txt"
done
for bounds in keys none; do
  timeout 60 "$B/bench_analysis" "${model[@]}" "${roof[@]}" --reps "$reps" --bounds "$bounds" 2>&1 \
    | tee "$OUT/analysis_bounds_$bounds.txt"
done
timeout 120 python3 "$B/compare_pytorch.py" "${model[@]}" --reps "$reps" \
  --bench "$B/bench_analysis" --cli "$B/diagfim" 2>&1 | tee "$OUT/compare_pytorch.txt"
timeout 60 "$B/bench_analysis" "${model[@]}" --reps 3 --engine cpu 2>&1 | tee "$OUT/cpu_engine.txt"

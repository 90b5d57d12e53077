#!/usr/bin/env bash
# Every GPU check of cohort as one prepared script for a machine with an NVIDIA GPU, under 8
# minutes. Stages (each has a time limit; a failed stage does not stop the next):
#   1. kernels:  kernels_gpu_test --bandwidth: every dtype x reduce op of the CUDA kernels bit-exact
#                against the CPU kernels, ReduceMany, average, cast, strided copy; then fp32 sum
#                bandwidth on 256 MiB against cudaMemcpy device-to-device (goal >= 85%).
#   2. device:   device_gpu_test: CudaStream, and the NCCL device group with real NCCL (1 rank:
#                NCCL needs one GPU per rank; 2 ranks only where there are 2 GPUs).
#   3. torch:    builds the torch extension against $PYTHON's torch and runs tests/gpu/gpu_checks.py
#                (the torch backend on CUDA tensors through libcohort: NCCL device groups with one
#                GPU per rank, the staged path with ranks sharing a GPU, DDP, a killed rank).
#   4. bench:    cohort-bench allreduce -d cuda next to torch.distributed's own NCCL backend and
#                to "cohort" through torch.distributed (bench/compare/torch_bench.py --device
#                cuda), alternately, on one rank per GPU; with a single GPU also 2 ranks staged
#                next to gloo on CUDA tensors. Figures in $logs/bench.log (for bench/RESULTS.md).
#   5. pytest:   the torch backend's suite (tests/python) on CUDA tensors (COHORT_TEST_DEVICE=cuda:
#                every test's tensors on the rank's GPU).
# Without a GPU it prints SKIP and exits 0. Exits 1 when a stage failed.
#
# The GPU machine fetches no packages. Stages 1-2 use the binaries of .gpu-bundle/ when present
# (made on the CI host by tests/gpu/bundle.sh; carry it), else build them here, which needs the
# Debian packages of scripts/bootstrap. Stage 3 always builds here (against the local torch).
#
#   tests/gpu/run.sh          # BUILD=build-gpu PYTHON=python3; logs also go to $OUT when set
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$(command -v python3)}
build=${BUILD:-$root/build-gpu}
bundle=$root/.gpu-bundle
logs=${OUT:-$build/gpu-logs}
start=$SECONDS
budget=${GPU_RUN_BUDGET:-470}  # seconds for the whole script
mkdir -p "$logs"
summary=()
failed=0

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: no NVIDIA GPU here (nvidia-smi -L fails or is missing)"
  exit 0
fi
devices=$(nvidia-smi -L | grep -c '^GPU')
{
  date -u
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  command -v nvcc >/dev/null && nvcc --version | tail -2
  lscpu | grep 'Model name'
} 2>&1 | tee "$logs/machine.txt"

# NCCL: torch's wheel keeps libnccl.so.2 in its package, off the loader's path.
nccl_dir=$("$python" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
for dir in "$nccl_dir" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
  if [[ -n "$dir" && -e "$dir/libnccl.so.2" ]]; then
    export LD_LIBRARY_PATH=$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "NCCL: $dir/libnccl.so.2"
    break
  fi
done

left() { echo $((budget - (SECONDS - start))); }

# What the stage functions below read (they run in a child bash under timeout).
generator=
command -v ninja >/dev/null && generator="-G Ninja"
export root python build devices generator

# Runs "$@" with at most $1 seconds (and what is left of the budget); records PASS / FAIL / SKIP.
stage() {
  local name=$1 limit=$2
  shift 2
  local remaining
  remaining=$(left)
  ((limit > remaining)) && limit=$remaining
  if ((limit < 20)); then
    summary+=("SKIP  $name: the script's $budget s budget is spent")
    return
  fi
  local began=$SECONDS
  if [[ $(type -t "$1") == function ]]; then  # timeout runs programs: give it the function's text
    timeout --kill-after=10 "$limit" bash -c "$(declare -f "$1"); $1" 2>&1 | tee "$logs/$name.log"
  else
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
  fi
  local status=${PIPESTATUS[0]}
  local took=$((SECONDS - began))
  if ((status == 0)); then
    summary+=("PASS  $name (${took}s)")
  elif ((status == 77)); then
    summary+=("SKIP  $name: $(grep -m1 '^SKIP' "$logs/$name.log")")
  else
    [[ $status == 124 || $status == 137 ]] && status="timeout after ${limit}s"
    summary+=("FAIL  $name (exit $status, ${took}s; log $logs/$name.log)")
    failed=1
  fi
}

# Stages 1-2: the GPU test binaries, carried or built.
if [[ -x "$bundle/bin/kernels_gpu_test" ]]; then
  bin=$bundle/bin
  bench_bin=$bundle/bin/cohort-bench
  export LD_LIBRARY_PATH=$bundle/lib:${LD_LIBRARY_PATH:-}
  echo "GPU tests from $bundle (commit $(head -1 "$bundle/COMMIT" 2>/dev/null))"
else
  bin=$build/tests/gpu
  bench_bin=$build/bench/cohort-bench
  build_gpu_tests() {
    cmake -S "$root" -B "$build" $generator -DCMAKE_BUILD_TYPE=Release \
      -DCOHORT_CUDA_ARCHITECTURES=native -DCOHORT_PYTHON="$python" &&
      cmake --build "$build" --target kernels_gpu_test device_gpu_test cohort-bench -j "$(nproc)"
  }
  stage build-gpu-tests 240 build_gpu_tests
fi
if [[ -x "$bin/kernels_gpu_test" ]]; then
  stage kernels 180 "$bin/kernels_gpu_test" --bandwidth
  stage device 120 "$bin/device_gpu_test"
else
  summary+=("FAIL  kernels, device: no test binaries (carry .gpu-bundle from tests/gpu/bundle.sh)")
  failed=1
fi

# Stage 3: the torch backend on CUDA tensors. Probed in a child: the checks fork ranks, and a
# parent that has touched CUDA cannot.
export bench_bin
torch_ok=0
if "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  torch_ok=1
  torch_checks() {
    cmake -S "$root" -B "$build" $generator -DCMAKE_BUILD_TYPE=Release \
      -DCOHORT_CUDA_ARCHITECTURES=native -DCOHORT_PYTHON="$python" >/dev/null &&
      cmake --build "$build" --target cohort_python -j "$(nproc)" &&
      GPU_CHECK_DEVICES="$devices" PYTHONPATH="$build/python" PYTHONUNBUFFERED=1 \
        "$python" "$root/tests/gpu/gpu_checks.py"
  }
  stage torch 200 torch_checks
else
  summary+=("SKIP  torch: $python has no torch that sees a CUDA GPU")
fi

# Stage 4: allreduce sweeps on device buffers, cohort next to torch's NCCL, alternately (2
# rounds). One rank per GPU (NCCL's rule); with one GPU, also 2 ranks staged next to gloo.
bench_sweeps() {
  set -o pipefail
  local sweep=(-b 8 -e 256M -f 4 -n 20 -w 5)
  local torch_bench=("$python" "$root/bench/compare/torch_bench.py" --device cuda --nranks "$devices")
  export PYTHONPATH="$build/python" PYTHONUNBUFFERED=1
  for round in 1 2; do
    echo "### round $round: cohort-bench -d cuda, $devices rank(s)"
    "$bench_bin" allreduce --nranks "$devices" -d cuda -z 1 -a 3 "${sweep[@]}" || return 1
    echo "### round $round: torch.distributed nccl"
    "${torch_bench[@]}" --backend nccl "${sweep[@]}" || return 1
    echo "### round $round: torch.distributed cohort"
    "${torch_bench[@]}" --backend cohort "${sweep[@]}" || return 1
  done
  if ((devices == 1)); then
    echo "### 2 ranks on one GPU: cohort-bench -d cuda (staged), torch gloo, torch cohort"
    "$bench_bin" allreduce --nranks 2 -d cuda -z 1 -a 3 -b 8 -e 64M -f 8 || return 1
    "$python" "$root/bench/compare/torch_bench.py" --device cuda --nranks 2 --backend gloo \
      -b 8 -e 64M -f 8 || return 1
    "$python" "$root/bench/compare/torch_bench.py" --device cuda --nranks 2 --backend cohort \
      -b 8 -e 64M -f 8 || return 1
  fi
}
if ((torch_ok)) && [[ -x "$bench_bin" ]]; then
  stage bench 150 bench_sweeps
else
  summary+=("SKIP  bench: needs cohort-bench ($bench_bin) and torch with CUDA")
fi

# Stage 5: the torch backend's pytest suite on CUDA tensors (what is left of the budget).
if ((torch_ok)); then
  pytest_cuda() {
    COHORT_TEST_DEVICE=cuda PYTHONPATH="$build/python" PYTHONUNBUFFERED=1 \
      "$python" -m pytest "$root/tests/python" -q -p no:cacheprovider -rf
  }
  stage pytest-cuda "$(left)" pytest_cuda
fi

echo
echo "tests/gpu/run.sh summary ($((SECONDS - start)) s of $budget s):"
printf '  %s\n' "${summary[@]}" | tee "$logs/summary.txt"
grep -h "goal >= 85%" "$logs/kernels.log" 2>/dev/null | tee -a "$logs/summary.txt"
exit $failed

#!/usr/bin/env bash
# The GPU checks of the torch backend as one prepared script, for a machine with an NVIDIA GPU:
# builds the extension against the torch that $PYTHON imports (default: python3 on PATH; it must
# have CUDA) and runs tests/gpu/gpu_checks.py (NCCL path, host-staged path, DDP on CUDA, and with
# two or more GPUs a killed rank). Without a GPU it prints SKIP and exits 0.
#
#   tests/gpu/run.sh                    # BUILD=build-gpu PYTHON=python3 by default
#
# Needs the Debian packages of scripts/bootstrap (absl, OpenSSL, hwloc ...) besides torch, CUDA
# and NCCL (/usr/local/cuda).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$(command -v python3)}
build=${BUILD:-$root/build-gpu}

# Probed in a child process: the checks fork ranks, and a parent that has touched CUDA cannot.
if ! devices=$("$python" - <<'PROBE'
import sys
try:
    import torch
except Exception as error:  # noqa: BLE001
    print(f"SKIP: cannot import torch: {error}", file=sys.stderr)
    sys.exit(1)
if not torch.cuda.is_available():
    print(f"SKIP: torch {torch.__version__} sees no CUDA GPU", file=sys.stderr)
    sys.exit(1)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s):"
      f" {torch.cuda.get_device_name(0)}", file=sys.stderr)
print(torch.cuda.device_count())
PROBE
); then
  exit 0
fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCOHORT_PYTHON="$python" -DCOHORT_BUILD_TESTS=OFF -DCOHORT_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target cohort_python -j "$(nproc)"
GPU_CHECK_DEVICES="$devices" PYTHONPATH="$build/python" \
  timeout 900 "$python" "$root/tests/gpu/gpu_checks.py"

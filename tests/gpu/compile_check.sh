#!/usr/bin/env bash
# Compiles the torch extension's CUDA variant (python/csrc with COHORT_TORCH_CUDA=1: CUDA tensors
# through libcohort's device path, torch's CUDA streams) with -fsyntax-only on a machine whose
# torch has no CUDA (Debian's 1.13 here), against the CUDA toolkit in /usr/local/cuda: the code
# is then checked for compile errors even where it cannot be built or run. It does not replace
# tests/gpu/run.sh on a GPU machine (torch 2.x with CUDA builds it there for real).
#
#   tests/gpu/compile_check.sh [BUILD]   # BUILD: a configured build dir (default: build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
cuda=${CUDA_HOME:-/usr/local/cuda}
if [[ ! -f "$cuda/include/nccl.h" || ! -f "$cuda/include/cuda_runtime.h" ]]; then
  echo "SKIP: no CUDA toolkit with NCCL in $cuda"
  exit 0
fi
if [[ ! -f "$build/compile_commands.json" ]] || ! grep -q python/csrc/process_group.cc \
    "$build/compile_commands.json"; then
  echo "SKIP: $build has no configured torch extension (cmake -S . -B $build first)"
  exit 0
fi
# Debian's c10/cuda headers lack the generated cuda_cmake_macros.h: supply it.
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/c10/cuda/impl"
echo '#define C10_CUDA_BUILD_SHARED_LIBS' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"
command=$(/usr/bin/python3 - "$build/compile_commands.json" <<'PY'
import json, sys
for entry in json.load(open(sys.argv[1])):
    if entry["file"].endswith("python/csrc/process_group.cc"):
        print(entry["command"])
PY
)
command=$(sed -e 's/-DCOHORT_TORCH_CUDA=0/-DCOHORT_TORCH_CUDA=1/' \
              -e 's/ -o [^ ]*//' -e 's/ -MD -MT [^ ]* -MF [^ ]*//' \
              -e 's/ -c [^ ]*process_group\.cc//' <<<"$command")
status=0
for source in tensor_call.cc process_group.cc work.cc module.cc tensor_args.cc; do
  if eval "$command -isystem $cuda/include -isystem $stub -fsyntax-only $root/python/csrc/$source"; then
    echo "ok    python/csrc/$source (CUDA variant)"
  else
    echo "FAIL  python/csrc/$source (CUDA variant)"
    status=1
  fi
done
exit $status

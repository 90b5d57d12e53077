#!/usr/bin/env bash
# Prepares, on a machine without a GPU (this one), what tests/gpu/run.sh runs on a GPU machine that
# cannot fetch packages: the GPU test binaries and cohort-bench built here (SASS for sm_80, sm_90 and sm_100) and
# the shared libraries they need beyond the C/C++ runtimes and CUDA's driver, in .gpu-bundle/
# (git-ignored). Name .gpu-bundle in the device call's carry; run.sh then uses it instead of
# building the GPU tests there.
#
#   tests/gpu/bundle.sh [BUILD]   # BUILD: a build dir configured with the CUDA toolkit (default: build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
bundle=$root/.gpu-bundle
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  echo "bundle: $build is not configured (make build first)" >&2
  exit 1
fi
cmake --build "$build" --target kernels_gpu_test device_gpu_test cohort-bench
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
binaries=("$build/tests/gpu/kernels_gpu_test" "$build/tests/gpu/device_gpu_test"
  "$build/bench/cohort-bench")
cp "${binaries[@]}" "$bundle/bin/"
# The C library, the C++ runtime and the loader come from the GPU machine (newer there).
for library in $(ldd "${binaries[@]}" | awk '/=> \// {print $3}' | sort -u); do
  case "$(basename "$library")" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux* | libstdc++.so* | \
      libgcc_s.so*) continue ;;
  esac
  cp -L "$library" "$bundle/lib/"
done
git -C "$root" rev-parse HEAD > "$bundle/COMMIT"
git -C "$root" status --porcelain | grep -q . && echo "dirty" >> "$bundle/COMMIT"
echo "bundle: $(du -sh "$bundle" | cut -f1) in $bundle (commit $(head -1 "$bundle/COMMIT"))"

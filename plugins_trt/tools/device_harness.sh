#!/usr/bin/env bash
# Builds the TensorRT plugin and its harness on a GPU machine, once per TensorRT header folder, and runs the
# harness there (issue 5, "proof without a TensorRT runtime"). Logs go to $OUT (default ./out).
#
# Usage (repository root):  bash plugins_trt/tools/device_harness.sh HEADERS_DIR [HEADERS_DIR ...]
#   e.g. bash plugins_trt/tools/device_harness.sh build/trt10/include build/trt11/include
# Environment: ARCH (CUDA architectures, default 90), JOBS (default: all cores).
# The top-level CMakeLists.txt is used as is; if it does not add plugins_trt yet, a scratch copy that does is
# configured instead (the same one line the lead adds), so the plugin is built exactly as add_subdirectory does.
set -o pipefail
OUT="${OUT:-$PWD/out}"
ARCH="${ARCH:-90}"
JOBS="${JOBS:-$(nproc)}"
mkdir -p "$OUT"
[ $# -ge 1 ] || { echo "usage: $0 HEADERS_DIR [HEADERS_DIR ...]" >&2; exit 2; }

REPO="$PWD"
SRC="$REPO"
if ! grep -q '^[[:space:]]*add_subdirectory(plugins_trt)' CMakeLists.txt; then
  SRC=/tmp/dimex_plugin_src
  rm -rf "$SRC" && mkdir -p "$SRC"
  cp CMakeLists.txt "$SRC/" && echo 'add_subdirectory(plugins_trt)' >>"$SRC/CMakeLists.txt"
  ln -s "$REPO/plugins_trt" "$SRC/plugins_trt"
fi

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nvcc --version | tail -2
  cmake --version | head -1
  c++ --version | head -1
  echo "ARCH=$ARCH JOBS=$JOBS SRC=$SRC"
} 2>&1 | tee "$OUT/env.txt"

# Configure and build every header version in parallel (the kernel's translation units dominate).
pids=()
for inc in "$@"; do
  tag=$(basename "$(dirname "$inc")")
  b="/tmp/dimex_build_$tag"
  (
    cmake -S "$SRC" -B "$b" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
      -DTensorRT_INCLUDE_DIR="$REPO/$inc" && cmake --build "$b" -j "$JOBS"
  ) >"$OUT/build_$tag.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done

for inc in "$@"; do
  tag=$(basename "$(dirname "$inc")")
  b="/tmp/dimex_build_$tag"
  grep -E "TensorRT plugin|warning" "$OUT/build_$tag.log" | sort -u | tee -a "$OUT/env.txt"
  if [ ! -x "$b/plugins_trt/test_plugin_harness" ]; then
    echo "build failed for $tag (see build_$tag.log)" | tee -a "$OUT/env.txt"
    tail -30 "$OUT/build_$tag.log"
    status=1
    continue
  fi
  echo "== exported symbols ($tag)" | tee -a "$OUT/env.txt"
  nm -D --defined-only "$b/plugins_trt/libdimexport_trt_plugin.so" "$b/plugins_trt/libdimexport_trt_plugin_static.so" \
    2>&1 | tee -a "$OUT/env.txt"
  log="$OUT/harness_$tag.log"
  {
    echo "== first enqueue inside a graph capture ($tag, informational)"
    "$b/plugins_trt/test_plugin_harness" --probe-first-capture --quiet 2>&1 | grep -E "INFO|passed"
    echo "== harness ($tag)"
  } | tee "$log"
  "$b/plugins_trt/test_plugin_harness" 2>&1 | tee -a "$log" || status=1
  echo "== ctest ($tag)" | tee -a "$log"
  ctest --test-dir "$b/plugins_trt" --output-on-failure >"$OUT/ctest.tmp" 2>&1
  tail -6 "$OUT/ctest.tmp" | tee -a "$log"
  grep -q "100% tests passed" "$OUT/ctest.tmp" || status=1
  rm -f "$OUT/ctest.tmp"
done
echo "device_harness status $status" | tee -a "$OUT/env.txt"
exit $status

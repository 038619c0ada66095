#!/usr/bin/env bash
# Puts TensorRT C++ headers (headers only, never committed) into a git-ignored folder, for compiling the plugin:
#   trt10  TensorRT 10.14.1 headers from the PyPI wheel kernel-lens==2.0.1 (kernel_lens/include/tensorrt/, Apache-2.0)
#          -> DEST/trt10/include
#   trt11  TensorRT 11.x headers copied from a local checkout of the public NVIDIA/TensorRT repository (its
#          include/NvInfer*.h, Apache-2.0) named by TRT11_SRC  -> DEST/trt11/include   (nothing is downloaded)
# Usage (repository root):  bash plugins_trt/tools/get_trt_headers.sh [trt10|trt11|all] [DEST]   (default: trt10 build)
# Then:  cmake -S . -B build/ci -DTensorRT_INCLUDE_DIR="$PWD/build/trt10/include" ...
set -euo pipefail
WHAT="${1:-trt10}"
DEST="${2:-build}"
PY="${PYTHON:-python3}"

get_trt10() {
  local tmp
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --only-binary=:all: kernel-lens==2.0.1 -d "$tmp"
  "$PY" - "$tmp" "$DEST/trt10/include" <<'EOF'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "kernel_lens-2.0.1-*.whl"))[0]
os.makedirs(dest, exist_ok=True)
prefix = "kernel_lens/include/tensorrt/"
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and n.endswith(".h")]
    for n in names:
        with open(os.path.join(dest, os.path.basename(n)), "wb") as f:
            f.write(z.read(n))
print(f"{len(names)} TensorRT headers -> {dest}")
EOF
  rm -rf "$tmp"
}

get_trt11() {
  local src="${TRT11_SRC:?set TRT11_SRC to a TensorRT 11 source tree (the folder that holds include/NvInfer.h)}"
  local out="$DEST/trt11/include"
  mkdir -p "$out"
  cp "$src"/include/NvInfer*.h "$out/"
  echo "$(ls "$out" | wc -l) TensorRT headers -> $out"
}

case "$WHAT" in
  trt10) get_trt10 ;;
  trt11) get_trt11 ;;
  all) get_trt10; get_trt11 ;;
  *) echo "usage: $0 [trt10|trt11|all] [DEST]" >&2; exit 2 ;;
esac

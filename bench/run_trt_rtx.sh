#!/bin/bash
# `dimexport build` and the runtime under TensorRT-RTX on the GPU machine (issue 5), second of two `run` calls.
#
# Call 1 (carry [.dev/trt-rtx/a]):  mkdir -p /tmp/trtrtx && cp .dev/trt-rtx/a/* /tmp/trtrtx/
# Call 2 (carry [.dev/trt-rtx/b, build/trt10]), within 30 s:  bash bench/run_trt_rtx.sh
#
# Steps: install the wheels; build the kernel and plugin libraries (TensorRT 10.14 headers); tests/test_trt_gpu.py; then the CLI end to end, each command's --json and exit code kept:
#   tiny-portable  dimexport build --model dim-tiny --fp16 --scan portable
#   tiny-plugin    dimexport build --model dim-tiny --fp16 --scan plugin      (TensorRT-RTX's parser aborts)
#   l-portable     dimexport build --model dim-l --fp16 --scan portable --batch 1:2:8   (DIML=0 skips it)
# Files back in $OUT: run.log, summary.json, pytest.log, <step>.json.
set -u
OUT=${OUT:-/tmp/trt_rtx_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1
START=$(date +%s)
log() { echo "[$(( $(date +%s) - START ))s] $*"; }

bash .dev/trt-rtx/b/install.sh .dev/trt-rtx/b || log "install.sh failed (rc $?)"
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader
python3 -c 'import sys, torch, tensorrt_rtx as t; print("python", sys.version.split()[0], "torch", torch.__version__, "tensorrt_rtx", t.__version__)'

step() {  # step NAME TIMEOUT ARGS... -> dimexport ARGS --json > $OUT/NAME.json; exit code and seconds kept
  local name=$1 tmo=$2; shift 2; local t0=$(date +%s)
  log "== $name: dimexport $*"
  timeout "$tmo" python3 -m dimexport.cli "$@" --json -o /tmp/dx >"$OUT/$name.json" 2>/tmp/$name.err
  local rc=$?
  echo "$rc $(( $(date +%s) - t0 ))" >/tmp/$name.rc
  tail -5 /tmp/$name.err
  log "== $name: exit $rc"
}
# dim-l (about 90 s of export, 55 s of build) needs no plugin: start it first, beside the native build.
# DIML=0 skips it.
LPID=
if [ "${DIML:-1}" = 1 ]; then step l-portable 540 build --model dim-l --fp16 --scan portable --batch 1:2:8 & LPID=$!; fi

# The native libraries from SRC (default: this tree; a `git archive` snapshot can be carried instead, so that
# work in progress elsewhere in the tree does not leak in), used through DIMEXPORT_SCAN_LIB and
# DIMEXPORT_TRT_PLUGIN_LIB: the PyTorch side runs the fused kernel, TensorRT the plugin.
SRC=${SRC:-.}
log "cmake: kernel + plugin from $SRC (TensorRT 10.14 headers), sm_90"
cmake -S $SRC -B /tmp/b -DCMAKE_CUDA_ARCHITECTURES=90 -DTensorRT_INCLUDE_DIR=$PWD/build/trt10/include >/tmp/cmake.log 2>&1 \
  && cmake --build /tmp/b -j 16 --target dimexport_scan dimexport_trt_plugin >>/tmp/cmake.log 2>&1
log "cmake rc $?"; tail -3 /tmp/cmake.log
export DIMEXPORT_SCAN_LIB=/tmp/b/libdimexport_scan.so DIMEXPORT_TRT_PLUGIN_LIB=/tmp/b/plugins_trt/libdimexport_trt_plugin.so
ls -l $DIMEXPORT_SCAN_LIB $DIMEXPORT_TRT_PLUGIN_LIB

log "pytest tests/test_trt_gpu.py"
timeout 300 python3 -m pytest -q -rA tests/test_trt_gpu.py 2>&1 | tee "$OUT/pytest.log" | tail -25

step tiny-portable 200 build --model dim-tiny --fp16 --scan portable --resolution 256 --batch 1:2:4
step tiny-plugin 200 build --model dim-tiny --fp16 --scan plugin --resolution 256 --batch 1:2:4
[ -n "$LPID" ] && wait $LPID
python3 - "$OUT/summary.json" /tmp/*.rc <<'PY'
import json, pathlib, sys
summary = {}
for rc in sys.argv[2:]:
    name = pathlib.Path(rc).stem
    code, secs = open(rc).read().split()
    summary[name] = {"exit_code": int(code), "seconds": int(secs),
                     "stderr_tail": open(f"/tmp/{name}.err", errors="replace").read().splitlines()[-4:]}
json.dump(summary, open(sys.argv[1], "w"), indent=2)
PY
log done; ls -l "$OUT"

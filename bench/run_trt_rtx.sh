#!/bin/bash
# TensorRT-RTX AOT experiments of issue 5 §3, for the GPU machine (second of two `run` calls).
#
# Call 1 (carry [.dev/trt-rtx/a]):  mkdir -p /tmp/trtrtx && cp .dev/trt-rtx/a/* /tmp/trtrtx/
# Call 2 (carry [.dev/trt-rtx/b, build/trt10]), within 30 s:  bash bench/run_trt_rtx.sh
#
# Every step runs in its own subprocess (an abort must not take the others with it); its exit code, the
# signal if any and the last stderr lines go to $OUT/summary.json. Experiments:
#   A1  dim-tiny portable fp16 256²  (no plugin)
#   A2  dim-l    portable fp16 256²  (exported here: ~1.5 GB of weights)
#   B   dim-tiny plugin   fp16 256²  with libdimexport_trt_plugin.so (TensorRT 10.14 headers) via load_library
# Files back ($OUT, at most 8): run.log, summary.json, A1.json, A2.json, B.json, cmake.log.
set -u
START=$(date +%s)
BUDGET=${BUDGET:-520}            # seconds for the whole script (the per-call limit is 600)
OUT=${OUT:-/tmp/trt_rtx_out}
W=/tmp/trtrtx_work
mkdir -p "$OUT" "$W"
ROOT=$PWD
exec > >(tee -a "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
log() { echo "[$(elapsed)s] $*"; }

# step NAME TIMEOUT CMD...  -> runs CMD in its own process with a timeout; records rc/signal/tail.
step() {
  local name=$1 tmo=$2; shift 2
  local slog="$W/$name.log" t0=$(date +%s)
  log "== $name (timeout ${tmo}s): $*"
  timeout -k 10 "$tmo" "$@" >"$slog" 2>&1
  local rc=$?
  sed "s/^/  [$name] /" "$slog" | tail -n 60
  python3 - "$name" "$rc" "$(( $(date +%s) - t0 ))" "$slog" "$W/steps.jsonl" "$tmo" <<'PY'
import json, signal, sys
name, rc, secs, slog, out, tmo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
rec = {"step": name, "exit_code": rc, "seconds": secs, "timeout_s": tmo}
if rc == 124:
    rec["note"] = "killed by timeout"
elif rc > 128:
    try:
        rec["signal"] = signal.Signals(rc - 128).name
    except ValueError:
        rec["signal"] = rc - 128
try:
    rec["tail"] = open(slog, errors="replace").read().splitlines()[-15:]
except OSError:
    pass
open(out, "a").write(json.dumps(rec) + "\n")
PY
  log "== $name: exit $rc after $(( $(date +%s) - t0 ))s"
  return $rc
}

# ---- environment -----------------------------------------------------------------------------------------
log "install TensorRT-RTX wheels"
bash .dev/trt-rtx/b/install.sh .dev/trt-rtx/b || log "install.sh failed (rc $?)"
export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader | tee "$W/gpu.txt"
python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
step import 60 python3 -c 'import tensorrt_rtx as trt; print("tensorrt_rtx", trt.__version__, trt.__file__)'

# ---- background: plugin library and the dim-l export (both slow, independent) ------------------------------
(
  cmake -S . -B /tmp/b -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
        -DTensorRT_INCLUDE_DIR=$ROOT/build/trt10/include >"$W/cmake_cfg.log" 2>&1 &&
  cmake --build /tmp/b -j 12 --target dimexport_trt_plugin >"$W/cmake_build.log" 2>&1
  echo $? >"$W/cmake.rc"
) &
CMAKE_PID=$!

export_py() {  # export_py MODEL SCAN MIN OPT MAX PATHFILE
  python3 - "$@" <<'PY'
import sys, time
from dimexport.export.exporter import ExportSpec, export
model, scan, lo, opt, hi, pathfile = sys.argv[1:]
t = time.time()
art, reused = export(ExportSpec(model, 256, "fp16", scan, batch=(int(lo), int(opt), int(hi))), "/tmp/trtrtx_art",
                     status=lambda s: print(s, flush=True))
print(art.onnx_path, "reused" if reused else "", f"{time.time() - t:.1f}s")
open(pathfile, "w").write(str(art.onnx_path))
PY
}
export -f export_py
( step export_dim-l_portable 300 bash -c 'export_py dim-l portable 1 2 8 /tmp/trtrtx_work/dim-l_portable.path' >/dev/null ) &
DIML_PID=$!

# ---- dim-tiny exports ----------------------------------------------------------------------------------
step export_dim-tiny_portable 120 bash -c "export_py dim-tiny portable 1 2 4 $W/dim-tiny_portable.path"
step export_dim-tiny_plugin 120 bash -c "export_py dim-tiny plugin 1 2 4 $W/dim-tiny_plugin.path"

# ---- A1 ------------------------------------------------------------------------------------------------
if [ -s "$W/dim-tiny_portable.path" ]; then
  step A1 150 python3 bench/trt_rtx_aot.py --onnx "$(cat $W/dim-tiny_portable.path)" --batch 1:2:4 --out "$OUT/A1.json"
fi

# ---- plugin library + B ----------------------------------------------------------------------------------
log "waiting for the plugin build"
wait $CMAKE_PID
cat "$W/cmake_cfg.log" "$W/cmake_build.log" >"$OUT/cmake.log" 2>/dev/null
LIB=$(find /tmp/b -name 'libdimexport_trt_plugin.so' -type f | head -1)
log "plugin build rc $(cat $W/cmake.rc 2>/dev/null), library: ${LIB:-none}"
echo "{\"step\": \"build_plugin\", \"exit_code\": $(cat $W/cmake.rc 2>/dev/null || echo -1), \"library\": \"${LIB}\"}" >>"$W/steps.jsonl"
if [ -n "$LIB" ]; then
  ls -l "$LIB"; nm -D --defined-only "$LIB" | grep -v ' A ' ; ldd "$LIB"
fi
if [ -n "$LIB" ] && [ -s "$W/dim-tiny_plugin.path" ]; then
  # B_WRAP='cuda-gdb -batch -ex run -ex bt --args' gives a host backtrace if the parser aborts again.
  step B 150 ${B_WRAP:-} python3 bench/trt_rtx_aot.py --onnx "$(cat $W/dim-tiny_plugin.path)" --plugin-lib "$LIB" \
       --batch 1:2:4 --out "$OUT/B.json" --verbose
fi

# ---- A2 ------------------------------------------------------------------------------------------------
log "waiting for the dim-l export"
wait $DIML_PID
if [ -s "$W/dim-l_portable.path" ]; then
  P=$(cat $W/dim-l_portable.path); du -sh "$(dirname $P)"
  T=$(( $(left) - 15 )); [ $T -gt 240 ] && T=240
  if [ $T -gt 20 ]; then
    step A2 $T python3 bench/trt_rtx_aot.py --onnx "$P" --batch 1:2:8 --out "$OUT/A2.json"
  else
    log "A2 skipped: only $(left)s left"; echo '{"step": "A2", "skipped": "no time left"}' >>"$W/steps.jsonl"
  fi
fi

# ---- summary -------------------------------------------------------------------------------------------
python3 - "$W" "$OUT" <<'PY'
import json, pathlib, sys
w, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
steps = [json.loads(l) for l in (w / "steps.jsonl").read_text().splitlines() if l.strip()] if (w / "steps.jsonl").exists() else []
gpu = (w / "gpu.txt").read_text().strip() if (w / "gpu.txt").exists() else None
json.dump({"gpu": gpu, "steps": steps}, open(out / "summary.json", "w"), indent=2)
PY
log "done; $OUT:"; ls -l "$OUT"

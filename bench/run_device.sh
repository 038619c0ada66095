#!/usr/bin/env bash
# One call on the GPU machine (issue 4): environment, GPU tests of the scan kernel, plugin harness, benchmark.
# Usage (repo root, e.g. through the device `run` tool):
#   bash bench/run_device.sh [smoke,quicktests,tests,harness,bench,profile,ncumetrics|all]
# Library: dimexport/lib/libdimexport_scan.so if it loads (carried, built here with the documented cmake
# command), else it is built now for sm_90. Harness: build/plugins_trt/test_plugin_harness with the plugin libraries
# installed beside the kernel in dimexport/lib if carried (built against TensorRT headers), else
# plugins_trt/tools/device_harness.sh builds them.
# SCAN_LIB (a carried library, e.g. .dev/libs/v4/libdimexport_scan.so) replaces dimexport/lib for the tests and as the
# benchmark's default variant (tagged BENCH_DEFAULT_TAG); BENCH_TIMEOUT bounds the benchmark (s, default 420).
# smoke: one test per kernel, ends the call at the first failure or hang (90 s). ncumetrics: Nsight Compute counters
# (instructions, issue, stalls) of NCU_LIBS ("tag=path ...") on NCU_CFGS ("batch,dim,seqlen,split ...").
# Benchmark variants: every .dev/libs/<name>/libdimexport_scan.so is timed beside the default; BENCH_ARGS adds
# arguments (e.g. "--limit 9"). Tests run in pytest-xdist workers (TEST_WORKERS, default 8). Logs and results go
# to $OUT (default ./out).
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
MODE="${1:-all}"
[ "$MODE" = all ] && MODE=tests,harness,bench
want() { [[ ",$MODE," == *",$1,"* ]]; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
  nvcc --version | tail -2
} 2>&1 | tee "$OUT/env.txt"

DEFAULT_LIB=dimexport/lib/libdimexport_scan.so
if [ -n "$SCAN_LIB" ]; then
  DEFAULT_LIB="$SCAN_LIB"
  export DIMEXPORT_SCAN_LIB="$PWD/$SCAN_LIB"
fi
if ! python3 -c 'from dimexport.ops import _native; _native.load()' 2>/dev/null; then
  echo "building libdimexport_scan.so for sm_90" | tee -a "$OUT/env.txt"
  source bench/build_native.sh
  build_native . | tee -a "$OUT/env.txt"
  python3 -c 'from dimexport.ops import _native; _native.load()' || exit 1
fi

status=0
pytest_gpu() {  # pytest-xdist workers; the per-worker error reports are merged into $OUT/test_errors.json
  local limit=$1
  shift
  rm -f "$OUT"/test_errors.json*
  DIMEX_SCAN_TEST_REPORT="$OUT/test_errors.json" timeout "$limit" python3 -m pytest -m gpu -q -n "${TEST_WORKERS:-8}" \
    -p no:cacheprovider tests/test_scan_kernel_gpu.py "$@" 2>&1 | tee "$OUT/tests.log" | tail -25
  local rc=$?
  python3 - "$OUT" <<'EOF'
import glob, json, sys
merged = {}
for path in glob.glob(sys.argv[1] + "/test_errors.json?*"):
    for k, v in json.load(open(path))["max_rel_error"].items():
        merged[k] = max(merged.get(k, 0.0), v)
json.dump({"max_rel_error": merged}, open(sys.argv[1] + "/test_errors.json", "w"), indent=1)
print("max relative error per dtype over all workers:", {k: f"{v:.3e}" for k, v in sorted(merged.items())})
EOF
  return $rc
}
if want smoke; then  # every kernel once, stop at the first failure (a hang or a wrong result ends the call early)
  pytest_gpu 90 -x -k "every_kernel" || exit 1
fi
if want quicktests; then  # every kernel, splits, strided layouts, edge lengths; not the 1000 random configurations
  pytest_gpu 240 --maxfail=10 -k "not random_config and not large_offsets" || status=1
fi
if want tests; then
  pytest_gpu 480 --maxfail=30 || status=1
fi
if want harness; then
  h=build/plugins_trt/test_plugin_harness
  if [ -x "$h" ] && [ -f dimexport/lib/libdimexport_trt_plugin.so ]; then
    "$h" --lib dimexport/lib/libdimexport_trt_plugin.so --static-lib dimexport/lib/libdimexport_trt_plugin_static.so \
      >"$OUT/harness.log" 2>&1 || status=1
    grep -E "FAIL|GPU summary|passed" "$OUT/harness.log" | tail -8
  else
    bash plugins_trt/tools/device_harness.sh build/trt10/include || status=1
  fi
fi
if want profile; then  # Nsight Compute: stall reasons and pipe use of one launch per configuration
  for cfg in "8 3072 1230 0" "32 3072 366 4"; do
    set -- $cfg
    ncu --clock-control none -k regex:scan_fwd --launch-skip 2 --launch-count 1 --section SpeedOfLight \
      --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy \
      --section InstructionStats --print-details all \
      python3 bench/profile_scan.py --batch $1 --dim $2 --seqlen $3 --split $4
    ncu --clock-control none -k regex:scan_fwd --launch-skip 2 --launch-count 1 --metrics \
      smsp__inst_executed.sum,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active \
      python3 bench/profile_scan.py --batch $1 --dim $2 --seqlen $3 --split $4
  done >"$OUT/ncu.txt" 2>&1
  grep -E "Duration|Issue Slots Busy|Warp Cycles Per Issued|Achieved Occupancy|Stall|stall|pipe_xu|inst_executed.sum|bank_conflicts" \
    "$OUT/ncu.txt" | head -60
fi
if want ncumetrics; then  # instruction counts, issue and stall metrics of one launch per library and configuration
  # NCU_LIBS: "tag=path ..."; NCU_CFGS: "batch,dim,seqlen,split ..." (split 0 = heuristic; configurations without
  # a sequence split, so that --launch-skip 2 lands on a whole call's only launch)
  m=gpu__time_duration.sum,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active
  m=$m,sm__warps_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active
  for st in long_scoreboard short_scoreboard wait barrier not_selected math_pipe_throttle mio_throttle lg_throttle \
    no_instruction branch_resolving; do
    m=$m,smsp__average_warps_issue_stalled_${st}_per_issue_active.ratio
  done
  for lv in ${NCU_LIBS:-default=$DEFAULT_LIB}; do
    for cfg in ${NCU_CFGS:-8,3072,1230,2}; do
      IFS=, read -r nb nd nl ns <<<"$cfg"
      echo "== ${lv%%=*} B=$nb D=$nd L=$nl S=$ns"
      DIMEXPORT_SCAN_LIB="$PWD/${lv#*=}" timeout 120 ncu --clock-control none -k regex:scan_fwd --launch-skip 2 \
        --launch-count 1 --metrics "$m" python3 bench/profile_scan.py --batch "$nb" --dim "$nd" --seqlen "$nl" \
        --split "$ns" 2>&1 | grep -E "scan_fwd_kernel|gpu__|smsp__|sm__" | sed -E 's/ +/ /g'
    done
  done 2>&1 | tee "$OUT/ncu_metrics.txt"
fi
if want bench; then
  variants=(--variant "${BENCH_DEFAULT_TAG:-default}=$DEFAULT_LIB")
  for lib in .dev/libs/*/libdimexport_scan.so; do
    [ -f "$lib" ] && [ "$lib" != "$DEFAULT_LIB" ] && variants+=(--variant "$(basename "$(dirname "$lib")")=$lib")
  done
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-420}" python3 bench/scan.py "${variants[@]}" --json "$OUT/scan_h100.json" --md "$OUT/scan_h100.md" $BENCH_ARGS \
    2>"$OUT/bench.log" | tail -60 || status=1
fi
exit $status

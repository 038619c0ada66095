#!/usr/bin/env bash
# One device call that measures a change against a base revision built beside it (issue "Whole-denoiser speed"):
# both libraries built in parallel, the GPU tests of this tree, then per step the timings of both, so every number has
# its baseline from the same machine and call. Device time is scarce (starts are often refused): everything in one call.
#
# Here, once per base revision (the snapshot and the bench wheels travel as ignored, carried folders):
#   echo /.base/ >> .git/info/exclude && rm -rf .base && git archive --prefix=.base/ <rev> | tar -x
# and, to tell two changes apart at the fused ops in the same call, a tree with the first of them alone as .mid (the
# same way). Then, through the device tool (carry [".base", ".mid", ".whl_bench"]; diffusers' wheels in .whl_bench/
# enable the DiT rows):
#   STEPS=tests,bench,fused,scan,profile,bench512 bash bench/run_compare_gpu.sh
# VARIANTS="tag=nvcc definitions;..." (e.g. "n3=-DDIMEX_SCAN_MIN_BLOCKS_NARROW=3") adds, per entry, this tree's
# scan library rebuilt with those definitions and installed into a copy of this tree (/tmp/variant_<tag>, the
# operators unchanged: they link the library through $ORIGIN); each joins the bench, scan, ncu and bench512 steps
# beside this tree, so compile-time choices of the kernels are timed in one call without a second full build.
# Steps (in this order, each skipped when too little of LIMIT seconds is left):
#   tests     pytest -m gpu on this tree ($TESTS, none to skip; default: the fused ops, the scan op and kernel
#             without its 1000 random configurations, the models); the scan kernel's tests on each variant
#   bench     dimexport bench, dim-h 256² B=1,8 fp16 eager+graph: this tree (with DiT-XL/2), the variants, the base
#   fused     bench/fused_ops.py at 256²: this tree, .mid where present, the base
#   scan      bench/scan.py --token-major on $SCAN_SHAPES (default: eight DiM-L/H shapes): this tree, the
#             variants, the base
#   sweep     bench/scan.py --token-major, lanes per channel and sequence chunks forced, on dim-h's shapes (this tree)
#   profile   bench/profile_layer.py --batch 1,8 (this tree)
#   ncu       Nsight Compute (speed of light, memory, occupancy, warp stalls) of one launch of each fused kernel at
#             dim-h 256² batch 8 ($NCU_OPS: their kernel names; empty: none) and of the scan on dim-h's batch-8
#             shape (this tree, the variants)
#   bench512  dim-h 512² B=8 graph: this tree (with DiT-XL/2), the variants, the base
# Results: $OUT/results.tgz (every log, JSON and table) and $OUT/summary.txt; the device returns at most 8 files.
set -o pipefail
export PYTHONUNBUFFERED=1
STEPS="${STEPS:-tests,bench,fused,scan,sweep,profile,bench512}"
LIMIT="${LIMIT:-570}"
R=/tmp/compare; rm -rf "$R"; mkdir -p "$R"
t0=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - t0) )); }
want() { [[ ",$STEPS," == *",$1,"* ]] && [ "$(left)" -gt "${2:-60}" ]; }
log() { echo "[t=$(( $(date +%s) - t0 ))s] $*" | tee -a "$R/summary.txt"; }
pack() { (cd "$R" && tar czf "$OUT/results.tgz" .; cp -f "$R/summary.txt" "$OUT/"); }
trap pack EXIT

SITE=""
if ls .whl_bench/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl_bench/*.whl 2>/dev/null && SITE=/tmp/site
fi
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$R/env.txt"

source bench/build_native.sh
build_native . >"$R/build.log" &
[ -d .base ] && build_native .base >"$R/build_base.log" &
[ -d .mid ] && build_native .mid >"$R/build_mid.log" &
declare -A VDIR=()  # variant tag -> its tree
IFS=';' read -ra specs <<<"${VARIANTS:-}"
for spec in "${specs[@]}"; do
  tag=${spec%%=*} VDIR[$tag]=/tmp/variant_$tag
  (cmake -S . -B "/tmp/build_$tag" -DCMAKE_CUDA_ARCHITECTURES=90 "-DCMAKE_CUDA_FLAGS=${spec#*=}" >/dev/null &&
   cmake --build "/tmp/build_$tag" -j 8 --target dimexport_scan >/dev/null) >"$R/build_variant_$tag.log" 2>&1 &
done
wait
cat "$R"/build*.log
for tag in "${!VDIR[@]}"; do  # after this tree's build: the copy carries its operators and Python code
  mkdir -p "${VDIR[$tag]}" &&
    tar -c --exclude=./.git --exclude=./build --exclude=./.base --exclude=./.mid --exclude='./.whl*' . |
      tar -x -C "${VDIR[$tag]}" &&
    cp "$(find "/tmp/build_$tag" -name libdimexport_scan.so | head -1)" "${VDIR[$tag]}/dimexport/lib/" ||
    { log "variant $tag did not build"; unset "VDIR[$tag]"; }
done
log "built (this tree$( [ -d .mid ] && echo ", .mid")$( [ -d .base ] && echo " and .base" ||
  echo "; no .base: no baseline rows"))${VARIANTS:+; variants: ${!VDIR[*]}}"

bench() {  # $1: label, $2: tree, then dimexport bench arguments
  local label=$1 tree=$2; shift 2
  (cd "$tree" && PYTHONPATH=".:$SITE" timeout $(( $(left) < 120 ? $(left) : 120 )) python3 -m dimexport.cli bench \
     --model dim-h --dtype fp16 "$@" --json >"$R/bench_$label.json" 2>"$R/bench_$label.log")
  log "$label $(python3 -c "import json; d=json.load(open('$R/bench_$label.json')); print([(r['name'], r['batch'], round(r['p50'], 2)) for r in d['rows'] if not r['skipped']])" 2>&1)"
}
dit() { [ -n "$SITE" ] && echo "--baselines dit"; }

if want tests; then
  export PYTHONPATH="$PWD"
  [ "${TESTS:-}" = none ] || timeout $(( $(left) < 180 ? $(left) - 20 : 160 )) python3 -m pytest -q -n 8 \
    -p no:cacheprovider -m gpu \
    ${TESTS:-tests/test_conv_silu.py tests/test_block_ops.py tests/test_scan_op.py tests/test_scan_kernel_gpu.py tests/test_models.py} \
    -k "not test_random_config" >"$R/gpu_tests.log" 2>&1
  [ "${TESTS:-}" = none ] || log "tests: $(tail -1 "$R/gpu_tests.log")"
  for tag in "${!VDIR[@]}"; do  # the kernel's own tests on each variant's library (loaded through ctypes)
    want tests 60 && DIMEXPORT_SCAN_LIB="${VDIR[$tag]}/dimexport/lib/libdimexport_scan.so" timeout 150 \
      python3 -m pytest -q -n 8 -p no:cacheprovider -m gpu tests/test_scan_kernel_gpu.py -k "not test_random_config" \
      >"$R/gpu_tests_$tag.log" 2>&1
    log "tests ($tag, scan kernel): $(tail -1 "$R/gpu_tests_$tag.log")"
  done
fi
if want bench; then
  bench this_256 . --resolution 256 --batch 1,8 --backends eager,graph $(dit)
  for tag in "${!VDIR[@]}"; do want bench 60 && bench "${tag}_256" "${VDIR[$tag]}" --resolution 256 --batch 1,8 \
    --backends eager,graph; done
  [ -d .base ] && bench base_256 .base --resolution 256 --batch 1,8 --backends eager,graph
fi
if want fused; then
  for tree in . .mid .base; do
    [ -d "$tree" ] || continue
    tag=$( [ "$tree" = . ] && echo this || echo "${tree#.}" )
    (cd "$tree" && PYTHONPATH=. timeout 60 python3 bench/fused_ops.py --resolutions 256 --json "$R/fused_ops_$tag.json" \
      --md "$R/fused_ops_$tag.md" >"$R/fused_ops_$tag.log" 2>&1)
    log "fused ops ($tag): $R/fused_ops_$tag.md"; grep "^|" "$R/fused_ops_$tag.md"
  done
fi
scan_libs() {  # --variant arguments of bench/scan.py: this tree, the variants, the base
  echo "--variant this=dimexport/lib/libdimexport_scan.so"
  for tag in "${!VDIR[@]}"; do echo "--variant $tag=${VDIR[$tag]}/dimexport/lib/libdimexport_scan.so"; done
  [ -d .base ] && echo "--variant base=.base/dimexport/lib/libdimexport_scan.so"
}
if want scan 120; then
  PYTHONPATH="$PWD" timeout $(( 90 * (${#VDIR[@]} + 1) )) python3 bench/scan.py --no-sweep --token-major \
    --shapes "${SCAN_SHAPES:-8x3072x366,1x3072x366,8x3072x1230,8x2048x366,8x2048x1230,32x3072x366,1x2048x1230,$(
      )1x3072x4494}" \
    $(scan_libs) --json "$R/scan.json" --md "$R/scan.md" >"$R/scan.log" 2>&1
  grep "^|" "$R/scan.md" | tee -a "$R/summary.txt"
  log "scan: $R/scan.md"
fi
if want sweep 100; then
  PYTHONPATH="$PWD" timeout 90 python3 bench/scan.py --token-major --shapes 8x3072x366,1x3072x366,8x3072x1230 \
    --json "$R/scan_sweep.json" --md "$R/scan_sweep.md" >"$R/scan_sweep.log" 2>&1
  log "sweep: $R/scan_sweep.md"; grep "^|" "$R/scan_sweep.md"
fi
if want profile 90; then
  PYTHONPATH="$PWD" timeout $(( $(left) - 10 )) python3 bench/profile_layer.py --batch 1,8 --dtype fp16 \
    --json "$R/profile.json" --md "$R/profile.md" >"$R/profile.log" 2>&1
  log "profile: $(grep "Whole forward" "$R/profile.md" | tr '\n' ' ')"
fi
if want ncu 100; then
  sections="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats"
  sections="$sections --section WarpStateStats --section SchedulerStats"
  for k in ${NCU_OPS-conv_silu_channels norm_kernel residual_kernel}; do
    PYTHONPATH="$PWD" timeout 60 ncu --clock-control none -k "regex:$k" --launch-skip 2 --launch-count 1 $sections \
      python3 bench/fused_ops.py --resolutions 256 --batch 8
  done >"$R/ncu_ops.txt" 2>&1
  for tag in this "${!VDIR[@]}"; do
    lib=$( [ "$tag" = this ] && echo "$PWD" || echo "${VDIR[$tag]}" )/dimexport/lib/libdimexport_scan.so
    echo "== scan: $tag"
    want ncu 40 && DIMEXPORT_SCAN_LIB="$lib" PYTHONPATH="$PWD" timeout 60 ncu --clock-control none -k regex:scan_fwd \
      --launch-skip 2 --launch-count 1 $sections python3 bench/profile_scan.py --batch 8 --dim 3072 --seqlen 366
  done >>"$R/ncu_ops.txt" 2>&1
  log "ncu: $R/ncu_ops.txt"
  grep -E "^== scan|Context [0-9]+, Stream|Duration|DRAM Throughput|Compute \(SM\) Throughput|Registers Per|$(
    )Achieved Occupancy|Warp Cycles Per Issued|Issue Slots Busy|Block Limit Registers" \
    "$R/ncu_ops.txt" | sed -E 's/ +/ /g' | tee -a "$R/summary.txt"
fi
if want bench512 80; then
  bench this_512 . --resolution 512 --batch 8 --backends graph $(dit)
  for tag in "${!VDIR[@]}"; do want bench512 50 && bench "${tag}_512" "${VDIR[$tag]}" --resolution 512 --batch 8 \
    --backends graph; done
  [ -d .base ] && want bench512 40 && bench base_512 .base --resolution 512 --batch 8 --backends graph
fi
log "done"

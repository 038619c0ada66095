#!/usr/bin/env bash
# One device call for training speed (issue "Train fast"): build the kernels for sm_90, GPU tests of the CUDA
# backward and the forward kernel's quick tests, then bench/scan.py --backward. Where mamba-ssm / causal-conv1d
# sdists are carried in .whl/ (see bench/README or the device notes), they build in the background meanwhile and
# the benchmark includes them once built (MAMBA_WAIT seconds at most, default 0).
# train: trains recipes/dim-tiny-digits.yaml (the embedded default) and measures its recognised rate over guidance
# and step counts (bench/digits_quality.py); weights, log, loss curve and grids come back under $OUT.
# Usage (repo root, through the device `run` tool): bash bench/run_train_gpu.sh [tests,bench,train]   (results under $OUT)
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
MODE="${1:-tests,bench}"
want() { [[ ",$MODE," == *",$1,"* ]]; }
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$OUT/env.txt"
if want bench && ls .whl/mamba_ssm-*.tar.gz .whl/causal_conv1d-*.tar.gz >/dev/null 2>&1; then
  (export TORCH_CUDA_ARCH_LIST=9.0 MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=8
   python3 -m pip install -q --no-build-isolation --no-deps --no-index --target /tmp/mamba \
     .whl/causal_conv1d-*.tar.gz .whl/mamba_ssm-*.tar.gz >"$OUT/mamba_build.log" 2>&1 && touch /tmp/mamba.ok
   touch /tmp/mamba.done) &
fi
source bench/build_native.sh
build_native . 8 | tee -a "$OUT/env.txt"
python3 -c 'from dimexport.ops import _native; print("native scan:", _native.available(), "C++ op:", _native.torch_ops_problem() or "loaded")' 2>&1 | tee -a "$OUT/env.txt"
status=0
if want tests; then
  timeout 300 python3 -m pytest -q -m gpu -n 6 -p no:cacheprovider tests/test_scan_bwd_gpu.py tests/test_scan_op.py \
    2>&1 | tee "$OUT/bwd_tests.log" | tail -25 || status=1
  timeout 200 python3 -m pytest -q -m gpu -n 6 -p no:cacheprovider tests/test_scan_kernel_gpu.py \
    -k "not random_config and not large_offsets" 2>&1 | tee "$OUT/fwd_tests.log" | tail -4 || status=1
fi
if want bench; then
  for _ in $(seq "${MAMBA_WAIT:-0}"); do [ -f /tmp/mamba.done ] && break; sleep 1; done
  [ -f /tmp/mamba.ok ] && export PYTHONPATH="$PYTHONPATH:/tmp/mamba"
  timeout "${BENCH_TIMEOUT:-300}" python3 bench/scan.py --backward --json "$OUT/scan_bwd_h100.json" \
    --md "$OUT/scan_bwd_h100.md" 2>"$OUT/bench_bwd.log" | tail -30 || status=1
  tail -5 "$OUT/bench_bwd.log"
fi
if want train; then
  run=/tmp/run-digits
  timeout "${TRAIN_TIMEOUT:-480}" python3 -m dimexport.cli train --recipe recipes/dim-tiny-digits.yaml -o "$run" \
    --device cuda >"$OUT/train_stdout.log" 2>&1 || status=1
  tail -3 "$OUT/train_stdout.log"
  last=$(ls -d "$run"/ckpts/*.ckpt | sort -V | tail -1)
  cp "$last/nnet_ema.pth" "$run/train_log.jsonl" "$run/loss.png" "$OUT/"
  cp "$(ls "$run"/samples_*.png | tail -1)" "$OUT/samples_train.png"
  timeout 150 python3 bench/digits_quality.py --checkpoint "$last/nnet_ema.pth" --guidance 0,0.5,1,2,3 \
    --steps 10,20,50 --device cuda --json "$OUT/quality.json" --grid "$OUT/digits.png" || status=1
fi
exit $status

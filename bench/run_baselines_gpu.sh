#!/usr/bin/env bash
# Device calls for the mamba-ssm baselines, the per-layer profile, the VAE decode time and the weak-to-strong run
# (issues "Train fast", "Whole-denoiser speed", "Beyond the trained resolution"). Two back-to-back calls on one warm
# machine, because mamba-ssm's sdist takes ~7 minutes to build:
#   bash bench/run_baselines_gpu.sh build,tests,w2s            # starts the mamba-ssm build, then GPU work meanwhile
#   bash bench/run_baselines_gpu.sh eager,scanbwd,profile,vae,fused  # the baselines (waits for / redoes the build)
#   bash bench/run_baselines_gpu.sh bench                      # dimexport bench with both baselines
#   bash bench/run_baselines_gpu.sh build,bench                # one call: the build, then the bench in what is left
# mamba-ssm and causal-conv1d sdists (patched to compile sm_90 only) are carried in .whl/, diffusers in .whl_bench/;
# builds land in .dev/ (ignored, kept on a warm machine between calls). Results: $OUT/results_<modes>.tgz (the device
# returns at most 8 files).
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
FINAL="${OUT:-$PWD/out}"
OUT="$PWD/.dev/res"
rm -rf "$OUT"; mkdir -p "$OUT" "$FINAL"
MODE="${1:-build}"
LIMIT="${LIMIT:-585}"  # seconds this call may take (the device's limit is 600)
t0=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - t0) )); }
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -o 'H[0-9]\+' | head -1 | tr 'H' 'h')  # h100 / h200
want() { [[ ",$MODE," == *",$1,"* ]]; }
status=0
python3 -m pip install -q --no-index --no-deps --no-compile --target .dev/site .whl_bench/*.whl 2>/dev/null
export PYTHONPATH="$PYTHONPATH:$PWD/.dev/site:$PWD/.dev/mamba"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee -a "$OUT/env.txt"

build_mamba() {  # both sdists in parallel, then one marker; logs in .dev/
  (export TORCH_CUDA_ARCH_LIST=9.0 MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE
   MAX_JOBS=4 python3 -m pip install -q --no-build-isolation --no-deps --no-index --target .dev/mamba \
     .whl/causal_conv1d-*.tar.gz >.dev/causal_build.log 2>&1 &
   MAX_JOBS=12 python3 -m pip install -q --no-build-isolation --no-deps --no-index --target .dev/mamba_ssm_t \
     .whl/mamba_ssm-*.tar.gz >.dev/mamba_build.log 2>&1 && cp -r .dev/mamba_ssm_t/. .dev/mamba/ && touch .dev/mamba.ok
   wait; touch .dev/mamba.done)
}
mamba_ready() { python3 -c 'import selective_scan_cuda, causal_conv1d, mamba_ssm' 2>/dev/null; }

source bench/build_native.sh
build_lib() { build_native . 4 | tee -a "$OUT/env.txt"; }
if want build; then
  rm -f .dev/mamba.done .dev/mamba.ok
  build_mamba &
  build_lib
elif ! python3 -c 'from dimexport.ops import _native; assert _native.available()' 2>/dev/null; then
  build_lib  # a fresh machine
fi
python3 -c 'from dimexport.ops import _native; print("native scan:", _native.available(), "C++ op:", _native.torch_ops_problem() or "loaded")' 2>&1 | tee -a "$OUT/env.txt"

if want tests; then  # the ops' GPU tests (C++ operator kernels), the backward's, the forward kernel's quick ones
  timeout 240 python3 -m pytest -q -m gpu -n 8 -p no:cacheprovider tests/test_scan_op.py tests/test_scan_bwd_gpu.py \
    tests/test_scan_kernel_gpu.py tests/test_scan_cpu.py tests/test_conv_silu.py tests/test_block_ops.py \
    -k "not random_config and not large_offsets" \
    >"$OUT/gpu_tests.log" 2>&1 || status=1
  tail -4 "$OUT/gpu_tests.log"
fi

if want profile; then
  timeout 150 python3 bench/profile_layer.py --batch 1,8 --dtype fp16 --json "$OUT/profile_dim_h_256_${GPU:-gpu}.json" \
    --md "$OUT/profile_dim_h_256_${GPU:-gpu}.md" >"$OUT/profile.log" 2>&1 || status=1
  tail -4 "$OUT/profile.log"
fi
if want fused; then  # the fused block ops against their floors and the unfused code
  timeout 120 python3 bench/fused_ops.py --json "$OUT/fused_ops_${GPU:-gpu}.json" --md "$OUT/fused_ops_${GPU:-gpu}.md" \
    2>&1 | tail -3 || status=1
fi
if want vae; then
  timeout 120 python3 bench/vae_decode.py --json "$OUT/vae_decode_${GPU:-gpu}.json" --md "$OUT/vae_decode_${GPU:-gpu}.md" \
    2>&1 | grep -v "kept in float32" | tail -8 || status=1
fi
if want w2s; then  # weak-to-strong: fine-tune at 64x64 from the shipped 32x32 model, against training-free 2x
  run=.dev/run-digits-64
  rm -rf "$run"
  timeout "${TRAIN_TIMEOUT:-330}" python3 -m dimexport.cli train --recipe recipes/dim-tiny-digits-64.yaml -o "$run" \
    --device cuda >"$OUT/w2s_train.log" 2>&1 || status=1
  tail -2 "$OUT/w2s_train.log"
  last=$(ls -d "$run"/ckpts/*.ckpt | sort -V | tail -1)
  cp "$run/train_log.jsonl" "$OUT/w2s_train_log.jsonl"; cp "$run/loss.png" "$OUT/w2s_loss.png"
  for g in 1 3; do
    timeout 60 python3 bench/digits_quality.py --model dim-tiny-digits-64 --checkpoint "$last/nnet_ema.pth" \
      --guidance $g --steps 20 --device cuda --json "$OUT/w2s_finetuned_g$g.json" --grid "$OUT/w2s_finetuned_g$g.png" \
      | tail -1 || status=1
  done
  timeout 90 python3 bench/digits_quality.py --upsample 2 --guidance 1,3 --steps 20 --device cuda \
    --json "$OUT/w2s_upsample2.json" | tail -2 || status=1
fi
if want scanbwd || want bench || want eager; then
  if ! [ -f .dev/mamba.done ] && ! [ -f .dev/mamba.ok ] && ! mamba_ready; then
    echo "mamba-ssm: no build on this machine; building now"; build_mamba
  fi
  for _ in $(seq "${MAMBA_WAIT:-420}"); do { [ -f .dev/mamba.done ] || mamba_ready; } && break; sleep 1; done
  mamba_ready && echo "mamba-ssm importable" || { echo "mamba-ssm NOT importable"; tail -20 .dev/mamba_build.log; }
  cp .dev/*_build.log "$OUT/" 2>/dev/null
fi
if want eager; then
  timeout 120 python3 bench/scan_eager.py --json "$OUT/scan_eager_${GPU:-gpu}.json" --md "$OUT/scan_eager_${GPU:-gpu}.md" \
    2>&1 | tail -5 || status=1
fi
if want scanbwd; then
  timeout "${BENCH_TIMEOUT:-330}" python3 bench/scan.py --backward --json "$OUT/scan_bwd_${GPU:-gpu}.json" \
    --md "$OUT/scan_bwd_${GPU:-gpu}.md" 2>"$OUT/bench_bwd.log" | tail -30 || status=1
  tail -3 "$OUT/bench_bwd.log"
fi
if want bench; then  # 256² at batch 1 and 8 with the 50-step sample, 512² at batch 8, each in the time left
  for r in ${BENCH_RES:-256 512}; do
    [ "$(left)" -gt 30 ] || { echo "bench $r: no time left"; status=1; continue; }
    timeout $(( $(left) < 200 ? $(left) - 5 : 200 )) python3 -m dimexport.cli bench --model dim-h --resolution "$r" \
      --batch $([ "$r" = 256 ] && echo 1,8 || echo 8) --dtype fp16 --backends eager,graph --baselines official,dit \
      $([ "$r" = 256 ] && echo --steps 50) --json -o "$OUT/bench_$r" >"$OUT/bench_$r.json" 2>"$OUT/bench_$r.log" || status=1
    tail -3 "$OUT/bench_$r.log"
    python3 -c "import json; d=json.load(open('$OUT/bench_$r.json')); print([(r['name'], r['batch'], round(r['p50'], 2)) for r in d['rows'] if not r['skipped']])" 2>&1
  done
fi
tar czf "$FINAL/results_${MODE//,/_}.tgz" -C "$OUT" .
exit $status

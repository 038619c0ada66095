#!/usr/bin/env bash
# One device call for sampling (issue 18): build the scan kernel for sm_90, run the GPU tests of the denoiser
# interface and of image-level parity, then time whole samples eager vs CUDA graph (bench/sample.py).
# Usage (repo root, through the device `run` tool): bash bench/run_sample_gpu.sh   (results under $OUT)
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$OUT/env.txt"
source bench/build_native.sh
build_native . | tee -a "$OUT/env.txt"
python3 -c 'from dimexport.ops import _native; print("native scan:", _native.available(), "C++ op:", _native.torch_ops_problem() or "loaded")' 2>&1 | tee -a "$OUT/env.txt"
status=0
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_denoiser.py tests/test_sample_parity.py \
  2>&1 | tee "$OUT/sample_tests.log" | tail -15 || status=1
timeout 420 python3 bench/sample.py --models ${MODELS:-dim-l dis-l-2} --dtypes fp16 bf16 --images ${IMAGES:-8} \
  --steps ${STEPS:-50} --repeat 2 --out "$OUT/sample_gpu.json" 2>&1 | tee "$OUT/sample_gpu.log" || status=1
exit $status

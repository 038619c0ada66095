"""Whole samples on a GPU: eager PyTorch against the same model replayed from CUDA graphs, image for image and in
wall time, through `dimexport sample`'s own pipeline (official sampler, guidance, per-call synchronised timing).

Usage: python bench/sample.py --models dim-l dis-s-2 --dtypes fp16 bf16 --images 8 --steps 50 --out results.json
Random weights (seed 0): the images are noise, but eager and graph must give the same noise, and the times are
what a user waits for. The first sample of each backend is a warm-up (graph capture, cuDNN autotuning).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from dimexport.configs import get_config
from dimexport.diffusion.pipeline import sample
from dimexport.runtime.denoiser import load_denoiser
from dimexport.verify.samples import MIN_PSNR_DB, sample_psnr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["dim-l"])
    ap.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    from dimexport.ops import _native

    rows, ok = [], True
    for model_id in args.models:
        cfg = get_config(model_id)
        labels = torch.arange(args.images) % cfg.num_classes
        for dtype in args.dtypes:
            results = {}
            for backend in ("torch", "graph"):
                den = load_denoiser(backend, model_id, device="cuda", dtype=dtype)
                runs = [sample(den, labels, steps=args.steps, seed=0) for _ in range(args.repeat + 1)]
                results[backend] = runs
                del den
                torch.cuda.empty_cache()
            eager, graph = results["torch"][-1], results["graph"][-1]
            repeatable = all(torch.equal(r.samples, eager.samples) for r in results["torch"][1:])
            value = sample_psnr(graph.samples, eager.samples, cfg.latent_factor == 1)
            passed = value >= MIN_PSNR_DB[dtype] and repeatable
            ok &= passed
            row = dict(model=model_id, dtype=dtype, images=args.images, sampler=eager.settings["sampler"],
                       steps=args.steps, guidance=eager.settings["guidance"], calls=len(eager.call_ms),
                       psnr_db=value, max_abs=float((graph.samples - eager.samples).abs().max()),
                       eager_repeatable=repeatable, passed=passed)
            for name, runs in results.items():
                row[f"{name}_total_s"] = statistics.median(r.total_s for r in runs[1:])
                row[f"{name}_call_ms"] = statistics.median(ms for r in runs[1:] for ms in r.call_ms)
            row["speedup"] = row["torch_total_s"] / row["graph_total_s"]
            rows.append(row)
            print(f"{model_id} {dtype}: {row['calls']} calls of batch {2 * args.images}; eager "
                  f"{row['torch_total_s']:.2f} s ({row['torch_call_ms']:.1f} ms/call), graph {row['graph_total_s']:.2f} s "
                  f"({row['graph_call_ms']:.1f} ms/call), {row['speedup']:.2f}x; PSNR graph/eager {value:.1f} dB "
                  f"(>= {MIN_PSNR_DB[dtype]}), max abs {row['max_abs']:.2e}, eager repeatable {repeatable}", flush=True)
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
               python=sys.version.split()[0], scan="native" if _native.available() else "reference")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(env=env, rows=rows), f, indent=2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

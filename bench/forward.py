"""Whole-model forward latency and memory on a GPU: CUDA events, warm-up, medians.

Usage: python bench/forward.py --models dim-h dim-h-512 --dtypes fp32 bf16 --batches 1 2 --out results.json
The scan runs through whichever implementation the op has on CUDA (the native kernel once built,
else the pure-PyTorch reference); the JSON records which.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from dimexport.configs import get_config
from dimexport.models import DTYPES, build_model, cast_model, count_parameters, cuda_graphed, example_inputs



def time_forward(model, inputs, warmup: int, repeat: int) -> list[float]:
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
        times = []
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(*inputs)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["dim-h"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cuda-graph", action="store_true", help="also time CUDA-graph replays of each forward")
    ap.add_argument("--out")
    args = ap.parse_args()
    try:
        from dimexport.ops import _native

        scan_impl = "native" if _native.available() else "reference"
    except ImportError:
        scan_impl = "reference"
    rows = []
    for model_id in args.models:
        cfg = get_config(model_id)
        for dtype in args.dtypes:
            model = cast_model(build_model(cfg, seed=0), DTYPES[dtype]).cuda()
            for batch in args.batches:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                inputs = example_inputs(cfg, batch, device="cuda")
                times = time_forward(model, inputs, args.warmup, args.repeat)
                row = {
                    "model": model_id, "params": count_parameters(model), "dtype": dtype, "batch": batch,
                    "resolution": cfg.resolution, "seq_len": cfg.seq_len(), "median_ms": statistics.median(times),
                    "min_ms": min(times), "peak_mib": torch.cuda.max_memory_allocated() / 2**20, "scan": scan_impl,
                }
                if args.cuda_graph:
                    graphed = cuda_graphed(model, inputs)
                    with torch.inference_mode():
                        diff = (model(*inputs).float() - graphed(*inputs).float()).abs().max().item()
                    row["graph_median_ms"] = statistics.median(time_forward(graphed, inputs, args.warmup, args.repeat))
                    row["graph_max_abs_diff"] = diff
                rows.append(row)
                graph = f"  graph {row['graph_median_ms']:7.1f} ms (max |graph - eager| {row['graph_max_abs_diff']:.1e})" if args.cuda_graph else ""
                print(f"{model_id:10s} {dtype:5s} B={batch:<3d} {row['median_ms']:9.1f} ms{graph}  peak {row['peak_mib']:8.0f} MiB  scan={scan_impl}", flush=True)
            del model
    env = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

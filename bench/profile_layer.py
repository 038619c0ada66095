"""Where one dim-h layer's time goes (issue "Whole-denoiser speed" step c): the torch profiler over the eager forward of
dim-h at 256^2, the GPU time of every operator that one block's forward launches (by default the first U-shaped decoder
block: RMSNorm, adaLN modulation, the Mamba mixer, gate and residual), each beside its own floor, and the block's host
(CPU) time per operator called from Python, which bounds eager calls at small batch:

    floor = max(bytes moved / copy bandwidth, FLOPs / GEMM peak)     (both measured in this run)

with bytes = the operator's inputs + its output (an elementwise lower bound: every tensor read or written once) and
FLOPs = 2·M·K·N for matrix products. The whole forward's GPU time and wall time (eager and CUDA graph) are printed
beside the per-layer sum, so host overhead shows as their difference; what lies outside the blocks (skip merges,
scan-order gathers, embeddings, the adapter, the output head) gets its own table per forward. `--device cpu` runs the
same report on the CPU (operator CPU time) for a quick check.

  python3 bench/profile_layer.py --batch 1,8 --dtype fp16 --json out/profile.json --md out/profile.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dimexport.models import cast_model, cuda_graphed  # noqa: E402
from dimexport.models.checkpoint import load_model  # noqa: E402
from dimexport.verify.speed import environment, time_calls  # noqa: E402
from scan import copy_bandwidth  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYER_RANGE = "dimexport::profiled_layer"
BLOCK_RANGE = "dimexport::block"  # the other blocks: what lies outside all of them is reported per forward


def gemm_peak(dtype: torch.dtype, device: torch.device) -> float:
    """FLOP/s of a square matmul in `dtype` (8192 on the GPU, 1024 on the CPU), measured in this run."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    ms = statistics.median(time_calls(lambda: a @ a, device, 3, 10))
    return 2 * n**3 / (ms * 1e-3)


def element_size(dtype_name: str) -> int:
    """Bytes per element of a profiler dtype string ('c10::Half', 'float', 'long int', ...)."""
    for key, size in (("Half", 2), ("BFloat16", 2), ("double", 8), ("long", 8), ("bool", 1), ("float", 4), ("int", 4)):
        if key in dtype_name:
            return size
    return 2


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def op_floor_terms(name: str, shapes: list, dtypes: list) -> tuple[float, float]:
    """(bytes, FLOPs) lower bounds of one operator from its recorded input shapes and dtypes."""
    tensors = [(s, element_size(d)) for s, d in zip(shapes, dtypes) if isinstance(s, list) and s]
    sizes = [_numel(s) * size for s, size in tensors]
    flops = 0.0
    out_bytes = max(sizes, default=0)
    if name in ("aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::bmm") and len(tensors) >= 2:
        (x, xs), (w, _) = tensors[0], tensors[1]
        if name == "aten::addmm":  # bias, input, weight^T
            (x, xs), (w, _) = tensors[1], tensors[2]
            n = w[-1]
        elif name in ("aten::mm", "aten::matmul", "aten::bmm"):
            n = w[-1]
        else:
            n = w[0]
        m = _numel(x[:-1])
        flops = 2.0 * m * x[-1] * n
        out_bytes = m * n * xs
    return float(sum(sizes) + out_bytes), flops


def profile_layer(model, x, t, y, layer: int, bw: float, peak: float) -> dict:
    """Per-operator GPU time of transformer_blocks[layer]'s forward, and per forward that of the operators outside
    every block (the skip merges and scan-order reorders DiM runs in its forward loop, the embeddings, the head),
    averaged over `reps` forwards."""
    ctx = {}

    def ranged(name: str):
        def enter(_m, _args):
            ctx["range"] = record_function(name)
            ctx["range"].__enter__()

        def leave(_m, _args, _out):
            ctx.pop("range").__exit__(None, None, None)

        return enter, leave

    hooks = []
    for i, block in enumerate(model.transformer_blocks):
        enter, leave = ranged(LAYER_RANGE if i == layer else BLOCK_RANGE)
        hooks += [block.register_forward_pre_hook(enter), block.register_forward_hook(leave)]
    reps = 5
    on_gpu = x.device.type == "cuda"
    default_dtype = {torch.float16: "c10::Half", torch.bfloat16: "c10::BFloat16"}.get(x.dtype, "float")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with torch.inference_mode():
        for _ in range(2):
            model(x, t, y)
        sync()
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(reps):
                model(x, t, y)
            sync()
    for h in hooks:
        h.remove()
    events = prof.events()
    rows: dict[tuple, dict] = {}
    outside: dict[tuple, dict] = {}
    host: dict[str, dict] = {}  # the layer's host time per operator called from Python (views included)
    layer_host_us = sum(e.cpu_time_total for e in events if e.name == LAYER_RANGE) / reps
    total_forward_us = (sum(_kernel_us(e) for e in events) if on_gpu else
                        sum(e.cpu_time_total for e in events if e.cpu_parent is None)) / reps

    def op_us(e) -> float:  # an operator's GPU time (its subtree's kernels), or its CPU time on the CPU
        return sum(_kernel_us(d) for d in _descendants(e)) if on_gpu else e.cpu_time_total

    for e in events:  # only top-level operators and the profiled layer's children are timed (subtree walks)
        parent = e.cpu_parent
        if parent is None and e.name not in (LAYER_RANGE, BLOCK_RANGE):
            gpu_us = op_us(e)
            if gpu_us > 0:
                o = outside.setdefault((e.name, str(e.input_shapes)), dict(op=e.name, shapes=e.input_shapes or [],
                                                                          calls=0, gpu_us=0.0))
                o["calls"] += 1
                o["gpu_us"] += gpu_us
        if parent is None or parent.name != LAYER_RANGE:
            continue
        h = host.setdefault(e.name, dict(op=e.name, calls=0, host_us=0.0))
        h["calls"] += 1
        h["host_us"] += e.cpu_time_total
        gpu_us = op_us(e)
        kernels = sorted({k.name for d in _descendants(e) for k in d.kernels})
        if on_gpu and not kernels:
            continue  # views and host-only operators
        key = (e.name, str(e.input_shapes))
        shapes = e.input_shapes or []
        dtypes = getattr(e, "input_dtypes", None) or [default_dtype] * len(shapes)  # older torch: the model's
        r = rows.setdefault(key, dict(op=e.name, shapes=shapes, dtypes=dtypes, calls=0, gpu_us=0.0, kernels=kernels))
        r["calls"] += 1
        r["gpu_us"] += gpu_us
    out = []
    for r in rows.values():
        nbytes, flops = op_floor_terms(r["op"], r["shapes"], r["dtypes"])
        floor = max(nbytes / bw, flops / peak) * 1e6 if (nbytes or flops) else 0.0
        per_call = r["gpu_us"] / r["calls"]
        calls_per_layer = r["calls"] / reps
        out.append(dict(op=r["op"], shapes=r["shapes"], calls=calls_per_layer, gpu_us=round(per_call * calls_per_layer, 2),
                        floor_us=round(floor * calls_per_layer, 2), mbytes=round(nbytes / 1e6, 2),
                        gflop=round(flops / 1e9, 2), kernels=r["kernels"][:3]))
    out.sort(key=lambda r: -r["gpu_us"])
    rest = sorted((dict(op=o["op"], shapes=o["shapes"], calls=o["calls"] / reps, gpu_us=round(o["gpu_us"] / reps, 2))
                   for o in outside.values()), key=lambda r: -r["gpu_us"])
    host_rows = sorted((dict(op=h["op"], calls=h["calls"] / reps, host_us=round(h["host_us"] / reps, 1))
                        for h in host.values()), key=lambda r: -r["host_us"])
    return dict(rows=out, layer_host_us=round(layer_host_us, 1),
                layer_python_us=round(layer_host_us - sum(h["host_us"] for h in host_rows), 1), host=host_rows,
                layer_gpu_us=round(sum(r["gpu_us"] for r in out), 1),
                layer_floor_us=round(sum(r["floor_us"] for r in out), 1),
                forward_gpu_us=round(total_forward_us, 1), outside_gpu_us=round(sum(r["gpu_us"] for r in rest), 1),
                outside=rest)


def graph_ms(model, inputs: tuple) -> float:
    """Median time of model(*inputs) as the graph backend runs it (dimexport.models.cuda_graphed: the inputs copied
    into the captured graph, then its replay)."""
    replay = cuda_graphed(model, inputs)
    return statistics.median(time_calls(lambda: replay(*inputs), torch.device("cuda"), 3, 20))


def _descendants(e):
    yield e
    for c in e.cpu_children:
        yield from _descendants(c)


def _kernel_us(e) -> float:
    return sum(k.duration for k in e.kernels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dim-h")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    ap.add_argument("--layer", type=int, help="which transformer block (default: the first with a skip merge)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    dtype = DTYPES[args.dtype]
    device = torch.device(args.device)
    # cast as the denoiser does: A_log, D and the dt bias stay fp32 (no per-call conversions to profile)
    model = cast_model(load_model(args.model, resolution=args.resolution).to(device), dtype).eval()
    layer = args.layer if args.layer is not None else next(
        i for i, b in enumerate(model.transformer_blocks) if b.skip_linear is not None)
    bw = copy_bandwidth(1 << 30 if device.type == "cuda" else 1 << 26, device=device.type)
    peak = gemm_peak(dtype, device)
    report = dict(environment=environment(device), model=args.model, resolution=args.resolution,
                  dtype=args.dtype, layer=layer, depth=len(model.transformer_blocks),
                  copy_bandwidth_gbs=round(bw / 1e9), gemm_peak_tflops=round(peak / 1e12, 1), batches=[])
    cfg = model.cfg
    for batch in (int(b) for b in args.batch.split(",")):
        x = torch.randn(cfg.input_shape(batch, args.resolution), device=device, dtype=dtype)
        t = torch.rand(batch, device=device) * 999
        y = torch.randint(0, cfg.num_classes, (batch,), device=device) if cfg.num_classes else None
        prof = profile_layer(model, x, t, y, layer, bw, peak)
        with torch.inference_mode():
            eager = statistics.median(time_calls(lambda: model(x, t, y), device, 3, 10))
        prof.update(batch=batch, eager_ms=round(eager, 2), graph_ms=None)
        if device.type == "cuda":
            prof["graph_ms"] = round(graph_ms(model, (x, t, y)), 2)
        report["batches"].append(prof)
        print(json.dumps({k: v for k, v in prof.items() if k not in ("rows", "host", "outside")}), flush=True)
        for r in prof["rows"][:12]:
            print(f"  {r['gpu_us']:9.1f} us  floor {r['floor_us']:8.1f}  x{r['calls']:.0f} {r['op']} {r['shapes']}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.md:
        args.md.write_text(markdown(report))


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# Per-operator profile of one {report['model']} layer ({report['resolution']}², {report['dtype']}, "
             f"layer {report['layer']} of {report['depth']})", "",
             f"Environment: {', '.join(f'{k} {v}' for k, v in env.items())}. Copy bandwidth "
             f"{report['copy_bandwidth_gbs']} GB/s and GEMM peak {report['gemm_peak_tflops']} TFLOP/s measured in "
             "the same run; floor = max(bytes / bandwidth, FLOPs / peak) per operator.", ""]
    for b in report["batches"]:
        lines += [f"## Batch {b['batch']}", "",
                  f"Whole forward: eager {b['eager_ms']} ms, CUDA graph {b['graph_ms']} ms, GPU kernel time "
                  f"{b['forward_gpu_us'] / 1e3:.2f} ms (profiled eager). This layer: {b['layer_gpu_us']} µs of GPU "
                  f"time against a floor of {b['layer_floor_us']} µs "
                  f"({100 * b['layer_floor_us'] / max(b['layer_gpu_us'], 1e-9):.0f} %).", "",
                  "| operator | input shapes | calls | GPU µs | floor µs | % of floor | MB | GFLOP | main kernels |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in b["rows"]:
            pct = 100 * r["floor_us"] / r["gpu_us"] if r["gpu_us"] else 0
            lines.append(f"| {r['op']} | {r['shapes']} | {r['calls']:.0f} | {r['gpu_us']} | {r['floor_us']} | "
                         f"{pct:.0f} % | {r['mbytes']} | {r['gflop']} | {', '.join(k[:60] for k in r['kernels'])} |")
        if b.get("host"):
            lines += ["", f"Host (CPU) time of this layer's eager forward, under the profiler (which adds a few µs per "
                      f"operator): {b['layer_host_us']} µs, of which {b['layer_python_us']} µs in Python between the "
                      "operators; per operator called from Python (inclusive of what it dispatches):", "",
                      "| operator | calls | host µs |", "|---|---|---|"]
            lines += [f"| {r['op']} | {r['calls']:.0f} | {r['host_us']} |" for r in b["host"]]
        if b.get("outside"):
            lines += ["", "Outside the blocks (skip merges, scan-order gathers, embeddings, the adapter, the output "
                      f"head): {b['outside_gpu_us']} µs of GPU time per forward; the operators above 1 % of it:", "",
                      "| operator | input shapes | calls per forward | GPU µs per forward |", "|---|---|---|---|"]
            lines += [f"| {r['op']} | {r['shapes']} | {r['calls']:.0f} | {r['gpu_us']} |" for r in b["outside"]
                      if r["gpu_us"] >= 0.01 * b["outside_gpu_us"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

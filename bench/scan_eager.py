"""What one eager call of the scan costs (issue "Whole-denoiser speed" §2): torch.ops.dimexport.selective_scan through
the C++ operator's kernels, through the Python kernels (the ctypes path, registered over them), and mamba-ssm's
`selective_scan_fn` where importable, each beside its kernel time (CUDA-graph replay, as bench/scan.py times it) on
DiM shapes (fp16, N = 16, z and delta_bias, inference mode as the denoisers run):

  host µs      CPU time to issue one call (200 calls back to back, no synchronisation): the per-call overhead
  latency µs   one call issued and synchronised (scan_bwd.eager_us, median of 50): kernel + overhead + latency
  over kernel  latency - the graph-replay kernel time: what the call adds to its kernel

  python3 bench/scan_eager.py --json out/scan_eager.json --md out/scan_eager.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scan import copy_bandwidth, environment, floor_us, input_sets, time_graph  # noqa: E402
from scan_bwd import eager_us  # noqa: E402

SHAPES = [(1, 2048, 366), (8, 2048, 366), (32, 2048, 366), (1, 3072, 1230)]


def host_us(fn, sets: list[dict], calls: int = 200) -> float:
    """CPU microseconds per call of `calls` back-to-back asynchronous calls (the queue never fills at this count)."""
    for s in sets[:2]:
        fn(s)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(calls):
        fn(sets[i % len(sets)])
    elapsed = time.perf_counter() - t0
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    from dimexport.ops import _native

    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        selective_scan_fn = None
    env = dict(environment(), cpp_operator=_native.torch_ops_problem() or "loaded",
               mamba_ssm=__import__("mamba_ssm").__version__ if selective_scan_fn else "not importable")
    bw = copy_bandwidth()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    op = torch.ops.dimexport.selective_scan.default
    rows = []
    with torch.inference_mode():
        for b, d, l in SHAPES:
            sets = input_sets(b, d, l, l2)
            call = lambda s, out=None: op(s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"],  # noqa: E731
                                          s["delta_bias"], True, False)
            floor = floor_us(b * d * l, bw)
            kernel = time_graph(call, sets, floor)
            row = dict(batch=b, dim=d, seqlen=l, floor_us=floor, kernel_us=kernel,
                       cpp_host_us=host_us(call, sets), cpp_latency_us=eager_us(call, sets, reps=50))
            with _native.python_kernels():
                row.update(ctypes_host_us=host_us(call, sets), ctypes_latency_us=eager_us(call, sets, reps=50))
            if selective_scan_fn is not None:
                theirs = lambda s, out=None: selective_scan_fn(  # noqa: E731
                    s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"], s["delta_bias"], True)
                row.update(mamba_kernel_us=time_graph(theirs, sets, floor), mamba_host_us=host_us(theirs, sets),
                           mamba_latency_us=eager_us(theirs, sets, reps=50))
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(dict(environment=env, rows=rows), indent=1))
    if args.md:
        args.md.write_text(markdown(env, rows))


def markdown(env: dict, rows: list[dict]) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"# One eager call of the selective scan on {env['device']}", "",
             f"torch {env['torch']}, driver {env['driver']}, Python {env['python']}; C++ operator: "
             f"{env['cpp_operator']}; mamba_ssm {env['mamba_ssm']}. fp16, N = 16, z and "
             "delta_bias, inference mode. Kernel = CUDA-graph replay; host = CPU time per asynchronous call; "
             "latency = one synchronised call; over kernel = latency - kernel.", "",
             "| B | D | L | floor µs | kernel µs | C++ op host | C++ op latency | over kernel | ctypes host | "
             "ctypes latency | mamba-ssm kernel | mamba-ssm host | mamba-ssm latency |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['dim']} | {r['seqlen']} | {f(r['floor_us'])} | {f(r['kernel_us'])} | "
                     f"{f(r['cpp_host_us'])} | {f(r['cpp_latency_us'])} | {f(r['cpp_latency_us'] - r['kernel_us'])} | "
                     f"{f(r['ctypes_host_us'])} | {f(r['ctypes_latency_us'])} | {f(r.get('mamba_kernel_us'))} | "
                     f"{f(r.get('mamba_host_us'))} | {f(r.get('mamba_latency_us'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

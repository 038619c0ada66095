"""Host time of an eager DiM forward, per block (issue "Whole-denoiser speed": eager batch 1 is bound by the host).

A DiM with dim-h's 49 blocks and tiny tensors (hidden 16, an 8x8 input: L = 18), so that what the CPU spends issuing
the calls dominates the kernels' own work; inference mode, one intra-op thread, median of `--repeat` forwards. Compare
two revisions by running each tree's copy of this script (or the same script with PYTHONPATH set to each tree) on the
same idle machine:

  python3 bench/host_cost.py --json out/host_cost.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dimexport.configs import get_config  # noqa: E402
from dimexport.models.dim import DiM  # noqa: E402
from dimexport.ops import _native  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=49, help="blocks (dim-h: 49)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = dataclasses.replace(get_config("dim-tiny-digits"), hidden=16, depth=args.depth)
    model = DiM(cfg).eval()
    x, t, y = torch.randn(1, 1, 8, 8), torch.rand(1) * 999, torch.zeros(1, dtype=torch.long)
    with torch.inference_mode():
        for _ in range(5):
            model(x, t, y)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            model(x, t, y)
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    report = dict(forward_ms=round(ms, 3), per_block_us=round(ms * 1e3 / args.depth, 1), depth=args.depth,
                  torch=torch.__version__, cpp_operator=_native.torch_ops_problem() or "loaded",
                  mixer_op=hasattr(torch.ops.dimexport, "mamba_mixer"))
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

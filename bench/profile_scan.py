"""Runs the scan kernel a few times on one benchmark shape, for Nsight Compute:

  ncu --clock-control none -k regex:scan_fwd --launch-skip 2 --launch-count 1 --section WarpStateStats \\
      python3 bench/profile_scan.py --batch 8 --dim 3072 --seqlen 1230 [--split 1] [--chunks 8]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dimexport.ops import _native  # noqa: E402
from dimexport.ops.testing import realistic_scan_inputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dim", type=int, default=3072)
    ap.add_argument("--seqlen", type=int, default=1230)
    ap.add_argument("--split", type=int, default=0, help="force lanes per channel (0 = heuristic)")
    ap.add_argument("--chunks", type=int, default=0, help="force sequence chunks (0 = heuristic, 1 = no split)")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--backward", action="store_true", help="run the backward (ncu -k regex:scan_bwd)")
    args = ap.parse_args()
    if args.split:
        os.environ["DIMEX_SCAN_FORCE_SPLIT"] = str(args.split)
    if args.chunks:
        os.environ["DIMEX_SCAN_FORCE_CHUNKS"] = str(args.chunks)
    s = realistic_scan_inputs(args.batch, args.dim, args.seqlen, dtype=torch.float16, device="cuda")
    out = torch.empty_like(s["u"])
    go = torch.randn_like(s["u"])
    for _ in range(args.calls):
        if args.backward:
            _native.scan_backward(go, s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"], s["delta_bias"],
                                  True, False)
            continue
        _native.scan_cuda(s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"], s["delta_bias"], True, False,
                          out=out)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()

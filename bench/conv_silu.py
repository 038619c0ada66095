"""The fused causal conv1d + SiLU against its floor and against the unfused PyTorch code it replaces (issue
"Whole-denoiser speed" §2): dim-h's mixer shapes (found by running the model on the meta device), fp16, batch 1 and
8, x handed over token-major (main's mixer) and channel-major (rows along L).

Per row: the kernel's time as a CUDA graph of many calls (the GPU time), the unfused conv1d + slice + SiLU the same
way, one synchronised eager call of the op, and the floor (read x and write out once at the measured copy
bandwidth).

    python3 bench/conv_silu.py --json out.json --md out.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scan import copy_bandwidth, environment, time_graph  # noqa: E402
from scan_bwd import eager_us  # noqa: E402


def mixer_shape(model: str, resolution: int) -> tuple[int, int, int]:
    """(d_inner, seqlen, d_conv) of the model's first Mamba mixer, from one forward on the meta device."""
    from dimexport.models import build_model, example_inputs
    from dimexport.models.layers import Mamba

    with torch.device("meta"):
        net = build_model(model, resolution=resolution)
    mixer = next(m for m in net.modules() if isinstance(m, Mamba))
    seen: list[int] = []
    mixer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    net(*(t.to("meta") for t in example_inputs(net.cfg, 1, resolution)))
    return mixer.d_inner, seen[0], mixer.d_conv


def inputs(batch: int, dim: int, seqlen: int, width: int, layout: str, n: int) -> list[dict]:
    """n input sets (enough to leave L2), x as the mixer hands it over."""
    sets = []
    for _ in range(n):
        if layout == "token-major":
            x = torch.randn(batch, seqlen, 2 * dim, device="cuda", dtype=torch.float16).transpose(1, 2)[:, :dim]
        else:
            x = torch.randn(2 * dim, batch, seqlen, device="cuda", dtype=torch.float16).transpose(0, 1)[:, :dim]
        sets.append(dict(u=x, w=torch.randn(dim, width, device="cuda", dtype=torch.float16) / width**0.5,
                         b=torch.randn(dim, device="cuda", dtype=torch.float16)))
    return sets


def unfused(s: dict, out=None) -> torch.Tensor:
    """What the mixer ran before: nn.Conv1d(padding=K-1, groups=D) on x, the slice, F.silu."""
    x, w = s["u"], s["w"]
    return F.silu(F.conv1d(x, w.unsqueeze(1), s["b"], padding=w.shape[1] - 1, groups=x.shape[1])[..., : x.shape[2]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dim-h")
    ap.add_argument("--resolutions", default="256,512")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    from dimexport.ops import _native, causal_conv1d_silu

    problem = _native.torch_ops_problem()
    if problem is not None:
        sys.exit(f"the fused kernel is not loaded: {problem}")
    bw = copy_bandwidth()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    fused = lambda s, out=None: causal_conv1d_silu(s["u"], s["w"], s["b"])  # noqa: E731
    rows = []
    for res in (int(r) for r in args.resolutions.split(",")):
        dim, seqlen, width = mixer_shape(args.model, res)
        for batch in (int(b) for b in args.batch.split(",")):
            nbytes = 2 * batch * dim * seqlen * 2  # fp16 x read + out written
            floor = nbytes / bw * 1e6
            for layout in ("token-major", "channel-major"):
                sets = inputs(batch, dim, seqlen, width, layout, max(2, min(16, -(-2 * l2 // nbytes))))
                assert torch.equal(fused(sets[0]), fused(sets[0]))
                row = dict(resolution=res, batch=batch, dim=dim, seqlen=seqlen, width=width, layout=layout,
                           floor_us=floor, fused_graph_us=time_graph(fused, sets, floor),
                           unfused_graph_us=time_graph(unfused, sets, 5 * floor), fused_eager_us=eager_us(fused, sets))
                row["pct_of_floor"] = 100 * floor / row["fused_graph_us"]
                row["speedup"] = row["unfused_graph_us"] / row["fused_graph_us"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    env = environment() | dict(copy_bandwidth_GBps=bw / 1e9)
    if args.json:
        args.json.write_text(json.dumps(dict(env=env, rows=rows), indent=1))
    if args.md:
        lines = [f"# Fused causal conv1d + SiLU, {args.model} mixer shapes, fp16 — {env['device']}", "",
                 f"torch {env['torch']} (CUDA {env['torch_cuda']}), driver {env['driver']}, copy bandwidth "
                 f"{bw / 1e9:.0f} GB/s (read + write). `python3 bench/conv_silu.py`", "",
                 "| image | batch | D × L, K | x layout | fused (graph) µs | % of floor | unfused conv+slice+SiLU µs | "
                 "speed-up | eager call µs | floor µs |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['resolution']}² | {r['batch']} | {r['dim']} × {r['seqlen']}, {r['width']} | "
                         f"{r['layout']} | {r['fused_graph_us']:.1f} | {r['pct_of_floor']:.0f} % | "
                         f"{r['unfused_graph_us']:.1f} | {r['speedup']:.1f}× | {r['fused_eager_us']:.1f} | "
                         f"{r['floor_us']:.1f} |")
        args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

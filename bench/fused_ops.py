"""The fused ops against their floors and against the unfused PyTorch code they replace (issue "Whole-denoiser speed"
§2), at dim-h's shapes (found by running the model on the meta device), fp16, batch 1 and 8:
- causal conv1d + SiLU, x handed over token-major (a slice of in_proj's output) and channel-major (rows along L);
- RMSNorm + adaLN modulation, the fp32 residual in, fp16 out, as DiMBlock runs it;
- the gated residual: fp32 residual + (1 + gate) * fp16 mixer output.

Per row: the kernel's time as a CUDA graph of many calls (the GPU time), the unfused torch code the same way, one
synchronised eager call of the op, and the floor (inputs read and output written once at the measured copy
bandwidth).

    python3 bench/fused_ops.py --json out.json --md out.md
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


def mixer_shape(model: str, resolution: int) -> tuple[int, int, int, int]:
    """(d_model, d_inner, seqlen, d_conv) of the model's first Mamba mixer, from one forward on the meta device."""
    from dimexport.models import build_model, example_inputs
    from dimexport.models.layers import Mamba

    with torch.device("meta"):
        net = build_model(model, resolution=resolution)
    mixer = next(m for m in net.modules() if isinstance(m, Mamba))
    seen: list[int] = []
    mixer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    net(*(t.to("meta") for t in example_inputs(net.cfg, 1, resolution)))
    return mixer.in_proj.in_features, mixer.d_inner, seen[0], mixer.d_conv


def conv_sets(batch: int, dim: int, seqlen: int, width: int, layout: str, n: int) -> list[dict]:
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


def norm_sets(batch: int, tokens: int, dim: int, n: int) -> list[dict]:
    """n input sets: the fp32 residual (B, L, D), an fp16 weight and (B, 1, D) views of a (B, 3, D) modulation."""
    sets = []
    for _ in range(n):
        shift, scale, _ = torch.randn(batch, 3, dim, device="cuda", dtype=torch.float16).chunk(3, dim=1)
        sets.append(dict(u=torch.randn(batch, tokens, dim, device="cuda"), w=torch.ones(dim, device="cuda",
                         dtype=torch.float16), scale=scale, shift=shift))
    return sets


def residual_sets(batch: int, tokens: int, dim: int, n: int) -> list[dict]:
    """n input sets: the fp32 residual, the fp16 mixer output and a (B, 1, D) view of a (B, 3, D) gate."""
    return [dict(u=torch.randn(batch, tokens, dim, device="cuda"),
                 y=torch.randn(batch, tokens, dim, device="cuda", dtype=torch.float16),
                 gate=torch.randn(batch, 3, dim, device="cuda", dtype=torch.float16)[:, 2:]) for _ in range(n)]


def unfused_conv(s: dict, out=None) -> torch.Tensor:
    """What the mixer ran before: nn.Conv1d(padding=K-1, groups=D) on x, the slice, F.silu."""
    x, w = s["u"], s["w"]
    return F.silu(F.conv1d(x, w.unsqueeze(1), s["b"], padding=w.shape[1] - 1, groups=x.shape[1])[..., : x.shape[2]])


def row(sets: list[dict], fused, unfused, nbytes: int, bw: float, **info) -> dict:
    floor = nbytes / bw * 1e6
    assert torch.equal(fused(sets[0]), fused(sets[0]))
    r = dict(info, floor_us=floor, fused_graph_us=time_graph(fused, sets, floor),
             unfused_graph_us=time_graph(unfused, sets, 5 * floor), fused_eager_us=eager_us(fused, sets))
    r["pct_of_floor"] = 100 * floor / r["fused_graph_us"]
    r["speedup"] = r["unfused_graph_us"] / r["fused_graph_us"]
    print(json.dumps(r), flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dim-h")
    ap.add_argument("--resolutions", default="256,512")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    from dimexport.ops import (_native, causal_conv1d_silu, gated_residual, gated_residual_reference, rms_norm_modulate,
                               rms_norm_modulate_reference)

    problem = _native.torch_ops_problem()
    if problem is not None:
        sys.exit(f"the fused kernels are not loaded: {problem}")

    bw = copy_bandwidth()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    count = lambda nbytes: max(2, min(16, -(-2 * l2 // nbytes)))  # noqa: E731
    conv = lambda s, out=None: causal_conv1d_silu(s["u"], s["w"], s["b"])  # noqa: E731
    norm = lambda s, out=None: rms_norm_modulate(s["u"], s["w"], s["scale"], s["shift"])  # noqa: E731
    unfused_norm = lambda s, out=None: rms_norm_modulate_reference(s["u"], s["w"], s["scale"], s["shift"])  # noqa: E731
    residual = lambda s, out=None: gated_residual(s["u"], s["y"], s["gate"])  # noqa: E731
    unfused_residual = lambda s, out=None: gated_residual_reference(s["u"], s["y"], s["gate"])  # noqa: E731
    rows = []
    for res in (int(r) for r in args.resolutions.split(",")):
        hidden, dim, seqlen, width = mixer_shape(args.model, res)
        for batch in (int(b) for b in args.batch.split(",")):
            nbytes = 2 * batch * dim * seqlen * 2  # fp16 x read + out written
            for layout in ("token-major", "channel-major"):
                rows.append(row(conv_sets(batch, dim, seqlen, width, layout, count(nbytes)), conv, unfused_conv,
                                nbytes, bw, op="causal_conv1d_silu", resolution=res, batch=batch,
                                shape=f"{dim} × {seqlen}, K={width}", layout=layout))
            nbytes = batch * seqlen * hidden * (4 + 2)  # fp32 residual read + fp16 out written
            rows.append(row(norm_sets(batch, seqlen, hidden, count(nbytes)), norm, unfused_norm, nbytes, bw,
                            op="rms_norm_modulate", resolution=res, batch=batch, shape=f"{seqlen} × {hidden}",
                            layout="fp32 in, fp16 out"))
            nbytes = batch * seqlen * hidden * (4 + 2 + 4)  # fp32 residual + fp16 y read, fp32 out written
            rows.append(row(residual_sets(batch, seqlen, hidden, count(nbytes)), residual, unfused_residual, nbytes,
                            bw, op="gated_residual", resolution=res, batch=batch, shape=f"{seqlen} × {hidden}",
                            layout="fp32 + fp16 in, fp32 out"))
    env = environment() | dict(copy_bandwidth_GBps=bw / 1e9)
    if args.json:
        args.json.write_text(json.dumps(dict(env=env, rows=rows), indent=1))
    if args.md:
        lines = [f"# Fused ops at {args.model}'s shapes, fp16 — {env['device']}", "",
                 f"torch {env['torch']} (CUDA {env['torch_cuda']}), driver {env['driver']}, copy bandwidth "
                 f"{bw / 1e9:.0f} GB/s (read + write). `python3 bench/fused_ops.py`", "",
                 "| op | image | batch | shape | input | fused (graph) µs | % of floor | unfused µs | speed-up | "
                 "eager call µs | floor µs |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['op']} | {r['resolution']}² | {r['batch']} | {r['shape']} | {r['layout']} | "
                         f"{r['fused_graph_us']:.1f} | {r['pct_of_floor']:.0f} % | {r['unfused_graph_us']:.1f} | "
                         f"{r['speedup']:.1f}× | {r['fused_eager_us']:.1f} | {r['floor_us']:.1f} |")
        args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

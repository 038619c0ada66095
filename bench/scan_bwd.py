"""Training speed of the selective scan on the GPU (issue "Train fast"): `python3 bench/scan.py --backward`.

Three tables, each measured in one process on one GPU, baselines in the same run:
  1. scan forward + backward per call on DiM shapes (fp16, z and delta_bias on, N = 16): ours as a CUDA graph (kernel
     time, L2 flushed by rotating input sets) and as an eager call (what autograd sees), against mamba-ssm's
     `selective_scan_cuda.fwd` + `.bwd` where importable, and against the floor
        floor = max(bytes / copy bandwidth measured in this run, SFU ops / 3.9e12 per s)
     with 8 B/element forward (u, delta, z read, out written; fp16) + 14 B/element backward (u, delta, z, grad_out
     read, three gradients written) and N + 20 SFU ops/element forward, N ops backward (one decay per state);
  2. training steps/s of the digits DiM (hidden 128, depth 7, 32x32, patch 2: L = 366, 1.09 M parameters, batch 128,
     bf16 autocast, AdamW) with the kernels and with the pure-torch reference scan;
  3. one training step of dim-h at 256^2 (batch 8, bf16 autocast) against a stack of 49 RMSNorm + mamba-ssm `Mamba`
     blocks on the same 366 tokens (where mamba-ssm is importable).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scan import SFU_RATE, copy_bandwidth, environment, input_sets, time_graph  # noqa: E402

SHAPES = [(1, 2048, 366), (8, 2048, 366), (32, 2048, 366), (8, 3072, 366), (8, 2048, 1230), (128, 256, 366)]
FWD_BYTES, BWD_BYTES = 8, 14


def mamba_scan():
    try:
        import selective_scan_cuda  # mamba-ssm's extension
    except ImportError:
        return None
    return selective_scan_cuda


def eager_us(fn, sets: list[dict], reps: int = 30) -> float:
    """Median wall time of one eager call (host + launch + kernel), synchronised per call."""
    for s in sets[:2]:
        fn(s)
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(sets[i % len(sets)])
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def scan_rows(bw: float, l2: int) -> list[dict]:
    from dimexport.ops import _native

    mamba = mamba_scan()
    rows = []
    for b, d, l in SHAPES:
        sets = input_sets(b, d, l, l2)
        for s in sets:
            s["go"] = torch.randn_like(s["u"])

        def ours(s, out=None):
            _native.scan_cuda(s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"], s["delta_bias"], True,
                              False, out=out)
            _native.scan_backward(s["go"], s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"],
                                  s["delta_bias"], True, False)

        elems = b * d * l
        floor = max(elems * (FWD_BYTES + BWD_BYTES) / bw, elems * (16 + 20 + 16) / SFU_RATE) * 1e6
        row = dict(batch=b, dim=d, seqlen=l, floor_us=floor, us=time_graph(ours, sets, floor),
                   eager_us=eager_us(ours, sets))
        if mamba is not None:
            def theirs(s, out=None):
                o, x, *rest = mamba.fwd(s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"], s["delta_bias"],
                                        True)
                mamba.bwd(s["u"], s["delta"], s["A"], s["B"], s["C"], s["D"], s["z"], s["delta_bias"], s["go"], x, o,
                          None, True, False)

            row["mamba_us"] = time_graph(theirs, sets, floor)
            row["mamba_eager_us"] = eager_us(theirs, sets)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def steps_per_s(module, loss_fn, steps: int) -> float:
    """Training steps/s (bf16 autocast, AdamW) of `loss_fn()` after 3 warm-up steps."""
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def train_steps_per_s(model, batch: int, steps: int) -> float:
    """Steps/s of epsilon-prediction MSE training of a DiM."""
    cfg = model.cfg
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, device="cuda")
    y = torch.randint(0, max(cfg.num_classes, 1), (batch,), device="cuda")
    t = torch.rand(batch, device="cuda") * 999 + 1
    return steps_per_s(model, lambda: torch.nn.functional.mse_loss(model(x, t, y).float(), x), steps)


def training_rows() -> list[dict]:
    from dataclasses import replace

    from dimexport.configs import get_config
    from dimexport.models import build_model
    from dimexport.ops import _native

    digits = replace(get_config("dim-tiny"), id="digits-bench", hidden=128, depth=7, sample_size=32, in_channels=1,
                     latent_factor=1)
    rows = []
    model = build_model(digits, seed=0).cuda().train()
    params = sum(p.numel() for p in model.parameters())
    fast = train_steps_per_s(model, 128, 50)
    with _native.python_kernels(reference=True):
        slow = train_steps_per_s(model, 128, 3)
    rows.append(dict(model="digits DiM (128x7, 32x32, L=366)", params=params, batch=128, steps_per_s=fast,
                     reference_steps_per_s=slow))
    print(json.dumps(rows[-1]), flush=True)
    dimh = build_model("dim-h", seed=0).cuda().train()
    row = dict(model="dim-h 256^2", params=sum(p.numel() for p in dimh.parameters()), batch=8,
               steps_per_s=train_steps_per_s(dimh, 8, 10))
    del dimh
    torch.cuda.empty_cache()
    from dimexport.verify.speed import MambaStack, Skip

    try:
        stack = MambaStack(get_config("dim-h")).cuda()  # 49 x (RMSNorm + mamba-ssm Mamba), D = 1536
    except Skip:
        stack = None
    if stack is not None:
        h0 = torch.randn(8, get_config("dim-h").seq_len(), 1536, device="cuda")
        row["mamba_stack_steps_per_s"] = steps_per_s(stack, lambda: stack(h0).float().pow(2).mean(), 10)
    rows.append(row)
    print(json.dumps(row), flush=True)
    return rows


def markdown(env: dict, scan: list[dict], train: list[dict]) -> str:
    lines = [f"# Selective scan: training speed on {env.get('device', 'GPU')}", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             "## Forward + backward per call (fp16, N = 16, z and delta_bias)", "",
             "| B | D | L | floor µs | ours graph µs | % of floor | ours eager µs | mamba-ssm graph µs | "
             "mamba-ssm eager µs | speed-up (graph) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in scan:
        m, me, us = r.get("mamba_us"), r.get("mamba_eager_us"), r["us"]
        na = "n/a"
        lines.append(f"| {r['batch']} | {r['dim']} | {r['seqlen']} | {r['floor_us']:.1f} | {us:.1f} | "
                     f"{100 * r['floor_us'] / us:.0f} % | {r['eager_us']:.1f} | "
                     f"{na if m is None else f'{m:.1f}'} | {na if me is None else f'{me:.1f}'} | "
                     f"{na if m is None else f'{m / us:.2f}x'} |")
    lines += ["", "## Training steps", "", "| model | params | batch | steps/s (kernels) | baseline |",
              "|---|---|---|---|---|"]
    for r in train:
        if "reference_steps_per_s" in r:
            base = f"pure-torch scan {r['reference_steps_per_s']:.2f} steps/s"
        elif "mamba_stack_steps_per_s" in r:
            base = f"49 RMSNorm + mamba-ssm Mamba blocks: {r['mamba_stack_steps_per_s']:.2f} steps/s"
        else:
            base = "mamba-ssm not importable"
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['batch']} | {r['steps_per_s']:.2f} | {base} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--no-train", dest="train", action="store_false", help="only the per-call table")
    args = ap.parse_args(argv)
    env = environment()
    env["mamba_ssm"] = "importable" if mamba_scan() is not None else "not importable"
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    scan = scan_rows(copy_bandwidth(), l2)
    train = training_rows() if args.train else []
    md = markdown(env, scan, train)
    print(md)
    for path, text in ((args.json, json.dumps(dict(environment=env, scan=scan, train=train), indent=1)),
                       (args.md, md)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


if __name__ == "__main__":
    main()

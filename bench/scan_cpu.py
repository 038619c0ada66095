"""The CPU selective-scan kernel against the pure-PyTorch reference and against its floor on this machine, the
whole forward of a small digits DiM (issue 19) and its training step with the CPU backward (issue 20). Run through `python3 bench/scan.py --device cpu [--json F]
[--md F]`.

Per shape (N = 16, fp32 I/O, z and delta_bias on, forward direction):

  floor = max(B*D*L*N exps / exp throughput, bytes moved / copy bandwidth)

with both rates measured in the same run on the same threads: torch.exp over a large fp32 tensor (vectorised
SLEEF code) and a large fp32 tensor copy (read + write). Bytes: u, delta, z read and out written (16 B per (b, d, l)),
plus B and C (8 B per (b, n, l), read once per channel block). Times: medians of several calls after a warm-up,
wall clock (the kernel runs synchronously on OpenMP threads).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import time
from dataclasses import replace

import torch

# (batch, dim, seqlen): the digits DiM of the issue (D = 2 x 128, L = 366) at batch 1, 8, 200 (100 images with
# guidance); dim-tiny's scan (D = 128, L = 71 at 128 px); a DiM-L-sized layer (D = 2048, L = 366) at batch 1.
SHAPES = [(1, 256, 366), (8, 256, 366), (200, 256, 366), (16, 128, 71), (1, 2048, 366)]
REFERENCE_MAX_ELEMS = 200 * 256 * 366 * 16  # the reference is timed on every shape up to this size
N = 16


def median_s(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rates(threads: int) -> tuple[float, float]:
    """(exp/s, copy bytes/s) on `threads` threads."""
    torch.set_num_threads(threads)
    x = torch.rand(1 << 24) * -8
    y = torch.empty_like(x)
    exp_s = median_s(lambda: torch.exp(x, out=y), 9)
    big = torch.rand(1 << 26)
    dst = torch.empty_like(big)
    copy_s = median_s(lambda: dst.copy_(big), 7)
    return x.numel() / exp_s, 2 * big.numel() * 4 / copy_s


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or platform.processor() or "unknown CPU"


def scan_rows(threads: int, exp_rate: float, bw: float) -> list[dict]:
    from dimexport.ops import _native, selective_scan_reference
    from dimexport.ops.testing import realistic_scan_inputs

    rows = []
    for batch, dim, seqlen in SHAPES:
        args = realistic_scan_inputs(batch, dim, seqlen, N, seed=0)
        elems = batch * dim * seqlen * N
        nbytes = 16 * batch * dim * seqlen + 8 * batch * N * seqlen * -(-dim // 8)
        floor = max(elems / exp_rate, nbytes / bw)
        kernel = median_s(lambda: _native.scan_cpu(**args, delta_softplus=True, reverse=False, threads=threads), 5)
        row = dict(batch=batch, dim=dim, seqlen=seqlen, elems=elems, floor_ms=floor * 1e3, kernel_ms=kernel * 1e3)
        if elems <= REFERENCE_MAX_ELEMS:
            torch.set_num_threads(threads)
            with torch.inference_mode():
                small = elems <= 16 * 2**20  # warm up and repeat where a call is short; one call at batch 200
                ref = median_s(lambda: selective_scan_reference(**args, delta_softplus=True, reverse=False),
                               3 if small else 1, small)
                out = _native.scan_cpu(**args, delta_softplus=True, reverse=False, threads=threads)
                want = selective_scan_reference(**args, delta_softplus=True, reverse=False)
            row.update(reference_ms=ref * 1e3, speedup=ref / kernel,
                       rel_err_vs_reference=float((out - want).norm() / want.norm()))
        rows.append(row)
    return rows


def digits_dim():
    """The 1.09 M-parameter digits DiM of the issue: hidden 128, depth 7, patch 2, 32 x 32 grey pixels, 10 classes."""
    from dimexport.configs import get_config

    return replace(get_config("dim-tiny"), id="dim-digits-bench", hidden=128, depth=7, patch=2, in_channels=1,
                   sample_size=32, latent_factor=1, num_classes=10)


def forward_rows(threads: int) -> list[dict]:
    """One forward of 200 images (100 with guidance): the native kernels (scan and fused block ops), the scan kernel
    with the block's ops unfused (python_kernels: the scan through ctypes, the fused ops' references), and the
    reference everywhere; the scan's share from the profiler (self time of the op)."""
    from dimexport.models import build_model, count_parameters, example_inputs
    from dimexport.ops import _native

    torch.set_num_threads(threads)
    cfg = digits_dim()
    model = build_model(cfg, seed=0)
    inputs = example_inputs(cfg, 200)
    rows = []
    paths = {"kernel": contextlib.nullcontext, "kernel, block ops unfused": _native.python_kernels,
             "reference": lambda: _native.python_kernels(reference=True)}
    for impl, path in paths.items():
        with path(), torch.inference_mode():
            total = median_s(lambda: model(*inputs), 1 if impl == "reference" else 3, impl != "reference")
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                model(*inputs)
        scan_us = sum(e.cpu_time_total for e in prof.key_averages() if e.key == "dimexport::selective_scan")
        prof_us = sum(e.self_cpu_time_total for e in prof.key_averages())
        rows.append(dict(impl=impl, params=count_parameters(model), seq_len=cfg.seq_len(), batch=200,
                         forward_s=total, scan_share=scan_us / prof_us))
    return rows


def train_rows(threads: int, batch: int = 8) -> list[dict]:
    """One training step (forward, backward, AdamW) of the digits DiM at `batch`, with the CPU kernels' forward and
    backward and with the reference (issue 20: >= 10x)."""
    from dimexport.models import build_model, example_inputs
    from dimexport.ops import _native

    torch.set_num_threads(threads)
    cfg = digits_dim()
    x, t, y = example_inputs(cfg, batch)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    rows = []
    for impl in ("kernel", "reference"):
        model = build_model(cfg, seed=0).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            loss = torch.nn.functional.mse_loss(model(x, t, y), target)
            opt.zero_grad()
            loss.backward()
            opt.step()

        with _native.python_kernels(reference=True) if impl == "reference" else contextlib.nullcontext():
            step_s = median_s(step, 3 if impl == "kernel" else 1)
        rows.append(dict(impl=impl, batch=batch, step_s=step_s))
    return rows


def run(threads: int, forward: bool) -> dict:
    exp_rate, bw = rates(threads)
    return dict(threads=threads, exp_per_s=exp_rate, copy_bytes_per_s=bw, scans=scan_rows(threads, exp_rate, bw),
                forward=forward_rows(threads) if forward else [], train=train_rows(threads) if forward else [])


def environment() -> dict:
    from dimexport.libraries import scan_library_path

    return dict(cpu=cpu_name(), cores=os.cpu_count(), torch=torch.__version__, python=platform.python_version(),
                library=str(scan_library_path()))


def markdown(env: dict, runs: list[dict]) -> str:
    lines = ["# Selective scan on the CPU: kernel, reference, floor (issue 19)", "",
             f"{env['cpu']}, {env['cores']} cores, torch {env['torch']}, Python {env['python']}.", "",
             "N = 16, fp32, z and delta_bias on. Floor = max(exps / exp throughput, bytes / copy bandwidth), both "
             "measured in the same run on the same threads. % of floor = floor / time. The kernel's exp2 is a degree-5 "
             "polynomial, cheaper than torch.exp's, so above 100 % it runs faster than one library exp per element.",
             ""]
    for r in runs:
        lines += [f"## {r['threads']} thread(s): exp {r['exp_per_s'] / 1e9:.2f} G/s, copy "
                  f"{r['copy_bytes_per_s'] / 1e9:.1f} GB/s", "",
                  "| B | D | L | elements | floor ms | kernel ms | % of floor | reference ms | speed-up | rel. error vs reference |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in r["scans"]:
            ref = (f"{s['reference_ms']:.0f} | {s['speedup']:.0f}x | {s['rel_err_vs_reference']:.1e}"
                   if "reference_ms" in s else "– | – | –")
            lines.append(f"| {s['batch']} | {s['dim']} | {s['seqlen']} | {s['elems'] / 1e6:.1f} M | {s['floor_ms']:.2f} | "
                         f"{s['kernel_ms']:.2f} | {100 * s['floor_ms'] / s['kernel_ms']:.0f} % | {ref} |")
        if not r["forward"]:
            lines.append("")
            continue
        lines += ["", "Whole forward of the digits DiM (hidden 128, depth 7, patch 2, 32 x 32, "
                  f"{r['forward'][0]['params'] / 1e6:.2f} M parameters, L = {r['forward'][0]['seq_len']}), 200 images:", "",
                  "| scan | forward s | scan share (profiler) |", "|---|---|---|"]
        for f in r["forward"]:
            lines.append(f"| {f['impl']} | {f['forward_s']:.2f} | {100 * f['scan_share']:.0f} % |")
        if r.get("train"):
            k, ref = r["train"]
            lines += ["", f"Training step (forward, backward, AdamW) of the same model at batch {k['batch']}: kernels "
                      f"{k['step_s']:.2f} s, reference {ref['step_s']:.2f} s ({ref['step_s'] / k['step_s']:.0f}x)."]
        lines.append("")
    return "\n".join(lines)

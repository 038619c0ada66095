"""Helpers for tests and benchmarks: seeded selective-scan inputs distributed as trained Mamba layers see them, the
layouts models hand the ops, the C++ operator skip, one-thread runs."""

from __future__ import annotations

import torch


def realistic_scan_inputs(
    batch: int, dim: int, seqlen: int, dstate: int = 16, groups: int = 1, with_z: bool = True,
    dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0,
    dt_min: float = 1e-3, dt_max: float = 0.1,
) -> dict:
    """Keyword arguments of the op: A = -exp(log(1..N) + noise), softplus(delta + delta_bias) ~ U[dt_min, dt_max]
    (Mamba's dt init range), unit-normal u, B, C, z; generated on `device` so large sets are cheap."""
    g = torch.Generator(device=device).manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, device=device)  # noqa: E731
    a_log = torch.log(torch.arange(1, dstate + 1, dtype=torch.float32, device=device)).repeat(dim, 1)
    a_log = a_log + 0.1 * rnd(dim, dstate)
    dt = dt_min + (dt_max - dt_min) * torch.rand(batch, dim, seqlen, generator=g, device=device)
    bias = 0.5 * rnd(dim)
    delta = dt + torch.log(-torch.expm1(-dt)) - bias[:, None]  # softplus^-1, minus the bias the op adds back
    io = lambda t: t.to(dtype)  # noqa: E731
    return dict(
        u=io(rnd(batch, dim, seqlen)), delta=io(delta), A=-torch.exp(a_log),
        B=io(rnd(batch, groups, dstate, seqlen)), C=io(rnd(batch, groups, dstate, seqlen)),
        D=rnd(dim), z=io(rnd(batch, dim, seqlen)) if with_z else None, delta_bias=bias,
    )


def token_major_views(args: dict) -> dict:
    """The same inputs as the layouts a model hands the op: u, delta, z stored token-major (B, L, D) and seen as
    (B, D, L); B, C stored (B, L, G, N) and seen as (B, G, N, L). Equal values, other strides."""
    views = dict(args)
    for k in ("u", "delta", "z"):
        views[k] = args[k].transpose(1, 2).contiguous().transpose(1, 2)
    for k in ("B", "C"):
        views[k] = args[k].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    return views


def torch_ops_or_skip() -> None:
    """Skip a test of the C++ operator's kernels where they are not loaded, saying why; fail under CI, which builds
    them and must test them."""
    import os

    import pytest

    from . import _native

    problem = _native.torch_ops_problem()
    if problem is not None:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI must test the C++ operator: {problem}")
        pytest.skip(problem)


def on_one_thread(fn, *args):
    """fn(*args) on one intra-op thread (the thread count restored after): tests compare it with the default count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)

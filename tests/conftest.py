"""Shared fixtures: GPU tests skip without CUDA; seeded realistic scan inputs."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def realistic_scan_inputs(
    batch: int, dim: int, seqlen: int, dstate: int = 16, groups: int = 1, with_z: bool = True,
    dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0, dt_max: float = 0.1,
) -> dict:
    """Inputs as trained Mamba layers see them: A = -exp(log(1..N) + noise), softplus(delta+bias) in
    [1e-3, dt_max] (log-uniform), unit-scale u, B, C, z."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    a_log = torch.log(torch.arange(1, dstate + 1, dtype=torch.float32)).repeat(dim, 1) + 0.1 * rnd(dim, dstate)
    dt = torch.exp(torch.empty(batch, dim, seqlen).uniform_(0, 1, generator=g) * (torch.log(torch.tensor(dt_max / 1e-3))) + torch.log(torch.tensor(1e-3)))
    bias = 0.5 * rnd(dim)
    delta = dt + torch.log(-torch.expm1(-dt)) - bias[:, None]  # softplus^-1, minus the bias the op adds back
    io = lambda t: t.to(dtype).to(device)  # noqa: E731
    return dict(
        u=io(rnd(batch, dim, seqlen)), delta=io(delta), A=(-torch.exp(a_log)).to(device),
        B=io(rnd(batch, groups, dstate, seqlen)), C=io(rnd(batch, groups, dstate, seqlen)),
        D=rnd(dim).to(device), z=io(rnd(batch, dim, seqlen)) if with_z else None, delta_bias=bias.to(device),
    )


@pytest.fixture
def scan_inputs():
    return realistic_scan_inputs

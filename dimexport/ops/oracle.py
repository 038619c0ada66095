"""Float64 sequential oracle of the selective scan: the ground truth every implementation is tested against."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_scan_oracle(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    z: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = True,
    reverse: bool = False,
) -> Tensor:
    """Token-by-token recurrence in float64, written as the formula reads (no chunking, no tricks).

    Returns float64 (B, D, L). Inputs are upcast as given, so rounding of the inputs to their dtype is
    shared with the implementation under test and only its arithmetic error is measured.
    """
    f64 = lambda t: None if t is None else t.to(torch.float64)  # noqa: E731
    u, delta, A, B, C, D, z, delta_bias = map(f64, (u, delta, A, B, C, D, z, delta_bias))
    batch, dim, seqlen = u.shape
    B = B.repeat_interleave(dim // B.shape[1], dim=1)  # (batch, dim, N, L)
    C = C.repeat_interleave(dim // C.shape[1], dim=1)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(batch, dim, A.shape[1])
    y = torch.empty_like(u)
    steps = range(seqlen - 1, -1, -1) if reverse else range(seqlen)
    for t in steps:
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[:, :, :, t] * u[:, :, t, None]
        y[:, :, t] = (h * C[:, :, :, t]).sum(-1)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y

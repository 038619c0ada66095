"""DiM's padded grid and per-layer scan orders, as index tensors (gathers export cleanly to ONNX).

The official code (adapter_attn4mamba.py) re-derives these with flips and rearranges at run time;
here every layer's reorder is one precomputed gather, which computes the same permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..configs import DIM_PAD

# Scan patterns over the padded (g+3) x (g+3) grid, in the official cycle order (cnt 0..3).
H_FWD, H_BWD, V_FWD, V_BWD = 0, 1, 2, 3
PATTERN_NAMES = ("H+", "H-", "V+", "V-")


def pattern_chain(num_layers: int, encoder_start: int = 1) -> list[int]:
    """Pattern of every layer: official `_init_scan_patterns` with 4 patterns.

    Layers before `encoder_start` and the last layer scan H+; the encoder steps the cycle forward,
    the mid layer steps back once, the decoder keeps stepping back, which mirrors the chain.
    """
    mid = encoder_start + (num_layers - encoder_start) // 2
    chain, cnt = [], 0
    for layer in range(num_layers):
        if layer < encoder_start or layer == num_layers - 1:
            cnt = 0
        elif layer < mid:
            cnt = (cnt + 1) % 4
        elif layer == mid and (num_layers - encoder_start) % 2:
            pass
        else:
            cnt = (cnt - 1) % 4
        chain.append(cnt)
    return chain


def pattern_order(pattern: int, side: int) -> Tensor:
    """Padded-grid cell (row-major index) visited at each scan position."""
    rowmajor = torch.arange(side * side)
    colmajor = rowmajor.reshape(side, side).t().reshape(-1)
    return (rowmajor, rowmajor.flip(0), colmajor, colmajor.flip(0))[pattern]


def pad_fill_index(grid: int, schedule: str) -> Tensor:
    """For each padded-grid cell: the grid token (0..g*g-1) or pad token (g*g + k) that fills it.

    'lateral' (256^2 checkpoints): pad column k holds token k, then whole pad row k (corner included)
    holds token k, as the official code concatenates the rows after the columns.
    'rho_pad' (512^2 and upsampling): pad cells in row-major order cycle through tokens 0, 1, 2.
    """
    side = grid + DIM_PAD
    r = torch.arange(side).repeat_interleave(side)
    c = torch.arange(side).repeat(side)
    is_pad = (r >= grid) | (c >= grid)
    index = torch.where(is_pad, torch.zeros_like(r), r * grid + c)
    if schedule == "lateral":
        k = torch.where(r >= grid, r - grid, c - grid)
    elif schedule == "rho_pad":
        k = (torch.cumsum(is_pad.long(), 0) - 1) % DIM_PAD
    else:
        raise ValueError(f"unknown DiM pad schedule {schedule!r}")
    return torch.where(is_pad, grid * grid + k, index)


@dataclass(frozen=True)
class ScanLayout:
    """Index tensors of one grid size: fill the padded grid, reorder per layer, unpad at the end."""

    grid: int
    fill: Tensor  # ((g+3)^2,) into cat[grid tokens, 3 pad tokens]
    unpad: Tensor  # (g*g,) padded-grid cells of the grid tokens, row-major (the chain ends at H+)
    reorders: tuple[Tensor | None, ...]  # per layer: gather over [lead tokens, padded grid], None when unchanged

    def to(self, device: torch.device | str) -> "ScanLayout":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ScanLayout(self.grid, move(self.fill), move(self.unpad), tuple(map(move, self.reorders)))

    @staticmethod
    def build(grid: int, schedule: str, chain: list[int], lead: int = 0) -> "ScanLayout":
        """`lead` tokens in front of the grid stay in place: each reorder is then one gather of the whole stream."""
        side = grid + DIM_PAD
        reorders: list[Tensor | None] = []
        prev = H_FWD  # prepare_sequence lays the grid out row-major
        for pattern in chain:
            if pattern == prev:
                reorders.append(None)
            else:
                where = torch.argsort(pattern_order(prev, side))  # position of each cell in the stream
                reorders.append(torch.cat([torch.arange(lead), where[pattern_order(pattern, side)] + lead]))
            prev = pattern
        if prev != H_FWD:
            raise ValueError("the DiM scan chain must end with the row-major pattern")
        rows = torch.arange(grid)
        unpad = (rows[:, None] * side + rows[None, :]).reshape(-1)
        return ScanLayout(grid, pad_fill_index(grid, schedule), unpad, tuple(reorders))

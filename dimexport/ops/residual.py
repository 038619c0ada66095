"""DiM's gated residual, ``residual + (1 + gate) * y``, as one op: ``torch.ops.dimexport.gated_residual``; without a
gate it is DiS's ``residual + y.float()``.

Unfused it is three passes (the gate product, the cast to the fp32 residual's dtype, the add) over a dim-h layer's
activations, ~40 µs of 686 µs at batch 8 (bench/results/profile_dim_h_256_h100.md); fused, one read of each input and
one write. The same arrangement as the other fused ops (conv.py, norm.py).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import InputError
from .recompute import register_recomputed_autograd
from .selective_scan import IO_DTYPES, check_one_device, check_row_index

OP_NAME = "dimexport::gated_residual"


def check_residual_inputs(residual: Tensor, y: Tensor, gate: Optional[Tensor], rows: Optional[Tensor] = None) -> None:
    """Raise InputError naming the offending argument, its shape/dtype and what was expected."""
    if residual.dim() != 3:
        raise InputError(f"gated_residual: residual must be (batch, tokens, dim), got shape {tuple(residual.shape)}")
    for name, t in (("residual", residual), ("y", y)):
        if t.dtype not in IO_DTYPES:
            raise InputError(f"gated_residual: {name} has dtype {t.dtype}; use float32, float16 or bfloat16")
    if y.shape != residual.shape:
        raise InputError(f"gated_residual: y must have the residual's shape {tuple(residual.shape)}, "
                         f"got {tuple(y.shape)}")
    batch, _, dim = residual.shape
    if gate is not None and tuple(gate.shape) != (batch, 1, dim):
        raise InputError(f"gated_residual: gate must have shape {(batch, 1, dim)}, got {tuple(gate.shape)}")
    if gate is not None and gate.dtype != y.dtype:
        raise InputError(f"gated_residual: gate has dtype {gate.dtype}; it must match y ({y.dtype})")
    check_row_index("gated_residual", rows, residual.shape[1])
    check_one_device("gated_residual", residual, y, gate, rows)


def gated_residual_reference(residual: Tensor, y: Tensor, gate: Optional[Tensor] = None,
                             rows: Optional[Tensor] = None) -> Tensor:
    """As DiM's block computes it: the gated output in y's dtype, cast to the residual's, added (DiS's: y cast and
    added); with `rows`, to the residual's tokens in that order (residual.index_select(1, rows))."""
    residual = residual if rows is None else residual.index_select(1, rows)
    return residual + (y if gate is None else (1 + gate) * y).to(residual.dtype)


def reference_kernel(residual: Tensor, y: Tensor, gate: Optional[Tensor] = None,
                     rows: Optional[Tensor] = None) -> Tensor:
    """The op's body: checks, then the reference; contiguous, in the residual's dtype. `rows` (L,) int64 reorders the
    residual's tokens first (the norm's `rows`: the block's output in its scan order). The C++ operator's kernels
    replace it on the CPU and the GPU when they load (fp32 math, rounded once)."""
    check_residual_inputs(residual, y, gate, rows)
    return gated_residual_reference(residual, y, gate, rows).contiguous()  # the fake's and kernels' layout


gated_residual = torch.library.custom_op(OP_NAME, reference_kernel, mutates_args=())


@gated_residual.register_fake
def _(residual, y, gate=None, rows=None):
    check_residual_inputs(residual, y, gate, rows)
    return torch.empty_like(residual, memory_format=torch.contiguous_format)


register_recomputed_autograd(gated_residual, gated_residual_reference, n_tensors=3)

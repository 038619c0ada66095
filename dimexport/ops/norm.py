"""RMSNorm and DiM's adaLN modulation as one op, ``torch.ops.dimexport.rms_norm_modulate``.

Unfused, a dim-h layer spends ~75 µs of its 686 µs at batch 8 on the norm's eight elementwise and reduction kernels
and the modulation's two (bench/results/profile_dim_h_256_h100.md), each a pass over the activations, where one read
of the fp32 residual and one write of the normalised tokens suffice. Like the causal conv: the C++ operator runs
libdimexport_scan.so's kernels on the CPU and the GPU, else the op is its reference (the unfused torch code); the
gradient differentiates the reference; ONNX gets standard ops.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import InputError
from .recompute import register_recomputed_autograd
from .selective_scan import IO_DTYPES, check_one_device, check_row_index

OP_NAME = "dimexport::rms_norm_modulate"


def check_norm_inputs(x: Tensor, weight: Tensor, scale: Optional[Tensor], shift: Optional[Tensor],
                      eps: float, rows: Optional[Tensor] = None) -> None:
    """Raise InputError naming the offending argument, its shape/dtype and what was expected."""
    if x.dim() != 3:
        raise InputError(f"rms_norm_modulate: x must be (batch, tokens, dim), got shape {tuple(x.shape)}")
    batch, _, dim = x.shape
    for name, t in (("x", x), ("weight", weight)):
        if t.dtype not in IO_DTYPES:
            raise InputError(f"rms_norm_modulate: {name} has dtype {t.dtype}; use float32, float16 or bfloat16")
    if tuple(weight.shape) != (dim,):
        raise InputError(f"rms_norm_modulate: weight must have shape {(dim,)}, got {tuple(weight.shape)}")
    for name, t in (("scale", scale), ("shift", shift)):
        if t is None:
            continue
        if tuple(t.shape) != (batch, 1, dim):
            raise InputError(f"rms_norm_modulate: {name} must have shape {(batch, 1, dim)}, got {tuple(t.shape)}")
        if t.dtype != weight.dtype:
            raise InputError(f"rms_norm_modulate: {name} has dtype {t.dtype}; it must match weight ({weight.dtype})")
    if not eps >= 0:
        raise InputError(f"rms_norm_modulate: eps must be >= 0, got {eps}")
    check_row_index("rms_norm_modulate", rows, x.shape[1])
    check_one_device("rms_norm_modulate", x, weight, scale, shift, rows)


def rms_norm_modulate_reference(x: Tensor, weight: Tensor, scale: Optional[Tensor] = None,
                                shift: Optional[Tensor] = None, eps: float = 1e-5,
                                rows: Optional[Tensor] = None) -> Tensor:
    """RMSNorm as the official code computes it (statistics in fp32, output in the weight's dtype), then
    `* (1 + scale) + shift` in that dtype; with `rows`, of x's tokens in that order (x.index_select(1, rows))."""
    x32 = (x if rows is None else x.index_select(1, rows)).float()
    y = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(weight.dtype)
    if scale is not None:
        y = y * (1 + scale)
    if shift is not None:
        y = y + shift
    return y


def reference_kernel(x: Tensor, weight: Tensor, scale: Optional[Tensor] = None, shift: Optional[Tensor] = None,
                      eps: float = 1e-5, rows: Optional[Tensor] = None) -> Tensor:
    """The op's body: checks, then the reference. RMSNorm of x (B, L, D) with weight (D,), then
    `* (1 + scale) + shift` (each (B, 1, D) or None), contiguous (B, L, D) in the weight's dtype; `rows` (L,) int64
    reorders the tokens first (output token l normalises x's token rows[l]: DiM's scan order, gathered by the kernel
    instead of by a copy). The C++ operator's kernels replace it on the CPU and the GPU when they load."""
    check_norm_inputs(x, weight, scale, shift, eps, rows)
    return rms_norm_modulate_reference(x, weight, scale, shift, eps, rows).contiguous()  # the kernels' layout


rms_norm_modulate = torch.library.custom_op(OP_NAME, reference_kernel, mutates_args=())


@rms_norm_modulate.register_fake
def _(x, weight, scale=None, shift=None, eps=1e-5, rows=None):
    check_norm_inputs(x, weight, scale, shift, eps, rows)
    return torch.empty(x.shape, dtype=weight.dtype, device=x.device)


register_recomputed_autograd(rms_norm_modulate, rms_norm_modulate_reference, n_tensors=4)

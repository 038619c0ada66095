"""Autograd for the fused forward-only ops: the gradient of the op's reference, recomputed from the saved inputs."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def register_recomputed_autograd(op: torch.library.CustomOpDef, reference: Callable[..., Tensor],
                                 n_tensors: int) -> None:
    """Make `op` differentiable: its first `n_tensors` inputs (tensors or None) are saved, the rest passed on as
    flags; the backward differentiates `reference` on the saved inputs, so gradients are the reference's bit for
    bit (at the cost of one more unfused forward)."""

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.flags = inputs[n_tensors:]

    def backward(ctx, grad_out: Tensor):
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_() for t in ctx.saved_tensors]
            out = reference(*leaves, *ctx.flags)
            wanted = [t for t in leaves if t is not None]
            grads = iter(torch.autograd.grad(out, wanted, grad_out))
        return tuple(None if t is None else next(grads) for t in leaves) + (None,) * len(ctx.flags)

    op.register_autograd(backward, setup_context=setup_context)

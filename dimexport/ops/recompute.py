"""Autograd by recomputation: the gradient of an op's reference, recomputed from the saved inputs. The fused
forward-only ops use it as their backward, the scan where its native backward does not apply."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor


def reference_gradients(reference: Callable[..., Tensor], saved: tuple[Optional[Tensor], ...], flags: tuple,
                        grad_out: Tensor) -> tuple:
    """The gradients of `reference(*saved, *flags)` towards each saved tensor (None where a tensor is None, not
    floating point or unused), then None for each flag: the reference's own gradients, bit for bit."""
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_(t.is_floating_point()) for t in saved]
        out = reference(*leaves, *flags)
        wanted = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
    return tuple(None if t is None else next(grads) for t in leaves) + (None,) * len(flags)


def register_recomputed_autograd(op: torch.library.CustomOpDef, reference: Callable[..., Tensor],
                                 n_tensors: int) -> None:
    """Make `op` differentiable: its first `n_tensors` inputs (tensors or None) are saved, the rest passed on as
    flags; the backward differentiates `reference` on the saved inputs (at the cost of one more unfused forward)."""

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.flags = inputs[n_tensors:]

    def backward(ctx, grad_out: Tensor):
        return reference_gradients(reference, ctx.saved_tensors, ctx.flags, grad_out)

    op.register_autograd(backward, setup_context=setup_context)

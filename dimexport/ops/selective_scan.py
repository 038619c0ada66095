"""The selective-scan op: the one place that knows its signature.

``torch.ops.dimexport.selective_scan`` has the forward semantics of mamba-ssm's ``selective_scan_fn``
(see ``plugins_trt/include/dimexport_scan.h`` for the formula) plus ``reverse``, which scans from the
end of the sequence without flipped copies. The models call the scan only through this op, so the
ONNX exporter can turn each call into one custom node and the CUDA kernel can replace the reference.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .recompute import reference_gradients

OP_NAME = "dimexport::selective_scan"
IO_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_DSTATE = 64
# Bytes of fp32 working set per (B, D-block, L, N) tensor of the reference; bounds its peak memory.
_REFERENCE_BLOCK_BYTES = 64 * 2**20


def check_one_device(op: str, *tensors: Optional[Tensor]) -> None:
    """Raise InputError when the given tensors (None ignored) are on more than one device, naming them, as every op's
    checks (and the C++ operator's device_list) word it."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        raise InputError(f"{op}: all inputs must be on one device, got {sorted(map(str, devices))}")


def check_row_index(op: str, rows: Optional[Tensor], tokens: int) -> None:
    """Raise InputError unless rows is None or an int64 (tokens,) index, as the norm's and the residual's checks (and
    the C++ operator's) word it. Its values are not checked (that would synchronise): the kernels give NaN rows for
    an index outside 0..tokens-1, the reference raises."""
    if rows is not None and (rows.dtype != torch.int64 or tuple(rows.shape) != (tokens,)):
        raise InputError(f"{op}: rows must be an int64 index of shape ({tokens},), got {rows.dtype} of shape "
                         f"{tuple(rows.shape)}")


def token_major(x: Tensor) -> bool:
    """True when x's channels (dim 1 of (batch, dim, seqlen)) are contiguous: the slice of in_proj's (B, L, 2D)
    output the Mamba mixer hands over, and everything computed from it in that layout."""
    return x.shape[1] > 1 and x.stride(1) == 1


def output_like(x: Tensor) -> Tensor:
    """An empty output for the (batch, dim, seqlen) input x, in x's dtype and layout: token-major storage
    (batch, seqlen, dim) seen as (batch, dim, seqlen) when token_major(x), else contiguous. A mixer that stays
    token-major then feeds its projections without transposing copies. The C++ operator allocates the same way;
    torch.compile keeps a custom op's input strides by default, so the fake kernel sees the layout the kernel gets."""
    if token_major(x):
        return torch.empty((x.shape[0], x.shape[2], x.shape[1]), dtype=x.dtype, device=x.device).transpose(1, 2)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def in_layout_of(x: Tensor, out: Tensor) -> Tensor:
    """`out` (a reference's result) in the layout output_like(x) gives, so every kernel of an op returns the strides
    its fake kernel promises."""
    if not token_major(x):
        return out.contiguous()
    if out.transpose(1, 2).is_contiguous():
        return out
    return output_like(x).copy_(out)


def check_scan_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
) -> None:
    """Raise InputError naming the offending argument, its shape/dtype and what was expected."""
    if u.dim() != 3:
        raise InputError(f"selective_scan: u must be (batch, dim, seqlen), got shape {tuple(u.shape)}")
    batch, dim, seqlen = u.shape
    if u.dtype not in IO_DTYPES:
        raise InputError(f"selective_scan: u has dtype {u.dtype}; use float32, float16 or bfloat16")
    if A.dim() != 2 or A.shape[0] != dim:
        raise InputError(f"selective_scan: A must be (dim={dim}, dstate), got shape {tuple(A.shape)}")
    dstate = A.shape[1]
    if not 1 <= dstate <= MAX_DSTATE:
        raise InputError(f"selective_scan: dstate={dstate} is outside 1..{MAX_DSTATE}")
    for name, t in (("delta", delta), ("z", z)):
        if t is not None and (tuple(t.shape) != (batch, dim, seqlen) or t.dtype != u.dtype):
            raise InputError(
                f"selective_scan: {name} must match u: shape {(batch, dim, seqlen)} dtype {u.dtype}, "
                f"got shape {tuple(t.shape)} dtype {t.dtype}"
            )
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != dstate or t.shape[3] != seqlen:
            raise InputError(
                f"selective_scan: {name} must be (batch={batch}, groups, dstate={dstate}, seqlen={seqlen}), "
                f"got shape {tuple(t.shape)}"
            )
        if t.dtype != u.dtype:
            raise InputError(f"selective_scan: {name} has dtype {t.dtype}; it must match u ({u.dtype})")
    groups = B.shape[1]
    if C.shape[1] != groups or groups < 1 or dim % groups:
        raise InputError(
            f"selective_scan: B and C need the same number of groups dividing dim={dim}, "
            f"got {B.shape[1]} and {C.shape[1]}"
        )
    for name, t, shape in (("A", A, (dim, dstate)), ("D", D, (dim,)), ("delta_bias", delta_bias, (dim,))):
        if t is None:
            continue
        if tuple(t.shape) != shape:
            raise InputError(f"selective_scan: {name} must have shape {shape}, got {tuple(t.shape)}")
        if t.dtype != torch.float32:
            raise InputError(f"selective_scan: {name} must be float32 (got {t.dtype}); keep it in fp32")
    check_one_device("selective_scan", u, delta, A, B, C, D, z, delta_bias)


def _chunk_len(seqlen: int) -> int:
    """Tokens per chunk: about sqrt(L), so the two Python loops together run ~2*sqrt(L) vectorised steps."""
    return max(8, min(128, math.isqrt(max(seqlen, 1)) + 1))


def _scan_states(dA: Tensor, dBu: Tensor) -> Tensor:
    """All states h_t = dA_t * h_{t-1} + dBu_t for inputs (..., L, N), scanning along L from h_{-1} = 0.

    Two-level and out-of-place (so autograd can differentiate it): a sequential scan inside chunks of
    ~sqrt(L) tokens, vectorised over chunks, then one pass carrying each chunk's final state into the
    next through the chunk's cumulative decay. Every factor is a product of decays <= 1, so nothing
    overflows, and the rounding is that of a sequential fp32 scan.
    """
    *lead, seqlen, dstate = dA.shape
    q = _chunk_len(seqlen)
    nchunks = -(-seqlen // q)
    pad = nchunks * q - seqlen
    if pad:
        dA = F.pad(dA, (0, 0, 0, pad), value=1.0)
        dBu = F.pad(dBu, (0, 0, 0, pad), value=0.0)
    dA = dA.reshape(*lead, nchunks, q, dstate)
    dBu = dBu.reshape(*lead, nchunks, q, dstate)
    h = torch.zeros_like(dBu[..., 0, :])
    decay = torch.ones_like(h)
    local, cumdecay = [], []
    for i in range(q):
        h = dA[..., i, :] * h + dBu[..., i, :]
        decay = decay * dA[..., i, :]
        local.append(h)
        cumdecay.append(decay)
    local_t = torch.stack(local, dim=-2)  # (..., nchunks, q, N)
    cumdecay_t = torch.stack(cumdecay, dim=-2)
    carry = torch.zeros_like(local_t[..., 0, 0, :])
    chunks = []
    for c in range(nchunks):
        full = local_t[..., c, :, :] + cumdecay_t[..., c, :, :] * carry.unsqueeze(-2)
        chunks.append(full)
        carry = full[..., -1, :]
    return torch.stack(chunks, dim=-3).reshape(*lead, nchunks * q, dstate)[..., :seqlen, :]


def selective_scan_reference(
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
    """Pure-torch implementation for any device: fp32 math, memory bounded by processing channel blocks."""
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    per_group = dim // B.shape[1]
    if reverse:  # internal flips only: the op's contract needs no flipped copies from the caller
        flip = lambda t: None if t is None else t.flip(-1)  # noqa: E731
        out = selective_scan_reference(
            flip(u), flip(delta), A, flip(B), flip(C), D, flip(z), delta_bias, delta_softplus, False
        )
        return out.flip(-1)
    block = max(1, _REFERENCE_BLOCK_BYTES // max(1, batch * seqlen * dstate * 4))
    outs = []
    for d0 in range(0, dim, block):
        d1 = min(dim, d0 + block)
        uf = u[:, d0:d1].float()
        dt = delta[:, d0:d1].float()
        if delta_bias is not None:
            dt = dt + delta_bias[d0:d1, None].float()
        if delta_softplus:
            dt = F.softplus(dt)  # threshold 20, as the CUDA kernels
        groups = torch.arange(d0, d1, device=u.device) // per_group
        Bd = B.float().index_select(1, groups).transpose(-1, -2)  # (batch, d, L, N)
        Cd = C.float().index_select(1, groups).transpose(-1, -2)
        dA = torch.exp(dt.unsqueeze(-1) * A[d0:d1, None, :].float())
        dBu = (dt * uf).unsqueeze(-1) * Bd
        y = (_scan_states(dA, dBu) * Cd).sum(-1)
        if D is not None:
            y = y + uf * D[d0:d1, None].float()
        if z is not None:
            y = y * F.silu(z[:, d0:d1].float())
        outs.append(y)
    return torch.cat(outs, dim=1).to(u.dtype)


@torch.library.custom_op(OP_NAME, mutates_args=())
def selective_scan(
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
    """Selective scan (Mamba-1 S6 forward); returns the gated output in u's dtype, shape (B, D, L), in u's layout
    (output_like)."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    return in_layout_of(u, selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse))


@selective_scan.register_fake
def _(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, reverse=False):
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    return output_like(u)


_DIFFERENTIABLE = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:8])
    ctx.flags = inputs[8:]


def _backward(ctx, grad_out: Tensor):
    """Gradients recomputed from the inputs: the native backward of the tensors' device (CPU kernel, or CUDA kernel
    for dstate <= 32) when the library has it, else by differentiating the reference (slow but exact)."""
    from . import _native

    saved = ctx.saved_tensors
    if _native.backward_available(saved[0], saved[2].shape[1]):
        return _native.scan_backward(grad_out, *saved, *ctx.flags) + (None, None)
    return reference_gradients(selective_scan_reference, saved, ctx.flags, grad_out)


selective_scan.register_autograd(_backward, setup_context=_setup_context)

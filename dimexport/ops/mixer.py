"""The Mamba mixer (in_proj, causal conv + SiLU, x_proj, dt_proj, selective scan, out_proj) as one op,
``torch.ops.dimexport.mamba_mixer``, for eager inference.

Composed in Python the mixer is 18 calls from Python into torch (four projections, the conv and the scan, twelve views
and casts), each paying the interpreter, argument parsing and the dispatcher: at batch 1 an eager dim-h forward is
bound by that host time, not by the GPU (issue "Whole-denoiser speed": eager batch 1 at 2.9x the CUDA graph). The C++
operator (libdimexport_torch_ops.so) runs the same sequence from C++ (the same torch projections, the same conv and scan
kernels called directly, so the result is bit for bit the composition's); without it the op is the composition.
Models call it only where nothing needs the pieces: no autograd, no tracing for torch.compile or export (which see
the composition, and so the scan as its own ONNX node).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .conv import causal_conv1d_silu
from .recompute import register_recomputed_autograd
from .selective_scan import check_one_device, selective_scan

OP_NAME = "dimexport::mamba_mixer"


def mamba_direction(x: Tensor, z: Tensor, conv_weight: Tensor, conv_bias: Optional[Tensor], x_proj_weight: Tensor,
                    dt_proj_weight: Tensor, dt_proj_bias: Tensor, A: Tensor, D: Tensor, reverse: bool) -> Tensor:
    """One scan direction of the mixer on in_proj's halves x, z (B, Di, L): conv + SiLU, x_proj, dt_proj (its bias
    goes to the scan as delta_bias), the gated scan; (B, Di, L) in x's layout. `reverse`: the causal conv of the
    flipped sequence in original order and a reverse scan, without flipped copies."""
    dt_rank, dstate = dt_proj_weight.shape[1], A.shape[1]
    u = causal_conv1d_silu(x, conv_weight, conv_bias, reverse)
    x_dbl = F.linear(u.transpose(1, 2), x_proj_weight)  # (B, L, R + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, dstate, dstate], dim=-1)
    delta = F.linear(dt, dt_proj_weight).transpose(1, 2)
    return selective_scan(u, delta, A, B.transpose(1, 2).unsqueeze(1), C.transpose(1, 2).unsqueeze(1), D.float(), z,
                          dt_proj_bias.float(), True, reverse)


def mamba_mixer_reference(hidden: Tensor, in_proj_weight: Tensor, conv_weight: Tensor, conv_bias: Optional[Tensor],
                          x_proj_weight: Tensor, dt_proj_weight: Tensor, dt_proj_bias: Tensor, A: Tensor, D: Tensor,
                          out_proj_weight: Tensor, reverse: bool = False) -> Tensor:
    """The composition: (B, L, d_model) -> (B, L, d_model), in_proj's output kept token-major throughout."""
    xz = F.linear(hidden, in_proj_weight).transpose(1, 2)  # (B, 2 Di, L)
    x, z = xz.chunk(2, dim=1)
    y = mamba_direction(x, z, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, reverse)
    return F.linear(y.transpose(1, 2), out_proj_weight)


def check_mixer_inputs(hidden: Tensor, in_proj_weight: Tensor, x_proj_weight: Tensor, dt_proj_weight: Tensor,
                       A: Tensor, out_proj_weight: Tensor) -> None:
    """Raise InputError for shapes that do not make one Mamba mixer; the pieces check the rest (dtypes, conv, scan)."""
    if hidden.dim() != 3:
        raise InputError(f"mamba_mixer: hidden must be (batch, seqlen, d_model), got shape {tuple(hidden.shape)}")
    d_model = hidden.shape[2]
    if in_proj_weight.dim() != 2 or in_proj_weight.shape[1] != d_model or in_proj_weight.shape[0] % 2:
        raise InputError(f"mamba_mixer: in_proj_weight must be (2 * d_inner, d_model={d_model}), got shape "
                         f"{tuple(in_proj_weight.shape)}")
    d_inner = in_proj_weight.shape[0] // 2
    if A.dim() != 2 or A.shape[0] != d_inner:
        raise InputError(f"mamba_mixer: A must be (d_inner={d_inner}, dstate), got shape {tuple(A.shape)}")
    if dt_proj_weight.dim() != 2 or dt_proj_weight.shape[0] != d_inner:
        raise InputError(f"mamba_mixer: dt_proj_weight must be (d_inner={d_inner}, dt_rank), got shape "
                         f"{tuple(dt_proj_weight.shape)}")
    width = dt_proj_weight.shape[1] + 2 * A.shape[1]
    if tuple(x_proj_weight.shape) != (width, d_inner):
        raise InputError(f"mamba_mixer: x_proj_weight must be (dt_rank + 2 * dstate={width}, d_inner={d_inner}), got "
                         f"shape {tuple(x_proj_weight.shape)}")
    if tuple(out_proj_weight.shape[1:]) != (d_inner,) or out_proj_weight.dim() != 2:
        raise InputError(f"mamba_mixer: out_proj_weight must be (d_out, d_inner={d_inner}), got shape "
                         f"{tuple(out_proj_weight.shape)}")
    check_one_device("mamba_mixer", hidden, in_proj_weight, x_proj_weight, dt_proj_weight, A, out_proj_weight)


def reference_kernel(hidden: Tensor, in_proj_weight: Tensor, conv_weight: Tensor, conv_bias: Optional[Tensor],
                     x_proj_weight: Tensor, dt_proj_weight: Tensor, dt_proj_bias: Tensor, A: Tensor, D: Tensor,
                     out_proj_weight: Tensor, reverse: bool = False) -> Tensor:
    """The op's body: checks, then the composition; the C++ operator's kernels replace it on the CPU and the GPU."""
    check_mixer_inputs(hidden, in_proj_weight, x_proj_weight, dt_proj_weight, A, out_proj_weight)
    return mamba_mixer_reference(hidden, in_proj_weight, conv_weight, conv_bias, x_proj_weight, dt_proj_weight,
                                 dt_proj_bias, A, D, out_proj_weight, reverse)


mamba_mixer = torch.library.custom_op(OP_NAME, reference_kernel, mutates_args=())


@mamba_mixer.register_fake
def _(hidden, in_proj_weight, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
      out_proj_weight, reverse=False):
    check_mixer_inputs(hidden, in_proj_weight, x_proj_weight, dt_proj_weight, A, out_proj_weight)
    return hidden.new_empty((hidden.shape[0], hidden.shape[1], out_proj_weight.shape[0]))


register_recomputed_autograd(mamba_mixer, mamba_mixer_reference, n_tensors=10)

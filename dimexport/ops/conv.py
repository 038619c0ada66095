"""The Mamba mixer's depthwise causal conv1d and its SiLU as one op, ``torch.ops.dimexport.causal_conv1d_silu``.

Unfused, PyTorch runs a copy of the strided in_proj slice, cuDNN's general grouped convolution, a slice and a SiLU:
four passes over the activations where one suffices (bench/results/profile_dim_h_256_h100.md: 127 µs of a 686-µs
dim-h layer at batch 8). The C++ operator (libdimexport_torch_ops.so) runs libdimexport_scan.so's fused kernels on the
CPU and the GPU; without it the op is its reference, the unfused torch code, on every device. Its gradient
differentiates the reference (recomputed from the saved inputs), and the ONNX exporter writes standard Conv + SiLU,
which TensorRT fuses itself.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .recompute import register_recomputed_autograd
from .selective_scan import IO_DTYPES, check_one_device, in_layout_of, output_like

OP_NAME = "dimexport::causal_conv1d_silu"
MAX_WIDTH = 8  # DIMEX_CONV_MAX_WIDTH of plugins_trt/include/dimexport_scan.h


def check_conv_inputs(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> None:
    """Raise InputError naming the offending argument, its shape/dtype and what was expected."""
    if x.dim() != 3:
        raise InputError(f"causal_conv1d_silu: x must be (batch, dim, seqlen), got shape {tuple(x.shape)}")
    if x.dtype not in IO_DTYPES:
        raise InputError(f"causal_conv1d_silu: x has dtype {x.dtype}; use float32, float16 or bfloat16")
    dim = x.shape[1]
    if weight.dim() != 2 or weight.shape[0] != dim or not 1 <= weight.shape[1] <= MAX_WIDTH:
        raise InputError(
            f"causal_conv1d_silu: weight must be (dim={dim}, width) with width 1..{MAX_WIDTH}, "
            f"got shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (dim,):
        raise InputError(f"causal_conv1d_silu: bias must have shape {(dim,)}, got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise InputError(f"causal_conv1d_silu: {name} has dtype {t.dtype}; it must match x ({x.dtype})")
    check_one_device("causal_conv1d_silu", x, weight, bias)


def causal_conv1d_silu_reference(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                                 reverse: bool = False) -> Tensor:
    """silu(causal depthwise conv1d), as the official Mamba code computes it without causal-conv1d; `reverse`: the
    causal conv of the flipped sequence in the original order (look ahead, kernel flipped)."""
    width = weight.shape[1]
    w = weight.unsqueeze(1)
    if reverse:
        u = F.conv1d(F.pad(x, (0, width - 1)), w.flip(-1), bias, groups=x.shape[1])
    else:
        u = F.conv1d(x, w, bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(u)


def reference_kernel(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, reverse: bool = False) -> Tensor:
    """The op's body: checks, then the reference. silu(depthwise causal conv1d of x (B, D, L) with weight (D, K)
    and bias (D,)), (B, D, L) in x's dtype and layout (token-major for the mixer's slice of in_proj's output:
    output_like); the C++ operator's kernels replace it on the CPU and the GPU when they load."""
    check_conv_inputs(x, weight, bias)
    return in_layout_of(x, causal_conv1d_silu_reference(x, weight, bias, reverse))


causal_conv1d_silu = torch.library.custom_op(OP_NAME, reference_kernel, mutates_args=())


@causal_conv1d_silu.register_fake
def _(x, weight, bias=None, reverse=False):
    check_conv_inputs(x, weight, bias)
    return output_like(x)


register_recomputed_autograd(causal_conv1d_silu, causal_conv1d_silu_reference, n_tensors=3)

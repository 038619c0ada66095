"""Custom ops used by the models; importing this package registers them with torch.

The selective scan runs the fused kernels of libdimexport_scan.so (CPU and CUDA) when it is built
(dimexport/lib/ or $DIMEXPORT_SCAN_LIB), else the pure-PyTorch reference; the fused causal conv + SiLU, RMSNorm +
modulation and gated residual run them through the C++ operator library (libdimexport_torch_ops.so), else their
references; so does the Mamba mixer as one op (the same pieces called from C++).
"""

from . import _native
from .conv import causal_conv1d_silu, causal_conv1d_silu_reference, check_conv_inputs
from .mixer import check_mixer_inputs, mamba_direction, mamba_mixer, mamba_mixer_reference
from .norm import check_norm_inputs, rms_norm_modulate, rms_norm_modulate_reference
from .residual import check_residual_inputs, gated_residual, gated_residual_reference
from .selective_scan import (
    OP_NAME,
    check_scan_inputs,
    selective_scan,
    selective_scan_reference,
)

_native.register_kernels()

__all__ = ["OP_NAME", "causal_conv1d_silu", "causal_conv1d_silu_reference", "check_conv_inputs", "check_mixer_inputs",
           "check_norm_inputs", "check_residual_inputs", "check_scan_inputs", "gated_residual",
           "gated_residual_reference", "mamba_direction", "mamba_mixer", "mamba_mixer_reference", "rms_norm_modulate",
           "rms_norm_modulate_reference", "selective_scan", "selective_scan_reference"]

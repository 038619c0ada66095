"""Custom ops used by the models; importing this package registers them with torch.

The selective scan runs the fused kernels of libdimexport_scan.so (CPU and CUDA) when it is built
(dimexport/lib/ or $DIMEXPORT_SCAN_LIB), else the pure-PyTorch reference.
"""

from . import _native
from .selective_scan import (
    OP_NAME,
    check_scan_inputs,
    selective_scan,
    selective_scan_reference,
)

_native.register_kernels()

__all__ = ["OP_NAME", "check_scan_inputs", "selective_scan", "selective_scan_reference"]

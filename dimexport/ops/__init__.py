"""Custom ops used by the models; importing this package registers them with torch.

On CUDA tensors the selective scan runs the fused kernel of libdimexport_scan.so when it is built
(dimexport/lib/ or $DIMEXPORT_SCAN_LIB), else the pure-PyTorch reference.
"""

from . import _native
from .selective_scan import (
    OP_NAME,
    check_scan_inputs,
    selective_scan,
    selective_scan_reference,
)

_native.register_cuda_kernel()

__all__ = ["OP_NAME", "check_scan_inputs", "selective_scan", "selective_scan_reference"]

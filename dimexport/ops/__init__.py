"""Custom ops used by the models; importing this package registers them with torch."""

from .selective_scan import (
    OP_NAME,
    check_scan_inputs,
    selective_scan,
    selective_scan_reference,
)

__all__ = ["OP_NAME", "check_scan_inputs", "selective_scan", "selective_scan_reference"]

"""Where dimexport's native libraries are: the one owner of their names, variables and install folder.

`cmake --install` puts them in dimexport/lib/; an environment variable points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

LIB_DIR = Path(__file__).resolve().parent / "lib"
SCAN_ENV, SCAN_FILE = "DIMEXPORT_SCAN_LIB", "libdimexport_scan.so"
TRT_PLUGIN_ENV, TRT_PLUGIN_FILE = "DIMEXPORT_TRT_PLUGIN_LIB", "libdimexport_trt_plugin.so"
# The op's C++ kernels (always beside the scan library they link); DIMEXPORT_TORCH_OPS=0 keeps them unloaded.
TORCH_OPS_ENV, TORCH_OPS_FILE = "DIMEXPORT_TORCH_OPS", "libdimexport_torch_ops.so"


def expected_path(env_var: str, filename: str) -> Path:
    """Where the library is looked for: $env_var if set, else dimexport/lib/<filename>."""
    return Path(os.environ.get(env_var) or LIB_DIR / filename)


def native_library(env_var: str, filename: str) -> Path | None:
    """The built library, or None when it is not at its expected path."""
    path = expected_path(env_var, filename)
    return path if path.is_file() else None


def scan_library_path() -> Path | None:
    return native_library(SCAN_ENV, SCAN_FILE)


def torch_ops_library_path() -> Path | None:
    path = LIB_DIR / TORCH_OPS_FILE
    return path if path.is_file() else None


def trt_plugin_library_path() -> Path | None:
    return native_library(TRT_PLUGIN_ENV, TRT_PLUGIN_FILE)

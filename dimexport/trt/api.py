"""The one place that touches TensorRT's Python API: which module, its logger, dtypes and the plugin registry.

Works with `tensorrt` 10.x and 11.x and with `tensorrt_rtx`; all three share the calls used here. Code that
needs TensorRT imports it through `load()`, so a missing install is always the same clear exit-4 message.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from ..errors import EnvironmentProblem
from ..export import scan_node

MODULES = ("tensorrt", "tensorrt_rtx")
MODULE_ENV = "DIMEXPORT_TRT_MODULE"
INSTALL_HINT = (
    "install TensorRT 10 or 11 for your CUDA major (pip install tensorrt-cu13, or tensorrt-cu12), or TensorRT-RTX "
    "for RTX GPUs (pip install tensorrt-rtx-cu13); `dimexport doctor` shows what is found"
)
SEVERITY = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")
# TensorRT DataType member name -> torch dtype (pybind enums expose .name; bf16 has no numpy type).
TORCH_DTYPES = {
    "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
    "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8,
}
PLUGIN_KEY = (scan_node.OP_TYPE, scan_node.PLUGIN_VERSION, scan_node.PLUGIN_NAMESPACE)


def load(module: str | None = None) -> ModuleType:
    """Import TensorRT: `module`, else $DIMEXPORT_TRT_MODULE, else `tensorrt`, then `tensorrt_rtx`."""
    wanted = module or os.environ.get(MODULE_ENV)
    names = (wanted,) if wanted else MODULES
    problems = []
    for name in names:
        if name not in MODULES:
            raise EnvironmentProblem(f"unknown TensorRT module {name!r} (from --trt-module or ${MODULE_ENV}); use one of {', '.join(MODULES)}")
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            problems.append(f"{name} is not installed")
        except Exception as exc:  # a broken install raises more than ImportError (missing libnvinfer, CUDA mismatch)
            problems.append(f"{name} is installed but does not import ({type(exc).__name__}: {str(exc)[:200]})")
    raise EnvironmentProblem(f"TensorRT is needed here and not usable: {'; '.join(problems)}. To fix: {INSTALL_HINT}")


@dataclass(frozen=True)
class TrtInfo:
    module: str
    version: str

    @classmethod
    def of(cls, trt: ModuleType) -> "TrtInfo":
        return cls(trt.__name__, trt.__version__)

    def label(self) -> str:
        """'trt10.14.1' or 'trtrtx1.7.1' (engine names carry it)."""
        prefix = "trtrtx" if self.module == "tensorrt_rtx" else "trt"
        return prefix + ".".join(self.version.split(".")[:3])


def gpu_sm(device: int | None = None) -> str:
    """'sm_90' for the current CUDA device; an exit-4 error without one (TensorRT needs a GPU to build and run)."""
    if not torch.cuda.is_available():
        raise EnvironmentProblem("TensorRT needs a CUDA GPU and torch sees none; run on a GPU machine")
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


@functools.cache
def logger(trt: ModuleType):
    """The process's one TensorRT logger (TensorRT keeps the first logger it is given for global messages,
    the plugin's included, so every builder and runtime here shares this one; it lives as long as the process).

    It keeps ERROR messages in `errors` (quoted in dimexport's exceptions), writes everything up to INFO
    (VERBOSE with DIMEXPORT_TRT_VERBOSE=1) to `log_file` when set, and echoes messages at or above
    `echo_level` to stderr (-1: none; the build child sets 1 so its errors reach the parent)."""
    verbose = os.environ.get("DIMEXPORT_TRT_VERBOSE") == "1"

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []  # the last 20
            self.count = 0  # errors logged so far
            self.log_file: Path | None = None
            self.echo_level = -1
            self._lock = threading.Lock()
            self._t0 = time.perf_counter()

        def log(self, severity, msg) -> None:  # noqa: A003 - TensorRT's name
            level = int(severity)
            if level > (4 if verbose else 3):
                return
            line = f"[{time.perf_counter() - self._t0:8.2f}s] [{SEVERITY[level] if level < 5 else level}] {msg}"
            with self._lock:
                if level <= 1:
                    self.errors.append(str(msg))
                    del self.errors[:-20]
                    self.count += 1
                if self.log_file:
                    with open(self.log_file, "a") as f:
                        f.write(line + "\n")
            if level <= self.echo_level:
                print(line, file=sys.stderr, flush=True)

        def errors_since(self, mark: int) -> str:
            """The last three errors logged after `self.count` was `mark`, joined for a message."""
            new = min(self.count - mark, len(self.errors), 3)
            return " | ".join(self.errors[-new:]) if new > 0 else "no error logged"

    return Logger()


def registry_of(trt: ModuleType, owner=None):
    """The plugin registry of a builder or runtime when it has one, else the process-wide registry."""
    getter = getattr(owner, "get_plugin_registry", None)
    return getter() if getter else trt.get_plugin_registry()


def registered_creators(registry) -> list[str]:
    """'name/version/namespace' of every creator the registry holds (for error messages)."""
    out = []
    for creator in registry.all_creators:
        out.append(f"{creator.name}/{creator.plugin_version}/{creator.plugin_namespace or '(no namespace)'}")
    return sorted(out)


def find_scan_creator(registry):
    return registry.get_creator(*PLUGIN_KEY)  # TensorRT 10+, 11 and TensorRT-RTX; V3 creators only


def load_plugin_library(trt: ModuleType, registry, path: Path) -> None:
    """Register the scan plugin from `path` unless the registry already has it; exit-4 errors otherwise."""
    if find_scan_creator(registry) is not None:
        return
    if not path.is_file():
        raise EnvironmentProblem(f"the TensorRT plugin library {path} does not exist; build it (plugins_trt/README.md)")
    handle = registry.load_library(str(path))
    if handle is None or find_scan_creator(registry) is None:
        raise EnvironmentProblem(
            f"loading {path} did not register {'/'.join(PLUGIN_KEY)} (registered: "
            f"{', '.join(registered_creators(registry)) or 'none'}); is it the dynamic library "
            f"libdimexport_trt_plugin.so built against this TensorRT's major version ({trt.__version__})?"
        )


def torch_dtype(trt_dtype) -> torch.dtype:
    name = getattr(trt_dtype, "name", str(trt_dtype).rpartition(".")[2])
    if name not in TORCH_DTYPES:
        raise EnvironmentProblem(f"TensorRT tensor type {name} has no torch equivalent here")
    return TORCH_DTYPES[name]

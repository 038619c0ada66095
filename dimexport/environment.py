"""What the environment offers: versions, GPU, providers, TensorRT, the native scan library."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
from dataclasses import asdict, dataclass, field

from .libraries import SCAN_FILE, TRT_PLUGIN_ENV, TRT_PLUGIN_FILE, scan_library_path, trt_plugin_library_path


@dataclass
class Component:
    name: str
    found: bool
    version: str = ""
    detail: str = ""


@dataclass
class Report:
    components: list[Component] = field(default_factory=list)

    def get(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict:
        return {c.name: asdict(c) for c in self.components}


def _module(name: str, dist: str | None = None) -> Component:
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError:
        return Component(name, False, detail="not installed")
    except Exception as exc:  # a broken install raises more than ImportError
        return Component(name, False, detail=f"broken install: {type(exc).__name__}: {exc}"[:200])
    version = getattr(mod, "__version__", "")
    if not version and dist:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return Component(name, True, version)


def probe() -> Report:
    """Collect everything `dimexport doctor` shows; never raises."""
    report = Report([Component("python", True, platform.python_version(), platform.platform())])
    torch_c = _module("torch")
    report.components.append(torch_c)
    gpu = Component("gpu", False, detail="no CUDA device visible to torch")
    if torch_c.found:
        import torch

        torch_c.detail = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
        if torch.cuda.is_available():
            cap = torch.cuda.get_device_capability()
            gpu = Component("gpu", True, f"sm_{cap[0]}{cap[1]}", torch.cuda.get_device_name())
    report.components.append(gpu)
    report.components.append(_module("onnx"))
    report.components.append(_module("onnxscript"))
    ort = _module("onnxruntime")
    if ort.found:
        import onnxruntime

        ort.detail = "providers: " + ", ".join(onnxruntime.get_available_providers())
    report.components.append(ort)
    report.components.append(_module("onnxruntime_extensions"))
    report.components.append(_module("polygraphy"))
    report.components.append(_module("tensorrt"))
    report.components.append(_module("tensorrt_rtx", "tensorrt-rtx-cu13"))
    report.components.append(_scan_library())
    report.components.append(_trt_plugin_library())
    return report


def _trt_plugin_library() -> Component:
    path = trt_plugin_library_path()
    if path is None:
        return Component(
            "trt_plugin_library", False,
            detail=f"{TRT_PLUGIN_FILE} not built (cmake with TensorRT headers; see plugins_trt/README.md) or set {TRT_PLUGIN_ENV}",
        )
    return Component("trt_plugin_library", True, detail=str(path))


def _scan_library() -> Component:
    """Where the scan runs: the library's CPU kernel (and CUDA kernel with a GPU), else the slow reference."""
    path = scan_library_path()
    if path is None:
        return Component("scan_library", False, detail=f"{SCAN_FILE} not built: the scan runs the slow pure-PyTorch "
                         "reference on CPU and GPU; `pip install -e .` in the checkout builds it")
    from .errors import EnvironmentProblem
    from .ops import _native

    try:
        _native.load()
    except EnvironmentProblem as exc:
        return Component("scan_library", False, detail=f"{exc} (the scan runs the slow pure-PyTorch reference)")
    if not _native.has_cuda():
        cuda = "built without CUDA: CUDA tensors run the slow reference (reinstall where nvcc is found)"
    else:
        cuda = "CUDA kernel on the GPU" if _native.available() else "CUDA kernel (no GPU visible)"
    problem = _native.torch_ops_problem()
    calls = ("called by the ops' C++ kernels (scan and fused block ops)" if problem is None else
             f"scan called through ctypes, fused block ops unfused ({problem})")
    return Component("scan_library", True, detail=f"{path}: CPU kernel; {cuda}; {calls}")

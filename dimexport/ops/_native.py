"""ctypes binding of libdimexport_scan.so, the fused CUDA selective-scan kernel (plugins_trt/src).

The same library is linked by the TensorRT plugin, so the PyTorch op and the engine run one kernel.
Build it with ``cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build build -j &&
cmake --install build --prefix .`` (this places ``dimexport/lib/libdimexport_scan.so``), or point
``DIMEXPORT_SCAN_LIB`` at a built copy. Without the library, CUDA tensors fall back to the pure-torch
reference.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor

from ..libraries import (SCAN_ENV, SCAN_FILE, TORCH_OPS_ENV, TORCH_OPS_FILE, expected_path, scan_library_path,
                         torch_ops_library_path)
from ..errors import EnvironmentProblem

ABI_VERSION = 8
_BUILD_HINT = (
    "reinstall dimexport from its checkout (`pip install -e .` builds it), or set "
    f"{SCAN_ENV} to a {SCAN_FILE} built from the same source"
)
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_ENTRIES = ("dimex_scan_has_cuda", "dimex_selective_scan_fwd", "dimex_selective_scan_fwd_cpu", "dimex_selective_scan_bwd_cpu",
            "dimex_selective_scan_bwd", "dimex_selective_scan_bwd_workspace_size",
            "dimex_selective_scan_workspace_size", "dimex_status_string", "dimex_causal_conv1d_silu_fwd",
            "dimex_causal_conv1d_silu_fwd_cpu", "dimex_rms_norm_modulate_fwd", "dimex_rms_norm_modulate_fwd_cpu",
            "dimex_gated_residual_fwd", "dimex_gated_residual_fwd_cpu")
# The GPU backward's limit (dimexport_scan.h); larger states differentiate the reference.
MAX_DSTATE_CUDA_BWD = 32


class ScanParams(ctypes.Structure):
    """Mirror of dimex_scan_params (plugins_trt/include/dimexport_scan.h); field order is the ABI."""

    _fields_ = [
        ("batch", ctypes.c_int64),
        ("dim", ctypes.c_int64),
        ("seqlen", ctypes.c_int64),
        ("dstate", ctypes.c_int64),
        ("ngroups", ctypes.c_int64),
        ("dtype", ctypes.c_int),
        ("u", ctypes.c_void_p),
        ("u_stride", ctypes.c_int64 * 3),
        ("delta", ctypes.c_void_p),
        ("delta_stride", ctypes.c_int64 * 3),
        ("A", ctypes.c_void_p),
        ("B", ctypes.c_void_p),
        ("B_stride", ctypes.c_int64 * 4),
        ("C", ctypes.c_void_p),
        ("C_stride", ctypes.c_int64 * 4),
        ("D", ctypes.c_void_p),
        ("z", ctypes.c_void_p),
        ("z_stride", ctypes.c_int64 * 3),
        ("delta_bias", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("out_stride", ctypes.c_int64 * 3),
        ("delta_softplus", ctypes.c_int32),
        ("reverse", ctypes.c_int32),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_size_t),
    ]


class BwdParams(ctypes.Structure):
    """Mirror of dimex_scan_bwd_params; field order is the ABI."""

    _fields_ = [
        ("fwd", ScanParams),
        ("grad_out", ctypes.c_void_p),
        ("grad_out_stride", ctypes.c_int64 * 3),
        ("g_u", ctypes.c_void_p),
        ("g_delta", ctypes.c_void_p),
        ("g_z", ctypes.c_void_p),
        ("g_A", ctypes.c_void_p),
        ("g_B", ctypes.c_void_p),
        ("g_C", ctypes.c_void_p),
        ("g_D", ctypes.c_void_p),
        ("g_delta_bias", ctypes.c_void_p),
    ]


@functools.lru_cache(maxsize=None)
def load() -> ctypes.CDLL:
    """Load the library once and check its ABI version, so a stale build fails loudly, not wrongly."""
    path = scan_library_path()
    if path is None:
        where = expected_path(SCAN_ENV, SCAN_FILE)
        raise EnvironmentProblem(f"dimexport scan library not found at {where}; {_BUILD_HINT}")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise EnvironmentProblem(f"cannot load the dimexport scan library {path}: {exc}; {_BUILD_HINT}") from exc
    try:
        lib.dimex_scan_abi_version.restype = ctypes.c_int
        lib.dimex_scan_abi_version.argtypes = []
        version = lib.dimex_scan_abi_version()
    except AttributeError as exc:  # a broken or foreign build: missing entry points
        raise EnvironmentProblem(f"{path} is not a complete dimexport scan library ({exc}); {_BUILD_HINT}") from exc
    if version != ABI_VERSION:
        raise EnvironmentProblem(
            f"{path} implements scan ABI version {version}, this package needs {ABI_VERSION}; "
            f"rebuild it from this checkout ({_BUILD_HINT})"
        )
    missing = [name for name in _ENTRIES if not hasattr(lib, name)]
    if missing:
        raise EnvironmentProblem(f"{path} lacks {', '.join(missing)}; {_BUILD_HINT}")
    lib.dimex_scan_has_cuda.restype = ctypes.c_int
    lib.dimex_scan_has_cuda.argtypes = []
    lib.dimex_selective_scan_fwd.restype = ctypes.c_int
    lib.dimex_selective_scan_fwd.argtypes = [ctypes.POINTER(ScanParams), ctypes.c_void_p]
    lib.dimex_selective_scan_bwd_cpu.restype = ctypes.c_int
    lib.dimex_selective_scan_bwd_cpu.argtypes = [ctypes.POINTER(BwdParams), ctypes.c_int]
    lib.dimex_selective_scan_bwd.restype = ctypes.c_int
    lib.dimex_selective_scan_bwd.argtypes = [ctypes.POINTER(BwdParams), ctypes.c_void_p]
    lib.dimex_selective_scan_bwd_workspace_size.restype = ctypes.c_size_t
    lib.dimex_selective_scan_bwd_workspace_size.argtypes = [ctypes.POINTER(BwdParams)]
    lib.dimex_selective_scan_fwd_cpu.restype = ctypes.c_int
    lib.dimex_selective_scan_fwd_cpu.argtypes = [ctypes.POINTER(ScanParams), ctypes.c_int]
    lib.dimex_selective_scan_workspace_size.restype = ctypes.c_size_t
    lib.dimex_selective_scan_workspace_size.argtypes = [ctypes.POINTER(ScanParams)]
    lib.dimex_status_string.restype = ctypes.c_char_p
    lib.dimex_status_string.argtypes = [ctypes.c_int]
    return lib


@functools.lru_cache(maxsize=None)
def loads() -> bool:
    """True if the library is built and loads with the right ABI (cached); its CPU kernel then runs here."""
    if scan_library_path() is None:
        return False
    try:
        load()
    except EnvironmentProblem:
        return False
    return True


def has_cuda() -> bool:
    """True if the library loads and was built with its CUDA kernel (a CUDA compiler at install time)."""
    return loads() and bool(load().dimex_scan_has_cuda())


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True if the CUDA kernel can run here: the library has it and torch sees a CUDA device (cached)."""
    return torch.cuda.is_available() and has_cuda()


def _strides(t: Tensor, n: int) -> "ctypes.Array[ctypes.c_int64]":
    return (ctypes.c_int64 * n)(*t.stride())


def _ptr(t: Optional[Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _params(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
            delta_bias: Optional[Tensor], delta_softplus: bool, reverse: bool, out: Tensor) -> ScanParams:
    """The ABI's description of one scan; A, D and delta_bias must be contiguous, the rest may have any strides."""
    batch, dim, seqlen = u.shape
    return ScanParams(
        batch=batch,
        dim=dim,
        seqlen=seqlen,
        dstate=A.shape[1],
        ngroups=B.shape[1],
        dtype=_DTYPES[u.dtype],
        u=_ptr(u),
        u_stride=_strides(u, 3),
        delta=_ptr(delta),
        delta_stride=_strides(delta, 3),
        A=_ptr(A),
        B=_ptr(B),
        B_stride=_strides(B, 4),
        C=_ptr(C),
        C_stride=_strides(C, 4),
        D=_ptr(D),
        z=_ptr(z),
        z_stride=_strides(z, 3) if z is not None else (ctypes.c_int64 * 3)(),
        delta_bias=_ptr(delta_bias),
        out=_ptr(out),
        out_stride=_strides(out, 3),
        delta_softplus=int(bool(delta_softplus)),
        reverse=int(bool(reverse)),
    )


def _prepare(u: Tensor, A: Tensor, D: Optional[Tensor], delta_bias: Optional[Tensor], out: Optional[Tensor]):
    """The small fp32 parameters made contiguous (the ABI wants them so) and the output tensor."""
    from .selective_scan import output_like

    A, D, delta_bias = (None if t is None else t.contiguous() for t in (A, D, delta_bias))
    if out is None:
        out = output_like(u)
    return A, D, delta_bias, out


def _check(lib: ctypes.CDLL, status: int, entry: str) -> None:
    if status != 0:
        raise RuntimeError(f"{entry} failed: {lib.dimex_status_string(status).decode()}")


def scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    reverse: bool,
    out: Optional[Tensor] = None,
    split: bool = True,
) -> Tensor:
    """Run the native kernel on the current stream; inputs are validated by the op, any strides work.

    ``out`` (shape (B, D, L), u's dtype, any strides) is written in place when given, so that tests
    can poison it first; otherwise one in u's layout (output_like). The workspace that lets the kernel
    split the sequence across CTAs comes from torch's caching allocator on the current stream (graph-safe);
    ``split=False`` passes none, which forces the one-pass kernel.
    """
    lib = load()
    A, D, delta_bias, out = _prepare(u, A, D, delta_bias, out)
    params = _params(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, out)
    nbytes = lib.dimex_selective_scan_workspace_size(ctypes.byref(params)) if split else 0
    # Kept alive until the call has been enqueued; the allocator's stream order protects it after that.
    workspace = torch.empty(nbytes, dtype=torch.uint8, device=u.device) if nbytes else None
    if workspace is not None:
        params.workspace, params.workspace_bytes = workspace.data_ptr(), nbytes
    with torch.cuda.device(u.device):
        stream = torch.cuda.current_stream(u.device).cuda_stream
        status = lib.dimex_selective_scan_fwd(ctypes.byref(params), ctypes.c_void_p(stream))
    _check(lib, status, "dimex_selective_scan_fwd")
    return out


def scan_cpu(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    reverse: bool,
    out: Optional[Tensor] = None,
    threads: Optional[int] = None,
) -> Tensor:
    """Run the CPU kernel on host tensors (any strides) with `threads` OpenMP threads (default: torch's
    intra-op thread count). ctypes drops the GIL for the call."""
    lib = load()
    A, D, delta_bias, out = _prepare(u, A, D, delta_bias, out)
    params = _params(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, out)
    status = lib.dimex_selective_scan_fwd_cpu(ctypes.byref(params), threads or torch.get_num_threads())
    _check(lib, status, "dimex_selective_scan_fwd_cpu")
    return out


def scan_backward(
    grad_out: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    reverse: bool,
    threads: Optional[int] = None,
) -> tuple[Optional[Tensor], ...]:
    """The gradients of every input (None for absent optional ones), each in its input's dtype, from the native
    backward of the tensors' device: the CPU kernel (`threads` OpenMP threads, default torch's intra-op count) or
    the CUDA kernel on the current stream (dstate <= MAX_DSTATE_CUDA_BWD; its scratch from torch's caching
    allocator). The states are recomputed from the inputs (no activations saved); both are deterministic."""
    lib = load()
    A, D, delta_bias, _ = _prepare(u, A, D, delta_bias, u)  # the forward's `out` is not used by the backward
    inputs = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)  # the op's argument order
    grads = {k: None if v is None else torch.empty(v.shape, device=u.device) for k, v in inputs.items()}  # fp32
    grad_out = grad_out.to(u.dtype)
    params = BwdParams(
        fwd=_params(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, u),
        grad_out=_ptr(grad_out), grad_out_stride=_strides(grad_out, 3),
        **{f"g_{k}": _ptr(v) for k, v in grads.items()},
    )
    if u.device.type == "cpu":
        status = lib.dimex_selective_scan_bwd_cpu(ctypes.byref(params), threads or torch.get_num_threads())
        _check(lib, status, "dimex_selective_scan_bwd_cpu")
    else:
        nbytes = lib.dimex_selective_scan_bwd_workspace_size(ctypes.byref(params))
        workspace = torch.empty(max(nbytes, 16), dtype=torch.uint8, device=u.device)
        params.fwd.workspace, params.fwd.workspace_bytes = workspace.data_ptr(), nbytes
        with torch.cuda.device(u.device):
            stream = torch.cuda.current_stream(u.device).cuda_stream
            status = lib.dimex_selective_scan_bwd(ctypes.byref(params), ctypes.c_void_p(stream))
        _check(lib, status, "dimex_selective_scan_bwd")
    return tuple(None if g is None else g.to(inputs[k].dtype) for k, g in grads.items())


def backward_available(u: Tensor, dstate: int) -> bool:
    """Whether scan_backward runs natively for tensors like `u` with `dstate` states."""
    if _forced_reference:
        return False
    if u.device.type == "cpu":
        return loads()
    return u.device.type == "cuda" and available() and dstate <= MAX_DSTATE_CUDA_BWD


@functools.lru_cache(maxsize=None)
def warn_reference(device_type: str) -> None:
    """Say once per device type that the scan runs the slow reference, why, and how to get the kernel."""
    if device_type == "cuda" and loads():
        why = f"{scan_library_path()} was built without CUDA"
    else:
        try:
            load()
            return  # the library loads: only CUDA-less builds reach here
        except EnvironmentProblem as exc:
            why = str(exc)
    warnings.warn(f"dimexport: the selective scan on {device_type} runs the slow pure-PyTorch reference: {why}",
                  RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=None)
def torch_ops_problem() -> Optional[str]:
    """Load the C++ operator kernels (libdimexport_torch_ops.so) once; None when they now serve the op's CPU and CUDA
    keys, else why not. They need the scan library from dimexport/lib, a build for this torch version, and (with a
    GPU) the CUDA kernel, because only the Python kernels can fall back to the reference."""
    if os.environ.get(TORCH_OPS_ENV, "1") == "0":
        return f"switched off by {TORCH_OPS_ENV}=0"
    if os.environ.get(SCAN_ENV):
        return f"{SCAN_ENV} selects another scan library: the op calls it through ctypes"
    path = torch_ops_library_path()
    if path is None:
        return (f"{TORCH_OPS_FILE} not built (torch was not importable when dimexport was built; reinstall with "
                "`pip install --no-build-isolation -e .`)")
    stale = stamp_problem(path)
    if stale is not None:
        return stale
    if not loads():
        return "the scan library does not load"
    if torch.cuda.is_available() and not has_cuda():
        return "the scan library has no CUDA kernel: CUDA tensors need the Python kernels' reference fallback"
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as exc:
        return f"cannot load {path}: {exc}"
    return None


def stamp_problem(path: Path) -> Optional[str]:
    """Why the C++ operator at `path` must not be loaded here, from the stamp its build wrote beside it ("<torch
    version>\nscan ABI <n>"): another torch (C++ ABI) or another scan ABI (parameter struct); None when it fits."""
    stamp = path.with_suffix(".torch_version")
    fix = "reinstall dimexport (`pip install --no-build-isolation -e .`)"
    if not stamp.is_file():
        return f"{path} has no build stamp {stamp.name}; {fix}"
    version, abi = (stamp.read_text().splitlines() + ["", ""])[:2]
    if version != torch.__version__:
        return f"{path} was built for torch {version}, this is torch {torch.__version__}; {fix}"
    if abi != f"scan ABI {ABI_VERSION}":
        return f"{path} was built for another scan ABI ({abi or 'unknown'}; this package needs {ABI_VERSION}); {fix}"
    return None


def _python_kernel(device_type: str, native: Callable[[], bool], run: Callable[..., Tensor],
                   reference: bool = False) -> Callable[..., Tensor]:
    """The op's kernel for one device type in Python: checks, then the native kernel through ctypes when `native()`
    (looked up at each call), else the pure-torch reference with a warning that says why (once); `reference`: always
    the reference, as asked, without a warning."""
    from .selective_scan import check_scan_inputs, in_layout_of, selective_scan_reference

    def impl(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
             z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = True,
             reverse: bool = False) -> Tensor:
        check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
        if not reference and native():
            return run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
        if not reference:
            warn_reference(device_type)
        return in_layout_of(u, selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse))

    return impl


_PYTHON_KERNELS = {"cpu": (lambda: loads(), scan_cpu), "cuda": (lambda: available(), scan_cuda)}
_forced_reference = 0  # > 0 inside python_kernels(reference=True): the backward differentiates the reference too


def register_kernels() -> None:
    """Give torch.ops.dimexport.selective_scan its CPU and CUDA kernels: the C++ operator's when it loads (no Python on
    the call path), else Python ones calling the native kernels through ctypes, which fall back to the reference when
    the library is missing, does not load, or (CUDA) was built without CUDA, so every tensor always works.
    The fused ops (causal_conv1d_silu, rms_norm_modulate, gated_residual, mamba_mixer) have no ctypes path: the C++
    operator's kernels, else their references."""
    if torch_ops_problem() is None:
        return
    from .selective_scan import selective_scan

    for device_type, (native, run) in _PYTHON_KERNELS.items():
        selective_scan.register_kernel(device_type)(_python_kernel(device_type, native, run))


@contextlib.contextmanager
def python_kernels(reference: bool = False) -> Iterator[None]:
    """Inside the block the ops run Python kernels registered over the current ones (the dispatcher restores those
    after it): the scan's ctypes path to the native kernels, or with `reference` the pure-torch reference, forward
    and backward; the fused ops (causal conv + SiLU, RMSNorm + modulation, gated residual) their references. Tests
    and benchmarks compare the kernels and their call paths against these. The mixer runs its composition, through
    the kernels registered here."""
    from . import conv, mixer, norm, residual

    global _forced_reference
    lib = torch.library.Library("dimexport", "IMPL")
    with warnings.catch_warnings():  # "overriding a previously registered kernel" is the point here
        warnings.simplefilter("ignore")
        for device_type, (native, run) in _PYTHON_KERNELS.items():
            lib.impl("selective_scan", _python_kernel(device_type, native, run, reference), device_type.upper())
            for fused in (conv, norm, residual, mixer):
                lib.impl(fused.OP_NAME.split("::")[1], fused.reference_kernel, device_type.upper())
    _forced_reference += reference
    try:
        yield
    finally:
        _forced_reference -= reference
        lib._destroy()

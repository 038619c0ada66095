"""The selective-scan op against the float64 sequential oracle, its errors, fake kernel and gradients."""

from __future__ import annotations

import contextlib

import pytest
import torch

from dimexport.errors import InputError
from dimexport.ops import _native, selective_scan
from dimexport.ops.oracle import selective_scan_oracle


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("seqlen", [1, 7, 366, 1230, 4494])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("with_z", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_op_matches_fp64_oracle(scan_inputs, seqlen, groups, with_z, reverse):
    args = scan_inputs(2, 8, seqlen, groups=groups, with_z=with_z, seed=seqlen + groups)
    out = torch.ops.dimexport.selective_scan(**args, delta_softplus=True, reverse=reverse)
    ref = selective_scan_oracle(**args, delta_softplus=True, reverse=reverse)
    assert out.shape == (2, 8, seqlen) and out.dtype == torch.float32
    assert rel_err(out, ref) <= 1e-6


def test_long_memory_channels(scan_inputs):
    """dt = 1e-3 with A = -1 remembers ~1000 tokens: rounding must not drift over L = 4494."""
    args = scan_inputs(1, 4, 4494, dt_max=1.1e-3, seed=3)
    ref = selective_scan_oracle(**args)
    assert rel_err(selective_scan(**args), ref) <= 1e-6


def test_reverse_equals_flipped_forward(scan_inputs):
    args = scan_inputs(2, 6, 50, groups=2, seed=4)
    flipped = {k: (v.flip(-1) if k in ("u", "delta", "B", "C", "z") else v) for k, v in args.items()}
    torch.testing.assert_close(selective_scan(**args, reverse=True), selective_scan(**flipped).flip(-1))


def test_no_softplus_no_bias_no_d(scan_inputs):
    args = scan_inputs(1, 4, 33, seed=5)
    args.update(delta=args["delta"].abs() * 0.05, D=None, delta_bias=None)
    out = selective_scan(**args, delta_softplus=False)
    assert rel_err(out, selective_scan_oracle(**args, delta_softplus=False)) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_io_rounds_once(scan_inputs, dtype):
    args = scan_inputs(2, 8, 366, dtype=dtype, seed=6)
    out = selective_scan(**args)
    assert out.dtype == dtype
    eps = torch.finfo(dtype).eps
    assert rel_err(out, selective_scan_oracle(**args)) <= eps  # fp32 math, one rounding of the output


def test_strided_token_major_views(scan_inputs):
    """The models pass transposed views of (B, L, D) tensors; results must not depend on layout."""
    args = scan_inputs(2, 8, 40, seed=7)
    views = {k: (v.transpose(-1, -2).contiguous().transpose(-1, -2) if k in ("u", "delta", "z") else v) for k, v in args.items()}
    assert views["u"].stride(-1) != 1
    torch.testing.assert_close(selective_scan(**views), selective_scan(**args), rtol=0, atol=0)


@pytest.mark.parametrize("path", ["C++ operator", "ctypes", "reference", "fake"])
@pytest.mark.parametrize("token_major", [False, True])
def test_output_has_the_layout_of_u(scan_inputs, path, token_major):
    """Token-major u (the mixer's conv output) gives token-major (B, L, D) storage, so out_proj reads the scan's output
    without a transposing copy; contiguous u gives contiguous (B, D, L). Every kernel path agrees."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dimexport.ops.testing import token_major_views, torch_ops_or_skip

    if path == "C++ operator":
        torch_ops_or_skip()
    if path == "ctypes" and not _native.loads():
        pytest.skip("libdimexport_scan.so is not built")
    args = scan_inputs(2, 8, 40, seed=9)
    if token_major:
        args = token_major_views(args)
    with contextlib.ExitStack() as stack:
        if path in ("ctypes", "reference"):
            stack.enter_context(_native.python_kernels(reference=path == "reference"))
        if path == "fake":
            mode = stack.enter_context(FakeTensorMode())
            args = {k: None if v is None else mode.from_tensor(v) for k, v in args.items()}
        out = selective_scan(**args)
    assert out.transpose(1, 2).is_contiguous() if token_major else out.is_contiguous()


def test_fake_kernel_shapes(scan_inputs):
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = scan_inputs(3, 8, 21, groups=2)
    with FakeTensorMode() as mode:
        fake = {k: (mode.from_tensor(v) if v is not None else None) for k, v in args.items()}
        out = selective_scan(**fake)
    assert out.shape == (3, 8, 21) and out.dtype == torch.float32


def test_gradients_match_oracle_autograd(scan_inputs):
    args = scan_inputs(1, 4, 24, seed=8)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    leaves = {k: args[k].clone().requires_grad_() for k in names}
    ref_leaves = {k: args[k].double().clone().requires_grad_() for k in names}
    grad = torch.randn(1, 4, 24)
    torch.autograd.backward(selective_scan(**leaves), grad)
    torch.autograd.backward(selective_scan_oracle(**ref_leaves), grad.double())
    for k in names:
        assert rel_err(leaves[k].grad, ref_leaves[k].grad) <= 1e-5, k


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(u=torch.zeros(2, 8)), "selective_scan: u must be (batch, dim, seqlen), got shape (2, 8)"),
        (dict(A=torch.zeros(4, 16)), "selective_scan: A must be (dim=8, dstate), got shape (4, 16)"),
        (dict(D=torch.zeros(8, dtype=torch.float16)), "selective_scan: D must be float32 (got torch.float16); keep it in fp32"),
        (dict(B=torch.zeros(2, 3, 16, 10)), "selective_scan: B and C need the same number of groups dividing dim=8, got 3 and 1"),
        (dict(delta=torch.zeros(2, 8, 9)), "selective_scan: delta must match u: shape (2, 8, 10) dtype torch.float32, got shape (2, 8, 9) dtype torch.float32"),
        (dict(C=torch.zeros(2, 1, 16, 10, dtype=torch.float16)), "selective_scan: C has dtype torch.float16; it must match u (torch.float32)"),
        (dict(A=torch.zeros(8, 65)), "selective_scan: dstate=65 is outside 1..64"),
    ],
)
@pytest.mark.parametrize("python", [False, True], ids=["registered-kernels", "python-kernels"])
def test_bad_inputs_are_named(scan_inputs, change, message, python):
    """The same words from the C++ operator's checks (ValueError) and the Python kernels' (InputError, a ValueError)."""
    args = scan_inputs(2, 8, 10)
    args.update(change)
    with _native.python_kernels() if python else contextlib.nullcontext():
        with pytest.raises(InputError if python else ValueError) as exc:
            selective_scan(**args)
    assert str(exc.value) == message


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_on_cuda_matches_oracle(scan_inputs, dtype):
    args = scan_inputs(2, 64, 1230, groups=2, dtype=dtype, device="cuda", seed=11)
    out = selective_scan(**args, reverse=True)
    ref = selective_scan_oracle(**args, reverse=True)
    assert out.is_cuda and rel_err(out, ref) <= (1e-6 if dtype == torch.float32 else torch.finfo(dtype).eps)


def test_missing_library_warns_once_and_names_the_fix(tmp_path):
    """Without the native library the op still works (the reference), but says so, with the install command."""
    import os
    import subprocess
    import sys

    script = ("import torch, warnings; from dimexport.ops import selective_scan; "
              "from dimexport.ops.testing import realistic_scan_inputs; warnings.simplefilter('always'); "
              "a = realistic_scan_inputs(1, 4, 8); [selective_scan(**a) for _ in range(3)]")
    env = {**os.environ, "DIMEXPORT_SCAN_LIB": str(tmp_path / "missing.so")}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    lines = [line for line in res.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(lines) == 1, res.stderr
    assert ("the selective scan on cpu runs the slow pure-PyTorch reference: dimexport scan library not found at "
            f"{tmp_path / 'missing.so'}; reinstall dimexport from its checkout (`pip install -e .` builds it)") in lines[0]

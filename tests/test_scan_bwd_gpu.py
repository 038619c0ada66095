"""GPU tests of the selective scan's CUDA backward (libdimexport_scan.so, dimex_selective_scan_bwd).

Run on the device machine: ``python3 -m pytest -m gpu -q tests/test_scan_bwd_gpu.py``.

Every input's gradient is compared with autograd through the float64 oracle on the same (already rounded) inputs:
a seeded sweep of random shapes (lengths 1..4500, odd channel counts, dstate 1..32, groups, every flag, both
directions, all I/O dtypes); strided (token-major) views; bit-identical repeats (no atomics); gradcheck; the op's
autograd reaching the kernel (also inside a CUDA graph); and 20 training steps of a small DiM whose loss curve
matches the pure-torch reference's.
"""

from __future__ import annotations

import pytest
import torch

from dimexport.libraries import scan_library_path
from dimexport.ops import _native, selective_scan
from dimexport.ops.oracle import selective_scan_oracle
from dimexport.ops.testing import token_major_views

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)"),
    pytest.mark.skipif(scan_library_path() is None, reason="libdimexport_scan.so not built (`pip install -e .`)"),
]

ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# fp32: the kernel's fp32 arithmetic (sums over up to 4500 tokens); fp16/bf16: the gradients are rounded once to the
# input's dtype, which alone moves them by the unit roundoff.
TOL = {torch.float32: 2e-5, torch.float16: 2 * 2.0**-11 + 2e-5, torch.bfloat16: 2 * 2.0**-8 + 2e-5}


def cuda_inputs(batch, dim, seqlen, dstate, groups, dtype, seed, **flags) -> dict:
    from tests.test_scan_cpu import inputs

    return {k: None if v is None else v.cuda() for k, v in inputs(batch, dim, seqlen, dstate, groups, dtype, seed,
                                                                   **flags).items()}


def random_cases(count: int) -> list[tuple]:
    """The CPU tests' case generator over the GPU backward's range: longer sequences, chunk edges, dstate <= 32."""
    from tests.test_scan_cpu import random_cases as cases

    return cases(count, seed=4242, dims=(1, 3, 7, 16, 17, 40, 64), seqlens=(1, 2, 15, 16, 17, 63, 366, 1001, 2000, 4500),
                 dstates=(1, 4, 8, 9, 15, 16, 17, 32))


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-300)).item()


def oracle_grads(args: dict, go: torch.Tensor, softplus: bool, reverse: bool) -> dict:
    names = [k for k in ORDER if args[k] is not None]
    leaves = {k: args[k].double().requires_grad_() for k in names}
    ref = selective_scan_oracle(**leaves, delta_softplus=softplus, reverse=reverse)
    return dict(zip(names, torch.autograd.grad(ref, [leaves[k] for k in names], go.double())))


@pytest.mark.parametrize("batch,dim,seqlen,dstate,groups,dtype,reverse,flags,seed", random_cases(90))
def test_backward_matches_fp64_autograd(batch, dim, seqlen, dstate, groups, dtype, reverse, flags, seed):
    args = cuda_inputs(batch, dim, seqlen, dstate, groups, dtype, seed, **flags)
    go = torch.randn(batch, dim, seqlen, generator=torch.Generator().manual_seed(seed)).to(dtype).cuda()
    want = oracle_grads(args, go, flags["softplus"], reverse)
    got = dict(zip(ORDER, _native.scan_backward(go, **args, delta_softplus=flags["softplus"], reverse=reverse)))
    for k, w in want.items():
        assert got[k].dtype == args[k].dtype and got[k].shape == args[k].shape and got[k].is_cuda
        assert torch.isfinite(got[k]).all(), f"d{k} has non-finite values"
        err = rel_error(got[k], w)
        assert err <= TOL[dtype], f"d{k}: relative error {err:.3e} > {TOL[dtype]:.1e}"


def test_matches_the_cpu_backward():
    """The two native backwards agree to fp32 rounding on a DiM-like shape."""
    from dimexport.ops.testing import realistic_scan_inputs

    args = realistic_scan_inputs(2, 64, 366, seed=3)
    go = torch.randn(2, 64, 366, generator=torch.Generator().manual_seed(0))
    cpu = _native.scan_backward(go, **args, delta_softplus=True, reverse=True)
    gpu = _native.scan_backward(go.cuda(), **{k: v.cuda() for k, v in args.items()}, delta_softplus=True,
                                reverse=True)
    for k, a, b in zip(ORDER, cpu, gpu):
        assert rel_error(b.cpu(), a.double()) < 1e-5, k


def test_strided_views_give_the_same_bits_and_repeats_are_identical():
    """Token-major (B, L, D) tensors seen as (B, D, L), B/C as (B, L, G, N) views; a second run gives the same bits
    (deterministic reductions, no atomics)."""
    args = cuda_inputs(2, 48, 300, 16, 2, torch.float16, seed=7)
    views = token_major_views(args)
    go = torch.randn(2, 300, 48, device="cuda", dtype=torch.float16).transpose(1, 2)
    first = _native.scan_backward(go, **args, delta_softplus=True, reverse=False)
    for run in (_native.scan_backward(go, **views, delta_softplus=True, reverse=False),
                _native.scan_backward(go.contiguous(), **args, delta_softplus=True, reverse=False)):
        assert all(torch.equal(a, b) for a, b in zip(first, run) if a is not None)


def test_gradcheck_small():
    """Finite differences of the op (fp32 kernels both ways) against the CUDA backward."""
    args = cuda_inputs(1, 3, 9, 4, 1, torch.float32, seed=2)
    names = [k for k in ORDER if args[k] is not None]

    def fn(*tensors):
        return selective_scan(**dict(zip(names, tensors)), delta_softplus=True, reverse=True)

    leaves = tuple(args[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-2, atol=2e-3, rtol=2e-2, nondet_tol=0.0)


def test_op_backward_runs_the_kernel_and_falls_back_above_32_states():
    for dstate in (16, 33):
        args = cuda_inputs(2, 16, 90, dstate, 1, torch.float32, seed=4)
        leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
        out = selective_scan(**leaves, delta_softplus=True, reverse=False)
        go = torch.randn_like(out)
        via_op = torch.autograd.grad(out, [leaves[k] for k in ORDER], go)
        if dstate <= _native.MAX_DSTATE_CUDA_BWD:
            direct = _native.scan_backward(go, **args, delta_softplus=True, reverse=False)
            assert all(torch.equal(a, b) for a, b in zip(via_op, direct))
        else:  # the reference's autograd: still right
            want = oracle_grads(args, go, True, False)
            assert all(rel_error(g, want[k]) < 1e-5 for k, g in zip(ORDER, via_op))


def test_backward_is_capturable_in_a_cuda_graph():
    args = cuda_inputs(4, 64, 366, 16, 1, torch.bfloat16, seed=9)
    go = torch.randn(4, 64, 366, device="cuda", dtype=torch.bfloat16)
    eager = _native.scan_backward(go, **args, delta_softplus=True, reverse=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        _native.scan_backward(go, **args, delta_softplus=True, reverse=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            captured = _native.scan_backward(go, **args, delta_softplus=True, reverse=True)
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(eager, captured) if a is not None)


def test_twenty_training_steps_match_the_reference():
    """20 AdamW steps of dim-tiny on the GPU (epsilon-prediction MSE on a fixed batch, fp32) through the CUDA
    kernels and through the pure-torch reference: the same loss curve, and the loss goes down."""
    from tests.test_scan_cpu import loss_curve

    fast = loss_curve("cuda", 20, 8)
    with _native.python_kernels(reference=True):  # forward and backward through the reference
        slow = loss_curve("cuda", 20, 8)
    assert fast[-1] < 0.9 * fast[0]
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(slow), rtol=2e-3, atol=0)

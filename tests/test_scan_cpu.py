"""The CPU kernel of libdimexport_scan.so against the float64 oracle: a seeded sweep of random shapes (lengths
1..2000, odd sizes, dstate 1..64, groups), every flag, all I/O dtypes, both directions, strided views; thread
counts do not change a bit; the op dispatches CPU tensors to it.

CI builds the library (`.ci/run`), so there a missing library fails these tests instead of skipping them."""

from __future__ import annotations

import os
import random

import pytest
import torch

from dimexport.ops import _native, selective_scan, selective_scan_reference
from dimexport.ops.oracle import selective_scan_oracle
from dimexport.ops.testing import token_major_views, torch_ops_or_skip

if not _native.loads():
    if os.environ.get("CI"):
        raise RuntimeError("CI must test the CPU kernel, but libdimexport_scan.so does not load (see .ci/run)")
    pytest.skip("libdimexport_scan.so is not built (`pip install -e .` builds it)", allow_module_level=True)

TOL = {torch.float32: 2e-6, torch.float16: 2.0**-11 + 2e-6, torch.bfloat16: 2.0**-8 + 2e-6}


def inputs(batch, dim, seqlen, dstate, groups, dtype, seed, *, z=True, D=True, bias=True, softplus=True,
           adversarial=False) -> dict:
    """Mamba-like parameters (A = -exp(log(1..N) + noise), dt in [1e-3, 0.1]); `adversarial`: dt up to 10,
    some delta past softplus's threshold of 20 or far below zero, larger |u|."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    uni = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    A = -torch.exp(torch.log(torch.arange(1, dstate + 1.0)).expand(dim, dstate) + 0.1 * rnd(dim, dstate))
    dt = torch.exp(-6.9 + uni(batch, dim, seqlen) * (9.2 if adversarial else 4.6))  # 1e-3 .. 10 (or 0.1)
    b = 0.3 * rnd(dim) if bias else None
    delta = (torch.log(torch.expm1(dt)) if softplus else dt) - (b[:, None] if bias else 0)
    if adversarial and softplus:
        spot = uni(batch, dim, seqlen)
        delta = torch.where(spot < 0.02, torch.full_like(delta, 25.0), delta)
        delta = torch.where(spot > 0.98, torch.full_like(delta, -30.0), delta)
    io = lambda t: t.to(dtype)  # noqa: E731
    return dict(u=io((10.0 if adversarial else 1.0) * rnd(batch, dim, seqlen)), delta=io(delta), A=A,
                B=io(rnd(batch, groups, dstate, seqlen)), C=io(rnd(batch, groups, dstate, seqlen)),
                D=rnd(dim) if D else None, z=io(rnd(batch, dim, seqlen)) if z else None, delta_bias=b)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def oracle(args: dict, softplus: bool, reverse: bool) -> torch.Tensor:
    """float64 on the inputs as the kernel sees them (already rounded to the I/O dtype)."""
    return selective_scan_oracle(**{k: None if v is None else v.double() for k, v in args.items()},
                                 delta_softplus=softplus, reverse=reverse)


def random_cases(count: int, seed: int = 1234, dims=(1, 3, 7, 8, 9, 16, 17, 40),
                 seqlens=(1, 2, 5, 63, 64, 65, 127, 366, 1001, 2000), dstates=(1, 4, 15, 16, 17, 32, 33, 64)) -> list[tuple]:
    """Seeded (batch, dim, seqlen, dstate, groups, dtype, reverse, flags, seed) cases: channels per group, lengths
    and states drawn from the given sets, dtypes in turn, each flag at random."""
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        groups = rng.choice([1, 1, 2, 3])
        dim = groups * rng.choice(dims)
        seqlen = rng.choice(seqlens)
        dstate = rng.choice(dstates)
        dtype = [torch.float32, torch.float16, torch.bfloat16][i % 3]
        flags = dict(z=rng.random() < 0.7, D=rng.random() < 0.8, bias=rng.random() < 0.8,
                     softplus=rng.random() < 0.8, adversarial=rng.random() < 0.3)
        cases.append((rng.choice([1, 2, 3]), dim, seqlen, dstate, groups, dtype, rng.random() < 0.5, flags, i))
    return cases


@pytest.mark.parametrize("batch,dim,seqlen,dstate,groups,dtype,reverse,flags,seed", random_cases(60))
def test_kernel_matches_fp64_oracle(batch, dim, seqlen, dstate, groups, dtype, reverse, flags, seed):
    args = inputs(batch, dim, seqlen, dstate, groups, dtype, seed, **flags)
    out = _native.scan_cpu(**args, delta_softplus=flags["softplus"], reverse=reverse, threads=2)
    assert out.dtype == dtype and torch.isfinite(out).all()
    err = rel_error(out, oracle(args, flags["softplus"], reverse))
    assert err <= TOL[dtype], f"relative error {err:.3e} > {TOL[dtype]:.1e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_threads_do_not_change_a_bit(dtype, reverse):
    args = inputs(3, 37, 300, 16, 1, dtype, seed=5)
    outs = [_native.scan_cpu(**args, delta_softplus=True, reverse=reverse, threads=n) for n in (1, 2, 3)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_strided_views_and_written_in_place():
    """Token-major (B, L, D) tensors seen as (B, D, L) views, B/C as (B, L, G, N) views, and an `out` view."""
    args = inputs(2, 24, 150, 16, 2, torch.float32, seed=7)
    views = token_major_views(args)
    out = torch.full((2, 150, 24), float("nan")).transpose(1, 2)
    _native.scan_cpu(**views, delta_softplus=True, reverse=True, out=out)
    torch.testing.assert_close(out, _native.scan_cpu(**args, delta_softplus=True, reverse=True), rtol=0, atol=0)


def test_op_dispatches_cpu_tensors_to_the_kernel():
    args = inputs(2, 16, 100, 16, 1, torch.bfloat16, seed=3)
    via_op = selective_scan(**args, delta_softplus=True, reverse=False)
    assert torch.equal(via_op, _native.scan_cpu(**args, delta_softplus=True, reverse=False))


def test_cpp_operator_stamp_refuses_another_torch_or_abi(tmp_path):
    lib = tmp_path / "libdimexport_torch_ops.so"
    stamp = lib.with_suffix(".torch_version")
    fix = "reinstall dimexport (`pip install --no-build-isolation -e .`)"
    assert _native.stamp_problem(lib) == f"{lib} has no build stamp libdimexport_torch_ops.torch_version; {fix}"
    stamp.write_text(f"2.0.0\nscan ABI {_native.ABI_VERSION}\n")
    assert _native.stamp_problem(lib) == f"{lib} was built for torch 2.0.0, this is torch {torch.__version__}; {fix}"
    stamp.write_text(f"{torch.__version__}\nscan ABI 4\n")
    assert _native.stamp_problem(lib) == (f"{lib} was built for another scan ABI (scan ABI 4; this package needs "
                                          f"{_native.ABI_VERSION}); {fix}")
    stamp.write_text(f"{torch.__version__}\nscan ABI {_native.ABI_VERSION}\n")
    assert _native.stamp_problem(lib) is None


def test_cpp_operator_serves_the_op():
    """Where it is built (CI builds it), the C++ operator's kernels serve the op: strided inputs give the bits of the
    ctypes path (Python kernels registered over it), and python_kernels(reference=True) really switches to the
    reference, forward and backward, until the block ends."""
    torch_ops_or_skip()
    args = inputs(2, 24, 150, 16, 2, torch.float16, seed=5)
    args = token_major_views(args)
    flags = dict(delta_softplus=True, reverse=True)
    cpp = selective_scan(**args, **flags)
    with _native.python_kernels():
        ctypes_path = selective_scan(**args, **flags)
    with _native.python_kernels(reference=True):
        reference = selective_scan(**args, **flags)
        assert not _native.backward_available(args["u"], 16)
    assert torch.equal(cpp, ctypes_path) and torch.equal(reference, selective_scan_reference(**args, **flags))
    assert not torch.equal(cpp, reference)  # the kernel's rounding differs from the reference's somewhere
    assert torch.equal(selective_scan(**args, **flags), cpp) and _native.backward_available(args["u"], 16)


def test_invalid_parameters_return_a_status():
    args = inputs(1, 4, 8, 4, 1, torch.float32, seed=0)
    with pytest.raises(RuntimeError, match=r"dimex_selective_scan_fwd_cpu failed: invalid argument"):
        _native.scan_cpu(**{**args, "B": args["B"].expand(1, 3, 4, 8)}, delta_softplus=True, reverse=False)


def test_every_cpu_variant_gives_the_same_bits(tmp_path):
    """The AVX-512 copy (16 channels per vector, where the CPU has it) and the AVX2 copy (8) agree bit for bit;
    the variant is chosen once per process, so the AVX2 run is a child process."""
    import subprocess
    import sys

    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); from tests.test_scan_cpu import inputs; "
        "from dimexport.ops import _native; "
        "args = inputs(2, 40, 130, 16, 2, torch.float32, seed=11); "
        "torch.save(_native.scan_cpu(**args, delta_softplus=True, reverse=True), sys.argv[2])"
    )
    root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    outs = []
    for i, env in enumerate(({}, {"DIMEX_SCAN_CPU_NO_AVX512": "1"})):
        path = tmp_path / f"{i}.pt"
        subprocess.run([sys.executable, "-c", script, root, str(path)], check=True, env={**os.environ, **env})
        outs.append(torch.load(path))
    assert torch.equal(outs[0], outs[1])


ORDER = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.mark.parametrize("batch,dim,seqlen,dstate,groups,dtype,reverse,flags,seed", random_cases(24, seed=77))
def test_backward_matches_fp64_autograd(batch, dim, seqlen, dstate, groups, dtype, reverse, flags, seed):
    """Every input's gradient from the CPU backward against autograd through the fp64 oracle."""
    args = inputs(batch, dim, seqlen, dstate, groups, dtype, seed, **flags)
    names = [k for k in ORDER if args[k] is not None]
    leaves = {k: args[k].double().requires_grad_() for k in names}
    ref = selective_scan_oracle(**leaves, delta_softplus=flags["softplus"], reverse=reverse)
    go = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    want = torch.autograd.grad(ref, [leaves[k] for k in names], go.double())
    got = dict(zip(ORDER, _native.scan_backward(go, **args, delta_softplus=flags["softplus"], reverse=reverse)))
    # fp16/bf16: the gradients are rounded once to the input's dtype (plus fp32 arithmetic)
    tol = 1e-5 if dtype == torch.float32 else 2 * TOL[dtype]
    for k, w in zip(names, want):
        assert got[k].dtype == args[k].dtype and got[k].shape == args[k].shape
        err = rel_error(got[k], w)
        assert err <= tol, f"d{k}: relative error {err:.3e} > {tol:.1e}"


def test_backward_threads_do_not_change_a_bit():
    args = inputs(4, 24, 200, 16, 2, torch.float32, seed=8)
    go = torch.randn(4, 24, 200, generator=torch.Generator().manual_seed(1))
    runs = [_native.scan_backward(go, **args, delta_softplus=True, reverse=True, threads=n) for n in (1, 2, 3)]
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


def test_op_backward_runs_the_kernel():
    args = inputs(2, 16, 90, 16, 1, torch.float32, seed=4)
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    out = selective_scan(**leaves, delta_softplus=True, reverse=False)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    via_op = torch.autograd.grad(out, [leaves[k] for k in ORDER], go)
    direct = _native.scan_backward(go, **args, delta_softplus=True, reverse=False)
    assert all(torch.equal(a, b) for a, b in zip(via_op, direct))


def loss_curve(device: str, steps: int, batch: int) -> list[float]:
    """AdamW steps of dim-tiny (epsilon-prediction MSE on a fixed batch, fp32) on `device`: the loss of each."""
    from dimexport.models import build_model, example_inputs

    torch.manual_seed(0)
    model = build_model("dim-tiny", seed=0).to(device).train()
    x, t, y = (v.to(device) for v in example_inputs(model.cfg, batch))
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    curve = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x, t, y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return curve


def test_training_steps_through_the_kernel_match_the_reference():
    """Five AdamW steps of dim-tiny with the CPU kernels and with the reference: the same loss curve, and the loss
    goes down."""
    fast = loss_curve("cpu", 5, 4)
    with _native.python_kernels(reference=True):  # forward and backward through the reference
        slow = loss_curve("cpu", 5, 4)
    assert fast[-1] < fast[0]
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(slow), rtol=1e-4, atol=0)

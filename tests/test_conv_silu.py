"""The fused causal conv1d + SiLU op (torch.ops.dimexport.causal_conv1d_silu): its CPU and CUDA kernels against an fp64
reference over random shapes, layouts, widths and dtypes; CPU and GPU bit for bit; the C++ checks' words; gradients;
the op's registration (opcheck); the Mamba mixer with the fused op against the unfused one."""

from __future__ import annotations

import contextlib
import random

import pytest
import torch

from dimexport.errors import InputError
from dimexport.ops import _native, causal_conv1d_silu, causal_conv1d_silu_reference
from dimexport.ops.selective_scan import output_like
from dimexport.ops.testing import on_one_thread, torch_ops_or_skip

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def conv_inputs(batch: int, dim: int, seqlen: int, width: int, dtype: torch.dtype, layout: str, bias: bool,
                seed: int, device: str = "cpu"):
    """x as the mixer hands it over: `contiguous`, `token-major` (a channel slice of a (B, L, 2D) tensor, as
    in_proj(h).transpose(1, 2) gives) or `channel-major` (rows along L, batch inside: (2D, B, L) transposed)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "token-major":
        x = torch.randn(batch, seqlen, 2 * dim, generator=g).transpose(1, 2)[:, :dim]
    elif layout == "channel-major":
        x = torch.randn(2 * dim, batch, seqlen, generator=g).transpose(0, 1)[:, dim:]
    else:
        x = torch.randn(batch, dim, seqlen, generator=g)
    weight = torch.randn(dim, width, generator=g) / width**0.5
    b = torch.randn(dim, generator=g) * 0.5 if bias else None
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
    return cast(x), cast(weight), cast(b)


def assert_close_to_fp64(out: torch.Tensor, x, weight, bias, reverse: bool) -> None:
    """Within half an ulp of the I/O dtype of the exact result, plus fp32 accumulation error on the taps' magnitude."""
    ref = causal_conv1d_silu_reference(x.double(), weight.double(), None if bias is None else bias.double(), reverse)
    mag = causal_conv1d_silu_reference(x.double().abs(), weight.double().abs(), None, reverse)  # silu(s) ~ s for s > 0
    half_ulp = {torch.float32: 2**-24, torch.float16: 2**-11, torch.bfloat16: 2**-8}[out.dtype]
    bound = half_ulp * 1.01 * ref.abs() + 1e-6 * (mag + (0 if bias is None else bias.double().abs()[:, None]) + 1)
    err = (out.double() - ref).abs()
    assert out.shape == x.shape and out.stride() == output_like(x).stride() and out.dtype == x.dtype
    assert torch.all(err <= bound), f"max error {err.max().item():.3g}, worst ratio {(err / bound).max().item():.3g}"


def random_cases(n: int, seed: int):
    rng = random.Random(seed)
    return [(rng.randint(1, 3), rng.choice([1, 5, 16, 48]), rng.choice([1, 2, 3, 7, 33, 64, 129, 366]),
             rng.randint(1, 8), rng.choice(DTYPES), rng.choice(["contiguous", "token-major", "channel-major"]),
             rng.random() < 0.5, rng.random() < 0.7, i) for i in range(n)]


@pytest.mark.parametrize("batch,dim,seqlen,width,dtype,layout,reverse,bias,seed", random_cases(30, seed=5))
def test_cpu_kernel_matches_fp64(batch, dim, seqlen, width, dtype, layout, reverse, bias, seed):
    torch_ops_or_skip()
    x, w, b = conv_inputs(batch, dim, seqlen, width, dtype, layout, bias, seed)
    assert_close_to_fp64(causal_conv1d_silu(x, w, b, reverse), x, w, b, reverse)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,dim,seqlen,width,dtype,layout,reverse,bias,seed",
                         random_cases(60, seed=6)  # and several CTAs of the channel mapping (128 channels each)
                         + [(2, 300, 200, 4, torch.float16, "token-major", reverse, True, 99) for reverse in (False, True)])
def test_cuda_kernel_matches_fp64_and_the_cpu_bit_for_bit(batch, dim, seqlen, width, dtype, layout, reverse, bias,
                                                          seed):
    torch_ops_or_skip()
    x, w, b = conv_inputs(batch, dim, seqlen, width, dtype, layout, bias, seed, device="cuda")
    out = causal_conv1d_silu(x, w, b, reverse)
    assert out.is_cuda
    assert_close_to_fp64(out.cpu(), x.cpu(), w.cpu(), None if b is None else b.cpu(), reverse)
    cpu = causal_conv1d_silu(x.cpu(), w.cpu(), None if b is None else b.cpu(), reverse)
    assert torch.equal(out.cpu(), cpu)


@pytest.mark.gpu
def test_cuda_kernel_in_a_cuda_graph():
    torch_ops_or_skip()
    x, w, b = conv_inputs(8, 256, 366, 4, torch.float16, "channel-major", True, seed=1, device="cuda")
    expected = causal_conv1d_silu(x, w, b)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = causal_conv1d_silu(x, w, b)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected)


def test_result_does_not_depend_on_the_thread_count():
    torch_ops_or_skip()
    x, w, b = conv_inputs(2, 48, 129, 4, torch.float32, "token-major", True, seed=2)
    assert torch.equal(on_one_thread(causal_conv1d_silu, x, w, b, True), causal_conv1d_silu(x, w, b, True))


def test_cpp_operator_serves_the_op_and_python_kernels_switch_to_the_reference():
    torch_ops_or_skip()
    x, w, b = conv_inputs(2, 16, 50, 4, torch.float16, "token-major", True, seed=3)
    fused = causal_conv1d_silu(x, w, b)
    with _native.python_kernels():
        reference = causal_conv1d_silu(x, w, b)
    assert torch.equal(reference, causal_conv1d_silu_reference(x, w, b))
    assert not torch.equal(fused, reference)  # the reference rounds the conv to fp16 before the SiLU, the kernel not
    assert torch.equal(causal_conv1d_silu(x, w, b), fused)


@pytest.mark.parametrize("path", ["C++ operator", "reference", "fake"])
@pytest.mark.parametrize("layout", ["contiguous", "token-major", "channel-major"])
def test_output_is_token_major_exactly_when_x_is(path, layout):
    """Token-major x (the mixer's slice of in_proj's output) gives token-major (B, L, D) storage, so x_proj reads the
    conv's output without a transposing copy; other layouts give contiguous (B, D, L). Every kernel agrees."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if path == "C++ operator":
        torch_ops_or_skip()
    x, w, b = conv_inputs(2, 16, 50, 4, torch.float32, layout, True, seed=6)
    with contextlib.ExitStack() as stack:
        if path == "reference":
            stack.enter_context(_native.python_kernels(reference=True))
        if path == "fake":
            mode = stack.enter_context(FakeTensorMode())
            x, w, b = (mode.from_tensor(t) for t in (x, w, b))
        out = causal_conv1d_silu(x, w, b)
    if layout == "token-major":
        assert out.transpose(1, 2).is_contiguous()
    else:
        assert out.is_contiguous()


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(x=torch.zeros(2, 8)), "causal_conv1d_silu: x must be (batch, dim, seqlen), got shape (2, 8)"),
        (dict(x=torch.zeros(2, 8, 5, dtype=torch.float64)),
         "causal_conv1d_silu: x has dtype torch.float64; use float32, float16 or bfloat16"),
        (dict(weight=torch.zeros(8, 9)), "causal_conv1d_silu: weight must be (dim=8, width) with width 1..8, got shape (8, 9)"),
        (dict(weight=torch.zeros(8, 1, 4)), "causal_conv1d_silu: weight must be (dim=8, width) with width 1..8, got shape (8, 1, 4)"),
        (dict(weight=torch.zeros(7, 4)), "causal_conv1d_silu: weight must be (dim=8, width) with width 1..8, got shape (7, 4)"),
        (dict(bias=torch.zeros(9)), "causal_conv1d_silu: bias must have shape (8,), got (9,)"),
        (dict(weight=torch.zeros(8, 4, dtype=torch.float16)),
         "causal_conv1d_silu: weight has dtype torch.float16; it must match x (torch.float32)"),
        (dict(bias=torch.zeros(8, dtype=torch.bfloat16)),
         "causal_conv1d_silu: bias has dtype torch.bfloat16; it must match x (torch.float32)"),
        (dict(bias=torch.zeros(8, device="meta")), "causal_conv1d_silu: all inputs must be on one device, got ['cpu', 'meta']"),
    ],
)
@pytest.mark.parametrize("python", [False, True], ids=["registered-kernels", "python-kernels"])
def test_bad_inputs_are_named(change, message, python):
    """The same words from the C++ operator's checks (ValueError) and the Python ones (InputError, a ValueError)."""
    if not python:
        torch_ops_or_skip()
    args = dict(x=torch.zeros(2, 8, 5), weight=torch.zeros(8, 4), bias=torch.zeros(8)) | change
    with _native.python_kernels() if python else contextlib.nullcontext():
        with pytest.raises(InputError if python else ValueError) as exc:
            causal_conv1d_silu(**args)
    assert str(exc.value) == message


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_are_the_references(reverse):
    """The backward differentiates the reference recomputed from the saved inputs: the same gradients, bit for bit."""
    x, w, b = conv_inputs(2, 12, 40, 4, torch.float32, "token-major", True, seed=4)
    grad = torch.randn(2, 12, 40, generator=torch.Generator().manual_seed(9))
    grads = []
    for fn in (causal_conv1d_silu, causal_conv1d_silu_reference):
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        fn(*leaves, reverse=reverse).backward(grad)
        grads.append([t.grad for t in leaves])
    for fused, ref in zip(*grads):
        assert torch.equal(fused, ref)


def test_opcheck():
    """Schema, fake kernel, autograd registration and dispatch agree (torch.library.opcheck)."""
    x, w, b = conv_inputs(2, 6, 17, 3, torch.float32, "token-major", True, seed=5)
    torch.library.opcheck(causal_conv1d_silu, (x, w, b, True))
    torch.library.opcheck(causal_conv1d_silu, (x.detach().requires_grad_(), w, None, False))


@pytest.mark.parametrize("bimamba", [False, True])
def test_mixer_with_the_fused_op_matches_the_unfused_mixer(bimamba):
    """The Mamba mixer as the models run it (fused op) against the same mixer on the reference kernels."""
    from dimexport.models.layers import Mamba

    torch.manual_seed(0)
    mixer = Mamba(32, bimamba=bimamba).eval()
    with torch.no_grad():
        mixer.conv1d.bias.normal_()
        hidden = torch.randn(2, 50, 32)
        fused = mixer(hidden)
        with _native.python_kernels(reference=True):
            unfused = mixer(hidden)
    assert (fused - unfused).abs().max().item() <= 1e-5 * unfused.abs().max().item()


@pytest.mark.parametrize("bimamba", [False, True])
def test_mixer_stays_token_major_without_copies(bimamba):
    """The conv's and the scan's outputs keep the token-major layout of in_proj's output, so the mixer runs one plain
    mm per projection (in_proj, out_proj, x_proj and dt_proj per direction) and nothing copies or transposes data."""
    from dimexport.models.layers import Mamba

    torch_ops_or_skip()
    mixer = Mamba(32, bimamba=bimamba).eval()
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        mixer(torch.randn(2, 40, 32))
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get("aten::mm") == (6 if bimamba else 4)
    assert not {"aten::copy_", "aten::clone", "aten::contiguous", "aten::bmm"} & counts.keys()

"""The Mamba mixer as one op (torch.ops.dimexport.mamba_mixer): the C++ operator's composition gives the Python
composition's bits on the CPU and the GPU, its checks say what the Python checks say, its gradients are the
composition's, opcheck passes, and the models take it exactly where nothing needs the pieces (no autograd, no tracing,
one direction)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from dimexport.errors import InputError
from dimexport.models import build_model, example_inputs
from dimexport.models.layers import Mamba
from dimexport.ops import _native, mamba_mixer, mamba_mixer_reference
from dimexport.ops.testing import torch_ops_or_skip


def mixer_args(mixer: Mamba, batch: int, tokens: int, dtype: torch.dtype, device: str = "cpu", seed: int = 0,
               reverse: bool = False) -> tuple:
    """The op's arguments as Mamba.forward passes them, for a mixer cast as the denoisers cast it (A, D and the dt
    bias in fp32)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, tokens, mixer.in_proj.in_features, generator=g).to(device=device, dtype=dtype)
    m = mixer.to(device)
    cast = lambda t: t.detach().to(dtype)  # noqa: E731
    return (hidden, cast(m.in_proj.weight), cast(m.conv1d.weight.squeeze(1)), cast(m.conv1d.bias),
            cast(m.x_proj.weight), cast(m.dt_proj.weight), m.dt_proj.bias.detach(), -torch.exp(m.A_log.detach()),
            m.D.detach(), cast(m.out_proj.weight), reverse)


def make_mixer(d_model: int = 32, d_state: int = 16, seed: int = 0) -> Mamba:
    torch.manual_seed(seed)
    return Mamba(d_model, d_state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch,tokens,d_model", [(1, 1, 16), (2, 37, 32), (3, 130, 48)])
def test_cpp_mixer_is_the_composition_bit_for_bit(dtype, reverse, batch, tokens, d_model):
    torch_ops_or_skip()
    args = mixer_args(make_mixer(d_model), batch, tokens, dtype, reverse=reverse, seed=tokens)
    fused = mamba_mixer(*args)
    assert fused.shape == (batch, tokens, d_model) and fused.dtype == dtype and fused.is_contiguous()
    assert torch.equal(fused, mamba_mixer_reference(*args))
    with _native.python_kernels():  # the op's Python kernel: the composition, through the pieces' Python kernels
        assert torch.equal(mamba_mixer(*args), mamba_mixer_reference(*args))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch,tokens,d_model", [(1, 366, 64), (8, 301, 96), (2, 1230, 128)])
def test_cuda_mixer_is_the_composition_bit_for_bit(dtype, reverse, batch, tokens, d_model):
    torch_ops_or_skip()
    args = mixer_args(make_mixer(d_model), batch, tokens, dtype, device="cuda", reverse=reverse, seed=tokens)
    fused = mamba_mixer(*args)
    assert torch.equal(fused, mamba_mixer_reference(*args))
    graph = torch.cuda.CUDAGraph()  # and it captures: nothing on its path synchronises or allocates outside the pool
    with torch.cuda.graph(graph):
        captured = mamba_mixer(*args)
    graph.replay()
    assert torch.equal(captured, fused)


def _bad(**change) -> dict:
    mixer = make_mixer(16, 8)
    names = ("hidden", "in_proj_weight", "conv_weight", "conv_bias", "x_proj_weight", "dt_proj_weight",
             "dt_proj_bias", "A", "D", "out_proj_weight")
    return dict(zip(names, mixer_args(mixer, 2, 5, torch.float32))) | change


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(hidden=torch.zeros(2, 16)), "mamba_mixer: hidden must be (batch, seqlen, d_model), got shape (2, 16)"),
        (dict(in_proj_weight=torch.zeros(64, 15)),
         "mamba_mixer: in_proj_weight must be (2 * d_inner, d_model=16), got shape (64, 15)"),
        (dict(in_proj_weight=torch.zeros(63, 16)),
         "mamba_mixer: in_proj_weight must be (2 * d_inner, d_model=16), got shape (63, 16)"),
        (dict(A=torch.zeros(31, 8)), "mamba_mixer: A must be (d_inner=32, dstate), got shape (31, 8)"),
        (dict(dt_proj_weight=torch.zeros(32)), "mamba_mixer: dt_proj_weight must be (d_inner=32, dt_rank), got shape "
                                               "(32,)"),
        (dict(x_proj_weight=torch.zeros(16, 32)),
         "mamba_mixer: x_proj_weight must be (dt_rank + 2 * dstate=17, d_inner=32), got shape (16, 32)"),
        (dict(out_proj_weight=torch.zeros(16, 31)),
         "mamba_mixer: out_proj_weight must be (d_out, d_inner=32), got shape (16, 31)"),
        (dict(out_proj_weight=torch.zeros(16, 32, device="meta")),
         "mamba_mixer: all inputs must be on one device, got ['cpu', 'meta']"),
        # what the pieces check, in their words
        (dict(conv_weight=torch.zeros(32, 9)),
         "causal_conv1d_silu: weight must be (dim=32, width) with width 1..8, got shape (32, 9)"),
        (dict(dt_proj_bias=torch.ones(31)), "selective_scan: delta_bias must have shape (32,), got (31,)"),
    ],
)
@pytest.mark.parametrize("python", [False, True], ids=["registered-kernels", "python-kernels"])
def test_bad_inputs_are_named(change, message, python):
    """The same words from the C++ operator's checks (ValueError) and the Python ones (InputError, a ValueError)."""
    if not python:
        torch_ops_or_skip()
    with _native.python_kernels() if python else contextlib.nullcontext():
        with pytest.raises(InputError if python else ValueError) as exc:
            mamba_mixer(**_bad(**change))
    assert str(exc.value) == message


def test_gradients_are_the_compositions():
    args = mixer_args(make_mixer(16), 2, 11, torch.float32, seed=3)
    grad = torch.randn(2, 11, 16, generator=torch.Generator().manual_seed(4))
    grads = []
    for fn in (mamba_mixer, mamba_mixer_reference):
        leaves = [t.detach().requires_grad_() for t in args[:-1]]
        fn(*leaves, args[-1]).backward(grad)
        grads.append([t.grad for t in leaves])
    for fused, ref in zip(*grads):
        assert torch.equal(fused, ref)


def test_opcheck():
    """Schema, fake kernel and autograd registration; on the references, whose backwards trace (the scan's native
    backward is a ctypes call, which aot_dispatch cannot trace, and the models never trace the mixer op)."""
    args = mixer_args(make_mixer(16), 2, 7, torch.float32, seed=5)
    with _native.python_kernels(reference=True):
        torch.library.opcheck(mamba_mixer, args)
        torch.library.opcheck(mamba_mixer, (args[0].requires_grad_(), *args[1:]))


def _count_mixer_calls(net, inputs) -> int:
    """Calls of the mixer op during net(*inputs), counted by a Python kernel registered over the current ones."""
    calls = []
    lib = torch.library.Library("dimexport", "IMPL")
    try:
        def counting(*args):
            calls.append(1)
            return mamba_mixer_reference(*args)
        lib.impl("mamba_mixer", counting, "CPU")
        net(*inputs)
    finally:
        lib._destroy()
    return len(calls)


def test_models_take_the_op_only_where_nothing_needs_the_pieces():
    """DiM: one op per block without autograd, the composition (the same bits) with it; DiS's two-direction mixers
    never take it."""
    dim = build_model("dim-tiny", seed=0).eval()
    inputs = example_inputs(dim.cfg, 2)
    assert _count_mixer_calls(dim, inputs) == 0  # autograd: the pieces, each with its own backward
    pieces = dim(*inputs).detach()
    with torch.no_grad():
        assert _count_mixer_calls(dim, inputs) == len(dim.transformer_blocks)
    with torch.inference_mode():
        assert _count_mixer_calls(dim, inputs) == len(dim.transformer_blocks)
        assert torch.equal(dim(*inputs), pieces)
    dis = build_model("dis-tiny", seed=0).eval()
    with torch.inference_mode():
        assert _count_mixer_calls(dis, example_inputs(dis.cfg, 2)) == 0

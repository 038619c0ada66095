"""The fused ops of DiM's block around the mixer, RMSNorm + adaLN modulation (torch.ops.dimexport.rms_norm_modulate) and
the gated residual (gated_residual): CPU and CUDA kernels against an fp64 reference over random shapes, strides and
dtype pairs; CPU and GPU bit for bit; the C++ checks' words; gradients; opcheck; whole DiM and DiS forwards against the
unfused code."""

from __future__ import annotations

import contextlib
import random

import pytest
import torch

from dimexport.errors import InputError
from dimexport.ops import (_native, gated_residual, gated_residual_reference, rms_norm_modulate,
                           rms_norm_modulate_reference)
from dimexport.ops.testing import on_one_thread, torch_ops_or_skip

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HALF_ULP = {torch.float32: 2**-24, torch.float16: 2**-11, torch.bfloat16: 2**-8}


def norm_inputs(batch: int, tokens: int, dim: int, x_dtype, out_dtype, modulate: bool, strided: bool, seed: int,
                device: str = "cpu"):
    """x as DiM hands it over (the fp32 residual, or a strided view), weight, and (B, 1, D) views of a (B, 3, D)
    modulation as DiMBlock's chunk gives them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, dim + 3 if strided else dim, generator=g) * 3
    x = x[..., 2:dim + 2] if strided else x
    weight = 1 + 0.3 * torch.randn(dim, generator=g)
    mod = 0.5 * torch.randn(batch, 3, dim, generator=g)
    shift, scale, _ = mod.to(out_dtype).chunk(3, dim=1)
    to = lambda t, dt: t.to(device=device, dtype=dt)  # noqa: E731
    return (to(x, x_dtype), to(weight, out_dtype), to(scale, out_dtype) if modulate else None,
            to(shift, out_dtype) if modulate else None)


def assert_close_to_fp64(out, x, weight, scale, shift, eps: float = 1e-5) -> None:
    """Half an ulp of the output dtype of the exact result, plus fp32 rounding on the terms' magnitudes."""
    d = lambda t: None if t is None else t.double()  # noqa: E731
    x64, w64 = x.double(), weight.double()
    inv = torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    ref = x64 * inv * w64
    mag = ref.abs()
    if scale is not None:
        ref = ref * (1 + d(scale))
        mag = mag * (1 + d(scale).abs())
    if shift is not None:
        ref = ref + d(shift)
        mag = mag + d(shift).abs()
    err = (out.double() - ref).abs()
    bound = HALF_ULP[out.dtype] * 1.01 * ref.abs() + 1e-6 * mag + 1e-30
    assert out.shape == x.shape and out.is_contiguous() and out.dtype == weight.dtype
    assert torch.all(err <= bound), f"max error {err.max().item():.3g}, worst ratio {(err / bound).max().item():.3g}"


def random_cases(n: int, seed: int):
    rng = random.Random(seed)
    return [(rng.randint(1, 3), rng.choice([1, 7, 33]), rng.choice([1, 5, 32, 100, 1536]), rng.choice(DTYPES),
             rng.choice(DTYPES), rng.random() < 0.7, rng.random() < 0.5, i) for i in range(n)]


@pytest.mark.parametrize("batch,tokens,dim,x_dtype,out_dtype,modulate,strided,seed", random_cases(30, seed=8))
def test_cpu_kernel_matches_fp64(batch, tokens, dim, x_dtype, out_dtype, modulate, strided, seed):
    torch_ops_or_skip()
    x, w, scale, shift = norm_inputs(batch, tokens, dim, x_dtype, out_dtype, modulate, strided, seed)
    assert_close_to_fp64(rms_norm_modulate(x, w, scale, shift, 1e-5), x, w, scale, shift)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,tokens,dim,x_dtype,out_dtype,modulate,strided,seed", random_cases(60, seed=9))
def test_cuda_kernel_matches_fp64_and_the_cpu_bit_for_bit(batch, tokens, dim, x_dtype, out_dtype, modulate, strided,
                                                          seed):
    torch_ops_or_skip()
    args = norm_inputs(batch, tokens, dim, x_dtype, out_dtype, modulate, strided, seed, device="cuda")
    out = rms_norm_modulate(*args, 1e-5)
    cpu_args = [None if t is None else t.cpu() for t in args]
    assert out.is_cuda
    assert_close_to_fp64(out.cpu(), *cpu_args)
    assert torch.equal(out.cpu(), rms_norm_modulate(*cpu_args, 1e-5))


def test_result_does_not_depend_on_the_thread_count():
    torch_ops_or_skip()
    args = norm_inputs(2, 33, 1536, torch.float32, torch.float16, True, False, seed=2)
    assert torch.equal(on_one_thread(rms_norm_modulate, *args), rms_norm_modulate(*args))


def test_cpp_operator_serves_the_op_and_python_kernels_switch_to_the_reference():
    torch_ops_or_skip()
    args = norm_inputs(2, 9, 64, torch.float32, torch.float16, True, False, seed=3)
    fused = rms_norm_modulate(*args)
    with _native.python_kernels():
        reference = rms_norm_modulate(*args)
    assert torch.equal(reference, rms_norm_modulate_reference(*args))
    assert not torch.equal(fused, reference)  # the reference rounds to fp16 after the norm and after the scale
    assert torch.equal(rms_norm_modulate(*args), fused)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(x=torch.zeros(2, 8)), "rms_norm_modulate: x must be (batch, tokens, dim), got shape (2, 8)"),
        (dict(x=torch.zeros(2, 5, 8, dtype=torch.float64)),
         "rms_norm_modulate: x has dtype torch.float64; use float32, float16 or bfloat16"),
        (dict(weight=torch.zeros(8, dtype=torch.int32), scale=None, shift=None),
         "rms_norm_modulate: weight has dtype torch.int32; use float32, float16 or bfloat16"),
        (dict(weight=torch.zeros(9)), "rms_norm_modulate: weight must have shape (8,), got (9,)"),
        (dict(scale=torch.zeros(2, 8)), "rms_norm_modulate: scale must have shape (2, 1, 8), got (2, 8)"),
        (dict(shift=torch.zeros(1, 1, 8)), "rms_norm_modulate: shift must have shape (2, 1, 8), got (1, 1, 8)"),
        (dict(shift=torch.zeros(2, 1, 8, dtype=torch.float16)),
         "rms_norm_modulate: shift has dtype torch.float16; it must match weight (torch.float32)"),
        (dict(eps=-1.0), "rms_norm_modulate: eps must be >= 0, got -1.0"),
        (dict(eps=-1e-05), "rms_norm_modulate: eps must be >= 0, got -1e-05"),
        (dict(scale=torch.zeros(2, 1, 8, device="meta")),
         "rms_norm_modulate: all inputs must be on one device, got ['cpu', 'meta']"),
        (dict(rows=torch.arange(5, dtype=torch.int32)),
         "rms_norm_modulate: rows must be an int64 index of shape (5,), got torch.int32 of shape (5,)"),
        (dict(rows=torch.arange(4)), "rms_norm_modulate: rows must be an int64 index of shape (5,), got torch.int64 of "
                                     "shape (4,)"),
    ],
)
@pytest.mark.parametrize("python", [False, True], ids=["registered-kernels", "python-kernels"])
def test_bad_inputs_are_named(change, message, python):
    """The same words from the C++ operator's checks (ValueError) and the Python ones (InputError, a ValueError)."""
    if not python:
        torch_ops_or_skip()
    args = dict(x=torch.zeros(2, 5, 8), weight=torch.ones(8), scale=torch.zeros(2, 1, 8), shift=torch.zeros(2, 1, 8),
                eps=1e-5) | change
    with _native.python_kernels() if python else contextlib.nullcontext():
        with pytest.raises(InputError if python else ValueError) as exc:
            rms_norm_modulate(**args)
    assert str(exc.value) == message


def test_gradients_are_the_references():
    args = norm_inputs(2, 7, 32, torch.float32, torch.float32, True, True, seed=4)
    grad = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(9))
    grads = []
    for fn in (rms_norm_modulate, rms_norm_modulate_reference):
        leaves = [t.detach().requires_grad_() for t in args]
        fn(*leaves, 1e-5).backward(grad)
        grads.append([t.grad for t in leaves])
    for fused, ref in zip(*grads):
        assert torch.equal(fused, ref)


def test_opcheck():
    x, w, scale, shift = norm_inputs(2, 6, 16, torch.float32, torch.float32, True, False, seed=5)
    torch.library.opcheck(rms_norm_modulate, (x, w, scale, shift, 1e-5))
    torch.library.opcheck(rms_norm_modulate, (x.detach().requires_grad_(), w, None, None, 1e-6))


@pytest.mark.parametrize("model", ["dim-tiny", "dis-tiny"])
def test_models_with_the_fused_ops_match_the_unfused_models(model):
    """A whole DiM (norm + modulation) and DiS (plain norm) forward with the fused ops against the references."""
    from dimexport.models import build_model, example_inputs

    net = build_model(model, seed=0).eval()
    inputs = example_inputs(net.cfg, 2)
    with torch.no_grad():
        fused = net(*inputs)
        with _native.python_kernels(reference=True):
            unfused = net(*inputs)
    assert (fused - unfused).abs().max().item() <= 1e-5 * max(1.0, unfused.abs().max().item())


def residual_inputs(batch: int, tokens: int, dim: int, res_dtype, y_dtype, strided: bool, seed: int,
                    device: str = "cpu", gated: bool = True):
    """The residual stream, the mixer's output (or a strided view) and a (B, 1, D) gate view of a (B, 3, D) tensor
    (None: DiS's plain residual add)."""
    g = torch.Generator().manual_seed(seed)
    residual = 4 * torch.randn(batch, tokens, dim, generator=g)
    y = torch.randn(batch, dim, tokens, generator=g).transpose(1, 2) if strided else torch.randn(batch, tokens, dim,
                                                                                                   generator=g)
    gate = 0.5 * torch.randn(batch, 3, dim, generator=g)[:, 2:]
    to = lambda t, dt: t.to(device=device, dtype=dt)  # noqa: E731
    return to(residual, res_dtype), to(y, y_dtype), to(gate, y_dtype) if gated else None


def residual_cases(n: int, seed: int):
    rng = random.Random(seed)
    return [(rng.randint(1, 3), rng.choice([1, 7, 33]), rng.choice([1, 5, 100, 1536]), rng.choice(DTYPES),
             rng.choice(DTYPES), rng.random() < 0.5, rng.random() < 0.75, i) for i in range(n)]


def assert_residual_close_to_fp64(out, residual, y, gate) -> None:
    r64, y64 = residual.double(), y.double()
    g64 = torch.zeros(()) if gate is None else gate.double()
    ref = r64 + (1 + g64) * y64
    mag = r64.abs() + (1 + g64.abs()) * y64.abs()
    err = (out.double() - ref).abs()
    bound = HALF_ULP[out.dtype] * 1.01 * ref.abs() + 2e-7 * mag + 1e-30
    assert out.shape == residual.shape and out.is_contiguous() and out.dtype == residual.dtype
    assert torch.all(err <= bound), f"max error {err.max().item():.3g}, worst ratio {(err / bound).max().item():.3g}"


@pytest.mark.parametrize("batch,tokens,dim,res_dtype,y_dtype,strided,gated,seed", residual_cases(24, seed=10))
def test_residual_cpu_kernel_matches_fp64(batch, tokens, dim, res_dtype, y_dtype, strided, gated, seed):
    torch_ops_or_skip()
    args = residual_inputs(batch, tokens, dim, res_dtype, y_dtype, strided, seed, gated=gated)
    assert_residual_close_to_fp64(gated_residual(*args), *args)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,tokens,dim,res_dtype,y_dtype,strided,gated,seed", residual_cases(40, seed=11))
def test_residual_cuda_kernel_matches_fp64_and_the_cpu_bit_for_bit(batch, tokens, dim, res_dtype, y_dtype, strided,
                                                                   gated, seed):
    torch_ops_or_skip()
    args = residual_inputs(batch, tokens, dim, res_dtype, y_dtype, strided, seed, device="cuda", gated=gated)
    out = gated_residual(*args)
    cpu_args = [None if t is None else t.cpu() for t in args]
    assert out.is_cuda
    assert_residual_close_to_fp64(out.cpu(), *cpu_args)
    assert torch.equal(out.cpu(), gated_residual(*cpu_args))


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(residual=torch.zeros(2, 8)), "gated_residual: residual must be (batch, tokens, dim), got shape (2, 8)"),
        (dict(residual=torch.zeros(2, 5, 8, dtype=torch.int64)),
         "gated_residual: residual has dtype torch.int64; use float32, float16 or bfloat16"),
        (dict(y=torch.zeros(2, 5, 8, dtype=torch.float64), gate=torch.zeros(2, 1, 8, dtype=torch.float64)),
         "gated_residual: y has dtype torch.float64; use float32, float16 or bfloat16"),
        (dict(y=torch.zeros(2, 4, 8, dtype=torch.float16)),
         "gated_residual: y must have the residual's shape (2, 5, 8), got (2, 4, 8)"),
        (dict(gate=torch.zeros(2, 8, dtype=torch.float16)), "gated_residual: gate must have shape (2, 1, 8), got (2, 8)"),
        (dict(gate=torch.zeros(2, 1, 8)), "gated_residual: gate has dtype torch.float32; it must match y (torch.float16)"),
        (dict(gate=torch.zeros(2, 1, 8, dtype=torch.float16, device="meta")),
         "gated_residual: all inputs must be on one device, got ['cpu', 'meta']"),
        (dict(rows=torch.arange(5).view(1, 5)),
         "gated_residual: rows must be an int64 index of shape (5,), got torch.int64 of shape (1, 5)"),
        (dict(rows=torch.arange(5, device="meta")),
         "gated_residual: all inputs must be on one device, got ['cpu', 'meta']"),
    ],
)
@pytest.mark.parametrize("python", [False, True], ids=["registered-kernels", "python-kernels"])
def test_residual_bad_inputs_are_named(change, message, python):
    if not python:
        torch_ops_or_skip()
    args = dict(residual=torch.zeros(2, 5, 8), y=torch.zeros(2, 5, 8, dtype=torch.float16),
                gate=torch.zeros(2, 1, 8, dtype=torch.float16)) | change
    with _native.python_kernels() if python else contextlib.nullcontext():
        with pytest.raises(InputError if python else ValueError) as exc:
            gated_residual(**args)
    assert str(exc.value) == message


def test_residual_without_a_gate_is_the_plain_add_bit_for_bit():
    """DiS's residual + y.float(): one fp32 add either way, so the kernel and the reference agree exactly."""
    torch_ops_or_skip()
    residual, y, _ = residual_inputs(2, 9, 40, torch.float32, torch.bfloat16, True, seed=14)
    assert torch.equal(gated_residual(residual, y), residual + y.float())


def test_residual_serves_the_op_gradients_and_opcheck():
    torch_ops_or_skip()
    args = residual_inputs(2, 7, 32, torch.float32, torch.float16, True, seed=12)
    with _native.python_kernels():
        assert torch.equal(gated_residual(*args), gated_residual_reference(*args))
    assert not torch.equal(gated_residual(*args), gated_residual_reference(*args))  # fp32 product, rounded once
    args32 = residual_inputs(2, 7, 32, torch.float32, torch.float32, True, seed=13)
    grad = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (gated_residual, gated_residual_reference):
        leaves = [t.detach().requires_grad_() for t in args32]
        fn(*leaves).backward(grad)
        grads.append([t.grad for t in leaves])
    for fused, ref in zip(*grads):
        assert torch.equal(fused, ref)
    torch.library.opcheck(gated_residual, args32)
    torch.library.opcheck(gated_residual, (args32[0], args32[1], None))


@pytest.mark.parametrize("reference", [False, True])
def test_outputs_are_contiguous_for_permuted_inputs(reference):
    """The fakes promise contiguous (B, L, D) outputs; the C++ kernels and the references (python_kernels) keep that
    promise for a dense but permuted input too, where elementwise torch ops would return its permutation."""
    if not reference:
        torch_ops_or_skip()
    x = torch.randn(7, 2, 16).transpose(0, 1)  # (2, 7, 16), batch innermost-but-one
    y = torch.randn(2, 7, 16)
    with _native.python_kernels(reference=True) if reference else contextlib.nullcontext():
        assert rms_norm_modulate(x, torch.ones(16), None, None, 1e-5).is_contiguous()
        assert gated_residual(x, y).is_contiguous()


def scan_order(tokens: int, seed: int, device: str = "cpu") -> torch.Tensor:
    """A random reorder of the tokens, as DiM's per-layer scan orders are (int64, on the inputs' device)."""
    return torch.randperm(tokens, generator=torch.Generator().manual_seed(seed)).to(device)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("seed", range(6))
def test_row_index_reads_the_gathered_tokens_bit_for_bit(device, seed):
    """rows (DiM's scan order) gives the bits of the op on the gathered input, for the norm and the residual, on the
    kernels and on the references; no copy of the input is made for it."""
    torch_ops_or_skip()
    rng = random.Random(seed)
    batch, tokens, dim = rng.randint(1, 3), rng.choice([7, 33, 366]), rng.choice([5, 100, 1536])
    x, w, scale, shift = norm_inputs(batch, tokens, dim, torch.float32, rng.choice(DTYPES), True, seed % 2 == 1, seed,
                                     device=device)
    rows = scan_order(tokens, seed, device)
    assert torch.equal(rms_norm_modulate(x, w, scale, shift, 1e-5, rows),
                       rms_norm_modulate(x.index_select(1, rows), w, scale, shift, 1e-5))
    res, y, gate = residual_inputs(batch, tokens, dim, torch.float32, rng.choice(DTYPES), seed % 2 == 0, seed,
                                   device=device)
    assert torch.equal(gated_residual(res, y, gate, rows), gated_residual(res.index_select(1, rows), y, gate))
    with _native.python_kernels(reference=True):
        assert torch.equal(rms_norm_modulate(x, w, scale, shift, 1e-5, rows),
                           rms_norm_modulate_reference(x.index_select(1, rows), w, scale, shift, 1e-5))
        assert torch.equal(gated_residual(res, y, gate, rows),
                           gated_residual_reference(res.index_select(1, rows), y, gate))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_row_index_out_of_range_gives_nan_rows_and_reads_nothing_outside(device):
    """An index the kernels cannot use (its values are not checked on the host: that would synchronise) gives NaN in
    that output row and the right values elsewhere, instead of a read outside the input."""
    torch_ops_or_skip()
    x, w, scale, shift = norm_inputs(2, 7, 40, torch.float32, torch.float16, True, False, seed=3, device=device)
    res, y, gate = residual_inputs(2, 7, 40, torch.float32, torch.float16, False, seed=3, device=device)
    rows = torch.tensor([6, 5, -1, 3, 7, 1, 1 << 40], device=device)
    good = torch.tensor([0, 1, 3, 5])
    fine = torch.tensor([6, 5, 3, 1], device=device)
    for out, expect in ((rms_norm_modulate(x, w, scale, shift, 1e-5, rows),
                         rms_norm_modulate(x.index_select(1, fine), w, scale, shift, 1e-5)),
                        (gated_residual(res, y, gate, rows),
                         gated_residual(res.index_select(1, fine), y[:, good.to(device)], gate))):
        out = out.cpu()
        assert torch.isnan(out[:, [2, 4, 6]]).all()
        assert torch.equal(out[:, good], expect.cpu())


def test_row_index_gradients_and_opcheck():
    args = norm_inputs(2, 7, 32, torch.float32, torch.float32, True, True, seed=4)
    rows = scan_order(7, seed=1)
    grad = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(9))
    leaves = [t.detach().requires_grad_() for t in args]
    rms_norm_modulate(*leaves, 1e-5, rows).backward(grad)
    ref_leaves = [t.detach().requires_grad_() for t in args]
    rms_norm_modulate_reference(ref_leaves[0].index_select(1, rows), *ref_leaves[1:], 1e-5).backward(grad)
    for fused, ref in zip(leaves, ref_leaves):
        assert torch.equal(fused.grad, ref.grad)
    torch.library.opcheck(rms_norm_modulate, (*args, 1e-5, rows))
    res, y, gate = residual_inputs(2, 7, 32, torch.float32, torch.float32, True, seed=13)
    torch.library.opcheck(gated_residual, (res.requires_grad_(), y, gate, rows))


def test_dim_reads_its_scan_orders_through_the_block_ops():
    """DiM gathers no copy of the residual stream per layer: its only index_selects (besides the label embeddings') are
    the padded grid's fill and the final unpad, the layers' scan orders go to the norm and the residual as `rows`, and
    a block with `rows` gives the bits of the block on the gathered stream."""
    from dimexport.models import build_model, example_inputs

    torch_ops_or_skip()
    net = build_model("dim-tiny", seed=0).eval()
    inputs = example_inputs(net.cfg, 2)
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        net(*inputs)
    counts = {e.key: e.count for e in prof.key_averages()}
    layout = net.layout(net.cfg.grid())
    assert sum(order is not None for order in layout.reorders) >= 2
    assert counts.get("aten::index_select") == 2 + counts.get("aten::embedding", 0)  # embeddings select rows too
    order = next(o for o in layout.reorders if o is not None)
    block = net.transformer_blocks[1]
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, order.numel(), net.cfg.hidden, generator=g)
    modulation = torch.randn(2, 3, net.cfg.hidden, generator=g)  # shift, scale, gate
    with torch.inference_mode():
        assert torch.equal(block(s, modulation, order), block(s.index_select(1, order), modulation))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_dim_hands_each_block_its_own_modulation_and_decays_bit_for_bit(device):
    """DiM computes every block's modulation (table + adaln_single's output) and every mixer's A = -exp(A_log) in one
    op each; each block must receive exactly the official per-block values."""
    from dimexport.models import build_model, example_inputs

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run on the device machine)")
    net = build_model("dim-tiny", seed=0).eval().to(device)
    seen, mods = [], []
    net.adaln_single.register_forward_hook(lambda m, args, out: mods.append(out))
    for block in net.transformer_blocks:
        block.register_forward_pre_hook(lambda m, args: seen.append((m, args[1], args[3])))
    with torch.inference_mode():
        net(*(t.to(device) for t in example_inputs(net.cfg, 2)))
        assert len(seen) == len(net.transformer_blocks)
        for block, modulation, decays in seen:
            assert torch.equal(modulation, block.scale_shift_table[None] + mods[0].view(2, 3, -1))  # official
            assert torch.equal(decays, -torch.exp(block.attn1.A_log.float()))

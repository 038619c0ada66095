"""The portable rewrite: DimSelectiveScan nodes expanded to standard ops, checked in ONNX Runtime (CPU)
against the float64 oracle and, end to end, against the PyTorch models."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from dimexport.export import scan_node
from dimexport.export.portable import expand_scan_nodes
from dimexport.models import build_model
from dimexport.ops.oracle import selective_scan_oracle

DIM, DSTATE = 16, 16
# dtype -> (ONNX type of the scan's T, ONNX type fed to ORT, tolerance on ||out - ref|| / ||ref||).
# numpy has no bfloat16, so the bf16 graph takes fp32 inputs and casts them to bf16 before the scan.
DTYPES = {
    torch.float32: (TensorProto.FLOAT, TensorProto.FLOAT, 1e-5),
    torch.float16: (TensorProto.FLOAT16, TensorProto.FLOAT16, 1e-2),
    torch.bfloat16: (TensorProto.BFLOAT16, TensorProto.FLOAT, 1e-2),
}
SEQ_INPUTS = ("u", "delta", "B", "C", "z")


def scan_model(dtype: torch.dtype, groups: int, reverse: int, has_z: int, delta_softplus: int,
               dims: tuple = ("batch", DIM, 7), dstate: int | str = DSTATE) -> onnx.ModelProto:
    """One DimSelectiveScan node on graph inputs (opset 20 + trt.plugins 1); `dims` = (batch, dim, seqlen)."""
    t, feed, _ = DTYPES[dtype]
    batch, dim, seqlen = dims
    bc = (batch, groups, dstate, seqlen)
    shapes = {"u": dims, "delta": dims, "z": dims, "B": bc, "C": bc, "A": (dim, dstate), "D": (dim,),
              "delta_bias": (dim,)}
    names = [n for n in scan_node.INPUTS if has_z or n != "z"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT if n in scan_node.FP32_INPUTS else feed, shapes[n])
              for n in names]
    nodes = [helper.make_node("Cast", [n], [f"{n}_t"], to=t) for n in names if n in SEQ_INPUTS and feed != t]
    wired = {n: f"{n}_t" if feed != t and n in SEQ_INPUTS else n for n in names}
    wired.setdefault("z", wired["u"])  # contract: z = u with has_z = 0
    out = "out_t" if feed != t else "out"
    nodes.append(helper.make_node(
        scan_node.OP_TYPE, [wired[n] for n in scan_node.INPUTS], [out], name="scan", domain=scan_node.DOMAIN,
        plugin_version=scan_node.PLUGIN_VERSION, plugin_namespace=scan_node.PLUGIN_NAMESPACE,
        delta_softplus=delta_softplus, reverse=reverse, has_z=has_z,
    ))
    if feed != t:
        nodes.append(helper.make_node("Cast", [out], ["out"], to=feed))
    graph = helper.make_graph(nodes, "scan", inputs, [helper.make_tensor_value_info("out", feed, dims)])
    model = helper.make_model(graph, ir_version=10,  # what torch.onnx writes; ORT 1.31 reads IR <= 13
                              opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(scan_node.DOMAIN, 1)])
    scan_node.register_schema()
    onnx.checker.check_model(model, full_check=True)
    return model


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run_and_compare(sess: ort.InferenceSession, inputs: dict, dtype: torch.dtype, reverse: int, has_z: int,
                    delta_softplus: int) -> float:
    """Relative L2 error of the ORT output against the float64 oracle on the same (rounded) inputs."""
    feed_np = np.float16 if dtype == torch.float16 else np.float32
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v.float().numpy().astype(np.float32 if k in scan_node.FP32_INPUTS else feed_np)
             for k, v in inputs.items() if k in names}
    (out,) = sess.run(None, feeds)
    ref = selective_scan_oracle(**inputs | {"z": inputs["z"] if has_z else None},
                                delta_softplus=bool(delta_softplus), reverse=bool(reverse))
    return float(np.linalg.norm(out.astype(np.float64) - ref.numpy()) / np.linalg.norm(ref.numpy()))


def realistic(scan_inputs, batch: int, seqlen: int, groups: int, dtype: torch.dtype, delta_softplus: int,
              seed: int) -> dict:
    """The fixture's inputs; without softplus, delta is replaced by the same positive step sizes (minus bias)."""
    inputs = scan_inputs(batch, DIM, seqlen, DSTATE, groups, with_z=True, dtype=dtype, seed=seed)
    if not delta_softplus:
        bias = inputs["delta_bias"][:, None]
        inputs["delta"] = (F.softplus(inputs["delta"].double() + bias) - bias).to(dtype)
    return inputs


# (dtype, seqlen, groups, reverse, has_z, delta_softplus): every combination in fp32; fp16 pairs has_z with
# softplus (the flags act after and before the recurrence, the part fp16 I/O could spoil) to halve the time.
GRID = [
    (dtype, *case)
    for case in itertools.product((1, 7, 366), (1, 2), (0, 1), (0, 1), (0, 1))
    for dtype in (torch.float32, torch.float16)
    if dtype == torch.float32 or case[3] == case[4]
]


@pytest.mark.parametrize("dtype, seqlen, groups, reverse, has_z, delta_softplus", GRID)
def test_expanded_scan_matches_oracle(scan_inputs, dtype, seqlen, groups, reverse, has_z, delta_softplus):
    model = expand_scan_nodes(scan_model(dtype, groups, reverse, has_z, delta_softplus, dims=("batch", DIM, seqlen)))
    sess = session(model)  # one model, dynamic batch: run at batch 1 and 3
    for batch, seed in ((1, 0), (3, 1)):
        inputs = realistic(scan_inputs, batch, seqlen, groups, dtype, delta_softplus, seed)
        err = run_and_compare(sess, inputs, dtype, reverse, has_z, delta_softplus)
        assert err <= DTYPES[dtype][2], f"batch {batch}: rel err {err:.3g}"


@pytest.mark.parametrize("reverse", [0, 1])
def test_bfloat16_graph(scan_inputs, reverse):
    model = expand_scan_nodes(scan_model(torch.bfloat16, 2, reverse, 1, 1, dims=("batch", DIM, 366)))
    inputs = realistic(scan_inputs, 3, 366, 2, torch.bfloat16, 1, seed=2)
    assert run_and_compare(session(model), inputs, torch.bfloat16, reverse, 1, 1) <= 1e-2


def test_softplus_threshold(scan_inputs):
    """delta far above 20, where fp32 log(1 + exp(x)) overflows, takes the identity branch as in torch."""
    inputs = scan_inputs(2, DIM, 7, DSTATE, 1, with_z=True, seed=3)
    inputs["delta"] = torch.linspace(-30.0, 100.0, 2 * DIM * 7).reshape(2, DIM, 7)
    model = expand_scan_nodes(scan_model(torch.float32, 1, 0, 1, 1))
    assert run_and_compare(session(model), inputs, torch.float32, 0, 1, 1) <= 1e-5


def test_fully_symbolic_shapes(scan_inputs):
    """Every size is read at run time: one model serves several batch sizes, lengths and widths."""
    model = scan_model(torch.float32, 2, 1, 1, 1, dims=("batch", "dim", "seqlen"), dstate="dstate")
    sess = session(expand_scan_nodes(model))
    for batch, dim, seqlen, dstate in ((2, 16, 5, 16), (1, 8, 33, 4), (3, 32, 1, 8)):
        inputs = scan_inputs(batch, dim, seqlen, dstate, 2, with_z=True, seed=batch)
        assert run_and_compare(sess, inputs, torch.float32, 1, 1, 1) <= 1e-5


def test_no_batch_length_state_tensor():
    """No value of the expanded graph holds B*D*L*N elements (static shapes make inference exact)."""
    batch, seqlen = 3, 366
    model = expand_scan_nodes(scan_model(torch.float32, 2, 1, 1, 1, dims=(batch, DIM, seqlen)))
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    limit = batch * DIM * seqlen * DSTATE
    for v in inferred.graph.value_info:
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        assert not (dims and all(dims) and math.prod(dims) >= limit), f"{v.name} has shape {dims}"


def all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                yield from all_nodes(sub)


def assert_portable(model: onnx.ModelProto) -> None:
    nodes = list(all_nodes(model.graph))
    assert {n.domain for n in nodes} <= {"", "ai.onnx"}
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert not model.functions
    outputs = [o for n in nodes for o in n.output if o]
    assert len(outputs) == len(set(outputs)), "duplicate value names"
    named = [n.name for n in nodes if n.name]
    assert len(named) == len(set(named)), "duplicate node names"
    onnx.checker.check_model(model, full_check=True)


def test_single_node_result_is_portable():
    original = scan_model(torch.float16, 2, 1, 1, 1)
    expanded = expand_scan_nodes(original)
    assert_portable(expanded)
    assert [n.op_type for n in original.graph.node] == [scan_node.OP_TYPE]  # the input is left as it was
    assert expanded.opset_import[0].version == 20


def test_scan_inside_a_subgraph(scan_inputs):
    """A scan in an If branch is expanded in place; its Loop then nests two levels down."""
    inner = scan_model(torch.float32, 2, 1, 1, 1)
    typed = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ("batch", DIM, 7))  # noqa: E731
    then = helper.make_graph(list(inner.graph.node), "then", [], [typed("out")])
    other = helper.make_graph([helper.make_node("Identity", ["u"], ["u_copy"])], "else", [], [typed("u_copy")])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["res"], then_branch=then, else_branch=other)], "outer",
        [*inner.graph.input, helper.make_tensor_value_info("flag", TensorProto.BOOL, [])], [typed("res")],
    )
    model = expand_scan_nodes(helper.make_model(graph, ir_version=10, opset_imports=inner.opset_import))
    assert_portable(model)
    inputs = realistic(scan_inputs, 2, 7, 2, torch.float32, 1, seed=4)
    (out,) = session(model).run(None, {**{k: v.numpy() for k, v in inputs.items()}, "flag": np.array(True)})
    ref = selective_scan_oracle(**inputs, reverse=True).numpy()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 1e-5


MODEL_INPUTS = {  # (x, t, y) at batch 2 (the export) and 3 (the dynamic batch dim)
    batch: (torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(batch)),
            torch.linspace(1.0, 999.0, batch), torch.arange(batch) * 5 % 11)
    for batch in (2, 3)
}


@pytest.fixture(scope="module", params=["dim-tiny", "dis-tiny"])
def exported(request):
    """(torch model, exported custom-node ModelProto, expanded ModelProto, expansion seconds)."""
    model = build_model(request.param, seed=0)
    if request.param.startswith("dim"):
        model.layout(16 // 2)
    prog = torch.onnx.export(
        model, MODEL_INPUTS[2], dynamo=True, opset_version=20,
        dynamic_shapes=({0: "batch"}, {0: "batch"}, {0: "batch"}),
        custom_translation_table=scan_node.translation_table(),
    )
    start = time.perf_counter()
    expanded = expand_scan_nodes(prog.model_proto)
    return model, prog.model_proto, expanded, time.perf_counter() - start


def test_exported_model_matches_torch(exported):
    model, original, expanded, _ = exported
    assert sum(n.op_type == scan_node.OP_TYPE for n in original.graph.node) > 0
    sess = session(expanded)
    for batch, (x, t, y) in MODEL_INPUTS.items():
        with torch.no_grad():
            ref = model(x, t, y).numpy()
        (out,) = sess.run(None, {"x": x.numpy(), "t": t.numpy(), "y": y.numpy()})
        assert out.shape == ref.shape
        assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 1e-4, f"batch {batch}"


def test_exported_model_is_portable(exported):
    _, original, expanded, seconds = exported
    assert seconds < 2.0  # tens of milliseconds for 5-6 scans; linear in the node count
    assert_portable(expanded)
    loops = [n for n in expanded.graph.node if n.op_type == "Loop"]
    assert len(loops) == sum(n.op_type == scan_node.OP_TYPE for n in original.graph.node)


def test_loops_are_trip_limited_only():
    """TensorRT wants loops with only a trip limit, and its importer does not register the body's condition
    input then: the body must not read it (its condition output is a constant)."""
    model = expand_scan_nodes(scan_model(torch.float32, 1, reverse=1, has_z=1, delta_softplus=1))
    loops = [n for n in model.graph.node if n.op_type == "Loop"]
    assert loops
    for loop in loops:
        assert loop.input[0] and not loop.input[1]
        body = onnx.helper.get_attribute_value(loop.attribute[0])
        cond_in, cond_out = body.input[1].name, body.output[0].name
        assert all(cond_in not in n.input for n in body.node)
        assert [n.op_type for n in body.node if cond_out in n.output] == ["Constant"]

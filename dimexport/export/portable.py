"""The portable twin of a custom-node graph: every `trt.plugins::DimSelectiveScan` becomes standard ops.

Runtimes without the plugin (ONNX Runtime, TensorRT without the plugin library) can then run the model.
Each scan becomes a `Loop` over the L tokens with the fp32 state h (B, G, D/G, N) loop-carried, so no
(B, D, L, N) tensor is ever materialised. Grouping is handled by reshaping channels to (G, D/G) and
broadcasting B_t, C_t (B, G, 1, N) over them, so no per-token Gather of groups is needed. All arithmetic
is fp32 (the T inputs are cast at entry, the output back to T at the end) so fp16/bf16 graphs keep the
plugin's accuracy. Sizes are read with Shape ops at run time, so nothing depends on static value_info
and the batch (and any other) dimension may stay symbolic.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import TensorProto, helper

from . import scan_node

MIN_OPSET = 18
_INT64_MIN = -(2**63)
_F32 = TensorProto.FLOAT


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and, depth first, every subgraph held in a node attribute."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                yield from _graphs(sub)


def _is_scan(node: onnx.NodeProto) -> bool:
    return node.domain == scan_node.DOMAIN and node.op_type == scan_node.OP_TYPE


class _Names:
    """Allocates names not used by any value, node or graph of the model (scans can number ~100)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self._taken: set[str] = set()
        for g in _graphs(model.graph):
            self._taken.add(g.name)
            self._taken.update(v.name for v in (*g.input, *g.output, *g.value_info))
            self._taken.update(t.name for t in g.initializer)
            for node in g.node:
                self._taken.add(node.name)
                self._taken.update(node.input)
                self._taken.update(node.output)

    def __call__(self, base: str) -> str:
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name


class _Builder:
    """Appends single-output standard nodes named `<prefix>__<tag>` (node name = its output name)."""

    def __init__(self, names: _Names, prefix: str) -> None:
        self.names = names
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []

    def op(self, op_type: str, inputs: list[str], tag: str | None = None, output: str | None = None,
           **attrs) -> str:
        out = output or self.names(f"{self.prefix}__{tag or op_type.lower()}")
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.names(f"{out}__node"), **attrs))
        return out

    def ints(self, values: list[int], tag: str, scalar: bool = False) -> str:
        """An int64 constant, 1-D (axes, shapes) or, with `scalar`, 0-D (for the trip count arithmetic)."""
        dims = [] if scalar else [len(values)]
        return self.op("Constant", [], tag, value=helper.make_tensor("v", TensorProto.INT64, dims, values))

    def float_scalar(self, value: float, tag: str) -> str:
        return self.op("Constant", [], tag, value=helper.make_tensor("v", _F32, [], [value]))


def _expand(node: onnx.NodeProto, names: _Names, out_type: int) -> list[onnx.NodeProto]:
    """The standard-op subgraph computing `node` (see plugins_trt/include/dimexport_scan.h for the math)."""
    u, delta, A, Bm, Cm, Dv, z, bias = node.input
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    b = _Builder(names, node.output[0])

    # Sizes as (1,) int64 tensors, read at run time.
    bsz = b.op("Shape", [u], "batch", start=0, end=1)
    dsz = b.op("Shape", [u], "dim", start=1, end=2)
    lsz = b.op("Shape", [u], "seqlen", start=2, end=3)
    gsz = b.op("Shape", [Bm], "groups", start=1, end=2)
    nsz = b.op("Shape", [A], "dstate", start=1, end=2)
    dg = b.op("Div", [dsz, gsz], "dim_per_group")
    one = b.ints([1], "one")
    to_steps = [4, 0, 1, 2, 3]  # (B, G, x, y, L) -> (L, B, G, x, y): one token = one Gather on axis 0

    u32 = b.op("Cast", [u], "u_f32", to=_F32)
    delta32 = b.op("Cast", [delta], "delta_f32", to=_F32)
    dt = b.op("Add", [delta32, b.op("Unsqueeze", [bias, one], "bias_col")], "dt_raw")
    if attrs["delta_softplus"]:  # torch's softplus: identity above threshold 20
        big = b.op("Greater", [dt, b.float_scalar(20.0, "threshold")], "dt_big")
        dt = b.op("Where", [big, dt, b.op("Softplus", [dt], "dt_softplus")], "dt")
    chan_shape = b.op("Concat", [bsz, gsz, dg, one, lsz], "chan_shape", axis=0)
    dt_l = b.op("Transpose", [b.op("Reshape", [dt, chan_shape], "dt_grouped")], "dt_steps", perm=to_steps)
    dtu = b.op("Reshape", [b.op("Mul", [dt, u32], "dtu"), chan_shape], "dtu_grouped")
    dtu_l = b.op("Transpose", [dtu], "dtu_steps", perm=to_steps)  # (L, B, G, D/G, 1)
    two = b.ints([2], "axis2")
    b_l, c_l = (  # (L, B, G, 1, N)
        b.op("Transpose", [b.op("Unsqueeze", [b.op("Cast", [m], f"{t}_f32", to=_F32), two], f"{t}_col")],
             f"{t}_steps", perm=to_steps)
        for m, t in ((Bm, "B"), (Cm, "C"))
    )
    a_grouped = b.op("Reshape", [A, b.op("Concat", [gsz, dg, nsz], "A_shape", axis=0)], "A_grouped")  # (G, D/G, N)
    state_shape = b.op("Concat", [bsz, gsz, dg, nsz], "state_shape", axis=0)
    h0 = b.op("ConstantOfShape", [state_shape], "h0", value=helper.make_tensor("v", _F32, [1], [0.0]))
    trips = b.op("Squeeze", [lsz, b.ints([0], "axis0")], "trips")
    last_axis = b.ints([-1], "axis_last")
    last = b.op("Sub", [trips, b.ints([1], "one_scalar", scalar=True)], "last") if attrs["reverse"] else None

    # Loop body: h = exp(dt*A) * h + (dt*u) * B_t ; y_t = sum_n h * C_t. Outer values are read by scope.
    body = _Builder(names, f"{node.output[0]}__body")
    it, cond, h = names(f"{body.prefix}__iter"), names(f"{body.prefix}__cond_in"), names(f"{body.prefix}__h_in")
    t = body.op("Sub", [last, it], "t") if last else it
    step = {k: body.op("Gather", [v, t], f"{k}_t", axis=0)
            for k, v in (("dt", dt_l), ("dtu", dtu_l), ("B", b_l), ("C", c_l))}
    decay = body.op("Exp", [body.op("Mul", [step["dt"], a_grouped], "dtA")], "dA")
    h_new = body.op("Add", [body.op("Mul", [decay, h], "dAh"), body.op("Mul", [step["dtu"], step["B"]], "dBu")], "h")
    y_t = body.op("ReduceSum", [body.op("Mul", [h_new, step["C"]], "hC"), last_axis], "y", keepdims=0)
    # Trip-limit-only loop (TensorRT's recommendation): the Loop has no condition input and the body's
    # condition output is a constant, never its condition input, which TensorRT's importer leaves
    # unregistered in that case ("Node input was not registered"; seen with TensorRT-RTX 1.7).
    cond_out = body.op("Constant", [], "cond_out", value=helper.make_tensor("v", TensorProto.BOOL, [], [True]))
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        body.nodes, names(body.prefix),
        inputs=[vi(it, TensorProto.INT64, []), vi(cond, TensorProto.BOOL, []), vi(h, _F32, None)],
        outputs=[vi(cond_out, TensorProto.BOOL, []), vi(h_new, _F32, None), vi(y_t, _F32, None)],
    )
    h_last, ys = names(f"{b.prefix}__h_last"), names(f"{b.prefix}__ys")
    b.nodes.append(helper.make_node("Loop", [trips, "", h0], [h_last, ys], name=names(f"{b.prefix}__loop"), body=graph))

    if attrs["reverse"]:  # stacked in scan order (t = L-1 first): flip back to token order
        flip = [b.ints([-1], "flip_start"), b.ints([_INT64_MIN], "flip_end"), b.ints([0], "flip_axis"),
                b.ints([-1], "flip_step")]
        ys = b.op("Slice", [ys, *flip], "ys_flipped")
    out_shape = b.op("Concat", [bsz, dsz, lsz], "out_shape", axis=0)
    y = b.op("Reshape", [b.op("Transpose", [ys], "ys_bgdl", perm=[1, 2, 3, 0]), out_shape], "y_scan")  # (B, D, L)
    y = b.op("Add", [y, b.op("Mul", [u32, b.op("Unsqueeze", [Dv, one], "D_col")], "Du")], "y_skip")
    if attrs["has_z"]:
        z32 = b.op("Cast", [z], "z_f32", to=_F32)
        y = b.op("Mul", [y, b.op("Mul", [z32, b.op("Sigmoid", [z32], "z_sigmoid")], "z_silu")], "y_gated")
    b.op("Cast", [y], output=node.output[0], to=out_type)
    return b.nodes


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types: dict[str, int] = {}
    for g in _graphs(model.graph):
        for v in (*g.input, *g.output, *g.value_info):
            if v.type.HasField("tensor_type"):
                types[v.name] = v.type.tensor_type.elem_type
        types.update((t.name, t.data_type) for t in g.initializer)
    return types


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with initializers turned into typed inputs: inference serialises it, and a model with
    its weights inline may exceed protobuf's 2 GB limit."""
    scan_node.register_schema()
    g = model.graph
    declared = {v.name for v in g.input}
    weights = [helper.make_tensor_value_info(t.name, t.data_type, t.dims)
               for t in g.initializer if t.name not in declared]
    graph = helper.make_graph(g.node, g.name, [*g.input, *weights], g.output, value_info=g.value_info)
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version,
                             functions=model.functions)


def expand_scan_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every DimSelectiveScan node replaced by standard ONNX ops (opset >= 18).

    The `trt.plugins` opset import is dropped once no custom node is left. The scan's output keeps its
    name, type and value_info, so the rest of the graph is untouched.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    opsets = {o.domain or "ai.onnx": o.version for o in result.opset_import}
    if opsets.get("ai.onnx", 0) < MIN_OPSET:
        raise ValueError(f"expand_scan_nodes needs a default-domain opset >= {MIN_OPSET}, got {opsets}")
    graphs = list(_graphs(result.graph))
    if not any(_is_scan(n) for g in graphs for n in g.node):
        return result

    types = _elem_types(result)
    needed = {n.input[0] for g in graphs for n in g.node if _is_scan(n)}
    if not needed <= types.keys():  # some u is typed only by inference (the schema types out = u)
        types = _elem_types(onnx.shape_inference.infer_shapes(_weightless(result)))
    names = _Names(result)
    for g in reversed(graphs):  # subgraphs first: re-filling a parent's nodes copies its subgraphs
        nodes: list[onnx.NodeProto] = []
        for n in g.node:
            if not _is_scan(n):
                nodes.append(n)
            elif n.input[0] not in types:
                raise ValueError(f"cannot tell the dtype of {n.input[0]!r}, input u of scan node {n.name!r}")
            else:
                nodes.extend(_expand(n, names, types[n.input[0]]))
        del g.node[:]
        g.node.extend(nodes)

    if not any(n.domain == scan_node.DOMAIN for g in _graphs(result.graph) for n in g.node):
        kept = [o for o in result.opset_import if o.domain != scan_node.DOMAIN]
        del result.opset_import[:]
        result.opset_import.extend(kept)
    return result

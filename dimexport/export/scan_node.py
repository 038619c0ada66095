"""The ONNX form of the selective scan (one `trt.plugins::DimSelectiveScan` node per scan call) and of the fused
causal conv + SiLU, RMSNorm + modulation and gated residual (standard ops).

This module is the one place that knows the node's contract, shared by the exporter, the checker
(OpSchema), the portable rewrite, ONNX Runtime's reference kernel and (in C++) the TensorRT plugin:

inputs (always 8, fixed order)  u, delta (B, D, L) T; A (D, N) float32; B, C (B, G, N, L) T;
                                D (D,) float32; z (B, D, L) T; delta_bias (D,) float32
output                          out (B, D, L) T, with T in {float32, float16, bfloat16}
attributes                      plugin_version "1", plugin_namespace "dimexport" (STRING);
                                delta_softplus, reverse, has_z (INT 0/1: TensorRT reads INT as int32)

Absent optional tensors of the torch op are exported as exact substitutes so the arity stays fixed:
D and delta_bias as zeros, z as a copy of u with has_z = 0 (the plugin then ignores it).
"""

from __future__ import annotations

import onnx
import onnxscript
import torch
from onnxscript import opset18 as op

from ..ops.selective_scan import OP_NAME  # noqa: F401  (the torch op this node stands for)

DOMAIN = "trt.plugins"
OP_TYPE = "DimSelectiveScan"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "dimexport"
INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
INT_ATTRS = ("delta_softplus", "reverse", "has_z")
FP32_INPUTS = ("A", "D", "delta_bias")

_domain = onnxscript.values.Opset(DOMAIN, 1)


def translate_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, reverse=False):
    """custom_translation_table entry for torch.ops.dimexport.selective_scan: emits one flat node.

    Traced (not scripted) so one function serves every dtype; the registered OpSchema tells onnxscript
    the node's arity and output type.
    """
    register_schema()
    zeros = op.ConstantOfShape(op.Shape(A, start=0, end=1))  # float32 zeros of shape (D,)
    return _domain.DimSelectiveScan(
        u, delta, A, B, C,
        zeros if D is None else D,
        u if z is None else z,
        zeros if delta_bias is None else delta_bias,
        plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE,
        delta_softplus=int(delta_softplus), reverse=int(reverse), has_z=int(z is not None),
    )


def _infer(ctx: onnx.shape_inference.InferenceContext) -> None:
    """Output = type and shape of u (kept trivial: onnx/onnx#7508 reports crashes in complex hooks)."""
    ctx.set_output_type(0, ctx.get_input_type(0))


def register_schema() -> None:
    """Register the node's OpSchema so onnx.checker (full check) and shape inference know it. Idempotent."""
    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    T = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    inp = onnx.defs.OpSchema.FormalParameter
    schema = onnx.defs.OpSchema(
        OP_TYPE,
        DOMAIN,
        1,
        doc="Mamba-1 selective scan (dimexport); see dimexport/export/scan_node.py.",
        inputs=[inp(n, "F" if n in FP32_INPUTS else "T") for n in INPUTS],
        outputs=[inp("out", "T")],
        type_constraints=[("T", T, "activations"), ("F", ["tensor(float)"], "parameters, fp32")],
        attributes=[
            onnx.defs.OpSchema.Attribute("plugin_version", onnx.defs.OpSchema.AttrType.STRING, "plugin version"),
            onnx.defs.OpSchema.Attribute("plugin_namespace", onnx.defs.OpSchema.AttrType.STRING, "plugin namespace"),
            *(onnx.defs.OpSchema.Attribute(a, onnx.defs.OpSchema.AttrType.INT, a) for a in INT_ATTRS),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    onnx.defs.register_schema(schema)


def translate_causal_conv1d_silu(x, weight, bias=None, reverse=False):
    """custom_translation_table entry for torch.ops.dimexport.causal_conv1d_silu: standard ONNX Conv (group = channels,
    the causal padding on one side; reverse: on the other side with the taps flipped) and u * Sigmoid(u), which
    every runtime runs and TensorRT fuses itself. Channels and width are static (the weight's shape)."""
    dim, width = weight.shape[0], weight.shape[1]
    w = op.Unsqueeze(weight, op.Constant(value_ints=[1]))  # (D, 1, K)
    if reverse:
        w = op.Slice(w, op.Constant(value_ints=[-1]), op.Constant(value_ints=[-(2**63)]), op.Constant(value_ints=[2]),
                     op.Constant(value_ints=[-1]))
    pads = [0, width - 1] if reverse else [width - 1, 0]
    u = op.Conv(x, w, group=dim, pads=pads) if bias is None else op.Conv(x, w, bias, group=dim, pads=pads)
    return op.Mul(u, op.Sigmoid(u))


def translate_rms_norm_modulate(x, weight, scale=None, shift=None, eps=1e-5, rows=None):
    """custom_translation_table entry for torch.ops.dimexport.rms_norm_modulate: the reference's standard ops (a
    Gather of the tokens with `rows`, fp32 statistics, the weight's dtype after the norm)."""
    if rows is not None:
        x = op.Gather(x, rows, axis=1)
    x32 = op.Cast(x, to=onnx.TensorProto.FLOAT)
    ms = op.ReduceMean(op.Mul(x32, x32), op.Constant(value_ints=[-1]), keepdims=1)
    y = op.Mul(x32, op.Reciprocal(op.Sqrt(op.Add(ms, op.Constant(value_float=eps)))))
    y = op.CastLike(op.Mul(y, op.Cast(weight, to=onnx.TensorProto.FLOAT)), weight)
    if scale is not None:
        y = op.Mul(y, op.Add(op.CastLike(op.Constant(value_float=1.0), scale), scale))
    if shift is not None:
        y = op.Add(y, shift)
    return y


def translate_gated_residual(residual, y, gate=None, rows=None):
    """custom_translation_table entry for torch.ops.dimexport.gated_residual: the reference's standard ops."""
    if rows is not None:
        residual = op.Gather(residual, rows, axis=1)
    gated = y if gate is None else op.Mul(op.Add(op.CastLike(op.Constant(value_float=1.0), gate), gate), y)
    return op.Add(residual, op.CastLike(gated, residual))


def translation_table() -> dict:
    """torch.onnx.export's custom_translation_table for dimexport's ops (the one list the exporter and tests use)."""
    return {
        torch.ops.dimexport.selective_scan.default: translate_selective_scan,
        torch.ops.dimexport.causal_conv1d_silu.default: translate_causal_conv1d_silu,
        torch.ops.dimexport.rms_norm_modulate.default: translate_rms_norm_modulate,
        torch.ops.dimexport.gated_residual.default: translate_gated_residual,
    }

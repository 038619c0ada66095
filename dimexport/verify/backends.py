"""Backends that run an exported artifact: PyTorch (the reference), ONNX Runtime, TensorRT."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import torch

from ..errors import DimexportError, EnvironmentProblem, InputError
from ..export import scan_node
from ..export.exporter import OUTPUT_NAME, Artifact
from ..models import DTYPES, build_model, cast_model
from ..models.checkpoint import load_checkpoint
from ..ops import selective_scan

ORT_CONTRIB_DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions' fixed Python-op domain


def run_torch(artifact: Artifact, feeds: dict[str, np.ndarray], device: str = "cpu") -> np.ndarray:
    """Rebuild the exported model from the manifest (same weights, same dtype) and run it eagerly."""
    spec = artifact.manifest["spec"]
    cfg = artifact.manifest["config"]["id"]
    if spec["checkpoint"]:
        model = load_checkpoint(cfg, spec["checkpoint"], spec["resolution"])
    else:
        model = build_model(cfg, spec["resolution"], seed=spec["seed"])
    model = cast_model(model, DTYPES[spec["dtype"]]).to(device)
    x, t, y = (torch.from_numpy(feeds[k]).to(device) for k in ("x", "t", "y"))
    try:  # cuDNN convolutions default to TF32 on the GPU; the reference must be true fp32
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            return model(x, t, y).float().cpu().numpy()
    except (RuntimeError, NotImplementedError) as exc:
        if "not implemented for" not in str(exc):
            raise
        raise InputError(f"PyTorch cannot run a {spec['dtype']} model on {device}: {exc}; use --device cuda") from exc


@functools.cache
def _register_python_scan_op() -> str:
    """Register the reference scan as an onnxruntime-extensions Python op (float32 I/O); returns its op_type."""
    try:
        from onnxruntime_extensions import PyOp, onnx_op
    except ImportError:
        raise EnvironmentProblem(
            "running the plugin graph in ONNX Runtime needs onnxruntime-extensions: pip install onnxruntime-extensions "
            "(or export with --scan portable)"
        ) from None

    @onnx_op(op_type=scan_node.OP_TYPE, inputs=[PyOp.dt_float] * len(scan_node.INPUTS), outputs=[PyOp.dt_float],
             attrs={a: PyOp.dt_int64 for a in scan_node.INT_ATTRS})
    def _scan(u, delta, A, B, C, D, z, delta_bias, **attrs):
        args = [torch.from_numpy(np.ascontiguousarray(a)) for a in (u, delta, A, B, C, D, z, delta_bias)]
        if not attrs["has_z"]:
            args[6] = None
        out = selective_scan(*args, delta_softplus=bool(attrs["delta_softplus"]), reverse=bool(attrs["reverse"]))
        return out.numpy()

    return scan_node.OP_TYPE


def _to_python_op(model: onnx.ModelProto, dtype: str) -> onnx.ModelProto:
    """Move the scan nodes to the Python-op domain; for fp16 wrap them in Casts to and from float32.

    The Python-op bridge has no float16. The casts are exact on the way in, and the scan computes in
    fp32 and rounds once on the way out, so the node's semantics are unchanged.
    """
    elem = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16}[dtype]
    nodes = []
    for node in model.graph.node:
        if not (node.domain == scan_node.DOMAIN and node.op_type == scan_node.OP_TYPE):
            nodes.append(node)
            continue
        inputs = list(node.input)
        if elem != onnx.TensorProto.FLOAT:
            for i, name in enumerate(scan_node.INPUTS):
                if name not in scan_node.FP32_INPUTS:
                    cast = f"{node.output[0]}__{name}_fp32"
                    nodes.append(onnx.helper.make_node("Cast", [inputs[i]], [cast], to=onnx.TensorProto.FLOAT))
                    inputs[i] = cast
        out = node.output[0] if elem == onnx.TensorProto.FLOAT else f"{node.output[0]}__fp32"
        attrs = {a.name: a.i for a in node.attribute if a.name in scan_node.INT_ATTRS}
        nodes.append(onnx.helper.make_node(_register_python_scan_op(), inputs, [out], domain=ORT_CONTRIB_DOMAIN, **attrs))
        if out != node.output[0]:
            nodes.append(onnx.helper.make_node("Cast", [out], [node.output[0]], to=elem))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    imports = [o for o in model.opset_import if o.domain != scan_node.DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports + [onnx.helper.make_opsetid(ORT_CONTRIB_DOMAIN, 1)])
    return model


def _ort_model_path(artifact: Artifact) -> Path:
    """The graph ORT can run: the portable one as is; the plugin one rewritten for the Python op.

    The rewritten copy sits next to model.onnx so its external-data references still resolve.
    """
    if artifact.manifest["spec"]["scan"] == "portable":
        return artifact.onnx_path
    dtype = artifact.manifest["spec"]["dtype"]
    if dtype == "bf16":
        raise InputError(
            "ONNX Runtime's CPU kernels and its Python ops have no bfloat16: verify a bf16 artifact with the trt "
            "backend, or export fp32/fp16 for ort"
        )
    _register_python_scan_op()
    path = artifact.folder / f"model.ort-{dtype}.onnx"
    if not path.exists():
        model = onnx.load(str(artifact.onnx_path), load_external_data=False)
        onnx.save(_to_python_op(model, dtype), str(path))
    return path


def ort_providers(artifact: Artifact) -> list[str]:
    """CUDA EP (onnxruntime-gpu) for the portable graph when present; the Python scan op runs on the CPU only."""
    import onnxruntime as ort

    gpu = "CUDAExecutionProvider" in ort.get_available_providers() and artifact.manifest["spec"]["scan"] == "portable"
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]


def run_ort(artifact: Artifact, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    path = _ort_model_path(artifact)
    if artifact.manifest["spec"]["scan"] == "plugin":
        from onnxruntime_extensions import get_library_path

        options.register_custom_ops_library(get_library_path())
    try:
        session = ort.InferenceSession(str(path), options, providers=ort_providers(artifact))
        (out,) = session.run([OUTPUT_NAME], feeds)
    except Exception as exc:  # ORT raises its own pybind types
        raise DimexportError(f"ONNX Runtime could not run {path}: {str(exc).strip()[:500]}") from exc
    return out.astype(np.float32)


def run_trt(artifact: Artifact, feeds: dict[str, np.ndarray], engine: str | Path | None = None) -> np.ndarray:
    """Run the artifact's engine: `engine` if given, else the newest one built for this TensorRT and GPU."""
    from ..runtime import Engine, compatibility_problems, rebuild_command
    from ..trt import api
    from ..trt.build import find_engines

    if engine is None:
        trt, sm = api.TrtInfo.of(api.load()), api.gpu_sm()
        built = find_engines(artifact)
        # TensorRT and GPU decide here; Engine() checks the plugin library it loads.
        usable = [e for e in built if not compatibility_problems(e.info, trt, sm, None)]
        if not usable:
            raise EnvironmentProblem(
                f"no engine of {artifact.folder} was built for {trt.module} {trt.version} on {sm} "
                f"({len(built)} built for other setups): run `{rebuild_command({'spec': artifact.manifest['spec']})}` "
                f"or pass --engine"
            )
        engine = usable[0].folder
    runner = Engine(engine)
    inputs = {s.name: torch.from_numpy(feeds[s.name]).to(runner.device, s.dtype) for s in runner.inputs}
    return runner.infer(inputs)[OUTPUT_NAME].float().cpu().numpy()


BACKENDS = {"torch": run_torch, "ort": run_ort, "trt": run_trt}

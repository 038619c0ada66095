"""The one denoiser interface: every backend implements it, every sampler and `verify` call it.

A `Denoiser` maps (x, t, y) to the network's raw output (epsilon, plus the variance channels of
learned-sigma models) as float32 on x's device, for any batch: batches larger than the backend takes
are split, smaller ones padded up to its minimum (an engine's optimisation profile, an export's batch range).
It says what it runs: `cfg`, `resolution`, `min_batch`/`max_batch`, `dtype` (its compute dtype's name) and
`device` (where it computes).

    den = load_denoiser("torch", "dim-l", checkpoint="nnet_ema.pth")     # eager PyTorch
    den = load_denoiser("graph", "dim-l", checkpoint=..., device="cuda") # PyTorch replayed from CUDA graphs
    den = load_denoiser("ort", artifact="dimexport-out/dim-tiny/plugin-fp32-<key>")
    den = load_denoiser("trt", artifact=..., engine=...)                 # TensorRT, CUDA
    out = den(x, t, y)
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from ..configs import ModelConfig
from ..errors import DimexportError, EnvironmentProblem, InputError
from ..export import scan_node
from ..export.exporter import (OUTPUT_NAME, Artifact, ExportSpec, artifact_folder, build_for_export, read_artifact,
                                spec_command)
from ..models import DTYPES, cast_model, cuda_graphed
from ..models.checkpoint import load_model

BACKEND_NAMES = ("torch", "graph", "ort", "trt")
ORT_CONTRIB_DOMAIN = "ai.onnx.contrib"  # onnxruntime-extensions' fixed Python-op domain


def in_batches(forward: Callable[..., Tensor], inputs: tuple[Tensor, ...], min_batch: int = 1,
               max_batch: int | None = None) -> Tensor:
    """forward(*inputs) as float32, in chunks of at most `max_batch` rows, a short chunk padded up to `min_batch` by
    repeating its last row (the padded outputs are dropped): what a backend with a fixed batch range needs."""
    step = max_batch or inputs[0].shape[0]
    outs = []
    for i in range(0, inputs[0].shape[0], step):
        chunk = [v[i : i + step] for v in inputs]
        n = chunk[0].shape[0]
        if n < min_batch:
            chunk = [torch.cat([v, v[-1:].expand(min_batch - n, *v.shape[1:])]) for v in chunk]
        outs.append(forward(*chunk)[:n].float())
    return torch.cat(outs)


class Denoiser:
    """Base: batch splitting/padding and the checks every backend shares; subclasses implement `_forward`."""

    name = "denoiser"

    def __init__(self, cfg: ModelConfig, resolution: int, dtype: str, device: str | torch.device, min_batch: int = 1,
                 max_batch: int | None = None) -> None:
        self.cfg, self.resolution, self.min_batch, self.max_batch = cfg, resolution, min_batch, max_batch
        self.dtype, self.device = dtype, torch.device(device)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        expected = self.cfg.input_shape(1, self.resolution)[1:]
        if tuple(x.shape[1:]) != expected:
            raise InputError(f"{self.name}: x has shape {tuple(x.shape)}, the model takes (B, {', '.join(map(str, expected))})")
        if x.shape[0] == 0:
            raise InputError(f"{self.name}: empty batch (x has shape {tuple(x.shape)})")
        if self.cfg.num_classes and y is None:
            raise InputError(f"{self.name}: {self.cfg.id} is class-conditional: pass y (num_classes = null label)")
        if y is None:
            y = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        forward = lambda xs, ts, ys: self._forward(xs, ts.float(), ys.long())  # noqa: E731
        return in_batches(forward, (x, t, y), self.min_batch, self.max_batch).to(x.device)

    def _forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def at_resolution(self, resolution: int) -> "Denoiser":
        """The same network at another resolution (training-free upsampling needs both). An exported backend holds
        one resolution per artifact, so it opens the artifact of the same spec at that resolution (sibling_artifact)."""
        return self._reopen(sibling_artifact(self.artifact, resolution))

    def _reopen(self, artifact: Artifact) -> "Denoiser":
        raise NotImplementedError


class TorchDenoiser(Denoiser):
    """The PyTorch module, eager or replayed from CUDA graphs (one per batch size, captured on first use)."""

    def __init__(self, model: nn.Module, resolution: int | None = None, device: str = "cpu", dtype: str = "fp32",
                 cuda_graph: bool = False, max_batch: int | None = None) -> None:
        cfg: ModelConfig = model.cfg
        super().__init__(cfg, resolution or cfg.resolution, dtype, device, 1, max_batch)
        if cuda_graph and self.device.type != "cuda":
            raise InputError("the graph backend replays CUDA graphs: it needs --device cuda")
        self.torch_dtype = DTYPES[dtype]
        self.model = cast_model(model, self.torch_dtype).to(self.device).eval()
        self.cuda_graph = cuda_graph
        self.name = "graph" if cuda_graph else "torch"
        self._graphs: dict[int, object] = {}

    def at_resolution(self, resolution: int) -> "TorchDenoiser":
        self.cfg.grid(resolution)  # validates
        return TorchDenoiser(self.model, resolution, str(self.device), self.dtype, self.cuda_graph, self.max_batch)

    def _forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        x, t, y = x.to(self.device, self.torch_dtype), t.to(self.device), y.to(self.device)
        # cuDNN convolutions default to TF32 on the GPU; an fp32 model must compute in true fp32 (a graph keeps the
        # algorithms chosen while it is captured)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            if self.cuda_graph:
                if x.shape[0] not in self._graphs:
                    self._graphs[x.shape[0]] = cuda_graphed(self.model, (x, t, y))
                return self._graphs[x.shape[0]](x, t, y).clone()
            try:
                with torch.inference_mode():
                    return self.model(x, t, y)
            except (RuntimeError, NotImplementedError) as exc:
                if "not implemented for" not in str(exc):
                    raise
                raise InputError(f"PyTorch cannot run a {self.dtype} model on {self.device}: {exc}; use --device cuda") from exc


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
    from ..ops import selective_scan

    @onnx_op(op_type=scan_node.OP_TYPE, inputs=[PyOp.dt_float] * len(scan_node.INPUTS), outputs=[PyOp.dt_float],
             attrs={a: PyOp.dt_int64 for a in scan_node.INT_ATTRS})
    def _scan(u, delta, A, B, C, D, z, delta_bias, **attrs):
        args = [torch.from_numpy(np.ascontiguousarray(a)) for a in (u, delta, A, B, C, D, z, delta_bias)]
        if not attrs["has_z"]:
            args[6] = None
        with torch.inference_mode():
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


def ort_providers(artifact: Artifact, standard_ops: bool = False) -> list[str]:
    """CUDA EP (onnxruntime-gpu) when present for graphs of standard ops: the portable denoiser, or with
    `standard_ops` any (the decoder); the plugin graph's Python scan op runs on the CPU only."""
    import onnxruntime as ort

    standard_ops = standard_ops or artifact.manifest["spec"]["scan"] == "portable"
    gpu = "CUDAExecutionProvider" in ort.get_available_providers() and standard_ops
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]


def ort_session(path: Path, providers: list[str], scan_op: bool = False):
    """An ONNX Runtime session of `path` (quiet logs; `scan_op`: onnxruntime-extensions' Python-op library for the
    plugin graph's scan node), a load failure as DimexportError."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if scan_op:
        from onnxruntime_extensions import get_library_path

        options.register_custom_ops_library(get_library_path())
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind types
        raise DimexportError(f"ONNX Runtime could not load {path}: {str(exc).strip()[:500]}") from exc


def ort_run(session, output: str, feeds: dict[str, np.ndarray], what: Path) -> np.ndarray:
    """One session run of `output` as float32, a failure as DimexportError naming `what` was run."""
    try:
        (out,) = session.run([output], feeds)
    except Exception as exc:  # ORT raises its own pybind types
        raise DimexportError(f"ONNX Runtime could not run {what}: {str(exc).strip()[:500]}") from exc
    return out.astype(np.float32)


def spec_of(artifact: Artifact) -> ExportSpec:
    """The ExportSpec an artifact was made from (its manifest's), which rebuilds the PyTorch reference."""
    spec = dict(artifact.manifest["spec"])
    spec["batch"] = tuple(spec["batch"])
    return ExportSpec(**spec)


def sibling_artifact(artifact: Artifact, resolution: int) -> Artifact:
    """The artifact exported from the same spec (weights, dtype, scan, batch range, VAE) at another resolution, from
    the same output folder (`dimexport export ... --resolution R` puts it beside this one)."""
    want = dataclasses.replace(spec_of(artifact), resolution=resolution)
    root = artifact.folder.parent.parent
    folder = artifact_folder(want, root)[0]  # by content key: the same weights, versions and VAE as well
    if folder.is_dir():
        return read_artifact(folder)
    here = spec_of(artifact).resolution
    raise InputError(f"artifact {artifact.folder} holds {want.model_id} at {here} px only, and sampling at {resolution} "
                     f"px (--upsample {resolution // here}) needs the same export at {resolution} px beside it in "
                     f"{root}: run `{spec_command(dataclasses.asdict(want))} -o {root}`")


class OrtDenoiser(Denoiser):
    """An exported artifact in ONNX Runtime: the portable graph as is, the plugin graph with the reference scan
    as an onnxruntime-extensions Python op. One session, made once; batches kept inside the export's range."""

    name = "ort"

    def __init__(self, artifact: Artifact | str | Path) -> None:
        self.artifact = artifact if isinstance(artifact, Artifact) else read_artifact(artifact)
        spec = spec_of(self.artifact)
        lo, _, hi = spec.batch
        providers = ort_providers(self.artifact)
        super().__init__(spec.config, spec.resolution or spec.config.resolution, spec.dtype,
                         "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu", lo, hi)
        self.np_dtype = {"fp32": np.float32, "fp16": np.float16}.get(spec.dtype)
        self.session = ort_session(_ort_model_path(self.artifact), providers, scan_op=spec.scan == "plugin")
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _reopen(self, artifact: Artifact) -> "OrtDenoiser":
        return OrtDenoiser(artifact)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return ort_run(self.session, OUTPUT_NAME, {k: v for k, v in feeds.items() if k in self.input_names},
                       self.artifact.folder)

    def _forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if self.np_dtype is None:
            raise InputError("ONNX Runtime's CPU kernels have no bfloat16: run a bf16 artifact with the trt backend, "
                             "or export fp32/fp16 for ort")
        feeds = {"x": x.detach().cpu().numpy().astype(self.np_dtype), "t": t.detach().cpu().numpy().astype(np.float32),
                 "y": y.detach().cpu().numpy().astype(np.int64)}
        return torch.from_numpy(self.run_feeds(feeds))


class TrtDenoiser(Denoiser):
    """A TensorRT engine of an artifact (runtime.Engine), batches kept inside its optimisation profile."""

    name = "trt"

    def __init__(self, artifact: Artifact | str | Path, engine: str | Path | None = None, cuda_graph: bool = False) -> None:
        from .engine import Engine, find_usable_engine

        self.artifact = artifact if isinstance(artifact, Artifact) else read_artifact(artifact)
        spec = spec_of(self.artifact)
        self.engine = Engine(engine or find_usable_engine(self.artifact))
        lo, _, hi = spec.batch  # the engine's optimisation profile is the export's batch range
        super().__init__(spec.config, spec.resolution or spec.config.resolution, spec.dtype, self.engine.device, lo, hi)
        self.cuda_graph = cuda_graph

    def _reopen(self, artifact: Artifact) -> "TrtDenoiser":
        return TrtDenoiser(artifact, cuda_graph=self.cuda_graph)  # that artifact's newest usable engine

    def _forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        feeds = {s.name: v.to(self.engine.device, s.dtype) for s, v in zip(self.engine.inputs, (x, t, y))}
        return self.engine.infer(feeds, cuda_graph=self.cuda_graph)[OUTPUT_NAME]


def torch_denoiser_for(artifact: Artifact, device: str = "cpu", cuda_graph: bool = False) -> TorchDenoiser:
    """The PyTorch module an artifact was exported from (same weights, same dtype): verify's reference."""
    spec = spec_of(artifact)
    return TorchDenoiser(build_for_export(spec), spec.resolution, device, spec.dtype, cuda_graph)




def load_denoiser(backend: str, model_id: str | None = None, checkpoint: str | Path | None = None,
                  artifact: str | Path | None = None, engine: str | Path | None = None, resolution: int | None = None,
                  device: str = "cpu", dtype: str = "fp32", seed: int = 0) -> Denoiser:
    """A denoiser by backend name. torch/graph: the model id with --checkpoint (seeded random weights without),
    or the module an artifact was exported from; ort/trt: an exported artifact folder, which must be of
    `model_id` and `resolution` when those are given."""
    if backend not in BACKEND_NAMES:
        raise InputError(f"backend {backend!r} is not one of {', '.join(BACKEND_NAMES)}")
    if backend in ("torch", "graph"):
        if artifact is not None:
            den = torch_denoiser_for(read_artifact(artifact), device, cuda_graph=backend == "graph")
        elif model_id is None:
            raise InputError(f"the {backend} backend needs --model (or --artifact)")
        else:
            return TorchDenoiser(load_model(model_id, checkpoint, resolution, seed), resolution, device, dtype,
                                 cuda_graph=backend == "graph")
    elif artifact is None:
        raise InputError(f"the {backend} backend runs an exported artifact: pass --artifact DIR "
                         f"(made by `dimexport export`{' or `dimexport build`' if backend == 'trt' else ''})")
    else:
        art = read_artifact(artifact)
        den = OrtDenoiser(art) if backend == "ort" else TrtDenoiser(art, engine)
    if model_id is not None and den.cfg.id != model_id:
        raise InputError(f"artifact {artifact} holds {den.cfg.id}, not {model_id}: pass an artifact of {model_id}")
    if resolution is not None and den.resolution != resolution:
        raise InputError(f"artifact {artifact} was exported at {den.resolution} px, not {resolution}: "
                         f"export again with --resolution {resolution}")
    return den

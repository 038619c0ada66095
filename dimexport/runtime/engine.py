"""Run an engine from `dimexport build` on torch tensors, from Python applications.

    from dimexport.runtime import Engine
    engine = Engine("dimexport-out/dim-l/plugin-fp16-<key>/engines/<name>")   # folder or .engine file
    eps = engine(x, t, y)                      # CUDA tensors: x (B,4,32,32) fp16, t (B,) fp32, y (B,) int64
    eps = engine(x, t, y, cuda_graph=True)     # captured once per input shape, then replayed

Before deserialising, the engine's build.json is checked against this process (TensorRT module and version,
GPU SM, plugin library hash): a mismatch is an exit-4 error that says how to rebuild, not a TensorRT
serialisation assertion.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..libraries import trt_plugin_library_path
from ..errors import DimexportError, EnvironmentProblem, InputError
from ..export.exporter import Artifact, file_sha256, spec_command
from ..trt import api
from ..trt.build import EngineArtifact, find_engines, read_build


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]  # -1 for the dynamic batch
    batch_range: tuple[int, int] | None = None  # inputs: the profile's min and max batch


def rebuild_command(info: dict) -> str:
    return spec_command(info["spec"], "build")


def compatibility_problems(info: dict, trt: api.TrtInfo, sm: str, plugin_sha: str | None) -> list[str]:
    """What in this process differs from the one the engine was built in (empty when it can be deserialised).

    plugin_sha: the sha256 of the plugin library that will be loaded; None leaves the plugin unchecked (to pick
    engines by TensorRT and GPU before a library is chosen)."""
    problems = []
    built = info["tensorrt"]
    if (built["module"], built["version"]) != (trt.module, trt.version):
        problems.append(f"it was built with {built['module']} {built['version']}, this process has {trt.module} {trt.version}")
    if info["gpu"]["sm"] != sm:
        problems.append(f"it was built for {info['gpu']['sm']} ({info['gpu']['name']}), this GPU is {sm}")
    if info["plugin"] and plugin_sha is not None and plugin_sha != info["plugin"]["sha256"]:
        problems.append(
            f"it was built with the plugin library {info['plugin']['library']} (sha256 {info['plugin']['sha256'][:12]}), "
            f"the library loaded here has sha256 {plugin_sha[:12]}"
        )
    return problems


class Engine:
    """A deserialised engine with one execution context, bound to torch tensors on one CUDA device."""

    def __init__(
        self,
        path: str | os.PathLike,
        plugin_library: str | os.PathLike | None = None,
        device: int | str | torch.device | None = None,
        module: str | None = None,
        check_compatibility: bool = True,
        part: str = "denoiser",
    ) -> None:
        """`part` 'decoder' runs the VAE decoder's engine of the same build (latents -> images)."""
        self.build: EngineArtifact = read_build(path)
        info = self.build.info
        if part not in ("denoiser", "decoder"):
            raise InputError(f"part {part!r} must be 'denoiser' or 'decoder'")
        self.path = self.build.engine_path if part == "denoiser" else self.build.decoder_path
        if self.path is None:
            raise InputError(f"engine folder {self.build.folder} has no decoder engine (its artifact was exported "
                             "without --vae, or built before decoders existed): export with --vae PATH and build again")
        self._trt = trt = api.load(module or info["tensorrt"]["module"])
        device = torch.device(device if device is not None else "cuda")
        if device.type != "cuda":
            raise InputError(f"TensorRT engines run on CUDA devices, not {device}")
        sm = api.gpu_sm(device)
        self.device = device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
        plugin = self._plugin_path(plugin_library)
        if check_compatibility:
            problems = compatibility_problems(info, api.TrtInfo.of(trt), sm, file_sha256(plugin) if plugin else None)
            if problems:
                raise EnvironmentProblem(
                    f"engine {self.build.engine_path.name} cannot run here: {'; '.join(problems)}. "
                    f"Rebuild it in this environment: {rebuild_command(info)}"
                )
        self._logger = api.logger(trt)  # errors reach the caller inside the exceptions below
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            if plugin:
                api.load_plugin_library(trt, api.registry_of(trt, self._runtime), plugin)
            mark = self._logger.count
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                why = self._logger.errors_since(mark)
                matched = " (its build.json matches this process, so this is TensorRT's own refusal)" if check_compatibility else ""
                raise EnvironmentProblem(
                    f"{trt.__name__} {trt.__version__} could not deserialise {self.path}: {why}{matched}. "
                    f"To rebuild it here: {rebuild_command(info)}"
                )
            self._context = self._engine.create_execution_context()
            # TensorRT warns against the legacy default stream (extra synchronisation): the engine has its own.
            self._stream = torch.cuda.Stream()
        self.inputs, self.outputs = self._io()
        self._graphs: dict[tuple, tuple] = {}

    def _plugin_path(self, given: str | os.PathLike | None) -> Path | None:
        info = self.build.info
        if not info["plugin"]:
            return None
        path = Path(given) if given else trt_plugin_library_path() or Path(info["plugin"]["library"])
        if not path.is_file():
            raise EnvironmentProblem(
                f"engine {self.build.engine_path.name} needs the scan plugin library libdimexport_trt_plugin.so; "
                f"{path} does not exist: pass plugin_library=, set DIMEXPORT_TRT_PLUGIN_LIB or build it (plugins_trt/README.md)"
            )
        return path

    def _io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        engine, trt = self._engine, self._trt
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = api.torch_dtype(engine.get_tensor_dtype(name))
            shape = tuple(engine.get_tensor_shape(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                lo, _, hi = engine.get_tensor_profile_shape(name, 0)
                inputs.append(TensorSpec(name, dtype, shape, (lo[0], hi[0])))
            else:
                outputs.append(TensorSpec(name, dtype, shape))
        return inputs, outputs

    def _check(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = {s.name for s in self.inputs}
        if set(feeds) != names:
            raise InputError(f"the engine takes inputs {sorted(names)}, got {sorted(feeds)}")
        checked, batches = {}, set()
        for spec in self.inputs:
            tensor = feeds[spec.name]
            if not isinstance(tensor, torch.Tensor):
                raise InputError(f"input {spec.name} must be a torch.Tensor, got {type(tensor).__name__}")
            if tensor.device != self.device:
                raise InputError(f"input {spec.name} is on {tensor.device}; the engine runs on {self.device}: use .to('{self.device}')")
            if tensor.dtype != spec.dtype:
                raise InputError(f"input {spec.name} is {tensor.dtype}; this engine takes {spec.dtype}: use .to({spec.dtype})")
            if tensor.dim() != len(spec.shape) or any(d != -1 and d != s for d, s in zip(spec.shape, tensor.shape)):
                raise InputError(f"input {spec.name} has shape {tuple(tensor.shape)}; the engine takes {spec.shape} (-1: batch)")
            lo, hi = spec.batch_range
            if not lo <= tensor.shape[0] <= hi:
                raise InputError(f"input {spec.name} has batch {tensor.shape[0]}; the engine was built for {lo}..{hi}: rebuild with --batch")
            batches.add(tensor.shape[0])
            checked[spec.name] = tensor.contiguous()
        if len(batches) > 1:
            raise InputError(f"the inputs disagree on the batch size: {sorted(batches)}")
        return checked

    def _bind(self, context, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Set shapes and addresses; allocates the outputs on the current stream."""
        for name, tensor in feeds.items():
            mark = self._logger.count
            if not context.set_input_shape(name, tuple(tensor.shape)):
                why = self._logger.errors_since(mark)
                raise InputError(f"TensorRT rejected shape {tuple(tensor.shape)} for input {name}: {why}")
            context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for spec in self.outputs:
            out = torch.empty(tuple(context.get_tensor_shape(spec.name)), dtype=spec.dtype, device=self.device)
            context.set_tensor_address(spec.name, out.data_ptr())
            outputs[spec.name] = out
        return outputs

    def _enqueue(self, context, stream: torch.cuda.Stream) -> None:
        mark = self._logger.count
        if not context.execute_async_v3(stream.cuda_stream):
            raise DimexportError(f"TensorRT's enqueue failed: {self._logger.errors_since(mark)}")

    def infer(
        self, feeds: Mapping[str, torch.Tensor], stream: torch.cuda.Stream | None = None, cuda_graph: bool = False
    ) -> dict[str, torch.Tensor]:
        """Run the engine; returns fresh output tensors.

        By default it runs on the engine's own stream, after the work queued on the current stream and before
        whatever the caller queues on it next, so it behaves like any torch op. With `stream` it runs on that
        stream (after the current stream's work), and the outputs belong to `stream`: synchronise before using
        them on another one. With cuda_graph=True the first call per input shape runs once and captures a CUDA
        graph, with its own execution context (captured addresses are fixed, so each shape holds its own
        activation memory); later calls copy the inputs into the graph's buffers and replay it.
        """
        feeds = self._check(feeds)
        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream()
            owner = stream or current  # the stream the returned tensors belong to
            worker = stream or self._stream
            if stream is not None:
                stream.wait_stream(current)
                for tensor in feeds.values():  # the caller may free them while `stream` still reads them
                    tensor.record_stream(stream)
            with torch.cuda.stream(owner):
                if cuda_graph:
                    key = tuple((name, tuple(t.shape)) for name, t in feeds.items())
                    if key not in self._graphs:
                        self._graphs[key] = self._capture(feeds)
                    graph, static_in, static_out, _ = self._graphs[key]
                else:
                    outputs = self._bind(self._context, feeds)
            worker.wait_stream(owner)
            with torch.cuda.stream(worker):
                if cuda_graph:
                    for name, tensor in feeds.items():
                        static_in[name].copy_(tensor)
                    graph.replay()
                else:
                    self._enqueue(self._context, worker)
            owner.wait_stream(worker)
            if cuda_graph:
                with torch.cuda.stream(owner):
                    outputs = {name: out.clone() for name, out in static_out.items()}
            return outputs

    def _capture(self, feeds: Mapping[str, torch.Tensor]) -> tuple:
        """(graph, static inputs, static outputs, context): the context must live as long as the graph."""
        context = self._engine.create_execution_context()
        static_in = {name: tensor.clone() for name, tensor in feeds.items()}
        static_out = self._bind(context, static_in)
        self._stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        try:
            self._enqueue(context, self._stream)  # TensorRT initialises lazily on a first enqueue: not in the graph
            with torch.cuda.graph(graph, stream=self._stream):
                self._enqueue(context, self._stream)
        except Exception as exc:
            raise DimexportError(
                f"capturing {self.build.engine_path.name} in a CUDA graph failed ({exc}); TensorRT cannot capture "
                f"every engine (e.g. loops whose trip count is computed on the GPU): call it without cuda_graph"
            ) from exc
        torch.cuda.current_stream().wait_stream(self._stream)
        return graph, static_in, static_out, context

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """The denoiser's output for latents x, timesteps t and labels y (see `infer` for the keywords)."""
        return self.infer({"x": x, "t": t, "y": y}, **kwargs)[self.outputs[0].name]


def find_usable_engine(artifact: Artifact) -> Path:
    """The newest engine of `artifact` built for this TensorRT and GPU (Engine() then checks the plugin library)."""
    trt, sm = api.TrtInfo.of(api.load()), api.gpu_sm()
    built = find_engines(artifact)
    usable = [e for e in built if not compatibility_problems(e.info, trt, sm, None)]
    if not usable:
        raise EnvironmentProblem(
            f"no engine of {artifact.folder} was built for {trt.module} {trt.version} on {sm} "
            f"({len(built)} built for other setups): run `{rebuild_command({'spec': artifact.manifest['spec']})}` "
            f"or pass --engine"
        )
    return usable[0].folder

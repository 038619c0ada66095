"""Whole-denoiser speed (`dimexport bench`): one denoiser call, and optionally a whole guided sampling loop, on every
backend that runs here, beside a DiT of matching size and the official-style mamba-ssm block stack in the same run.

What is timed is what a user sees: the denoiser interface's call (inputs in, fp32 eps out) after warm-up, with CUDA
events around each call on the GPU (perf_counter on the CPU); p50/p90/p99 over the repeats, images/s at p50, the
speed-up against eager PyTorch, and the peak GPU memory. A backend or baseline that cannot run here is reported with
the reason, not dropped.
"""

from __future__ import annotations

import gc
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from .. import __version__
from ..configs import ModelConfig, get_config
from ..errors import DimexportError, InputError
from ..models import DTYPES, cast_model, count_parameters, cuda_graphed, example_inputs
from ..models.checkpoint import load_model
from ..runtime.denoiser import TorchDenoiser

BACKENDS = ("eager", "graph", "compile", "ort", "trt")
BASELINES = ("official", "dit")
# DiT sizes (hidden, layers, heads) of Peebles & Xie; a baseline takes the one whose parameter count is closest.
DIT_SIZES = {"DiT-XL/2": (1152, 28, 16), "DiT-L/2": (1024, 24, 16), "DiT-B/2": (768, 12, 12), "DiT-S/2": (384, 12, 6)}


class Skip(Exception):
    """A backend or baseline that cannot run here; the message says why and what would make it run."""


@dataclass
class Row:
    name: str  # backend or baseline
    kind: str  # "backend" | "baseline"
    batch: int
    what: str = "forward"  # "forward" or "sample" (the whole guided loop)
    ms: list[float] = field(default_factory=list)
    p50: float = math.nan
    p90: float = math.nan
    p99: float = math.nan
    images_per_s: float = math.nan
    speedup_vs_eager: float = math.nan
    peak_mib: float = math.nan  # torch's allocator only (ORT and TensorRT allocate outside it)
    params: int = 0
    note: str = ""
    skipped: str = ""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, repeat: int) -> list[float]:
    """Milliseconds of each of `repeat` calls after `warmup` untimed ones (CUDA events on the GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


class _DiTNet(nn.Module):
    """diffusers' DiTTransformer2DModel behind the (x, t, y) -> out signature of the DiM models."""

    def __init__(self, cfg: ModelConfig, resolution: int) -> None:
        super().__init__()
        from diffusers import DiTTransformer2DModel

        self.name, (hidden, layers, heads) = dit_size(cfg)
        self.net = DiTTransformer2DModel(
            num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=cfg.in_channels,
            out_channels=2 * cfg.in_channels, num_layers=layers, sample_size=cfg.input_shape(1, resolution)[-1],
            patch_size=2, num_embeds_ada_norm=max(cfg.num_classes, 1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return self.net(x, timestep=t, class_labels=y.clamp(max=max(self.net.config.num_embeds_ada_norm - 1, 0)),
                        return_dict=False)[0]


def dit_size(cfg: ModelConfig) -> tuple[str, tuple[int, int, int]]:
    """The DiT beside a model: the published size closest in parameters, or for models below 20 M parameters one of
    the same width and depth (heads of 32 channels)."""
    from ..models import build_model

    with torch.device("meta"):
        params = count_parameters(build_model(cfg))
    if params < 20e6:
        heads = max(1, cfg.hidden // 32)
        return f"DiT {cfg.hidden}x{cfg.num_blocks}", (heads * (cfg.hidden // heads), cfg.num_blocks, heads)
    def dit_params(h: int, n: int) -> float:
        return n * 12 * h * h  # attention + MLP + adaLN-zero (6 h^2 per block), to first order
    name = min(DIT_SIZES, key=lambda k: abs(math.log(dit_params(*DIT_SIZES[k][:2]) / params)))
    return name, DIT_SIZES[name]


class MambaStack(nn.Module):
    """The official-style block stack: RMSNorm + mamba-ssm's `Mamba` mixer with a residual, as many blocks as the
    model, on its token sequence (B, L, D)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        try:
            from mamba_ssm.modules.mamba_simple import Mamba
            from mamba_ssm.ops.triton.layer_norm import RMSNorm
        except Exception as exc:  # ImportError, or a build for another torch/CUDA
            raise Skip(f"mamba-ssm is not importable ({type(exc).__name__}: {exc}); "
                       "pip install mamba-ssm causal-conv1d") from None
        self.norms = nn.ModuleList(RMSNorm(cfg.hidden) for _ in range(cfg.num_blocks))
        self.mixers = nn.ModuleList(Mamba(cfg.hidden, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand)
                                    for _ in range(cfg.num_blocks))

    def forward(self, h: Tensor) -> Tensor:
        for norm, mixer in zip(self.norms, self.mixers):
            h = h + mixer(norm(h))
        return h


@dataclass
class Setup:
    cfg: ModelConfig
    resolution: int
    device: torch.device
    dtype: str
    checkpoint: str | None
    out_dir: str
    warmup: int
    repeat: int
    max_batch: int
    cache: dict = field(default_factory=dict)  # modules built once per run, shared by backends and batch sizes

    def module(self, key: str, make: Callable[[], nn.Module]) -> nn.Module:
        """The module of `key`, built once; the others are released first, so a row's peak memory is its own."""
        for other in [k for k in self.cache if k != key]:
            del self.cache[other]
        if key not in self.cache:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.cache[key] = make()
        return self.cache[key]


def _backend_fn(name: str, s: Setup, batch: int) -> tuple[Callable[[], Tensor], TorchDenoiser | object, str]:
    """A no-argument call of backend `name` at `batch`, the denoiser behind it, and a note."""
    x, t, y = example_inputs(s.cfg, batch, s.resolution, device=str(s.device))
    note = ""
    if name in ("eager", "graph", "compile"):
        if name == "graph" and s.device.type != "cuda":
            raise Skip("CUDA graphs need --device cuda")
        model = s.module("model", lambda: load_model(s.cfg, s.checkpoint, s.resolution))
        den = TorchDenoiser(model, s.resolution, str(s.device), s.dtype, cuda_graph=name == "graph")
        if name == "compile":
            torch.compiler.reset()  # each (batch, model) compiles afresh, specialised to its shapes
            den.model = torch.compile(den.model, dynamic=False)  # the scan stays one custom op (its fake kernel)
            t0 = time.perf_counter()
            try:
                den(x, t, y)
            except Exception as exc:  # inductor raises its own types (no compiler, unsupported op)
                raise Skip(f"torch.compile failed: {type(exc).__name__}: {str(exc).strip()[:300]}") from None
            note = f"compiled in {time.perf_counter() - t0:.1f} s"
        return (lambda: den(x, t, y)), den, note
    from ..export.exporter import ExportSpec, export

    if name == "ort":
        import onnxruntime as ort

        from ..runtime.denoiser import OrtDenoiser

        if s.dtype == "bf16":
            raise Skip("ONNX Runtime has no bfloat16 kernels: --dtype fp16 or fp32")
        gpu = s.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        if s.device.type == "cuda" and not gpu:
            raise Skip("onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu)")
        scan = "portable" if gpu else "plugin"
        spec = ExportSpec(s.cfg.id, s.resolution, s.dtype, scan, (1, s.max_batch, s.max_batch), s.checkpoint)
        try:
            art, _ = export(spec, s.out_dir)  # one export serves every batch (ORT takes any batch in its range)
            den = OrtDenoiser(art)
        except (DimexportError, ImportError) as exc:  # the export or the session failed, or an ORT extra is missing
            raise Skip(f"ONNX Runtime: {exc}") from None
        note = f"{scan} graph, {den.device.type}"
        return (lambda: den(x, t, y)), den, note
    from ..runtime.denoiser import TrtDenoiser
    from ..trt import api
    from ..trt.build import BuildOptions, build

    try:
        api.load()
        spec = ExportSpec(s.cfg.id, s.resolution, s.dtype, "plugin", (1, batch, batch), s.checkpoint)
        artifact, _ = export(spec, s.out_dir)
        engine, _ = build(spec, s.out_dir, BuildOptions())
        den = TrtDenoiser(artifact, engine.folder)
    except DimexportError as exc:  # no TensorRT, or one that cannot build or run here
        raise Skip(str(exc)) from None
    return (lambda: den(x, t, y)), den, f"plugin engine, {engine.info['tensorrt']['module']}"


def _baseline_fn(name: str, s: Setup, batch: int, graph: bool) -> tuple[Callable[[], Tensor], int, str]:
    dtype = DTYPES[s.dtype]
    if name == "dit":
        try:
            net = s.module("dit", lambda: _DiTNet(s.cfg, s.resolution))
        except ImportError:
            raise Skip("diffusers is not installed (pip install diffusers)") from None
        x, t, y = example_inputs(s.cfg, batch, s.resolution, device=str(s.device))
        args: tuple = (x.to(dtype), t, y if y is not None else torch.zeros(batch, dtype=torch.long, device=s.device))
        label = net.name
    else:
        net = s.module("official", lambda: MambaStack(s.cfg))
        args = (torch.randn(batch, s.cfg.seq_len(s.resolution), s.cfg.hidden, device=s.device, dtype=dtype),)
        label = f"{s.cfg.num_blocks} x (RMSNorm + Mamba) on L = {s.cfg.seq_len(s.resolution)}"
    net = cast_model(net.to(s.device), dtype).eval()  # in place: a no-op after the first batch size
    params = count_parameters(net)
    if graph:
        if s.device.type != "cuda":
            raise Skip("CUDA graphs need --device cuda")
        run = cuda_graphed(net, args)
        return (lambda: run(*args)), params, label + ", CUDA graph"

    def call() -> Tensor:
        with torch.inference_mode():
            return net(*args)

    return call, params, label


def _summarise(row: Row, batch_images: int) -> Row:
    row.p50, row.p90, row.p99 = (_percentile(row.ms, q) for q in (0.5, 0.9, 0.99))
    row.images_per_s = batch_images / (row.p50 / 1e3)
    return row


def _measure(row: Row, fn: Callable[[], object], s: Setup, images: int) -> Row:
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
    row.ms = time_calls(fn, s.device, s.warmup, s.repeat)
    if s.device.type == "cuda":
        row.peak_mib = torch.cuda.max_memory_allocated(s.device) / 2**20
    return _summarise(row, images)


def run_bench(model_id: str, batches: list[int], backends: list[str], baselines: list[str], resolution: int | None,
              dtype: str, device: str, steps: int = 0, checkpoint: str | None = None, out_dir: str = "dimexport-out",
              warmup: int = 3, repeat: int = 20, progress: Callable[[str], None] = lambda m: None) -> dict:
    """Every (backend | baseline) x batch row, plus the whole guided sampling loop of `steps` when steps > 0."""
    from ..diffusion.pipeline import sample

    cfg = get_config(model_id)
    res = resolution or cfg.resolution
    cfg.grid(res)
    for name in backends:
        if name not in BACKENDS:
            raise InputError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    for name in baselines:
        if name not in BASELINES:
            raise InputError(f"baseline {name!r} is not one of {', '.join(BASELINES)}")
    if not batches or min(batches) < 1:
        raise InputError(f"--batch needs sizes >= 1, got {batches}")
    if warmup < 0 or repeat < 1:
        raise InputError("--warmup must be >= 0 and --repeat >= 1")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible here; use --device cpu")
    if dtype != "fp32" and dev.type == "cpu":
        raise InputError(f"--dtype {dtype} on the CPU: PyTorch's CPU kernels are fp32 here; use --dtype fp32 or cuda")
    s = Setup(cfg, res, dev, dtype, checkpoint, out_dir, warmup, repeat, max(batches))
    rows: list[Row] = []
    for batch in batches:
        eager_p50 = math.nan
        for name in backends:
            progress(f"{name}, batch {batch}")
            row = Row(name, "backend", batch)
            rows.append(row)
            try:
                fn, den, row.note = _backend_fn(name, s, batch)
                _measure(row, fn, s, batch)
                if steps:
                    labels = torch.arange(batch) % max(cfg.num_classes, 1) if cfg.num_classes else None
                    sample(den, labels, n=batch, steps=2)  # warm-up of the guided (2x) batch
                    result = sample(den, labels, n=batch, steps=steps)
                    rows.append(_summarise(Row(name, "backend", batch, "sample", [result.total_s * 1e3],
                                               note=f"{steps} steps, {len(result.call_ms)} calls of "
                                                    f"{2 * batch if cfg.num_classes else batch}"), batch))
            except Skip as why:
                row.skipped = str(why)
            if name == "eager" and not row.skipped:
                eager_p50 = row.p50
        for name in baselines:
            for graph in ((False, True) if dev.type == "cuda" else (False,)):
                progress(f"baseline {name}{' (graph)' if graph else ''}, batch {batch}")
                row = Row(name + (" graph" if graph else ""), "baseline", batch)
                try:
                    fn, row.params, row.note = _baseline_fn(name, s, batch, graph)
                    _measure(row, fn, s, batch)
                except Skip as why:
                    row.skipped = str(why)
                rows.append(row)
                if name == "official":
                    break  # the official stack is timed eager, as its users run it
        for row in rows:
            if row.batch == batch and row.what == "forward" and not row.skipped:
                row.speedup_vs_eager = eager_p50 / row.p50
    clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(r).items()} for r in rows]
    return dict(environment=environment(dev), model=cfg.id, resolution=res, dtype=dtype, device=str(dev),
                warmup=warmup, repeat=repeat, steps=steps, rows=clean)  # not measured: None (valid JSON)


def environment(device: torch.device) -> dict:
    """GPU, clocks, driver and library versions for the report."""
    env = dict(dimexport=__version__, torch=torch.__version__, python=platform.python_version(),
               cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, sms=props.multi_processor_count, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            env.update(driver=pynvml.nvmlSystemGetDriverVersion(),
                       sm_clock_mhz=pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                       max_sm_clock_mhz=pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM))
        except Exception:  # nvidia-ml-py missing or no NVML: versions only
            pass
    for module in ("onnxruntime", "tensorrt", "diffusers", "mamba_ssm"):
        try:
            env[module] = __import__(module).__version__
        except Exception:
            env[module] = "not installed"
    return env


def bar_chart(report: dict, path) -> None:
    """images/s per backend and baseline, grouped by batch (forward calls only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["what"] == "forward" and not r["skipped"]]
    batches = sorted({r["batch"] for r in rows})
    names = list(dict.fromkeys(r["name"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names) * len(batches)), 3.6), dpi=100)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [b_i + i * width for b_i, b in enumerate(batches) for r in rows if r["name"] == name and r["batch"] == b]
        ys = [r["images_per_s"] for b in batches for r in rows if r["name"] == name and r["batch"] == b]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([b_i + 0.4 - width / 2 for b_i in range(len(batches))], [f"batch {b}" for b in batches])
    ax.set_ylabel("images / s (p50)")
    ax.set_title(f"{report['model']} {report['resolution']}², {report['dtype']}, "
                 f"{report['environment'].get('gpu', 'CPU')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


"""The model zoo: plain nn.Modules whose parameter names match the official checkpoints."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..configs import DTYPE_NAMES, ModelConfig, get_config
from .dim import DiM
from .dis import DiS

_FAMILIES: dict[str, type[nn.Module]] = {"dim": DiM, "dis": DiS}


def build_model(model: str | ModelConfig, resolution: int | None = None, seed: int | None = None) -> nn.Module:
    """Build a model by id or config, randomly initialised (seeded when `seed` is given), in eval mode.

    `resolution` builds DiS with a position table of that size; DiM keeps its native table and
    interpolates it at run time for any resolution, so for DiM it only validates the value.
    """
    cfg = get_config(model) if isinstance(model, str) else model
    if resolution is not None:
        cfg.grid(resolution)  # validates
        if cfg.family == "dis":
            cfg = cfg.at_resolution(resolution)
    if seed is not None:
        torch.manual_seed(seed)
    return _FAMILIES[cfg.family](cfg).eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


DTYPES: dict[str, torch.dtype] = dict(zip(DTYPE_NAMES, (torch.float32, torch.float16, torch.bfloat16)))

# Scan parameters that must stay fp32 whatever the model's dtype (the op and the kernel read them as fp32).
FP32_PARAMS = (".A_log", ".A_b_log", ".D", ".D_b", ".dt_proj.bias", ".dt_proj_b.bias")


def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast to `dtype` for inference, keeping A_log, D and the dt bias in fp32 as mamba-ssm does."""
    model.to(dtype)
    for name, param in model.named_parameters():
        if name.endswith(FP32_PARAMS):
            param.data = param.data.float()
    return model


def example_inputs(
    cfg: ModelConfig, batch: int = 1, resolution: int | None = None, seed: int = 0, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Seeded (x, t, y): unit-normal inputs, timesteps spread over 1..999, labels cycling through the null one."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.input_shape(batch, resolution), generator=gen)
    t = torch.linspace(1, 999, batch)
    y = torch.arange(batch) % (cfg.num_classes + 1) if cfg.num_classes else None
    return x.to(device), t.to(device), None if y is None else y.to(device)


def cuda_graphed(model: nn.Module, inputs: tuple[torch.Tensor | None, ...]) -> Callable[..., torch.Tensor]:
    """`model` captured in a CUDA graph for inputs shaped like `inputs` (eager PyTorch at small batch is bound by
    kernel launches on the host). The returned function copies its arguments into the graph's inputs, replays it
    and returns the graph's output tensor, which the next call overwrites."""
    static = tuple(None if t is None else t.clone() for t in inputs)  # y is None for unconditional models
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(side):
        for _ in range(2):  # lazy initialisation (cuBLAS handles, the scan library) must happen outside the capture
            model(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        out = model(*static)

    def replay(*args: torch.Tensor | None) -> torch.Tensor:
        for dst, src in zip(static, args):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return out

    return replay


__all__ = [
    "DTYPES", "DiM", "DiS", "FP32_PARAMS", "build_model", "cast_model", "count_parameters", "cuda_graphed", "example_inputs",
]

"""verify's view of the backends: the same feeds (NumPy, Polygraphy-compatible) through each runtime denoiser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..export.exporter import Artifact
from ..runtime.denoiser import OrtDenoiser, TrtDenoiser, torch_denoiser_for


def _tensors(feeds: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(feeds[k]) for k in ("x", "t", "y"))


def run_torch(artifact: Artifact, feeds: dict[str, np.ndarray], device: str = "cpu") -> np.ndarray:
    """The exported model rebuilt from the manifest (same weights, same dtype), eager."""
    x, t, y = _tensors(feeds)
    return torch_denoiser_for(artifact, device)._forward(x, t, y).float().cpu().numpy()


def run_ort(artifact: Artifact, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return OrtDenoiser(artifact).run_feeds(feeds)


def run_trt(artifact: Artifact, feeds: dict[str, np.ndarray], engine: str | Path | None = None) -> np.ndarray:
    """The artifact's engine: `engine` if given, else the newest one built for this TensorRT and GPU."""
    x, t, y = _tensors(feeds)
    return TrtDenoiser(artifact, engine)._forward(x, t, y).float().cpu().numpy()


BACKENDS = {"torch": run_torch, "ort": run_ort, "trt": run_trt}

"""verify's view of the backends: the same feeds (NumPy, Polygraphy-compatible) through each runtime denoiser, and
the same latents through each runtime decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..export.exporter import Artifact
from ..runtime.decoder import OrtDecoder, TrtDecoder, torch_decoder_for
from ..runtime.denoiser import Denoiser, OrtDenoiser, TrtDenoiser, torch_denoiser_for


def _run(den: Denoiser, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """One call on the feeds as they are (no batch splitting: verify feeds what the artifact takes)."""
    x, t, y = (torch.from_numpy(feeds[k]) for k in ("x", "t", "y"))
    return den._forward(x, t, y).float().cpu().numpy()


def run_torch(artifact: Artifact, feeds: dict[str, np.ndarray], device: str, engine: str | Path | None) -> np.ndarray:
    """The exported model rebuilt from the manifest (same weights, same dtype), eager: the reference."""
    return _run(torch_denoiser_for(artifact, device), feeds)


def run_graph(artifact: Artifact, feeds: dict[str, np.ndarray], device: str, engine: str | Path | None) -> np.ndarray:
    """The same module replayed from a CUDA graph (needs --device cuda)."""
    return _run(torch_denoiser_for(artifact, device, cuda_graph=True), feeds)


def run_ort(artifact: Artifact, feeds: dict[str, np.ndarray], device: str, engine: str | Path | None) -> np.ndarray:
    return OrtDenoiser(artifact).run_feeds(feeds)


def run_trt(artifact: Artifact, feeds: dict[str, np.ndarray], device: str, engine: str | Path | None) -> np.ndarray:
    """The artifact's engine: `engine` if given, else the newest one built for this TensorRT and GPU."""
    return _run(TrtDenoiser(artifact, engine), feeds)


BACKENDS = {"torch": run_torch, "graph": run_graph, "ort": run_ort, "trt": run_trt}


def run_decoder(name: str, artifact: Artifact, latents: np.ndarray, device: str, engine: str | Path | None) -> np.ndarray:
    """One call of the artifact's decoder on `name` (torch: the VAE it was exported from, the reference; ort:
    decoder.onnx; trt: the decoder engine) on the latents as they are."""
    if name == "ort":
        return OrtDecoder(artifact).run_feeds(latents)
    decoder = torch_decoder_for(artifact, device) if name == "torch" else TrtDecoder(artifact, engine)
    return decoder._forward(torch.from_numpy(latents)).float().cpu().numpy()


# graph: the decoder is the same eager module as torch's, so there is nothing to compare
DECODER_BACKENDS = ("torch", "ort", "trt")

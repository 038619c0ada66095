"""Image-level parity: whole samples from the same seed through PyTorch and each other backend, compared as images.

Per-call errors compound over a sampler's steps (and guidance amplifies them), so a backend that passes the
per-call check can still drift; this is the check a user sees. Pixel samples are compared as images in [-1, 1]
(PSNR peak 2, the same as 255 on 8-bit images); latent samples against the reference's value range. An artifact
with a VAE decoder also decodes each backend's latents with that backend's decoder (graph: PyTorch's) and compares
the decoded images, which is what a user of the whole latent pipeline sees.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..diffusion.pipeline import sample
from ..errors import InputError
from ..export.exporter import read_artifact
from ..runtime.decoder import Decoder, load_decoder
from ..runtime.denoiser import Denoiser, OrtDenoiser, TrtDenoiser, torch_denoiser_for

MIN_PSNR_DB = {"fp32": 40.0, "fp16": 30.0, "bf16": 25.0}


def psnr(out: torch.Tensor, ref: torch.Tensor, peak: float) -> float:
    mse = float((out.double() - ref.double()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def sample_psnr(out: torch.Tensor, ref: torch.Tensor, pixels: bool) -> float:
    """PSNR of samples: as images in [-1, 1] (clamped, peak 2), or over the reference's range for latents."""
    if pixels:
        return psnr(out.clamp(-1, 1), ref.clamp(-1, 1), 2.0)
    return psnr(out, ref, float(ref.max() - ref.min()) or 1.0)  # a constant reference: unit peak


def _backend(name: str, folder: Path, device: str, engine: str | Path | None) -> Denoiser:
    if name == "graph":
        return torch_denoiser_for(read_artifact(folder), device, cuda_graph=True)
    if name == "ort":
        return OrtDenoiser(folder)
    return TrtDenoiser(folder, engine)


def sample_parity(folder: str | Path, backends: list[str], seed: int = 0, steps: int = 10, images: int = 4,
                  device: str = "cpu", engine: str | Path | None = None) -> dict:
    """Sample `images` images (classes 0, 1, ...) with the model's sampler and guidance on eager PyTorch and on
    each backend from the same seed; report the PSNR of each against PyTorch's."""
    if steps < 1 or images < 1:
        raise InputError(f"sample parity needs steps >= 1 and images >= 1, got {steps} and {images}")
    artifact = read_artifact(folder)
    dtype = artifact.manifest["spec"]["dtype"]
    threshold = MIN_PSNR_DB[dtype]
    ref_den = torch_denoiser_for(artifact, device)
    cfg = ref_den.cfg
    labels = torch.arange(images) % cfg.num_classes if cfg.num_classes else None
    ref = sample(ref_den, labels, n=images, steps=steps, seed=seed)
    decoders: dict[str, Decoder] = {}
    if artifact.decoder_path is not None:
        decoders["torch"] = load_decoder("torch", artifact, device=device)
        ref_images = decoders["torch"](ref.samples)
    rows = []
    for name in backends:
        if name == "torch":
            continue
        out = sample(_backend(name, artifact.folder, device, engine), labels, n=images, steps=steps, seed=seed)
        value = sample_psnr(out.samples, ref.samples, cfg.latent_factor == 1)
        row = {"backend": name, "reference": "torch", "psnr_db": value,
               "max_abs": float((out.samples - ref.samples).abs().max()), "passed": value >= threshold}
        if decoders:
            decoder = decoders["torch"] if name == "graph" else load_decoder(name, artifact, engine, device)
            row["decoded_psnr_db"] = sample_psnr(decoder(out.samples), ref_images, pixels=True)
            row["decoder"] = decoder.name
            row["passed"] = row["passed"] and row["decoded_psnr_db"] >= threshold
        rows.append(row)
    return {"artifact": str(artifact.folder), "model": cfg.id, "dtype": dtype, "settings": ref.settings,
            "min_psnr_db": threshold, "comparisons": rows, "passed": all(r["passed"] for r in rows)}

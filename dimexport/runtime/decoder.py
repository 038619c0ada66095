"""The VAE decoder behind one interface, like the denoisers: model-scaled latents (B, C, h, w) in, images in [-1, 1]
(B, 3, H, W) out, float32 on the CPU, for any batch (split and padded to what the backend takes).

    dec = TorchDecoder(load_vae("sd-vae-ft-ema/", cfg), device="cuda")    # the diffusers VAE in PyTorch
    dec = load_decoder("ort", artifact)                                    # the artifact's decoder.onnx in ORT
    dec = load_decoder("trt", artifact, engine=...)                        # its engine of `dimexport build`
    images = dec(result.samples)

A latent artifact exported with --vae carries decoder.onnx, so sampler, denoiser and decoder run on one backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..export.exporter import DECODER_INPUT, DECODER_OUTPUT, Artifact, build_decoder_for_export, read_artifact
from ..models import DTYPES
from ..models.vae import LatentDecoder, vae_sha256
from .denoiser import in_batches, ort_providers, ort_run, ort_session, spec_of

DECODER_BACKENDS = ("torch", "ort", "trt")


class Decoder:
    """Base: shape checks and batch splitting/padding; subclasses implement `_forward` on one chunk."""

    name = "decoder"

    def __init__(self, latent_shape: tuple[int, ...] | None, dtype: str, device: str | torch.device,
                 min_batch: int = 1, max_batch: int | None = None) -> None:
        self.latent_shape = latent_shape  # (C, h, w) the backend takes; None: any (the PyTorch VAE)
        self.dtype, self.device = dtype, torch.device(device)
        self.min_batch, self.max_batch = min_batch, max_batch

    def __call__(self, latents: Tensor) -> Tensor:
        if latents.dim() != 4 or latents.shape[0] == 0:
            raise InputError(f"{self.name} decoder: latents must be (B, C, h, w) with B >= 1, "
                             f"got {tuple(latents.shape)}")
        if self.latent_shape is not None and tuple(latents.shape[1:]) != self.latent_shape:
            raise InputError(f"{self.name} decoder: latents have shape {tuple(latents.shape)}, the exported decoder "
                             f"takes (B, {', '.join(map(str, self.latent_shape))}): export at this resolution")
        return in_batches(self._forward, (latents,), self.min_batch, self.max_batch).cpu()

    def _forward(self, latents: Tensor) -> Tensor:
        raise NotImplementedError


class TorchDecoder(Decoder):
    """The diffusers VAE in PyTorch (wrapped in `LatentDecoder`, the module export traces)."""

    name = "torch"

    def __init__(self, vae: nn.Module, device: str | torch.device = "cpu", dtype: str = "fp32",
                 max_batch: int | None = 8) -> None:
        super().__init__(None, dtype, device, 1, max_batch)
        self.torch_dtype = DTYPES[dtype]
        module = vae if isinstance(vae, LatentDecoder) else LatentDecoder(vae)
        self.module = module.to(self.device, self.torch_dtype).eval()

    @torch.inference_mode()
    def _forward(self, latents: Tensor) -> Tensor:
        # fp32 means fp32 math on the GPU too (cuDNN convolutions default to TF32), as for the denoiser
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            return self.module(latents.to(self.device, self.torch_dtype))


def torch_decoder_for(artifact: Artifact, device: str = "cpu") -> TorchDecoder:
    """The VAE an artifact's decoder was exported from (same file, same dtype): verify's reference. Refuses a VAE
    that is gone or changed since the export, which would make any comparison meaningless."""
    meta = _decoder_meta(artifact)
    path = meta["vae"]["path"]
    try:
        now = vae_sha256(path)
    except InputError:
        raise InputError(f"artifact {artifact.folder}: the VAE its decoder was exported from, {path}, is gone; "
                         "restore it there or re-export with --vae PATH") from None
    if now != meta["vae"]["sha256"]:
        raise InputError(f"artifact {artifact.folder}: the VAE at {path} changed since its decoder was exported "
                         f"(sha256 {meta['vae']['sha256'][:12]}, now {now[:12]}); re-export with --vae {path}")
    spec = spec_of(artifact)
    return TorchDecoder(build_decoder_for_export(spec), device, spec.dtype, spec.batch[2])


def _decoder_meta(artifact: Artifact) -> dict:
    meta = artifact.manifest.get("decoder")
    if not meta:
        model = artifact.manifest["spec"]["model_id"]
        raise InputError(f"artifact {artifact.folder} has no VAE decoder: export {model} with --vae PATH to add one")
    return meta


def has_decoder(folder: str | Path) -> bool:
    """Whether `folder` is an artifact that carries a decoder (False for anything else; read_artifact says why)."""
    path = Path(folder) / "manifest.json"
    try:
        return bool(json.loads(path.read_text()).get("decoder")) if path.is_file() else False
    except (OSError, ValueError):
        return False


class OrtDecoder(Decoder):
    """An artifact's decoder.onnx in ONNX Runtime (standard ops: the CUDA EP when onnxruntime-gpu has it)."""

    name = "ort"

    def __init__(self, artifact: Artifact | str | Path) -> None:
        self.artifact = artifact if isinstance(artifact, Artifact) else read_artifact(artifact)
        meta, spec = _decoder_meta(self.artifact), spec_of(self.artifact)
        if spec.dtype == "bf16":
            raise InputError("ONNX Runtime's CPU kernels have no bfloat16: decode a bf16 artifact with the trt "
                             "backend, or export fp32/fp16 for ort")
        providers = ort_providers(self.artifact, standard_ops=True)
        lo, _, hi = spec.batch
        latent_shape = tuple(meta["inputs"][DECODER_INPUT]["shape"][1:])
        super().__init__(latent_shape, spec.dtype, "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu",
                         lo, hi)
        self.np_dtype = {"fp32": np.float32, "fp16": np.float16}[spec.dtype]
        self.session = ort_session(self.artifact.decoder_path, providers)

    def run_feeds(self, latents: np.ndarray) -> np.ndarray:
        """One session run on latents as they are (verify feeds what the artifact takes)."""
        return ort_run(self.session, DECODER_OUTPUT, {DECODER_INPUT: latents.astype(self.np_dtype)},
                       self.artifact.decoder_path)

    def _forward(self, latents: Tensor) -> Tensor:
        return torch.from_numpy(self.run_feeds(latents.detach().cpu().numpy()))


class TrtDecoder(Decoder):
    """The decoder engine built beside the denoiser's by `dimexport build` (same folder, profile and checks)."""

    name = "trt"

    def __init__(self, artifact: Artifact | str | Path, engine: str | Path | None = None) -> None:
        from .engine import Engine, find_usable_engine

        self.artifact = artifact if isinstance(artifact, Artifact) else read_artifact(artifact)
        meta, spec = _decoder_meta(self.artifact), spec_of(self.artifact)
        self.engine = Engine(engine or find_usable_engine(self.artifact), part="decoder")
        lo, _, hi = spec.batch
        super().__init__(tuple(meta["inputs"][DECODER_INPUT]["shape"][1:]), spec.dtype, self.engine.device, lo, hi)

    def _forward(self, latents: Tensor) -> Tensor:
        (spec,) = self.engine.inputs
        return self.engine.infer({spec.name: latents.to(self.engine.device, spec.dtype)})[DECODER_OUTPUT]


def load_decoder(backend: str, artifact: Artifact | str | Path, engine: str | Path | None = None,
                 device: str = "cpu") -> Decoder:
    """An artifact's decoder on `backend`: torch (the VAE it was exported from), ort (decoder.onnx) or trt (the
    decoder engine); the graph backend decodes with the torch one (the VAE runs eagerly)."""
    if backend in ("torch", "graph"):
        return torch_decoder_for(artifact if isinstance(artifact, Artifact) else read_artifact(artifact), device)
    if backend == "ort":
        return OrtDecoder(artifact)
    if backend == "trt":
        return TrtDecoder(artifact, engine)
    raise InputError(f"backend {backend!r} is not one of {', '.join(DECODER_BACKENDS)}")

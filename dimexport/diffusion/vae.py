"""The Stable Diffusion VAE that turns DiM's and DiS's latents into images (diffusers' AutoencoderKL), loaded from a
local folder or weights file: nothing is downloaded. Both families scale latents by 0.18215 (DiM: U-ViT's
`libs/autoencoder.py`; DiS: `train.py`), so images = decode(latents / 0.18215).

The loading code lives in models/vae.py (export and the runtimes build the decoder too); this module keeps the
sampling side's names."""

from __future__ import annotations

from torch import Tensor, nn

from ..models.vae import SCALE, SD_VAE_CONFIG, WEIGHT_SUFFIXES, LatentDecoder, load_vae
from ..runtime.decoder import TorchDecoder

__all__ = ["SCALE", "SD_VAE_CONFIG", "WEIGHT_SUFFIXES", "LatentDecoder", "decode", "load_vae"]


def decode(vae: nn.Module, latents: Tensor, batch: int = 8) -> Tensor:
    """Images in [-1, 1] (N, 3, H, W), float32 on the CPU, from model-scaled latents, `batch` at a time on the
    VAE's device."""
    return TorchDecoder(vae, next(vae.parameters()).device, max_batch=batch)(latents)

"""Samples as pictures: uint8 conversion, latent previews and class-by-row grids written as PNG (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..configs import ModelConfig

LATENT_PREVIEW_NOTE = ("latent model: the grid previews latent channels 0-2 as RGB (each channel min-max scaled), "
                       "not decoded images; decoding with the SD VAE comes in a later release")


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounded."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return arr.permute(0, 2, 3, 1).numpy()


def viewable(samples: Tensor, cfg: ModelConfig) -> Tensor:
    """What a grid shows in [-1, 1]: pixel samples as they are; latents as an RGB preview of channels 0-2, each
    channel min-max scaled over the batch, enlarged by the latent factor so a tile has the image's size."""
    if cfg.latent_factor == 1:
        return samples
    rgb = samples[:, :3].float()
    lo = rgb.amin(dim=(0, 2, 3), keepdim=True)
    hi = rgb.amax(dim=(0, 2, 3), keepdim=True)
    rgb = 2 * (rgb - lo) / (hi - lo).clamp(min=1e-8) - 1
    return torch.nn.functional.interpolate(rgb, scale_factor=cfg.latent_factor, mode="nearest")


def grid(images: Tensor, rows: int, pad: int = 2) -> np.ndarray:
    """Tile N images into `rows` rows, row-major (one class per row when sampled class by class), white gaps."""
    tiles = to_uint8(images)
    n, h, w, c = tiles.shape
    cols = -(-n // rows)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, k = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = tile
    return out


def save_png(array: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path

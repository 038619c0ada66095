"""Latent features for training a latent model on an image folder: each image is encoded once by the VAE and cached.

What is stored follows U-ViT's ImageNet feature extraction (`scripts/extract_imagenet_feature.py`; DiM's 512
fine-tune reads such features through U-ViT's `ImageNet512Features`, "the moments calculated by Stable Diffusion
image encoder"): the encoder's posterior moments (mean | logvar, unscaled, diffusers' `latent_dist.parameters`), not
one fixed sample, so every training step draws a fresh latent from them (`data.sample_latents`, times 0.18215) as
U-ViT's `autoencoder.sample(moments)` does. With `data.flip` the mirror images are encoded too, as U-ViT stores each
image and its flip. Images are preprocessed by `data.load_image`, as pixel-space training reads them (centre crop,
then bicubic resize; ADM's `center_crop_arr`, which U-ViT uses, box-downsamples large images first).

The cache is a content-addressed folder `<cache>/<key>/` (`features.npz` with arrays `moments` (N, 2C, h, w) and
`y`, and `manifest.json`), written through cache.py's scratch-and-rename like export artifacts, so an interrupted
encoding never leaves a half entry that a later run would take. The key hashes the format version below, every
image's class folder, name, class id and bytes, the pixel resolution, the flip, the VAE's weights hash and the
diffusers and Pillow versions (the code that encodes and resizes): a second run reuses it, any change encodes again.
Training then reads `features.npz` as `data.kind: features` data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..cache import publish, reuse, scratch
from ..configs import ModelConfig
from ..errors import InputError
from ..models.checkpoint import file_sha256
from ..models.vae import diffusers_version, load_vae, vae_sha256
from .data import image_files, load_image

# Bump when what is stored or how images are preprocessed changes: old cache entries then stop matching.
FEATURE_FORMAT = 1
FEATURES_FILE, MANIFEST_FILE = "features.npz", "manifest.json"
Progress = Callable[[int, int], None]  # (images encoded, total)


def needs_encoding(spec: dict, cfg: ModelConfig, vae: str | None) -> bool:
    """Whether the recipe's data must go through the VAE first; refuses the combinations that cannot train."""
    kind = spec.get("kind")
    latent = cfg.latent_factor > 1
    if vae and not latent:
        raise InputError(f"--vae {vae}: {cfg.id} trains in pixel space ({cfg.in_channels}-channel images, no "
                         "latents); drop --vae (and the recipe's vae:)")
    if vae and kind != "image_folder":
        raise InputError(f"--vae {vae} encodes data.kind image_folder; data.kind {kind} needs no VAE: drop --vae "
                         "(and the recipe's vae:)")
    if latent and kind == "image_folder" and not vae:
        raise InputError(f"{cfg.id} is a latent model ({cfg.in_channels}-channel latents at 1/{cfg.latent_factor} "
                         "of the image side): an image folder needs a VAE to encode it; pass --vae PATH (or vae: "
                         "PATH in the recipe), or train on pre-extracted latents with data.kind: features")
    return bool(vae) and kind == "image_folder"


def feature_key(root: str | Path, size: int, vae_hash: str, flip: bool) -> str:
    """sha256 of everything the features depend on (the module docstring lists it); the image bytes are hashed
    once per file version within a process."""
    import PIL

    _, files = image_files(root)
    h = hashlib.sha256(f"dimexport-features {FEATURE_FORMAT}\0size {size}\0flip {flip}\0vae {vae_hash}\0diffusers "
                       f"{diffusers_version()}\0pillow {PIL.__version__}\n".encode())
    for path, label in files:
        h.update(f"{path.parent.name}/{path.name}\0{label}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def _read(folder: Path) -> Path:
    """The cached features file of a complete folder (cache.reuse rebuilds when this raises)."""
    if not (folder / FEATURES_FILE).is_file() or not (folder / MANIFEST_FILE).is_file():
        raise InputError(f"{folder} is incomplete")
    return folder / FEATURES_FILE


@torch.no_grad()
def encode_moments(vae: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The posterior moments (B, 2C, h, w) of images in [-1, 1]: mean | logvar as the encoder outputs them, in
    full fp32 (cuDNN's convolutions would otherwise run in TF32 on the GPU: the cache is encoded once, keep it
    exact)."""
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        return vae.encode(images).latent_dist.parameters


def cached_features(spec: dict, cfg: ModelConfig, size: int, vae: str | Path, cache_dir: str | Path,
                    device: torch.device | str = "cpu", batch: int = 32, progress: Progress | None = None) -> Path:
    """The features file of the image folder `spec` names, at `size` x `size` pixels: reused from `cache_dir` when
    its key matches, else encoded in fp32 on `device`, `batch` images at a time, into a new cache entry."""
    root, flip = spec["path"], bool(spec.get("flip"))
    vae_hash = vae_sha256(vae)  # a bad --vae path fails here
    key = feature_key(root, size, vae_hash, flip)
    folder = Path(cache_dir) / key[:16]
    if (found := reuse(folder, _read, False, lambda _: None)) is not None:
        return found
    model = load_vae(vae, cfg).float().to(device)  # latent channels and factor checked against the model
    classes, files = image_files(root)
    views = 2 if flip else 1
    parts: list[np.ndarray] = []
    mirrored: list[np.ndarray] = []
    for start in range(0, len(files), batch):
        images = torch.stack([load_image(path, size, 3) for path, _ in files[start:start + batch]]).to(device)
        parts.append(encode_moments(model, images).cpu().numpy())
        if flip:
            mirrored.append(encode_moments(model, images.flip(-1)).cpu().numpy())
        if progress:
            progress(min(start + batch, len(files)) * views, len(files) * views)
    tmp = scratch(folder)  # written beside the entry, then renamed: a reader never sees a partial one
    np.savez(tmp / FEATURES_FILE, moments=np.concatenate(parts + mirrored),
             y=np.array([label for _, label in files] * views, dtype=np.int64))
    manifest = {"format": FEATURE_FORMAT, "key": key, "dimexport": __version__, "images": str(root),
                "count": len(files) * views, "classes": classes, "size": size, "flip": flip, "vae": str(vae),
                "vae_sha256": vae_hash,
                "arrays": {"moments": "VAE posterior mean | logvar, unscaled (N, 2C, h, w)", "y": "class ids"}}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    publish(tmp, folder)
    return folder / FEATURES_FILE

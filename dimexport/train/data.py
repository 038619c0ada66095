"""Datasets a recipe can name: scikit-learn's digits, an image folder (one sub-folder per class), latent features.

Each loader gives x float32 (N, C, H, W) in the model's input range ([-1, 1] pixels, or latents already multiplied
by the VAE's scaling factor) and y int64 (N,) class ids (zeros for unconditional data); features may instead hold
the VAE posterior's moments (N, 2C, h, w), from which the trainer samples latents each step (`sample_latents`), as
U-ViT/DiM train on their pre-extracted ImageNet features. Everything is held in memory (the datasets are small, or
are pre-extracted features), and the trainer draws batch indices itself, so resuming and DDP are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..configs import ModelConfig
from ..errors import EnvironmentProblem, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
KINDS = ("digits", "image_folder", "features")
DATA_KEYS = ("kind", "path", "labels", "flip")


@dataclass
class TrainData:
    """What the trainer draws batches from: `x` holds model inputs, or the posterior moments (mean | logvar along
    channels, unscaled: the VAE's own `latent_dist.parameters`) when `moments` is set."""

    x: Tensor
    y: Tensor
    moments: bool = False


def sample_latents(moments: Tensor, generator: torch.Generator) -> Tensor:
    """Model-scaled latents drawn from moments (N, 2C, h, w): `DiagonalGaussianDistribution(moments).sample() *
    0.18215`, U-ViT's `autoencoder.sample` (logvar clamped to [-30, 20]), with the caller's generator so a training
    step's draw is fixed by (seed, step) and resume stays exact."""
    from ..models.vae import SCALE

    mean, logvar = moments.chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    return (mean + std * torch.randn(mean.shape, generator=generator)) * SCALE


def digits(size: int = 32) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1797 8x8 handwritten digits (values 0..16, shipped inside scikit-learn), bilinearly resized
    to size x size, one channel in [-1, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EnvironmentProblem("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x * 2 - 1, torch.from_numpy(bunch.target.astype(np.int64))


def image_files(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """root/<class>/<image> (torchvision's ImageFolder layout): the classes in sorted order and every image file with
    its class id, in a fixed order (so encoded features line up with their labels and their cache key)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {str(root)!r} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"image folder {str(root)!r} has no class sub-folders: expected {root}/<class>/<image>.png")
    files = [(path, label) for label, name in enumerate(classes) for path in sorted((root / name).iterdir())
             if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its "
                         f"class folders {classes}")
    return classes, files


def load_image(path: Path, size: int, channels: int) -> Tensor:
    """One image centre-cropped to a square and resized to size x size (bicubic), grey for one channel, RGB for
    three: (channels, size, size) in [-1, 1]. The VAE encoder reads images through this too."""
    from PIL import Image, UnidentifiedImageError

    mode = {1: "L", 3: "RGB"}[channels]
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
            arr = np.asarray(img, dtype=np.float32).reshape(size, size, channels)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {str(path)!r}: {exc}; remove or replace it") from None
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


def image_folder(root: str | Path, size: int, channels: int, flip: bool = False) -> tuple[Tensor, Tensor]:
    """Every image of `image_files(root)` through `load_image`; `flip` appends each image's mirror image (U-ViT's
    ImageNet feature extraction stores both, doubling the data)."""
    if channels not in (1, 3):
        raise InputError(f"an image folder gives 1- or 3-channel images; this model takes {channels} channels "
                         "(a latent model trains on an image folder through a VAE, --vae, or on data.kind: features)")
    _, files = image_files(root)
    x = torch.stack([load_image(path, size, channels) for path, _ in files])
    y = torch.tensor([label for _, label in files])
    return (torch.cat([x, x.flip(-1)]), torch.cat([y, y])) if flip else (x, y)


def features(path: str | Path, labels: str | Path | None = None) -> tuple[Tensor, Tensor | None, bool]:
    """Pre-extracted latent features: an .npz with arrays `x` (N, C, h, w), model-scaled latents, or `moments`
    (N, 2C, h, w), the VAE posterior's unscaled mean | logvar (what `dimexport train --vae` caches), and `y` (N,);
    or an .npy of x with the labels in another .npy. Returns (x, y, whether x holds moments); y is None when the
    features come without labels."""
    path = Path(path)
    moments = False
    try:
        if path.suffix == ".npz":
            if labels is not None:
                raise InputError(f"features {str(path)!r} is an .npz: its labels are its array 'y'; drop data.labels")
            with np.load(path) as z:
                moments = "moments" in z and "x" not in z
                if "x" not in z and not moments:
                    raise InputError(f"features {str(path)!r} must hold an array 'x' or 'moments' (and 'y'); it has "
                                     f"{list(z)}")
                x, y = z["moments" if moments else "x"], z["y"] if "y" in z else None
        else:
            x, y = np.load(path), np.load(labels) if labels is not None else None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read features {str(path)!r}: {exc}") from None
    x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if x.dim() != 4:
        raise InputError(f"features {str(path)!r} must be (N, C, h, w), got shape {tuple(x.shape)}")
    if y is None:
        return x, None, moments
    y = torch.from_numpy(np.asarray(y).astype(np.int64))
    if tuple(y.shape) != (len(x),):
        raise InputError(f"labels of {str(path)!r} must be ({len(x)},) to match the features, got {tuple(y.shape)}")
    return x, y, moments


def load_dataset(spec: dict, cfg: ModelConfig, side: int) -> TrainData:
    """The dataset a recipe's `data:` section names, checked against the model: input shape and class count. (An
    image folder for a latent model is encoded first: train/encode.py turns its spec into a features one.)"""
    kind = spec.get("kind")
    unknown = sorted(set(spec) - set(DATA_KEYS))
    if unknown:
        raise InputError(f"data: unknown keys {unknown}; data takes kind ({', '.join(KINDS)}), path, labels, flip")
    if kind in ("image_folder", "features") and "path" not in spec:
        raise InputError(f"data.kind {kind} needs data.path")
    if spec.get("flip") and kind != "image_folder":
        raise InputError(f"data.flip mirrors an image folder's images; data.kind {kind} has no images to mirror")
    moments = False
    if kind == "digits":
        x, y = digits(side)
    elif kind == "image_folder":
        x, y = image_folder(spec["path"], side, cfg.in_channels, bool(spec.get("flip")))
    elif kind == "features":
        x, y, moments = features(spec["path"], spec.get("labels"))
        if y is None and cfg.num_classes:
            raise InputError(f"{cfg.id} is class-conditional but the features {spec['path']!r} come without labels: "
                             "add an array 'y' to the .npz or data.labels (an .npy of class ids)")
        if y is None:
            y = torch.zeros(len(x), dtype=torch.int64)  # unconditional data
    else:
        raise InputError(f"data.kind {kind!r} is not one of {', '.join(KINDS)}")
    want = (cfg.in_channels * (2 if moments else 1), side, side)
    if tuple(x.shape[1:]) != want:
        what = "posterior moments (mean | logvar)" if moments else "samples"
        raise InputError(f"the data gives {what} of shape {tuple(x.shape[1:])}, but {cfg.id} at this resolution "
                         f"takes {want}")
    if len(x) == 0:
        raise InputError("the dataset is empty")
    top = int(y.max()) + 1
    if cfg.num_classes and (top > cfg.num_classes or int(y.min()) < 0):
        raise InputError(f"the data has class ids up to {top - 1}, but {cfg.id} has {cfg.num_classes} classes "
                         f"(0..{cfg.num_classes - 1})")
    return TrainData(x, y, moments)

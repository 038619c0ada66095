"""Datasets a recipe can name: scikit-learn's digits, an image folder (one sub-folder per class), latent features.

Each loader returns (x, y): x float32 (N, C, H, W) in the model's input range ([-1, 1] pixels, or latents already
multiplied by the VAE's scaling factor), y int64 (N,) class ids (zeros for unconditional data). Everything is held
in memory (the datasets are small, or are pre-extracted features), and the trainer draws batch indices itself, so
resuming and DDP are exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..configs import ModelConfig
from ..errors import EnvironmentProblem, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
KINDS = ("digits", "image_folder", "features")


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


def image_folder(root: str | Path, size: int, channels: int) -> tuple[Tensor, Tensor]:
    """root/<class>/<image> (torchvision's ImageFolder layout): classes in sorted order, each image centre-cropped to
    a square and resized to size x size (bicubic), grey for one channel, RGB for three."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {str(root)!r} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"image folder {str(root)!r} has no class sub-folders: expected {root}/<class>/<image>.png")
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InputError(f"an image folder gives 1- or 3-channel images; this model takes {channels} channels "
                         "(latent models train on features: data.kind: features)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    img = img.convert(mode)
                    side = min(img.size)
                    left, top = (img.width - side) // 2, (img.height - side) // 2
                    img = img.crop((left, top, left + side, top + side)).resize((size, size),
                                                                                 Image.Resampling.BICUBIC)
                    arr = np.asarray(img, dtype=np.float32).reshape(size, size, channels)
            except (OSError, UnidentifiedImageError) as exc:
                raise InputError(f"cannot read image {str(path)!r}: {exc}; remove or replace it") from None
            images.append(torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1)
            labels.append(label)
    if not images:
        raise InputError(f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its "
                         f"class folders {classes}")
    return torch.stack(images), torch.tensor(labels)


def features(path: str | Path, labels: str | Path | None = None) -> tuple[Tensor, Tensor | None]:
    """Pre-extracted latent features: an .npz with arrays `x` (N, C, h, w) and `y` (N,), or an .npy of x with the
    labels in another .npy; y is None when the features come without labels."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            if labels is not None:
                raise InputError(f"features {str(path)!r} is an .npz: its labels are its array 'y'; drop data.labels")
            with np.load(path) as z:
                if "x" not in z:
                    raise InputError(f"features {str(path)!r} must hold an array 'x' (and 'y'); it has {list(z)}")
                x, y = z["x"], z["y"] if "y" in z else None
        else:
            x, y = np.load(path), np.load(labels) if labels is not None else None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read features {str(path)!r}: {exc}") from None
    x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if x.dim() != 4:
        raise InputError(f"features {str(path)!r} must be (N, C, h, w), got shape {tuple(x.shape)}")
    if y is None:
        return x, None
    y = torch.from_numpy(np.asarray(y).astype(np.int64))
    if tuple(y.shape) != (len(x),):
        raise InputError(f"labels of {str(path)!r} must be ({len(x)},) to match the features, got {tuple(y.shape)}")
    return x, y


def load_dataset(spec: dict, cfg: ModelConfig, side: int) -> tuple[Tensor, Tensor]:
    """The dataset a recipe's `data:` section names, checked against the model: input shape and class count."""
    kind = spec.get("kind")
    unknown = sorted(set(spec) - {"kind", "path", "labels"})
    if unknown:
        raise InputError(f"data: unknown keys {unknown}; data takes kind ({', '.join(KINDS)}), path, labels")
    if kind in ("image_folder", "features") and "path" not in spec:
        raise InputError(f"data.kind {kind} needs data.path")
    if kind == "digits":
        x, y = digits(side)
    elif kind == "image_folder":
        x, y = image_folder(spec["path"], side, cfg.in_channels)
    elif kind == "features":
        x, y = features(spec["path"], spec.get("labels"))
        if y is None and cfg.num_classes:
            raise InputError(f"{cfg.id} is class-conditional but the features {spec['path']!r} come without labels: "
                             "add an array 'y' to the .npz or data.labels (an .npy of class ids)")
        if y is None:
            y = torch.zeros(len(x), dtype=torch.int64)  # unconditional data
    else:
        raise InputError(f"data.kind {kind!r} is not one of {', '.join(KINDS)}")
    want = (cfg.in_channels, side, side)
    if tuple(x.shape[1:]) != want:
        raise InputError(f"the data gives samples of shape {tuple(x.shape[1:])}, but {cfg.id} at this resolution "
                         f"takes {want}")
    if len(x) == 0:
        raise InputError("the dataset is empty")
    top = int(y.max()) + 1
    if cfg.num_classes and (top > cfg.num_classes or int(y.min()) < 0):
        raise InputError(f"the data has class ids up to {top - 1}, but {cfg.id} has {cfg.num_classes} classes "
                         f"(0..{cfg.num_classes - 1})")
    return x, y

"""Load the official checkpoint formats, with errors that name the mismatch and the right config."""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from ..configs import REGISTRY, ModelConfig, get_config
from ..errors import CheckpointError, EnvironmentProblem, InputError
from . import build_model

_MAX_LISTED = 8
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # package data: the embedded trained models


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The model weights inside an official file: DiM's plain `nnet_ema.pth` or DiS's `{'ema': ...}`.

    Loaded with weights_only=True; DiS files also pickle their argparse Namespace, which is allowed.
    A DDP `module.` prefix is stripped.
    """
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {os.fspath(path)!r} does not exist or is not a file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types; all mean "not a weights file"
        raise CheckpointError(f"cannot read checkpoint {os.fspath(path)!r} as torch weights: {exc}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("ema"), Mapping):
        obj = obj["ema"]  # DiS: sample.py loads the EMA weights
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{os.fspath(path)!r} is not a state_dict nor a DiS {{'ema': state_dict}} file "
            f"(top-level keys: {list(obj)[:_MAX_LISTED] if isinstance(obj, Mapping) else type(obj).__name__})"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def infer_config(state: Mapping[str, Tensor]) -> list[ModelConfig]:
    """Registry configs whose parameter names and shapes the state_dict fits exactly."""
    fits = []
    for cfg in REGISTRY.values():
        with torch.device("meta"):
            expected = build_model(cfg).state_dict()
        if expected.keys() == state.keys() and all(expected[k].shape == state[k].shape for k in state):
            fits.append(cfg)
    return fits


def _mismatch_report(model: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    lines = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
            lines.append(f"{len(items)} {title}: {', '.join(items[:_MAX_LISTED])}{more}")
    return lines


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> nn.Module:
    """Strict load into `model`; on mismatch, say what differs and which registry config would fit.

    With a model built on the meta device, the checkpoint's tensors are adopted as its parameters.
    """
    problems = _mismatch_report(model, state)
    if problems:
        cfg: ModelConfig = model.cfg
        fits = [c.id for c in infer_config(state)]
        hint = (
            f"it fits {' or '.join(fits)}: use --model {fits[0]}"
            if fits
            else "it fits no registered config; check that the file belongs to DiM or DiS"
        )
        raise CheckpointError(f"{source} does not fit {cfg.id}; {hint}.\n  " + "\n  ".join(problems))
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_checkpoint(model_id: str | ModelConfig, path: str | os.PathLike, resolution: int | None = None) -> nn.Module:
    """Build `model_id` and load an official checkpoint into it strictly (CPU, the file's dtype, eval mode)."""
    cfg = get_config(model_id) if isinstance(model_id, str) else model_id
    state = read_state_dict(path)
    with torch.device("meta"):
        model = build_model(cfg, resolution=resolution)
    return load_state(model, state, source=f"checkpoint {os.fspath(path)!r}")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes: the one hash behind every content key and check (weights, artifacts, engines, VAEs,
    images), computed once per version of the file."""
    stat = Path(path).stat()
    return _sha256_of(Path(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _sha256_of(path: Path, mtime_ns: int, size: int) -> str:
    """Hashed once per version of the file (a replaced file has another mtime or size), read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def embedded_weights(cfg: ModelConfig) -> Path | None:
    """The trained weights a model ships with inside the package, their sha256 checked; None if it has none."""
    if not cfg.weights:
        return None
    path = WEIGHTS_DIR / cfg.weights
    if not path.is_file():
        raise EnvironmentProblem(f"{cfg.id}'s embedded weights {path} are missing from this install: reinstall "
                                 "dimexport (pip install dimexport, or pip install -e . in a checkout)")
    digest = file_sha256(path)
    if digest != cfg.weights_sha256:
        raise CheckpointError(f"{path} has sha256 {digest}, but {cfg.id} pins {cfg.weights_sha256}: the file is "
                              "damaged or was replaced; reinstall dimexport")
    return path


def load_model(model_id: str | ModelConfig, checkpoint: str | os.PathLike | None = None,
               resolution: int | None = None, seed: int = 0, embedded: bool = True) -> nn.Module:
    """The model with the weights a user means: the given official checkpoint, else the model's embedded trained
    weights (unless `embedded` is False), else seeded random weights (eval mode, CPU)."""
    cfg = get_config(model_id) if isinstance(model_id, str) else model_id
    path = checkpoint if checkpoint is not None else embedded_weights(cfg) if embedded else None
    return load_checkpoint(cfg, path, resolution) if path is not None else build_model(cfg, resolution, seed=seed)


def weights_label(model_id: str | ModelConfig, checkpoint: str | os.PathLike | None, seed: int) -> str:
    """What `load_model` loads, for reports: the checkpoint path, 'embedded', or 'random (seed N)'."""
    cfg = get_config(model_id) if isinstance(model_id, str) else model_id
    if checkpoint is not None:
        return os.fspath(checkpoint)
    return f"embedded ({cfg.weights})" if cfg.weights else f"random (seed {seed})"

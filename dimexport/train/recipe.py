"""Training recipes: one YAML file names the model, the data and every optimisation setting."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..configs import get_config
from ..errors import InputError


@dataclass(frozen=True)
class Recipe:
    """Defaults are DiM's ImageNet recipe (AdamW lr 2e-4, wd 0.03, betas 0.99/0.99, eps 1e-15, 5k warm-up then
    constant, grad clip 1, EMA 0.9999, label dropout 0.1, bf16 autocast on the GPU)."""

    name: str
    model: str
    data: dict
    steps: int
    batch: int  # the global batch, split evenly over DDP ranks
    lr: float = 2e-4
    weight_decay: float = 0.03
    betas: tuple[float, float] = (0.99, 0.99)
    adam_eps: float = 1e-15
    warmup: int = 5000
    grad_clip: float = 1.0
    ema: float = 0.9999
    p_uncond: float = 0.1  # label dropout for classifier-free guidance
    bf16: bool = True  # autocast on CUDA (the CPU trains in fp32)
    resolution: int | None = None  # another resolution than the config's native one
    init_from: str | None = None  # weak-to-strong: a weights file (DiM nnet.pth) or a model id's embedded weights
    vae: str | None = None  # a latent model on an image folder: the VAE that encodes it (`dimexport train --vae`)
    feature_cache: str | None = None  # where encoded features are cached (default: <run folder>/features)
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    sample_every: int = 0  # a sample grid (EMA weights, default sampler) every N steps and at the end; 0: none
    keep: int = 2  # checkpoints kept on disk
    shortened: dict = field(default_factory=dict)  # overrides for a quick run (`dimexport train --short`, CI)

    @classmethod
    def load(cls, path: str | Path, short: bool = False) -> "Recipe":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"recipe {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"recipe {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise InputError(f"recipe {str(path)!r} must be a mapping of settings")
        raw.setdefault("name", path.stem)
        if short:
            raw.update(raw.get("shortened") or {})
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "recipe") -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        for key in sorted(set(raw) - known):
            raise InputError(f"{source}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        missing = [k for k in ("model", "data", "steps", "batch") if k not in raw]
        if missing:
            raise InputError(f"{source} lacks {', '.join(missing)}")
        shortened = raw.get("shortened") or {}
        for key in sorted(set(shortened) - known):
            raise InputError(f"{source}: unknown key {key!r} in shortened")
        raw = dict(raw, betas=tuple(raw.get("betas", cls.betas)))
        recipe = cls(**raw)
        get_config(recipe.model)  # names the known ids if it is not one
        if not isinstance(recipe.data, dict):
            raise InputError(f"{source}: data must be a mapping such as {{kind: digits}}")
        for name in ("steps", "batch", "log_every", "ckpt_every", "keep"):
            if int(getattr(recipe, name)) < 1:
                raise InputError(f"{source}: {name} must be >= 1, got {getattr(recipe, name)}")
        if not 0 <= recipe.p_uncond < 1 or not 0 <= recipe.ema < 1:
            raise InputError(f"{source}: p_uncond and ema must be in [0, 1)")
        return recipe

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

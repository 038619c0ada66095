"""The model-config registry: every fact about a named model lives here and nowhere else."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

from .errors import InputError

Family = Literal["dim", "dis"]

# Model dtypes by their CLI/manifest names (the torch dtypes: dimexport.models.DTYPES).
DTYPE_NAMES = ("fp32", "fp16", "bf16")

# Sampler names (dimexport.diffusion.samplers implements them; ModelConfig.sampler names a model's official one).
SAMPLERS = ("dpm-solver", "dpm-solver++", "ddim", "ddpm")

# DiM: 3 pad columns/rows around the grid (= mamba d_conv) and 3 separator tokens before it.
DIM_PAD = 3
DIM_SEPARATORS = 3


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and data facts of one model id; the models are built from this alone."""

    id: str
    family: Family
    hidden: int  # D, the token width
    depth: int  # DiM: number of blocks (odd); DiS: `depth` argument, depth + 1 blocks
    patch: int
    in_channels: int
    sample_size: int  # side of the model's input grid (latent or pixels) at its native resolution
    num_classes: int  # 0 = unconditional; the null (CFG) label is num_classes
    d_conv: int
    learn_sigma: bool
    latent_factor: int  # pixels per input cell: 8 for SD-VAE latents, 1 for pixel space
    pad_schedule: Literal["lateral", "rho_pad", "none"] = "none"  # DiM's pad-token placement
    d_state: int = 16
    expand: int = 2
    checkpoint_format: str = ""
    paper: str = ""
    official_params: str = ""  # the parameter count the issue/papers quote, for humans
    # Sampling defaults (the official eval settings; see dimexport.diffusion): guidance in the family's own form
    # (DiM: eps_c + s(eps_c - eps_u); DiS/DiT: eps_u + w(eps_c - eps_u)) and the sampler with its step count.
    guidance: float = 0.0
    sampler: str = "dpm-solver"
    steps: int = 50
    # Trained weights shipped inside the package (dimexport/weights/<weights>), in the official format, and their
    # sha256, checked on load; "" for models whose weights are downloaded by the user.
    weights: str = ""
    weights_sha256: str = ""

    @property
    def resolution(self) -> int:
        """Native image side in pixels."""
        return self.sample_size * self.latent_factor

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def d_inner(self) -> int:
        return self.expand * self.hidden

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.hidden / 16)

    @property
    def num_blocks(self) -> int:
        return self.depth + 1 if self.family == "dis" else self.depth

    @property
    def extra_tokens(self) -> int:
        """Condition tokens in front of the sequence: time, plus the label when class-conditional."""
        return 2 if self.num_classes > 0 else 1

    def grid(self, resolution: int | None = None) -> int:
        """Patch-grid side at `resolution` pixels, with a clear error when it does not divide."""
        res = self.resolution if resolution is None else resolution
        cell = self.latent_factor * self.patch
        if res <= 0 or res % cell:
            raise InputError(
                f"{self.id}: resolution {res} is not a multiple of {cell} "
                f"(latent factor {self.latent_factor} x patch {self.patch}); try {max(cell, res // cell * cell)}"
            )
        return res // cell

    def seq_len(self, resolution: int | None = None) -> int:
        """Tokens the scan runs over (L): DiM pads the grid to (g+3)^2 and adds 3 separators."""
        g = self.grid(resolution)
        if self.family == "dim":
            return self.extra_tokens + DIM_SEPARATORS + (g + DIM_PAD) ** 2
        return self.extra_tokens + g * g

    def input_shape(self, batch: int = 1, resolution: int | None = None) -> tuple[int, int, int, int]:
        side = self.grid(resolution) * self.patch
        return (batch, self.in_channels, side, side)

    def at_resolution(self, resolution: int) -> "ModelConfig":
        """The same architecture built for another native resolution (DiS: a new pos-embed size)."""
        return replace(self, sample_size=self.grid(resolution) * self.patch)

    def to_dict(self) -> dict:
        return asdict(self)


DIM_CKPT = "DiM nnet_ema.pth: plain state_dict (tyshiwo1/DiM-DiffusionMamba)"
DIS_CKPT = "DiS checkpoints/*.pt: {'ema': state_dict, ...} (feizc/DiS)"
DIM_PAPER = "Teng et al., arXiv 2405.14224"
DIS_PAPER = "Fei et al., arXiv 2402.05608"


def _dim(id: str, hidden: int, depth: int, sample: int, schedule: str, params: str, **kw) -> ModelConfig:
    base = dict(
        family="dim", hidden=hidden, depth=depth, patch=2, in_channels=4, sample_size=sample,
        num_classes=1000, d_conv=3, learn_sigma=False, latent_factor=8, pad_schedule=schedule,
        checkpoint_format=DIM_CKPT, paper=DIM_PAPER, official_params=params, guidance=0.7 if sample == 64 else 0.4,
    )
    base.update(kw)
    return ModelConfig(id=id, **base)


def _dis(size: str, hidden: int, depth: int, patch: int, params: str) -> ModelConfig:
    return ModelConfig(
        id=f"dis-{size}-{patch}", family="dis", hidden=hidden, depth=depth, patch=patch, in_channels=4,
        sample_size=32, num_classes=1000, d_conv=4, learn_sigma=True, latent_factor=8,
        checkpoint_format=DIS_CKPT, paper=DIS_PAPER, official_params=params, guidance=1.5, sampler="ddpm", steps=250,
    )


_DIS_SIZES = {  # name: (hidden, depth, params of the /2 model as derived in the reference)
    "s": (368, 24, "29.1M"), "b": (768, 24, "121M"), "m": (768, 48, "231M"),
    "l": (1024, 48, "407M"), "h": (1536, 48, "907M"),
}

_CONFIGS: tuple[ModelConfig, ...] = (
    # Official CIFAR-10 config (configs/cifar10_S_DiM.py): pixel space, 10 classes (11-row label tables).
    _dim("dim-s", 512, 25, 32, "lateral", "50.6M", in_channels=3, num_classes=10, latent_factor=1),
    _dim("dim-l", 1024, 49, 32, "lateral", "386M"),
    _dim("dim-h", 1536, 49, 32, "lateral", "862.4M"),
    # 512^2 fine-tunes use the 'rho_pad' schedule and a 32x32 position table.
    _dim("dim-l-512", 1024, 49, 64, "rho_pad", "386.9M"),
    _dim("dim-h-512", 1536, 49, 64, "rho_pad", "863.6M"),
    *(_dis(s, h, d, p, prm if p == 2 else "") for s, (h, d, prm) in _DIS_SIZES.items() for p in (2, 4)),
    # The embedded default: class-conditional DiM on scikit-learn's handwritten digits (8x8 upsampled to 32x32 grey
    # pixels), trained by recipes/dim-tiny-digits.yaml. Patch 4: one token per source pixel, L = 126 (a quarter of
    # patch 2's 366), so the CPU samples it quickly. 20 DPM-Solver steps, guidance s = 1 (w = 2).
    _dim("dim-tiny-digits", 128, 7, 32, "lateral", "1.1M", patch=4, in_channels=1, num_classes=10, latent_factor=1,
         paper="dimexport default (digits)", guidance=1.0, steps=20,
         weights="dim-tiny-digits/nnet_ema.pth",
         weights_sha256="d1d7fcfd444784d1ee4d78fa35c78a16688bb7a5c0e20020081525ba36255d60"),
    # Its weak-to-strong 2x fine-tune (recipes/dim-tiny-digits-64.yaml): 64x64, a 16x16 position table and the
    # 'rho_pad' padding schedule, as DiM's 512 fine-tune of the 256 model. No weights shipped yet.
    _dim("dim-tiny-digits-64", 128, 7, 64, "rho_pad", "1.1M", patch=4, in_channels=1, num_classes=10,
         latent_factor=1, paper="dimexport weak-to-strong demo (digits)", guidance=1.0, steps=20),
    # Small models for tests and quick runs; same code paths as the published ones.
    _dim("dim-tiny", 64, 5, 16, "lateral", "", num_classes=10, paper="test model"),
    ModelConfig(
        id="dis-tiny", family="dis", hidden=64, depth=2, patch=2, in_channels=4, sample_size=16,
        num_classes=10, d_conv=4, learn_sigma=True, latent_factor=8, checkpoint_format=DIS_CKPT,
        paper="test model", guidance=1.5, sampler="ddpm", steps=250,
    ),
)

REGISTRY: dict[str, ModelConfig] = {c.id: c for c in _CONFIGS}


def get_config(model_id: str) -> ModelConfig:
    """Look a model id up, naming the known ids when it is not one."""
    try:
        return REGISTRY[model_id]
    except KeyError:
        raise InputError(f"unknown model id {model_id!r}; known ids: {', '.join(REGISTRY)}") from None

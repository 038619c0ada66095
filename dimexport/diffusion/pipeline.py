"""From noise to images: seeded initial noise, the guided denoiser, a sampler, and the time of each call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..configs import SAMPLERS, ModelConfig
from ..errors import InputError
from ..runtime.denoiser import Denoiser
from . import samplers
from .guidance import default_guidance, guided_net
from .schedule import schedule_for
from .upsample import THETA, UPSAMPLE_GUIDANCE, upsample_guided

Progress = Callable[[int, int], None]


@dataclass
class SampleResult:
    samples: Tensor  # (N, C, H, W) float32 on the CPU, what the sampler returned: pixels, or (scaled) latents
    labels: Tensor | None  # (N,)
    call_ms: list[float] = field(default_factory=list)  # wall time of each guided network call (CUDA synchronised)
    total_s: float = 0.0
    settings: dict = field(default_factory=dict)


def parse_classes(text: str, cfg: ModelConfig) -> list[int]:
    """'0-9', '1,3,5' or '207' -> class ids, each checked against the model's classes."""
    if cfg.num_classes == 0:
        raise InputError(f"{cfg.id} is unconditional: drop --classes")
    ids: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            ids.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise InputError(f"--classes {text!r} must be ids and ranges such as 0-9 or 1,3,5") from None
    bad = [c for c in ids if not 0 <= c < cfg.num_classes]
    if bad or not ids:
        raise InputError(f"--classes {text!r}: {cfg.id} has classes 0..{cfg.num_classes - 1} "
                         f"(the null label {cfg.num_classes} is for guidance only); got {bad or 'none'}")
    return ids


def initial_noise(cfg: ModelConfig, n: int, resolution: int, seed: int) -> Tensor:
    """x_T from a CPU generator, so every backend and device starts from the same noise for a seed."""
    return torch.randn(cfg.input_shape(n, resolution), generator=torch.Generator().manual_seed(seed))


def sample(denoiser: Denoiser, labels: Tensor | None, n: int | None = None, sampler: str | None = None,
           steps: int | None = None, guidance: float | None = None, seed: int = 0,
           progress: Progress | None = None, upsample: int = 1, theta: float = THETA) -> SampleResult:
    """One sample per label (or `n` for unconditional models) with the model's official sampler, step count and
    guidance unless given. The sampler runs in float64 on the denoiser's device; the result is on the CPU.

    `upsample` m > 1 samples at m x the denoiser's resolution without training, as DiM's official upsampling does:
    plain DPM-Solver (noise prediction) with Upsample Guidance of weight `theta` (0: none) from the denoiser at its
    own resolution, guidance s = 3 unless given."""
    cfg = denoiser.cfg
    if upsample != 1:
        if upsample not in (2, 3):
            raise InputError(f"--upsample must be 2 or 3 (times the trained resolution), got {upsample}")
        if cfg.family != "dim":
            raise InputError(f"--upsample follows DiM's Upsample Guidance; {cfg.id} is a {cfg.family} model")
        if sampler not in (None, "dpm-solver"):
            raise InputError(f"--upsample samples with DPM-Solver (as the official code); drop --sampler {sampler}")
        guidance = UPSAMPLE_GUIDANCE if guidance is None else guidance
    sampler = sampler or cfg.sampler
    steps = cfg.steps if steps is None else steps
    guidance = default_guidance(cfg) if guidance is None else guidance
    if sampler not in SAMPLERS:
        raise InputError(f"sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    schedule = schedule_for(cfg)
    if sampler in ("ddim", "ddpm") and steps > schedule.num_timesteps:
        raise InputError(f"{sampler} takes at most {schedule.num_timesteps} steps (one per noise level), got {steps}")
    count = len(labels) if labels is not None else n
    if not count:
        raise InputError("nothing to sample: give labels or n > 0")
    device = denoiser.device
    full = denoiser.at_resolution(denoiser.resolution * upsample) if upsample != 1 else denoiser
    x = initial_noise(cfg, count, full.resolution, seed).to(device)
    net = guided_net(full, labels, guidance)
    if upsample != 1:
        net = upsample_guided(net, guided_net(denoiser, labels, guidance), schedule, upsample, theta)
    result = SampleResult(torch.empty(0), labels)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(xx: Tensor, tt: Tensor) -> Tensor:
        sync()
        start = time.perf_counter()
        out = net(xx, tt)
        sync()
        result.call_ms.append((time.perf_counter() - start) * 1e3)
        return out

    gen = torch.Generator().manual_seed(seed + 1)  # the ancestral samplers' per-step noise, on the CPU
    c = cfg.in_channels
    started = time.perf_counter()
    if sampler == "dpm-solver":  # U-ViT's DiM setting: 'fast', order 3, time-uniform, data prediction
        out = samplers.dpm_solver(timed, schedule, x, steps=steps, order=3, predict_x0=upsample == 1,
                                  progress=progress, channels=c)
    elif sampler == "dpm-solver++":
        out = samplers.dpm_solver_pp_2m(timed, schedule, x, steps=steps, progress=progress, channels=c)
    elif sampler == "ddim":
        out = samplers.ddim(timed, schedule, x, steps=steps, progress=progress, channels=c)
    else:
        out = samplers.ddpm(timed, schedule, x, steps=steps, generator=gen, progress=progress, channels=c)
    sync()
    result.total_s = time.perf_counter() - started
    result.samples = out.float().cpu()
    result.settings = {"model": cfg.id, "backend": denoiser.name, "dtype": denoiser.dtype,
                       "device": str(device), "resolution": full.resolution, "sampler": sampler, "steps": steps,
                       "guidance": guidance, "seed": seed, "count": count, "upsample": upsample,
                       "upsample_guidance": theta if upsample != 1 else None}
    return result

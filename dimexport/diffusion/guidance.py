"""Classifier-free guidance as each family's official sampler applies it, conditional and unconditional
halves in one denoiser call.

- DiM (U-ViT's code): eps = eps_c + s (eps_c - eps_u), s = 0.4 at 256 px, 0.7 at 512 px (w = 1 + s).
- DiS (DiT's `forward_with_cfg`): eps = eps_u + w (eps_c - eps_u) on the first 3 channels only; the other
  channels (the 4th latent channel and the learned variance) are each half's own (the conditional one is kept).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..configs import ModelConfig
from ..errors import InputError
from .samplers import Net

DIS_GUIDED_CHANNELS = 3  # DiT guides channels [:3], a quirk the DiS sampler keeps


def guidance_weight(cfg: ModelConfig, scale: float) -> float:
    """w of eps_u + w (eps_c - eps_u) for a guidance value in the family's own convention."""
    return 1.0 + scale if cfg.family == "dim" else scale


def default_guidance(cfg: ModelConfig) -> float:
    """The official eval setting; the neutral value (no guidance) for unconditional models."""
    if cfg.num_classes == 0:
        return 0.0 if cfg.family == "dim" else 1.0
    return cfg.guidance


def guided_net(denoiser, y: Tensor | None, scale: float) -> Net:
    """The sampler's network: the denoiser at labels y, guided by `scale` (family convention) when it changes
    anything; y = None for unconditional models."""
    cfg: ModelConfig = denoiser.cfg
    if cfg.num_classes == 0:
        if guidance_weight(cfg, scale) != 1.0:
            raise InputError(f"{cfg.id} is unconditional: guidance does not apply (drop --cfg)")
        return lambda x, t: denoiser(x, t, None)
    if y is None:
        raise InputError(f"{cfg.id} is class-conditional: give class labels")
    w = guidance_weight(cfg, scale)
    if w == 1.0:
        return lambda x, t: denoiser(x, t, y.to(x.device))
    channels = cfg.in_channels if cfg.family == "dim" else min(DIS_GUIDED_CHANNELS, cfg.in_channels)

    def net(x: Tensor, t: Tensor) -> Tensor:
        yy = y.to(x.device)
        out = denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([yy, torch.full_like(yy, cfg.num_classes)]))
        cond, uncond = out.chunk(2)
        mixed = uncond[:, :channels] + w * (cond[:, :channels] - uncond[:, :channels])
        return torch.cat([mixed, cond[:, channels:]], dim=1)

    return net

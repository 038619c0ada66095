"""Discrete variance-preserving noise schedules of the two families, and their continuous-time view.

Index n = 1..N names the noise level with alpha_bar_n = prod_{i<=n} (1 - beta_i). The families feed
the model different time values for the same level: DiM (U-ViT's code) passes n itself, 1..1000;
DiS (DiT's code) passes the zero-based index n - 1, 0..999. DPM-Solver works in continuous time
t = n / N with log(alpha) interpolated piecewise-linearly between levels (its 'discrete' schedule).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..configs import ModelConfig

NUM_TIMESTEPS = 1000


def scaled_linear_betas(n: int = NUM_TIMESTEPS) -> Tensor:
    """Stable Diffusion's betas, used by DiM: linspace(sqrt(0.00085), sqrt(0.012), n)^2."""
    return torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2


def linear_betas(n: int = NUM_TIMESTEPS) -> Tensor:
    """DDPM's linear betas 1e-4 -> 0.02 (scaled to n steps), used by DiS through DiT's diffusion code."""
    scale = 1000 / n
    return torch.linspace(scale * 1e-4, scale * 0.02, n, dtype=torch.float64)


@dataclass(frozen=True)
class Schedule:
    """alpha_bar over the levels 1..N (float64), and how the model is told a level."""

    betas: Tensor
    time_offset: int  # model time = n - time_offset: 0 for DiM (1..N), 1 for DiS (0..N-1)

    @property
    def num_timesteps(self) -> int:
        return self.betas.numel()

    @property
    def alphas_cumprod(self) -> Tensor:
        return torch.cumprod(1 - self.betas, 0)

    def alpha_bar(self, n: Tensor) -> Tensor:
        """alpha_bar at integer levels n in 0..N (level 0 is clean data, alpha_bar = 1)."""
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        return table.to(n.device)[n.long()]

    def q_sample(self, x0: Tensor, n: Tensor, noise: Tensor) -> Tensor:
        """x_n = sqrt(alpha_bar_n) x0 + sqrt(1 - alpha_bar_n) noise, per sample level n (B,)."""
        ab = self.alpha_bar(n).to(x0.dtype).view(-1, *[1] * (x0.dim() - 1))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def model_time(self, n: Tensor) -> Tensor:
        """What the network is fed for level n (float, so continuous times pass through)."""
        return n.float() - self.time_offset

    # The continuous-time view DPM-Solver uses: t in [1/N, 1], t = n/N at the levels.
    def log_alpha(self, t: Tensor) -> Tensor:
        levels = torch.arange(1, self.num_timesteps + 1, dtype=torch.float64) / self.num_timesteps
        return _interp(t.double(), levels.to(t.device), 0.5 * torch.log(self.alphas_cumprod).to(t.device))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def lam(self, t: Tensor) -> Tensor:
        """Half log-SNR: log(alpha_t / sigma_t)."""
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def inverse_lam(self, lam: Tensor) -> Tensor:
        la = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2 * lam)
        levels = torch.arange(1, self.num_timesteps + 1, dtype=torch.float64) / self.num_timesteps
        log_alphas = 0.5 * torch.log(self.alphas_cumprod)
        return _interp(la, log_alphas.flip(0).to(lam.device), levels.flip(0).to(lam.device))


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation through increasing xp, extended linearly past both ends (as DPM-Solver)."""
    idx = torch.searchsorted(xp, x.clamp(xp[0], xp[-1])).clamp(1, xp.numel() - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def schedule_for(cfg: ModelConfig) -> Schedule:
    """The schedule a model was trained with: DiM scaled-linear, DiS linear."""
    if cfg.family == "dim":
        return Schedule(scaled_linear_betas(), time_offset=0)
    return Schedule(linear_betas(), time_offset=1)

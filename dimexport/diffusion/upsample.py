"""Training-free sampling at m times the trained resolution: Upsample Guidance (Hwang et al., arXiv 2404.01709) as
DiM's `dpm_solver_upsample_g` applies it (DiM: mamba_attn_diff/models/upsample_guidance.py, eval_ldm_discrete.py).

At each network call of plain DPM-Solver (noise prediction) at continuous time t, the guided full-resolution
prediction eps is corrected, while t >= 1 - eta, by the model at its trained resolution:

    x_low = avgpool_m(x) / sqrt(abar_t + (1 - abar_t) / m^2)      (the pooled image is a sample of a higher SNR)
    eps  += theta * nearest_up_m(eps_low(x_low, tau) / m - avgpool_m(eps))

with tau the preset level whose SNR is closest to m^2 SNR(t) (never above t). Defaults as the official configs:
theta = 1, eta = 0.3, guidance s = 3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .samplers import Net
from .schedule import Schedule

THETA, ETA, UPSAMPLE_GUIDANCE = 1.0, 0.3, 3.0


def avgpool(x: Tensor, m: int) -> Tensor:
    return F.avg_pool2d(x, m)


def nearest_up(x: Tensor, m: int) -> Tensor:
    return F.interpolate(x, scale_factor=m, mode="nearest")


def tau_of(schedule: Schedule, t: Tensor, m: int) -> Tensor:
    """The official `get_tau`: among the preset times 999/1000 .. 1/1000 and ~0 (levels 999 .. 0), the one whose SNR
    is closest to m^2 SNR(t), as a continuous time 1 - k / 999 for the k-th preset, clamped to t."""
    n_levels = schedule.num_timesteps
    abar = schedule.alpha_bar(torch.arange(n_levels + 1))  # levels 0..N
    snr = abar / (1 - abar)  # level 0: inf
    preset = snr[torch.arange(n_levels - 1, -1, -1)]  # levels 999 .. 0
    level = (t.double().cpu() * n_levels).long()
    k = (snr[level].unsqueeze(-1) * m * m - preset).abs().argmin(dim=-1)
    return torch.minimum(1 - k.double() / (n_levels - 1), t.double().cpu())


def upsample_guided(net_full: Net, net_low: Net, schedule: Schedule, m: int, theta: float = THETA,
                    eta: float = ETA) -> Net:
    """The network DPM-Solver calls at m x the trained resolution; both nets are already classifier-free guided."""
    n_levels = schedule.num_timesteps

    def net(x: Tensor, model_t: Tensor) -> Tensor:
        t = model_t.double().cpu() / n_levels  # DiM's model time is 1000 t
        eps = net_full(x, model_t)
        if theta == 0 or float(t[0]) < 1 - eta:
            return eps
        abar = schedule.alpha_bar((t * n_levels).long()).to(x.device, torch.float64)
        p = (abar + (1 - abar) / (m * m)).view(-1, 1, 1, 1)
        x_low = (avgpool(x.double(), m) / p.sqrt()).float()
        tau = (tau_of(schedule, t, m) * n_levels).float().to(x.device)
        eps_low = net_low(x_low, tau)
        c = x.shape[1]
        correction = nearest_up(eps_low[:, :c] / m - avgpool(eps[:, :c], m), m)
        return torch.cat([eps[:, :c] + theta * correction, eps[:, c:]], dim=1)

    return net

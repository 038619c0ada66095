"""The Gaussian diffusion posterior and its learned variance (improved-DDPM / DiT), used by the DDPM sampler."""

from __future__ import annotations

import torch
from torch import Tensor


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like.device, like.dtype).view(-1, *[1] * (like.dim() - 1))


class Posterior:
    """q(x_prev | x_t, x0) at every level of an alpha_bar table (the full one or a respaced one), float64.

    `log_var` is clipped as improved-DDPM does: the first level's variance is 0, so its log takes the
    second level's value.
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        ab = alphas_cumprod.double()
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        self.alphas_cumprod, self.beta = ab, 1 - ab / ab_prev
        self.var = self.beta * (1 - ab_prev) / (1 - ab)
        self.log_var = torch.log(torch.cat([self.var[1:2], self.var[1:]]))
        self.coef_x0 = self.beta * ab_prev.sqrt() / (1 - ab)
        self.coef_xt = (1 - ab_prev) * (1 - self.beta).sqrt() / (1 - ab)

    def mean(self, i: Tensor, x0: Tensor, xt: Tensor) -> Tensor:
        """Posterior mean at table positions i (B,)."""
        return _bcast(self.coef_x0[i], x0) * x0 + _bcast(self.coef_xt[i], xt) * xt

    def model_log_variance(self, i: Tensor, v: Tensor) -> Tensor:
        """DiT's learned range: v in [-1, 1] interpolates log(beta) and the clipped posterior log-variance."""
        frac = (v.double() + 1) / 2
        return frac * _bcast(torch.log(self.beta[i]), v) + (1 - frac) * _bcast(self.log_var[i], v)

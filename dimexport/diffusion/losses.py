"""Training objectives of the two families, as their official training scripts compute them.

DiM (U-ViT's `LSimple`): epsilon-prediction MSE, mean over every dimension, at a level n uniform in 1..N fed to the
network as is. DiS (DiT's `training_losses` with learn_sigma): the same MSE on the epsilon channels plus the
variational bound of the learned-range variance, computed on a detached mean so that it trains the variance only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gaussian import Posterior, _bcast
from .schedule import Schedule


def sample_levels(n: int, num_levels: int, generator: torch.Generator) -> Tensor:
    """Noise levels 1..num_levels, uniform, for a batch of n."""
    return torch.randint(1, num_levels + 1, (n,), generator=generator)


def _normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _discretized_gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """-log p(x) of data quantised to 256 levels in [-1, 1] under N(mean, exp(log_scale)^2) (improved-DDPM)."""
    def cdf(v: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))

    inv = torch.exp(-log_scale)
    cdf_plus, cdf_min = cdf(inv * (x - mean + 1 / 255)), cdf(inv * (x - mean - 1 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    log_p = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
    return -log_p


def _vb_bits(post: Posterior, i: Tensor, x0: Tensor, xt: Tensor, eps: Tensor, v: Tensor) -> Tensor:
    """Per-sample variational bound term in bits: KL(q(x_{t-1}|x_t,x0) || p) or, at the first level, the decoder NLL.
    `i`: table positions (levels - 1) on the CPU, where the posterior's tables are."""
    x0, xt = x0.double(), xt.double()
    ab = _bcast(post.alphas_cumprod[i], xt)
    x0_pred = (xt - (1 - ab).sqrt() * eps.double()) / ab.sqrt()
    mean = post.mean(i, x0_pred, xt)
    log_var = post.model_log_variance(i, v)
    true_mean, true_log_var = post.mean(i, x0, xt), _bcast(post.log_var[i], xt)
    dims = list(range(1, x0.dim()))
    kl = _normal_kl(true_mean, true_log_var, mean, log_var).mean(dims) / math.log(2.0)
    nll = _discretized_gaussian_nll(x0.double(), mean, 0.5 * log_var).mean(dims) / math.log(2.0)
    return torch.where((i == 0).to(kl.device), nll, kl)


def diffusion_loss(model: nn.Module, schedule: Schedule, x0: Tensor, y: Tensor | None, levels: Tensor,
                   noise: Tensor, learn_sigma: bool) -> Tensor:
    """The scalar training loss of one batch at the given levels (1..N) and noise."""
    xt = schedule.q_sample(x0, levels, noise)
    out = model(xt, schedule.model_time(levels).to(x0.device), y)
    channels = x0.shape[1]
    eps = out[:, :channels].float()
    loss = F.mse_loss(eps, noise)
    if learn_sigma:
        post = Posterior(schedule.alphas_cumprod)
        vb = _vb_bits(post, (levels - 1).cpu(), x0, xt, eps.detach(), out[:, channels:].float())
        loss = loss + vb.mean().float()
    return loss

"""Samplers over one network interface: `net(x, model_time) -> output`, the guided model output
(epsilon, plus the variance channels of learned-sigma models). All solvers compute in float64 on the
schedule side and hand the network float32 inputs.

- `dpm-solver`: DPM-Solver (Lu et al. 2022) as U-ViT/DiM sample: method 'fast' (singlestep, order 3,
  time-uniform steps), data prediction (predict_x0), from T=1 to eps=1/1000.
- `dpm-solver++`: DPM-Solver++(2M), multistep second order in data prediction.
- `ddim`: DDIM on evenly spaced levels, eta = 0 (deterministic) by default.
- `ddpm`: ancestral DDPM on respaced levels (improved-DDPM's `space_timesteps`), with the learned
  variance when the model has one (DiS, as DiT samples with 250 steps).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .gaussian import Posterior
from .schedule import Schedule

Net = Callable[[Tensor, Tensor], Tensor]  # (x (B,C,H,W) float32, model time (B,) float32) -> output
Progress = Callable[[int, int], None]  # (step done, steps)


class _Continuous:
    """The network seen in DPM-Solver's continuous time t in [1/N, 1]: epsilon and x0 predictions."""

    def __init__(self, net: Net, schedule: Schedule, channels: int, progress: Progress | None, total: int) -> None:
        self.net, self.s, self.c, self.progress, self.total, self.calls = net, schedule, channels, progress, total, 0

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        model_t = self.s.model_time(t * self.s.num_timesteps).float().expand(x.shape[0])
        out = self.net(x.float(), model_t.to(x.device))
        self.calls += 1
        if self.progress:
            self.progress(self.calls, self.total)
        return out[:, : self.c].double()

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = torch.exp(self.s.log_alpha(t)), self.s.sigma(t)
        return (x - sigma.to(x.device) * self.eps(x, t)) / alpha.to(x.device)

    def model(self, x: Tensor, t: Tensor, predict_x0: bool) -> Tensor:
        return self.x0(x, t) if predict_x0 else self.eps(x, t)


def time_steps(schedule: Schedule, steps: int, t_T: float, t_0: float, skip: str) -> Tensor:
    """steps + 1 times from t_T down to t_0: uniform in t, or uniform in log-SNR."""
    if skip == "time_uniform":
        return torch.linspace(t_T, t_0, steps + 1, dtype=torch.float64)
    if skip == "logSNR":
        lam = torch.linspace(float(schedule.lam(torch.tensor(t_T))), float(schedule.lam(torch.tensor(t_0))), steps + 1,
                             dtype=torch.float64)
        return schedule.inverse_lam(lam)
    raise ValueError(f"skip type {skip!r}: use time_uniform or logSNR")


def singlestep_orders(steps: int, order: int) -> list[int]:
    """DPM-Solver 'fast': as many third-order steps as fit, then the lower orders that use up `steps` calls."""
    if order == 3:
        k = steps // 3 + 1
        return {0: [3] * (k - 2) + [2, 1], 1: [3] * (k - 1) + [1], 2: [3] * (k - 1) + [2]}[steps % 3]
    if order == 2:
        return [2] * (steps // 2) + [1] * (steps % 2)
    return [1] * steps


def _singlestep_update(m: _Continuous, x: Tensor, inner: Tensor, predict_x0: bool) -> Tensor:
    """One DPM-Solver step (solver type 'dpm_solver') over the grid points `inner` = (s, ..., t): order =
    len(inner) - 1, the intermediate points' log-SNR fractions r_i = (lambda(inner[i]) - lambda(s)) / h, as U-ViT's
    'fast' method takes them from the sampling grid."""
    sch = m.s
    order = inner.numel() - 1
    s, t = inner[:1], inner[-1:]
    lam = sch.lam(inner)
    lam_s, h = lam[:1], lam[-1:] - lam[:1]
    r = [(lam[i : i + 1] - lam_s) / h for i in range(1, order)]
    mids = [sch.inverse_lam(lam_s + ri * h) for ri in r]
    r = [ri.to(x.device) for ri in r]
    la = lambda u: sch.log_alpha(u).to(x.device)  # noqa: E731
    sig = lambda u: sch.sigma(u).to(x.device)  # noqa: E731
    h = h.to(x.device)
    model_s = m.model(x, s, predict_x0)
    if predict_x0:  # data prediction (DPM-Solver++ form)
        phi = lambda rh: torch.expm1(-rh)  # noqa: E731

        def lin(u: Tensor, rh: Tensor) -> Tensor:  # x_u from x_s by the first-order term
            return (sig(u) / sig(s)) * x - torch.exp(la(u)) * phi(rh) * model_s

        if order == 1:
            return lin(t, h)
        if order == 2:
            x1 = lin(mids[0], r[0] * h)
            return lin(t, h) - (0.5 / r[0]) * torch.exp(la(t)) * phi(h) * (m.model(x1, mids[0], True) - model_s)
        r1, r2 = r
        x1 = lin(mids[0], r1 * h)
        model_1 = m.model(x1, mids[0], True)
        phi_22 = torch.expm1(-r2 * h) / (r2 * h) + 1
        x2 = lin(mids[1], r2 * h) + (r2 / r1) * torch.exp(la(mids[1])) * phi_22 * (model_1 - model_s)
        model_2 = m.model(x2, mids[1], True)
        phi_2 = phi(h) / h + 1
        return lin(t, h) + (1 / r2) * torch.exp(la(t)) * phi_2 * (model_2 - model_s)
    # noise prediction (DPM-Solver form)
    def lin_e(u: Tensor, rh: Tensor) -> Tensor:
        return torch.exp(la(u) - la(s)) * x - sig(u) * torch.expm1(rh) * model_s

    if order == 1:
        return lin_e(t, h)
    if order == 2:
        x1 = lin_e(mids[0], r[0] * h)
        return lin_e(t, h) - (0.5 / r[0]) * sig(t) * torch.expm1(h) * (m.model(x1, mids[0], False) - model_s)
    r1, r2 = r
    x1 = lin_e(mids[0], r1 * h)
    model_1 = m.model(x1, mids[0], False)
    phi_22 = torch.expm1(r2 * h) / (r2 * h) - 1
    x2 = lin_e(mids[1], r2 * h) - (r2 / r1) * sig(mids[1]) * phi_22 * (model_1 - model_s)
    model_2 = m.model(x2, mids[1], False)
    phi_2 = torch.expm1(h) / h - 1
    return lin_e(t, h) - (1 / r2) * sig(t) * phi_2 * (model_2 - model_s)


def dpm_solver(net: Net, schedule: Schedule, x: Tensor, steps: int = 50, order: int = 3, predict_x0: bool = True,
               skip: str = "time_uniform", t_0: float | None = None, t_T: float = 1.0,
               progress: Progress | None = None, channels: int | None = None) -> Tensor:
    """DPM-Solver 'fast' (singlestep), as U-ViT's `sample(method='fast')`: a grid of `steps` intervals (t_T down to
    t_0, default 1/N: U-ViT's eps), walked by steps of the orders `singlestep_orders` gives, each step's network calls
    at its grid points; `steps` calls in total."""
    t_0 = 1.0 / schedule.num_timesteps if t_0 is None else t_0
    grid = time_steps(schedule, steps, t_T, t_0, skip)
    m = _Continuous(net, schedule, channels or x.shape[1], progress, steps)
    x = x.double()
    i = 0
    for k in singlestep_orders(steps, order):
        x = _singlestep_update(m, x, grid[i : i + k + 1], predict_x0)
        i += k
    return x.float()


def dpm_solver_pp_2m(net: Net, schedule: Schedule, x: Tensor, steps: int = 20, skip: str = "time_uniform",
                     t_0: float | None = None, t_T: float = 1.0, lower_order_final: bool = True,
                     progress: Progress | None = None, channels: int | None = None) -> Tensor:
    """DPM-Solver++(2M): first step first order, then second-order multistep in data prediction."""
    t_0 = 1.0 / schedule.num_timesteps if t_0 is None else t_0
    ts = time_steps(schedule, steps, t_T, t_0, skip)
    m = _Continuous(net, schedule, channels or x.shape[1], progress, steps)
    x = x.double()
    prev_model = m.x0(x, ts[0:1])
    prev_prev: Tensor | None = None
    for i in range(1, steps + 1):
        s, t = ts[i - 1 : i], ts[i : i + 1]
        lam_s, lam_t = schedule.lam(s), schedule.lam(t)
        h = (lam_t - lam_s).to(x.device)
        alpha_t, sig_t, sig_s = (torch.exp(schedule.log_alpha(t)).to(x.device), schedule.sigma(t).to(x.device),
                                 schedule.sigma(s).to(x.device))
        x_next = (sig_t / sig_s) * x - alpha_t * torch.expm1(-h) * prev_model
        second = prev_prev is not None and not (lower_order_final and steps < 10 and i == steps)
        if second:
            h_0 = (lam_s - schedule.lam(ts[i - 2 : i - 1])).to(x.device)
            d1 = (prev_model - prev_prev) * (h / h_0)
            x_next = x_next - 0.5 * alpha_t * torch.expm1(-h) * d1
        x = x_next
        if i < steps:
            prev_prev, prev_model = prev_model, m.x0(x, t)
    return x.float()


def discrete_levels(schedule: Schedule, steps: int) -> list[int]:
    """`steps` levels over 1..N, highest first: improved-DDPM's `space_timesteps` (a fractional stride added up and
    rounded, as DiT respaces), shifted to 1-based levels."""
    n = schedule.num_timesteps
    if not 1 <= steps <= n:
        raise ValueError(f"steps must be in 1..{n}, got {steps}")
    stride = 1.0 if steps == 1 else (n - 1) / (steps - 1)
    taken, cur = set(), 0.0
    for _ in range(steps):
        taken.add(round(cur) + 1)
        cur += stride
    return sorted(taken, reverse=True)


def ddim_step(x: Tensor, eps: Tensor, ab: Tensor, ab_prev: Tensor, eta: float = 0.0,
              noise: Tensor | None = None) -> Tensor:
    """One DDIM update from alpha_bar `ab` to `ab_prev` (Song et al. eq. 12); `noise` is needed when eta > 0."""
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    if eta == 0:  # also the inversion's first step, from clean data (ab = 1)
        return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()
    out = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
    return out if noise is None else out + sigma * noise


def ddim(net: Net, schedule: Schedule, x: Tensor, steps: int = 50, eta: float = 0.0,
         generator: torch.Generator | None = None, progress: Progress | None = None,
         channels: int | None = None) -> Tensor:
    """DDIM from the highest level down to clean data; eta = 1 is ancestral sampling on the same levels."""
    levels = discrete_levels(schedule, steps)
    c = channels or x.shape[1]
    x = x.double()
    for i, n in enumerate(levels):
        n_prev = levels[i + 1] if i + 1 < len(levels) else 0
        ab, ab_prev = (schedule.alpha_bar(torch.tensor([v])).to(x.device) for v in (n, n_prev))
        eps = net(x.float(), schedule.model_time(torch.full((x.shape[0],), n, device=x.device)))[:, :c].double()
        noise = None
        if eta > 0 and n_prev > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
        x = ddim_step(x, eps, ab, ab_prev, eta, noise)
        if progress:
            progress(i + 1, len(levels))
    return x.float()


def ddpm_step(post: Posterior, i: int, x: Tensor, out: Tensor, channels: int, noise: Tensor | None) -> Tensor:
    """One ancestral step from position i of a (respaced) table to i - 1. `out` with twice `channels` carries
    DiT's learned variance range; otherwise the posterior variance is used. No noise at i = 0 (the last step)."""
    idx = torch.full((x.shape[0],), i, dtype=torch.long)
    ab = post.alphas_cumprod[i].to(x.device)
    x0 = (x - (1 - ab).sqrt() * out[:, :channels]) / ab.sqrt()
    mean = post.mean(idx, x0, x)
    if i == 0:
        return mean
    if out.shape[1] == 2 * channels:
        log_var = post.model_log_variance(idx, out[:, channels:])
    else:
        log_var = post.log_var[i].to(x.device).expand_as(x)
    return mean + torch.exp(0.5 * log_var) * noise


def ddpm(net: Net, schedule: Schedule, x: Tensor, steps: int = 250, generator: torch.Generator | None = None,
         progress: Progress | None = None, channels: int | None = None) -> Tensor:
    """Ancestral DDPM on respaced levels (improved-DDPM's `space_timesteps`), with the learned variance when the
    model has one. No clipping, as DiT samples."""
    levels = discrete_levels(schedule, steps)[::-1]  # increasing: position i of the respaced table
    c = channels or x.shape[1]
    post = Posterior(schedule.alpha_bar(torch.tensor(levels)))
    x = x.double()
    for k, i in enumerate(range(len(levels) - 1, -1, -1)):
        out = net(x.float(), schedule.model_time(torch.full((x.shape[0],), levels[i], device=x.device))).double()
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device) if i > 0 else None
        x = ddpm_step(post, i, x, out, c, noise)
        if progress:
            progress(k + 1, len(levels))
    return x.float()

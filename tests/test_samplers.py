"""Samplers against closed forms: Gaussian data N(mu, s^2) has an exact epsilon predictor and an exact
probability-flow map, so ODE solvers must converge to it (at their order) and ancestral samplers must
reproduce the data's moments."""

from __future__ import annotations

import math

import pytest
import torch

from dimexport.diffusion import samplers
from dimexport.diffusion.schedule import Schedule, linear_betas, scaled_linear_betas

MU, STD = 0.3, 0.5


def exact_net(schedule: Schedule):
    """E[eps | x_t] for x0 ~ N(MU, STD^2): sqrt(1-ab) (x - sqrt(ab) MU) / (ab STD^2 + 1 - ab), at any model time."""

    def net(x: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        t = (model_t.double() + schedule.time_offset) / schedule.num_timesteps
        ab = torch.exp(2 * schedule.log_alpha(t.cpu())).to(x.device).view(-1, 1, 1, 1)
        return ((1 - ab).sqrt() * (x.double() - ab.sqrt() * MU) / (ab * STD**2 + 1 - ab)).float()

    return net


def flow_map(schedule: Schedule, x_T: torch.Tensor, t_T: float, t_0: float) -> torch.Tensor:
    """The exact probability-flow ODE solution: x_t = sqrt(ab) MU + sqrt(ab STD^2 + 1 - ab) z along a path."""
    ab = lambda t: float(torch.exp(2 * schedule.log_alpha(torch.tensor([t], dtype=torch.float64))))  # noqa: E731
    z = (x_T.double() - math.sqrt(ab(t_T)) * MU) / math.sqrt(ab(t_T) * STD**2 + 1 - ab(t_T))
    return math.sqrt(ab(t_0)) * MU + math.sqrt(ab(t_0) * STD**2 + 1 - ab(t_0)) * z


SCHEDULES = {"dim": Schedule(scaled_linear_betas(), 0), "dis": Schedule(linear_betas(), 1)}


@pytest.mark.parametrize("family", SCHEDULES)
@pytest.mark.parametrize("predict_x0", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_converges_at_its_order(family: str, predict_x0: bool, order: int) -> None:
    """Uniform log-SNR steps: halving the step size divides the error by about 2^order."""
    sch = SCHEDULES[family]
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = flow_map(sch, x_T, 1.0, 1e-3)
    errs = [float((samplers.dpm_solver(exact_net(sch), sch, x_T, steps=k * order, order=order, predict_x0=predict_x0,
                                       skip="logSNR").double() - exact).abs().max()) for k in (5, 10, 20)]
    first, second = errs[0] / errs[1], errs[1] / errs[2]
    assert max(first, second) >= 0.6 * 2**order, errs
    assert errs[2] < {1: 0.2, 2: 0.03, 3: 1e-3}[order], errs


@pytest.mark.parametrize("family", SCHEDULES)
def test_dpm_solver_fast_default_is_close(family: str) -> None:
    """U-ViT's setting (50 calls, order 3, time-uniform, data prediction, eps 1/1000): close to the flow map."""
    sch = SCHEDULES[family]
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = flow_map(sch, x_T, 1.0, 1e-3)
    errs = [float((samplers.dpm_solver(exact_net(sch), sch, x_T, steps=s).double() - exact).abs().max())
            for s in (25, 50, 100)]
    assert errs[0] > errs[1] > errs[2] and errs[1] < 0.1 * STD, errs


@pytest.mark.parametrize("family", SCHEDULES)
def test_dpm_solver_pp_2m_and_ddim_converge(family: str) -> None:
    sch = SCHEDULES[family]
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    exact = flow_map(sch, x_T, 1.0, 1e-3)
    e2m = [float((samplers.dpm_solver_pp_2m(exact_net(sch), sch, x_T, steps=s, skip="logSNR").double() - exact)
                 .abs().max()) for s in (10, 20, 40)]
    assert e2m[1] / e2m[2] > 2.4 and e2m[2] < 1e-2, e2m  # second order
    # DDIM (first order) runs on integer levels down to clean data: compare against the map to level 0.
    exact0 = MU + STD * (x_T.double() - math.sqrt(float(sch.alphas_cumprod[-1])) * MU) / math.sqrt(
        float(sch.alphas_cumprod[-1]) * STD**2 + 1 - float(sch.alphas_cumprod[-1]))
    eddim = [float((samplers.ddim(exact_net(sch), sch, x_T, steps=s).double() - exact0).abs().max())
             for s in (25, 100, 1000)]
    assert eddim[0] > eddim[1] > eddim[2] and eddim[2] < 2e-2, eddim


@pytest.mark.parametrize("name", ["ddpm", "ddim-eta1"])
def test_ancestral_samplers_reproduce_moments(name: str) -> None:
    """With the posterior variance the chain is exact as the steps go to N; coarse respacing shrinks the spread."""
    sch = SCHEDULES["dis"]
    stds = []
    for steps in (100, 1000):
        gen = torch.Generator().manual_seed(2)
        x_T = torch.randn(4000, 1, 4, 4, generator=gen)
        if name == "ddpm":
            out = samplers.ddpm(exact_net(sch), sch, x_T, steps=steps, generator=gen)
        else:
            out = samplers.ddim(exact_net(sch), sch, x_T, steps=steps, eta=1.0, generator=gen)
        assert abs(float(out.mean()) - MU) < 0.005
        stds.append(float(out.std()))
    assert abs(stds[1] - STD) < 0.01 and abs(stds[1] - STD) < abs(stds[0] - STD), stds


def test_singlestep_orders_use_all_steps() -> None:
    assert samplers.singlestep_orders(50, 3) == [3] * 16 + [2]  # U-ViT's 50-step DiM sampling
    for steps in range(3, 40):
        assert sum(samplers.singlestep_orders(steps, 3)) == steps


def test_levels_respacing_matches_improved_ddpm() -> None:
    sch = SCHEDULES["dis"]
    levels = samplers.discrete_levels(sch, 250)
    assert len(levels) == 250 and levels[0] == 1000 and levels[-1] == 1
    assert samplers.discrete_levels(sch, 1000) == list(range(1000, 0, -1))
    # space_timesteps adds the fractional stride up before rounding: at 21 steps the 11th index is
    # round(49.95 + ... + 49.95) = round(499.4999...) = 499, not round(10 * 49.95) = 500
    assert 500 in samplers.discrete_levels(sch, 21) and 501 not in samplers.discrete_levels(sch, 21)
    assert samplers.discrete_levels(sch, 1) == [1]  # one step: index 0, as improved-DDPM


@pytest.mark.parametrize("steps", [50, 20, 7])
def test_dpm_solver_fast_calls_the_network_at_the_grid_points(steps: int) -> None:
    """U-ViT's `method='fast'`: one time-uniform grid of `steps` intervals from 1 to 1/1000; every third-order step
    spans three intervals and evaluates the network at each grid point it starts or passes (r1, r2 from the grid),
    so the calls are exactly the grid's first `steps` points, fed as 1000 t (DiM)."""
    sch = SCHEDULES["dim"]
    fed: list[float] = []

    def net(x: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        fed.append(float(model_t[0]))
        return exact_net(sch)(x, model_t)

    samplers.dpm_solver(net, sch, torch.randn(2, 1, 4, 4), steps=steps)
    grid = torch.linspace(1.0, 1e-3, steps + 1, dtype=torch.float64)[:steps] * 1000
    torch.testing.assert_close(torch.tensor(fed, dtype=torch.float64), grid, rtol=1e-6, atol=1e-4)


# Cross-checks against diffusers' schedulers, a well-kept implementation of the same updates. Our samplers keep
# their own loops because the official ones differ from diffusers' in where they step: U-ViT's DPM-Solver runs in
# continuous time (no diffusers scheduler does), improved-DDPM respaces levels as `discrete_levels`, and diffusers'
# DDIM steps by a fixed stride. Each single update must agree.


def _table(family: str) -> tuple[Schedule, dict]:
    betas = {"dim": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
             "dis": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)}[family]
    return SCHEDULES[family], dict(num_train_timesteps=1000, **betas)


@pytest.mark.parametrize("family", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers(family: str, eta: float) -> None:
    from diffusers import DDIMScheduler

    sch, kw = _table(family)
    ref = DDIMScheduler(**kw, clip_sample=False, set_alpha_to_one=True)
    assert torch.allclose(ref.alphas_cumprod.double(), sch.alphas_cumprod, rtol=1e-6)
    ref.set_timesteps(20)
    g = torch.Generator().manual_seed(0)
    for t in (int(v) for v in ref.timesteps[::4].tolist() + [int(ref.timesteps[-1])]):
        x, eps, noise = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
        prev = t - 1000 // 20  # diffusers' level index is ours minus one; index -1 is clean data
        want = ref.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
        ab, ab_prev = (sch.alpha_bar(torch.tensor([v + 1])) for v in (t, max(prev, -1)))
        got = samplers.ddim_step(x, eps, ab, ab_prev, eta, noise if prev >= 0 else None)
        torch.testing.assert_close(got, want.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", SCHEDULES)
def test_ddpm_learned_range_step_matches_diffusers(family: str) -> None:
    """Respaced ancestral steps with DiT's learned variance, on our respaced levels given to diffusers as its
    custom timesteps (so both walk the same respaced chain)."""
    from diffusers import DDPMScheduler

    from dimexport.diffusion.gaussian import Posterior

    sch, kw = _table(family)
    ref = DDPMScheduler(**kw, variance_type="learned_range", clip_sample=False)
    levels = samplers.discrete_levels(sch, 25)
    ref.set_timesteps(timesteps=[n - 1 for n in levels])
    post = Posterior(sch.alpha_bar(torch.tensor(levels[::-1])))
    g = torch.Generator().manual_seed(1)
    for i in range(len(levels) - 1, -1, -1):  # position i of the increasing table = level levels[::-1][i]
        x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
        out = torch.cat([torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64),
                         torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1], dim=1)
        seed = 100 + i
        want = ref.step(out, levels[::-1][i] - 1, x, generator=torch.Generator().manual_seed(seed)).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        got = samplers.ddpm_step(post, i, x, out, 3, noise)
        torch.testing.assert_close(got, want.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", SCHEDULES)
def test_ddim_eta0_is_deterministic_and_invertible(family: str) -> None:
    """The same x_T gives bit-identical samples; running the same levels backwards (DDIM inversion, the update
    with the two alpha_bars swapped) from the sample recovers x_T, to an error that shrinks at first order."""
    sch = SCHEDULES[family]
    net = exact_net(sch)
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    errors = []
    for steps in (100, 1000):
        x0 = samplers.ddim(net, sch, x_T, steps=steps)
        assert torch.equal(x0, samplers.ddim(net, sch, x_T, steps=steps))
        levels = [0] + samplers.discrete_levels(sch, steps)[::-1]
        x = x0.double()
        for n_prev, n in zip(levels[:-1], levels[1:]):
            ab, ab_prev = (sch.alpha_bar(torch.tensor([v])) for v in (n, n_prev))
            eps = net(x.float(), sch.model_time(torch.full((4,), max(n_prev, 1)))).double()
            x = samplers.ddim_step(x, eps, ab_prev, ab)
        errors.append(float((x - x_T.double()).abs().max()))
    assert errors[0] / errors[1] > 5 and errors[1] < 0.02, errors  # first order: 10x the steps, ~10x smaller

"""Classifier-free guidance as each official sampler applies it: one batched call, the family's formula,
the null class, and DiS guiding only the first three channels (DiT's `forward_with_cfg`)."""

from __future__ import annotations

import pytest
import torch

from dimexport.configs import get_config
from dimexport.diffusion.guidance import default_guidance, guided_net
from dimexport.errors import InputError


class Recorder:
    """A denoiser whose output depends on the label in a known way, counting its calls."""

    def __init__(self, model_id: str) -> None:
        self.cfg = get_config(model_id)
        self.calls: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        self.calls.append(y)
        out = x.repeat(1, self.cfg.out_channels // self.cfg.in_channels, 1, 1) * 0 + t.view(-1, 1, 1, 1)
        return out + y.view(-1, 1, 1, 1).float()


def test_dim_guidance_is_eps_c_plus_s_times_difference():
    den = Recorder("dim-tiny")
    x, t, y = torch.zeros(3, 4, 16, 16), torch.full((3,), 500.0), torch.tensor([1, 2, 7])
    out = guided_net(den, y, 0.4)(x, t)
    assert len(den.calls) == 1 and den.calls[0].tolist() == [1, 2, 7, 10, 10, 10]  # null label = num_classes
    eps_c, eps_u = 500.0 + y.float(), 510.0
    torch.testing.assert_close(out, (eps_c + 0.4 * (eps_c - eps_u)).view(-1, 1, 1, 1).expand(3, 4, 16, 16))
    assert default_guidance(den.cfg) == 0.4 and get_config("dim-h-512").guidance == 0.7


def test_dis_guides_three_channels_and_keeps_the_conditional_rest():
    den = Recorder("dis-tiny")
    x, t, y = torch.zeros(2, 4, 16, 16), torch.full((2,), 10.0), torch.tensor([0, 4])
    out = guided_net(den, y, 1.5)(x, t)
    assert out.shape == (2, 8, 16, 16) and len(den.calls) == 1
    eps_c, eps_u = (10.0 + y.float()).view(-1, 1, 1), 20.0
    torch.testing.assert_close(out[:, :3], (eps_u + 1.5 * (eps_c - eps_u)).unsqueeze(1).expand(2, 3, 16, 16))
    torch.testing.assert_close(out[:, 3:], eps_c.unsqueeze(1).expand(2, 5, 16, 16))
    assert default_guidance(den.cfg) == 1.5


@pytest.mark.parametrize("model_id,scale", [("dim-tiny", 0.0), ("dis-tiny", 1.0)])
def test_neutral_guidance_is_one_conditional_call(model_id: str, scale: float):
    den = Recorder(model_id)
    y = torch.tensor([3, 5])
    guided_net(den, y, scale)(torch.zeros(2, 4, 16, 16), torch.ones(2))
    assert [c.tolist() for c in den.calls] == [[3, 5]]


def test_conditional_model_without_labels_is_refused():
    with pytest.raises(InputError, match="dim-tiny is class-conditional: give class labels"):
        guided_net(Recorder("dim-tiny"), None, 0.4)

"""Building blocks shared by DiM and DiS, with the parameter names of the official checkpoints."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import mamba_direction, mamba_mixer, rms_norm_modulate


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoid [cos | sin] in fp32, as both official repos (and diffusers' flip_sin_to_cos) compute it."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class RMSNorm(nn.Module):
    """RMSNorm with a weight and no bias; statistics in fp32, output in the weight's dtype."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None,
                rows: Tensor | None = None) -> Tensor:
        """(B, L, D) in any float dtype -> the weight's dtype, then `* (1 + scale) + shift` ((B, 1, D) each, adaLN)
        when given, of x's tokens in the order `rows` when given; one fused pass (ops.rms_norm_modulate)."""
        return rms_norm_modulate(x, self.weight, scale, shift, self.eps, rows)


class PatchEmbed(nn.Module):
    """Conv2d(k=p, s=p) patchifier flattened row-major to (B, h*w, D); key `<name>.proj`."""

    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def unpatchify(x: Tensor, grid: int, patch: int, channels: int) -> Tensor:
    """(B, g*g, p*p*C) with channels last inside each patch -> (B, C, g*p, g*p), as DiT/DiM/DiS do."""
    b = x.shape[0]
    x = x.reshape(b, grid, grid, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)  # n h w p q c -> n c h p w q
    return x.reshape(b, channels, grid * patch, grid * patch)


def depthwise_conv2d(conv: nn.Conv2d, tokens: Tensor, side: int) -> Tensor:
    """Apply a 2-D conv to row-major grid tokens (B, side*side, D) and return tokens again."""
    b, n, d = tokens.shape
    grid = tokens.transpose(1, 2).reshape(b, d, side, n // side)
    return conv(grid).flatten(2).transpose(1, 2)


class Mamba(nn.Module):
    """Mamba-1 mixer with mamba_ssm's parameter names; with `bimamba` it is Vim/DiS "bimamba v2".

    bimamba v2 shares in_proj/out_proj (and z) and has its own conv1d_b, x_proj_b, dt_proj_b, A_b_log
    and D_b for the backward direction; the two directions' gated outputs are summed (no /2). The
    backward direction is computed without flips: an anti-causal conv and a reverse scan.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, bimamba: bool = False):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.dt_rank = math.ceil(d_model / 16)
        self.bimamba = bimamba
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        for suffix in ("", "_b") if bimamba else ("",):
            self._add_direction(suffix)

    def _add_direction(self, suffix: str) -> None:
        di, n, r = self.d_inner, self.d_state, self.dt_rank
        setattr(self, f"conv1d{suffix}", nn.Conv1d(di, di, self.d_conv, groups=di, padding=self.d_conv - 1))
        setattr(self, f"x_proj{suffix}", nn.Linear(di, r + 2 * n, bias=False))
        dt_proj = nn.Linear(r, di, bias=True)
        # mamba_ssm's init: softplus(bias) log-uniform in [1e-3, 1e-1]; S4D-real A; D = 1.
        dt = torch.exp(torch.rand(di) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            nn.init.uniform_(dt_proj.weight, -(r**-0.5), r**-0.5)
        setattr(self, f"dt_proj{suffix}", dt_proj)
        a_name = "A_b_log" if suffix else "A_log"
        setattr(self, a_name, nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1)))
        setattr(self, f"D{suffix}", nn.Parameter(torch.ones(di)))

    def _weights(self, suffix: str) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:
        """One direction's conv weight (Di, K) and bias, x_proj weight, dt_proj weight and bias: the arguments that
        ops.mamba_direction and ops.mamba_mixer take between their inputs and A."""
        conv: nn.Conv1d = getattr(self, f"conv1d{suffix}")
        dt_proj: nn.Linear = getattr(self, f"dt_proj{suffix}")
        return conv.weight.squeeze(1), conv.bias, getattr(self, f"x_proj{suffix}").weight, dt_proj.weight, dt_proj.bias

    def _direction(self, x: Tensor, z: Tensor, suffix: str, reverse: bool, A: Tensor) -> Tensor:
        return mamba_direction(x, z, *self._weights(suffix), A, getattr(self, f"D{suffix}"), reverse)

    def forward(self, hidden: Tensor, A: Tensor | None = None) -> Tensor:
        """(B, L, d_model) -> (B, L, d_model). `A`: the forward direction's -exp(A_log), where the caller computed
        it (DiM does so for all its layers in one op, instead of two small kernels per layer). Without autograd or
        tracing, a one-direction mixer is one op (ops.mamba_mixer: the same kernels, one call from Python)."""
        if A is None:
            A = -torch.exp(self.A_log.float())
        traced = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        if not (self.bimamba or torch.is_grad_enabled() or traced):
            return mamba_mixer(hidden, self.in_proj.weight, *self._weights(""), A, self.D, self.out_proj.weight)
        xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2*Di, L)
        x, z = xz.chunk(2, dim=1)
        y = self._direction(x, z, "", reverse=False, A=A)
        if self.bimamba:
            y = y + self._direction(x, z, "_b", reverse=True, A=-torch.exp(self.A_b_log.float()))
        return self.out_proj(y.transpose(1, 2))

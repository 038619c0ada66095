"""DiS (Fei et al., arXiv 2402.05608): `DisModel` of feizc/DiS with bimamba-v2 blocks and U-skips.

Tokens are [label, time, patches] (label only when class-conditional); there is no per-block
conditioning: the condition enters as tokens and through the final adaLN. Skips fuse the mixer
output h of the in-blocks (not the residual), and the output has 2C channels (learned sigma).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..configs import ModelConfig
from ..ops import gated_residual
from .layers import Mamba, PatchEmbed, RMSNorm, timestep_embedding, unpatchify


class DiSBlock(nn.Module):
    """Add -> RMSNorm -> bimamba; returns (h, residual) with the residual in fp32, as the official Block."""

    def __init__(self, cfg: ModelConfig, skip: bool) -> None:
        super().__init__()
        d = cfg.hidden
        self.mixer = Mamba(d, cfg.d_state, cfg.d_conv, cfg.expand, bimamba=True)
        self.norm = RMSNorm(d)
        self.skip_linear = nn.Linear(2 * d, d) if skip else None

    def forward(self, h: Tensor, residual: Tensor | None, skip: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.skip_linear is not None:
            h = self.skip_linear(torch.cat([h, skip], dim=-1))
        residual = h.float() if residual is None else gated_residual(residual, h)  # residual + h.float(), fused
        return self.mixer(self.norm(residual)), residual


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)  # the official +1 null row (dropout 0.1)

    def forward(self, y: Tensor) -> Tensor:
        return self.embedding_table(y)


class FinalLayer(nn.Module):
    """LayerNorm (no affine, eps 1e-6), then shift/scale from SiLU(time + label), then Linear."""

    def __init__(self, dim: int, patch: int, out_channels: int, conditional: bool) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim)) if conditional else None

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        x = self.norm_final(x.float()).to(x.dtype)
        if self.adaLN_modulation is not None:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            x = x * (1 + scale[:, None]) + shift[:, None]
        return self.linear(x)


class DiS(nn.Module):
    """forward(x, t, y): x (B, C, H, W), t (B,), y (B,) labels -> (B, 2C, H, W) (epsilon | variance)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.patch_embed = PatchEmbed(cfg.in_channels, d, cfg.patch)
        self.time_embed = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.label_emb = LabelEmbedder(cfg.num_classes, d) if cfg.num_classes > 0 else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.extra_tokens + cfg.grid() ** 2, d))
        half = cfg.depth // 2
        self.in_blocks = nn.ModuleList(DiSBlock(cfg, skip=False) for _ in range(half))
        self.mid_block = DiSBlock(cfg, skip=False)
        self.out_blocks = nn.ModuleList(DiSBlock(cfg, skip=True) for _ in range(half))
        self.norm_f = RMSNorm(d)
        self.final_layer = FinalLayer(d, cfg.patch, cfg.out_channels, conditional=cfg.num_classes > 0)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        grid = x.shape[-1] // cfg.patch
        if grid != cfg.grid() or x.shape[-2] != x.shape[-1]:
            raise ValueError(
                f"{cfg.id}: DiS has a fixed {cfg.grid() * cfg.patch}^2 input grid (its position table "
                f"does not interpolate), got {tuple(x.shape[-2:])}; build it at_resolution() instead"
            )
        dtype = self.patch_embed.proj.weight.dtype
        tokens = self.patch_embed(x.to(dtype))
        time_tok = self.time_embed(timestep_embedding(t, cfg.hidden).to(dtype))
        cond = time_tok
        parts = [time_tok[:, None], tokens]
        if self.label_emb is not None:
            label_tok = self.label_emb(y)
            parts.insert(0, label_tok[:, None])
            cond = time_tok + label_tok
        h = torch.cat(parts, dim=1) + self.pos_embed.to(dtype)
        residual = None
        skips = []
        for block in self.in_blocks:
            h, residual = block(h, residual)
            skips.append(h)
        h, residual = self.mid_block(h, residual)
        for block in self.out_blocks:
            h, residual = block(h, residual, skips.pop())
        h = self.norm_f(residual + h.float())
        out = self.final_layer(h, cond if self.label_emb is not None else None)
        return unpatchify(out[:, cfg.extra_tokens :], grid, cfg.patch, cfg.out_channels)

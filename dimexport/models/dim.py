"""DiM (Teng et al., arXiv 2405.14224): `Mamba2DModel` of tyshiwo1/DiM-DiffusionMamba, inference and training.

Parameter names equal the official `nnet_ema.pth` keys. The official block carries a (hidden,
residual) pair that is only ever used summed; this implementation carries the sum `s = h + r`, kept
in fp32 like the official residual, which computes the same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..configs import DIM_PAD, DIM_SEPARATORS, ModelConfig
from ..ops import gated_residual
from .layers import Mamba, PatchEmbed, RMSNorm, depthwise_conv2d, timestep_embedding, unpatchify
from .scan_order import ScanLayout, pattern_chain

ENCODER_START = 1  # official encoder_start_blk_id: layer 0 is a stem


class _NormWrapper(nn.Module):
    """Holds an RMSNorm under `.norm`, the official FusedAddRMSNorm key layout (`norm1.norm.weight`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)

    def forward(self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None,
                rows: Tensor | None = None) -> Tensor:
        return self.norm(x, scale, shift, rows)


class TimestepEmbedding(nn.Module):
    """diffusers TimestepEmbedding(256 -> D -> D) with SiLU: keys linear_1, linear_2."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class LabelEmbedding(nn.Module):
    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: Tensor) -> Tensor:
        return self.embedding_table(y)


class PixArtEmbeddings(nn.Module):
    """c = MLP(sinusoid_256(t)) + class_embedder(y): the adaLN-single conditioning vector."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(256, dim)
        self.class_embedder = LabelEmbedding(num_classes, dim) if num_classes > 0 else None

    def forward(self, t: Tensor, y: Tensor | None) -> Tensor:
        w = self.timestep_embedder.linear_1.weight
        c = self.timestep_embedder(timestep_embedding(t, 256).to(w.dtype))
        if self.class_embedder is not None:
            c = c + self.class_embedder(y)
        return c


class AdaRMSNormSingle(nn.Module):
    """adaLN-single: one Linear(D -> 3D) of SiLU(c), shared by all blocks."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.emb = PixArtEmbeddings(dim, num_classes)
        self.linear = nn.Linear(dim, 3 * dim)

    def forward(self, t: Tensor, y: Tensor | None) -> Tensor:
        return self.linear(F.silu(self.emb(t, y)))


class DiMBlock(nn.Module):
    """`BasicMambaBlock` with rms=True, ada_norm_single, no_ff: s -> s + (1 + gate) * Mamba(norm(s))."""

    def __init__(self, cfg: ModelConfig, has_skip: bool) -> None:
        super().__init__()
        d = cfg.hidden
        self.norm1 = _NormWrapper(d)
        self.attn1 = Mamba(d, cfg.d_state, cfg.d_conv, cfg.expand)
        self.scale_shift_table = nn.Parameter(torch.randn(3, d) / d**0.5)
        self.skip_linear: nn.Module | None = None
        if has_skip:  # the official switch: one Linear on the concatenation up to D = 512
            self.skip_linear = nn.Linear(2 * d, d) if d <= 512 else nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d)])

    def merge_skip(self, s: Tensor, skip: Tensor) -> Tensor:
        dtype = self.norm1.norm.weight.dtype
        s, skip = s.to(dtype), skip.to(dtype)
        if isinstance(self.skip_linear, nn.Linear):
            return self.skip_linear(torch.cat([s, skip], dim=-1)).float()
        return (self.skip_linear[0](s) + self.skip_linear[1](skip)).float()

    def forward(self, s: Tensor, modulation: Tensor, order: Tensor | None = None, A: Tensor | None = None) -> Tensor:
        """The block on s's tokens in `order` (s.index_select(1, order) when given, read through the index by the norm
        and the residual instead of copied); the output is in that order. `modulation`: (B, 3, D) shift, scale and gate,
        scale_shift_table[None] + adaln_single's (B, 3D) output viewed (B, 3, D) (DiM.forward computes all blocks' in
        one op); `A`: the mixer's -exp(A_log) when the caller computed it."""
        shift, scale, gate = modulation.chunk(3, dim=1)
        n = self.norm1(s, scale, shift, order)  # norm1(s[:, order]) * (1 + scale) + shift, fused
        return gated_residual(s, self.attn1(n, A), gate, order)  # s[:, order] + ((1 + gate) * attn1(n)).float(), fused


def resize_position_table(table: Tensor, extra_len: int, grid: int) -> Tensor:
    """A (1, extra + g*g, D) position table for a grid x grid token grid: the grid cells resized bilinearly, the
    extra (condition and separator) rows kept; as the official code does for other resolutions and fine-tunes."""
    native = math.isqrt(table.shape[1] - extra_len)
    if grid == native:
        return table
    extra, cells = table[:, :extra_len], table[:, extra_len:]
    cells = cells.reshape(1, native, native, -1).permute(0, 3, 1, 2)
    cells = F.interpolate(cells, size=(grid, grid), mode="bilinear", align_corners=False)
    return torch.cat([extra, cells.flatten(2).transpose(1, 2)], dim=1)


class DiM(nn.Module):
    """DiM with multi-directional scans and padding tokens.

    forward(x, t, y): x (B, C, H, W) latents or pixels, t (B,) timesteps in [0, 1000] (float allowed),
    y (B,) int64 class labels (num_classes = the null label); returns the epsilon prediction (B, C, H, W).
    Other resolutions than the native one interpolate the position table bilinearly, as the official
    upsampling configs do.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.depth % 2 == 0:
            raise ValueError(f"{cfg.id}: DiM needs an odd number of layers, got {cfg.depth}")
        self.cfg = cfg
        d = cfg.hidden
        self.extra_len = cfg.extra_tokens
        self.label_emb = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes > 0 else None
        self.additional_embed = nn.Parameter(torch.zeros(1, self.extra_len + cfg.grid() ** 2, d))
        self.pos_embed = PatchEmbed(cfg.in_channels, d, cfg.patch)
        self.adaln_single = AdaRMSNormSingle(d, cfg.num_classes)
        self.a4m_adapter = _Adapter(d)
        n = cfg.depth
        half = (n - ENCODER_START) // 2
        self.push_layers = range(ENCODER_START, ENCODER_START + half)
        self.pop_layers = range(n - half, n)
        self.transformer_blocks = nn.ModuleList(DiMBlock(cfg, i in self.pop_layers) for i in range(n))
        self.norm_out = _NormWrapper(d)
        self.proj_out_1 = nn.Linear(d, 2 * d)
        self.proj_out_2 = nn.Linear(d, cfg.patch**2 * cfg.out_channels)
        self.chain = pattern_chain(n, ENCODER_START)
        self._layouts: dict[tuple[int, str], ScanLayout] = {}
        self._check_skip_alignment()

    def _check_skip_alignment(self) -> None:
        """A popped skip must already be in the order of the stream it joins (true for the official chain)."""
        for layer in self.pop_layers:
            stored = (self.push_layers.start + self.pop_layers.stop - 1) - layer
            if self.chain[stored] != self.chain[layer - 1]:
                raise ValueError(f"scan chain does not align skip {stored} -> {layer}")

    def layout(self, grid: int, device: torch.device | str = "cpu") -> ScanLayout:
        """Index tensors of a grid size on `device`, built once (export calls this before tracing)."""
        key = (grid, str(torch.device(device)))
        if key not in self._layouts:
            cpu = self._layouts.get((grid, "cpu")) or ScanLayout.build(grid, self.cfg.pad_schedule, self.chain,
                                                                        lead=self.extra_len + DIM_SEPARATORS)
            self._layouts[(grid, "cpu")] = cpu
            self._layouts[key] = cpu.to(device)
        return self._layouts[key]

    def position_table(self, grid: int) -> Tensor:
        return resize_position_table(self.additional_embed, self.extra_len, grid)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        batch, grid = x.shape[0], x.shape[-1] // cfg.patch
        if x.shape[-2] != x.shape[-1]:
            raise ValueError(f"{cfg.id}: DiM supports square inputs only, got {tuple(x.shape[-2:])}")
        layout = self.layout(grid, x.device)
        dtype = self.pos_embed.proj.weight.dtype
        tokens = self.pos_embed(x.to(dtype))
        t_tok = timestep_embedding(t, cfg.hidden).to(dtype)
        cond = [t_tok]
        if self.label_emb is not None:
            cond.append(self.label_emb(y))
        seq = torch.cat([c[:, None] for c in cond] + [tokens], dim=1) + self.position_table(grid).to(dtype)
        mod = self.adaln_single(t, y)

        prefix, cells = seq[:, : self.extra_len], seq[:, self.extra_len :]
        cells = depthwise_conv2d(self.a4m_adapter.first_smoother, cells, grid)
        pads = self.a4m_adapter.pad_token.transpose(1, 2).expand(batch, DIM_PAD, -1).to(dtype)
        padded = torch.cat([cells, pads], dim=1).index_select(1, layout.fill)
        seps = self.a4m_adapter.pad_token_dec_split.expand(batch, DIM_SEPARATORS, -1).to(dtype)
        s = torch.cat([prefix, seps, padded], dim=1).float()

        lead = self.extra_len + DIM_SEPARATORS
        # Every block's modulation (its scale_shift_table + adaln_single's output) and its mixer's A = -exp(A_log),
        # each in one op for all blocks (the values the mixer would compute, without three small kernels per block).
        blocks = self.transformer_blocks
        mods = torch.stack([b.scale_shift_table for b in blocks])[:, None] + mod.view(1, batch, 3, -1)
        decays = -torch.exp(torch.stack([b.attn1.A_log for b in blocks]).float())
        skips: list[Tensor] = []
        for layer, block in enumerate(blocks):
            if block.skip_linear is not None:
                s = block.merge_skip(s, skips.pop())
            # The layer's scan order (None: unchanged), gathered by the block's norm and residual; the conditioning
            # and separator tokens map to themselves.
            s = block(s, mods[layer], layout.reorders[layer], decays[layer])
            if layer in self.push_layers:
                skips.append(s)

        cells = s[:, lead:].index_select(1, layout.unpad).to(dtype)
        cells = depthwise_conv2d(self.a4m_adapter.last_smoother, cells, grid)
        shift, scale = self.proj_out_1(F.silu(sum(cond[1:], cond[0]))).chunk(2, dim=1)
        out = self.norm_out(cells) * (1 + scale[:, None]) + shift[:, None]
        return unpatchify(self.proj_out_2(out), grid, cfg.patch, cfg.out_channels)


class _Adapter(nn.Module):
    """`a4m_adapter`: the two depthwise 3x3 smoothers, the pad tokens and the separator tokens."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.first_smoother = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.last_smoother = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.pad_token_dec_split = nn.Parameter(torch.randn(1, DIM_SEPARATORS, d) * 0.02)
        self.pad_token = nn.Parameter(torch.randn(1, d, DIM_PAD) * 0.02)

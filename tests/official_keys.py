"""Official state_dict layouts, written from the documented key lists (dim_models.md §1.9 and §2.5),
independently of dimexport's modules, so a renamed or reshaped parameter fails the tests."""

from __future__ import annotations

import math

from dimexport.configs import ModelConfig


def _mamba(prefix: str, d: int, n: int, k: int, suffixes=("",)) -> dict[str, tuple]:
    di, r = 2 * d, math.ceil(d / 16)
    keys = {f"{prefix}.in_proj.weight": (2 * di, d), f"{prefix}.out_proj.weight": (d, di)}
    for s in suffixes:
        keys |= {
            f"{prefix}.conv1d{s}.weight": (di, 1, k), f"{prefix}.conv1d{s}.bias": (di,),
            f"{prefix}.x_proj{s}.weight": (r + 2 * n, di),
            f"{prefix}.dt_proj{s}.weight": (di, r), f"{prefix}.dt_proj{s}.bias": (di,),
            f"{prefix}.{'A_b_log' if s else 'A_log'}": (di, n), f"{prefix}.D{s}": (di,),
        }
    return keys


def dim_keys(cfg: ModelConfig) -> dict[str, tuple]:
    d, g, c, p, n = cfg.hidden, cfg.grid(), cfg.in_channels, cfg.patch, cfg.d_state
    rows = cfg.num_classes + 1
    keys = {
        "label_emb.weight": (rows, d), "additional_embed": (1, 2 + g * g, d),
        "pos_embed.proj.weight": (d, c, p, p), "pos_embed.proj.bias": (d,),
        "adaln_single.emb.timestep_embedder.linear_1.weight": (d, 256),
        "adaln_single.emb.timestep_embedder.linear_1.bias": (d,),
        "adaln_single.emb.timestep_embedder.linear_2.weight": (d, d),
        "adaln_single.emb.timestep_embedder.linear_2.bias": (d,),
        "adaln_single.emb.class_embedder.embedding_table.weight": (rows, d),
        "adaln_single.linear.weight": (3 * d, d), "adaln_single.linear.bias": (3 * d,),
        "a4m_adapter.first_smoother.weight": (d, 1, 3, 3), "a4m_adapter.first_smoother.bias": (d,),
        "a4m_adapter.last_smoother.weight": (d, 1, 3, 3), "a4m_adapter.last_smoother.bias": (d,),
        "a4m_adapter.pad_token_dec_split": (1, 3, d), "a4m_adapter.pad_token": (1, d, 3),
        "norm_out.norm.weight": (d,), "proj_out_1.weight": (2 * d, d), "proj_out_1.bias": (2 * d,),
        "proj_out_2.weight": (p * p * c, d), "proj_out_2.bias": (p * p * c,),
    }
    layers = cfg.depth
    for i in range(layers):
        b = f"transformer_blocks.{i}"
        keys |= {f"{b}.norm1.norm.weight": (d,), f"{b}.scale_shift_table": (3, d)}
        keys |= _mamba(f"{b}.attn1", d, n, 3)
        if i > layers // 2:  # layers 25..48 of 49 (13..24 of 25) merge a skip
            if d <= 512:
                keys |= {f"{b}.skip_linear.weight": (d, 2 * d), f"{b}.skip_linear.bias": (d,)}
            else:
                for j in (0, 1):
                    keys |= {f"{b}.skip_linear.{j}.weight": (d, d), f"{b}.skip_linear.{j}.bias": (d,)}
    return keys


def dis_keys(cfg: ModelConfig) -> dict[str, tuple]:
    d, g, c, p, n = cfg.hidden, cfg.grid(), cfg.in_channels, cfg.patch, cfg.d_state
    keys = {
        "patch_embed.proj.weight": (d, c, p, p), "patch_embed.proj.bias": (d,),
        "time_embed.0.weight": (4 * d, d), "time_embed.0.bias": (4 * d,),
        "time_embed.2.weight": (d, 4 * d), "time_embed.2.bias": (d,),
        "label_emb.embedding_table.weight": (cfg.num_classes + 1, d), "pos_embed": (1, 2 + g * g, d),
        "norm_f.weight": (d,), "final_layer.linear.weight": (p * p * 2 * c, d),
        "final_layer.linear.bias": (p * p * 2 * c,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    half = cfg.depth // 2
    blocks = [f"in_blocks.{i}" for i in range(half)] + ["mid_block"] + [f"out_blocks.{i}" for i in range(half)]
    for b in blocks:
        keys |= {f"{b}.norm.weight": (d,)} | _mamba(f"{b}.mixer", d, n, 4, suffixes=("", "_b"))
        if b.startswith("out_blocks"):
            keys |= {f"{b}.skip_linear.weight": (d, 2 * d), f"{b}.skip_linear.bias": (d,)}
    return keys


def official_keys(cfg: ModelConfig) -> dict[str, tuple]:
    return dim_keys(cfg) if cfg.family == "dim" else dis_keys(cfg)

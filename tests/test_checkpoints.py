"""Loading official checkpoint files: DiM's plain nnet_ema.pth and DiS's {'ema': ...}, strictly."""

from __future__ import annotations

import argparse

import pytest
import torch

from dimexport.configs import get_config
from dimexport.errors import CheckpointError, InputError
from dimexport.models import build_model
from dimexport.models.checkpoint import load_checkpoint, load_state

from official_keys import official_keys


def official_state(model_id: str, device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict laid out as the official code saves it (names and shapes from the documentation)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_keys(get_config(model_id)).items():
        if device == "meta":
            state[name] = torch.empty(shape, device="meta")
        else:
            state[name] = 0.05 * torch.randn(shape, generator=g)
    return state


def test_dim_nnet_ema_loads_strictly_and_runs(tmp_path):
    state = official_state("dim-tiny")
    state["a4m_adapter.pad_token"] += 1.0  # distinctive values must arrive where they belong
    torch.save(state, tmp_path / "nnet_ema.pth")
    model = load_checkpoint("dim-tiny", tmp_path / "nnet_ema.pth")
    assert torch.equal(model.a4m_adapter.pad_token, state["a4m_adapter.pad_token"])
    out = model(torch.randn(2, 4, 16, 16), torch.tensor([1.0, 999.0]), torch.tensor([3, 10]))
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()


def test_dis_training_checkpoint_uses_ema(tmp_path):
    ema, raw = official_state("dis-tiny", seed=1), official_state("dis-tiny", seed=2)
    torch.save({"model": raw, "ema": ema, "opt": {"state": {}}, "args": argparse.Namespace(model="DiS-S/2")},
               tmp_path / "0050000.pt")
    model = load_checkpoint("dis-tiny", tmp_path / "0050000.pt")
    assert torch.equal(model.pos_embed, ema["pos_embed"])
    assert model(torch.randn(1, 4, 16, 16), torch.tensor([10.0]), torch.tensor([0])).shape == (1, 8, 16, 16)


def test_ddp_prefix_is_stripped(tmp_path):
    torch.save({f"module.{k}": v for k, v in official_state("dim-tiny").items()}, tmp_path / "ddp.pth")
    assert load_checkpoint("dim-tiny", tmp_path / "ddp.pth").cfg.id == "dim-tiny"


def test_512_checkpoint_into_256_config_names_the_right_one():
    with torch.device("meta"):
        model = build_model("dim-h")
    with pytest.raises(CheckpointError) as exc:
        load_state(model, official_state("dim-h-512", device="meta"))
    msg = str(exc.value)
    assert msg.startswith("checkpoint does not fit dim-h; it fits dim-h-512: use --model dim-h-512.")
    assert "additional_embed: checkpoint (1, 1026, 1536) vs model (1, 258, 1536)" in msg


def test_family_mismatch_lists_keys(tmp_path):
    torch.save(official_state("dim-tiny"), tmp_path / "nnet_ema.pth")
    with pytest.raises(CheckpointError, match=r"does not fit dis-tiny; it fits dim-tiny: use --model dim-tiny") as exc:
        load_checkpoint("dis-tiny", tmp_path / "nnet_ema.pth")
    assert "missing keys: pos_embed" in str(exc.value)


def test_unknown_layout_says_so(tmp_path):
    state = official_state("dim-tiny")
    state.pop("norm_out.norm.weight")
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="fits no registered config") as exc:
        load_checkpoint("dim-tiny", tmp_path / "broken.pth")
    assert "1 missing keys: norm_out.norm.weight" in str(exc.value)


def test_not_a_weights_file(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint("dim-tiny", tmp_path / "x.pth")
    torch.save({"step": torch.tensor(3), "cfg": {"lr": 1.0}}, tmp_path / "y.pth")
    with pytest.raises(CheckpointError, match="is not a state_dict nor a DiS"):
        load_checkpoint("dim-tiny", tmp_path / "y.pth")
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint("dim-tiny", tmp_path / "missing.pth")

"""Training on the CPU: datasets and their errors, recipes and their errors, the objectives, the shortened recipe
end to end through the CLI, checkpoints in the official formats, exact resume, and two DDP processes (gloo)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dimexport.cli import main
from dimexport.configs import get_config
from dimexport.diffusion.gaussian import Posterior
from dimexport.diffusion.losses import _vb_bits, diffusion_loss
from dimexport.diffusion.schedule import schedule_for
from dimexport.errors import InputError
from dimexport.models import build_model
from dimexport.models.checkpoint import load_checkpoint
from dimexport.train.data import digits, load_dataset
from dimexport.train.recipe import Recipe
from dimexport.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
DIGITS_RECIPE = ROOT / "recipes" / "dim-tiny-digits.yaml"
TINY = dict(model="dim-tiny-digits", data={"kind": "digits"}, steps=4, batch=4, warmup=2, log_every=1, ckpt_every=2,
            lr=1e-3, ema=0.9)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


# --- data -----------------------------------------------------------------------------------------------------------
def test_digits_are_1797_images_in_range():
    x, y = digits(32)
    assert x.shape == (1797, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and set(y.tolist()) == set(range(10))


def _png(path: Path, value: int = 128) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 30), value, dtype=np.uint8)).save(path)


def test_image_folder_loads_and_its_errors(tmp_path):
    cfg = get_config("dim-tiny-digits")
    for c in ("cat", "dog"):
        _png(tmp_path / "ok" / c / "a.png")
    data = load_dataset({"kind": "image_folder", "path": str(tmp_path / "ok")}, cfg, 32)
    x, y = data.x, data.y
    assert x.shape == (2, 1, 32, 32) and y.tolist() == [0, 1] and torch.allclose(x, torch.full_like(x, 128 / 127.5 - 1), atol=1e-6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"has no class sub-folders: expected .*/empty/<class>/<image>.png"):
        load_dataset({"kind": "image_folder", "path": str(tmp_path / "empty")}, cfg, 32)
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"cannot read image '.*x.png': .*; remove or replace it"):
        load_dataset({"kind": "image_folder", "path": str(tmp_path / "bad")}, cfg, 32)
    for i in range(11):
        _png(tmp_path / "many" / f"c{i:02d}" / "a.png")
    with pytest.raises(InputError, match=r"the data has class ids up to 10, but dim-tiny-digits has 10 classes \(0..9\)"):
        load_dataset({"kind": "image_folder", "path": str(tmp_path / "many")}, cfg, 32)


def test_features_load_and_shape_errors(tmp_path):
    cfg = get_config("dim-tiny")  # latent model: 4 x 16 x 16 inputs
    np.savez(tmp_path / "f.npz", x=np.zeros((3, 4, 16, 16), np.float32), y=np.array([0, 1, 2]))
    data = load_dataset({"kind": "features", "path": str(tmp_path / "f.npz")}, cfg, 16)
    x, y = data.x, data.y
    assert x.shape == (3, 4, 16, 16) and y.tolist() == [0, 1, 2] and not data.moments
    np.savez(tmp_path / "g.npz", x=np.zeros((3, 4, 8, 8), np.float32), y=np.array([0, 1, 2]))
    with pytest.raises(InputError, match=r"the data gives samples of shape \(4, 8, 8\), but dim-tiny at this "
                                         r"resolution takes \(4, 16, 16\)"):
        load_dataset({"kind": "features", "path": str(tmp_path / "g.npz")}, cfg, 16)
    with pytest.raises(InputError, match=r"data.kind 'mnist' is not one of digits, image_folder, features"):
        load_dataset({"kind": "mnist"}, cfg, 16)


# --- recipes --------------------------------------------------------------------------------------------------------
def test_recipe_errors_name_the_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: dim-tiny\ndata: {kind: digits}\nsteps: 2\nbatch: 2\nlearning_rate: 0.1\n")
    with pytest.raises(InputError, match=r"r.yaml: unknown key 'learning_rate'; known keys: "):
        Recipe.load(path)
    path.write_text("model: dim-tiny\ndata: {kind: digits}\n")
    with pytest.raises(InputError, match=r"r.yaml lacks steps, batch"):
        Recipe.load(path)
    path.write_text("model: dim-nope\ndata: {kind: digits}\nsteps: 2\nbatch: 2\n")
    with pytest.raises(InputError, match=r"unknown model id 'dim-nope'"):
        Recipe.load(path)
    res = run("train", "--recipe", str(path))
    assert res.exit_code == 2 and "unknown model id 'dim-nope'" in res.output


def test_committed_recipe_loads_and_shortens():
    full, short = Recipe.load(DIGITS_RECIPE), Recipe.load(DIGITS_RECIPE, short=True)
    assert full.model == "dim-tiny-digits" and full.steps == 10000 and full.batch == 256
    assert short.steps == 4 and short.batch == 8 and short.lr == full.lr


# --- objectives -----------------------------------------------------------------------------------------------------
def test_dim_loss_is_the_epsilon_mse_at_the_levels():
    torch.manual_seed(0)
    model = build_model("dim-tiny", seed=0)
    sched = schedule_for(model.cfg)
    x0, noise = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    levels, y = torch.tensor([1, 1000]), torch.tensor([3, 10])
    want = torch.nn.functional.mse_loss(model(sched.q_sample(x0, levels, noise), levels.float(), y), noise)
    assert torch.equal(diffusion_loss(model, sched, x0, y, levels, noise, learn_sigma=False), want)


def test_vb_term_vanishes_for_the_true_posterior():
    """With the true noise (so x0 is recovered) and the posterior's own variance (v = -1), the KL is 0; at the first
    level the term is the decoder's negative log-likelihood, positive."""
    sched = schedule_for(get_config("dis-tiny"))
    post = Posterior(sched.alphas_cumprod)
    x0 = torch.rand(3, 4, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    levels = torch.tensor([500, 1000, 1])
    xt = sched.q_sample(x0, levels, noise)
    bits = _vb_bits(post, levels - 1, x0, xt, noise, -torch.ones_like(x0))
    assert bits[:2].abs().max() < 1e-9 and bits[2] > 0


# --- the loop -------------------------------------------------------------------------------------------------------
def test_shortened_recipe_trains_through_the_cli_and_checkpoints_load(tmp_path):
    res = run("train", "--recipe", str(DIGITS_RECIPE), "--short", "-o", str(tmp_path), "--device", "cpu")
    assert res.exit_code == 0, res.output
    ckpt = tmp_path / "ckpts" / "4.ckpt"
    assert {p.name for p in ckpt.iterdir()} == {"nnet.pth", "nnet_ema.pth", "optimizer.pth", "step.pth",
                                               "train_state.pth"}
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert [line.count('"step"') for line in (tmp_path / "train_log.jsonl").read_text().splitlines()] == [1, 1]
    load_checkpoint("dim-tiny-digits", ckpt / "nnet_ema.pth")  # the official DiM format, strict
    res = run("train", "--recipe", str(DIGITS_RECIPE), "--short", "-o", str(tmp_path), "--device", "cpu")
    assert res.exit_code == 2 and "already holds checkpoints: pass --resume" in res.output


def _weights(folder: Path) -> dict:
    return {name: torch.load(folder / name, weights_only=True) for name in ("nnet.pth", "nnet_ema.pth", "optimizer.pth")}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_resume_is_exact(tmp_path):
    """4 steps straight and 2 + resume + 2 give bit-identical weights, EMA and optimizer state."""
    recipe = Recipe.from_dict(dict(TINY, name="tiny"))
    Trainer(recipe, tmp_path / "straight", "cpu").run()
    Trainer(recipe, tmp_path / "split", "cpu").run(max_steps=2)
    Trainer(recipe, tmp_path / "split", "cpu").run(resume=True)
    a, b = _weights(tmp_path / "straight/ckpts/4.ckpt"), _weights(tmp_path / "split/ckpts/4.ckpt")
    assert _same(a, b)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    other = Recipe.from_dict(dict(TINY, name="tiny", lr=5e-4, steps=6))
    with pytest.raises(InputError, match=r"was trained with other lr than this recipe's: an exact resume needs"):
        Trainer(other, tmp_path / "split", "cpu").run(resume=True)
    assert not _same(a["nnet.pth"], _weights(tmp_path / "split/ckpts/2.ckpt")["nnet.pth"])


def test_dis_trains_with_the_hybrid_loss_in_its_format(tmp_path):
    recipe = Recipe.from_dict(dict(TINY, name="dis", model="dis-tiny", steps=2, ckpt_every=2))
    np.savez(tmp_path / "f.npz", x=np.random.default_rng(0).standard_normal((6, 4, 16, 16)).astype(np.float32),
             y=np.arange(6) % 10)
    recipe = Recipe.from_dict(dict(recipe.to_dict(), data={"kind": "features", "path": str(tmp_path / "f.npz")}))
    trainer = Trainer(recipe, tmp_path / "run", "cpu")
    trainer.run()
    full = torch.load(trainer.weights_path(), weights_only=True)
    assert set(full) == {"model", "ema", "opt", "args"} and full["args"]["model"] == "dis-tiny"
    load_checkpoint("dis-tiny", trainer.weights_path())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(Recipe.from_dict(dict(TINY, name="ddp")), out, "cpu")
    trainer.run()
    trainer.close()


def test_two_gloo_processes_match_one(tmp_path):
    """Two DDP processes on the same global batch reach the weights of one process, to fp32 tolerance."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    torch.set_num_threads(1)
    Trainer(Recipe.from_dict(dict(TINY, name="one")), tmp_path / "one", "cpu").run()
    a, b = _weights(tmp_path / "ddp/ckpts/4.ckpt"), _weights(tmp_path / "one/ckpts/4.ckpt")
    for name in ("nnet.pth", "nnet_ema.pth"):
        for k in a[name]:
            torch.testing.assert_close(a[name][k], b[name][k], rtol=1e-4, atol=1e-5, msg=f"{name} {k}")


def test_weak_to_strong_starts_from_the_lower_resolution(tmp_path):
    """dim-tiny-digits-64 starts from dim-tiny-digits' weights with the 8x8 position table resized to 16x16
    (bilinear, as the official 512 fine-tune), then the shortened recipe trains through the CLI."""
    from dimexport.models.checkpoint import embedded_weights, read_state_dict
    from dimexport.models.dim import resize_position_table

    recipe = Recipe.load(ROOT / "recipes" / "dim-tiny-digits-64.yaml", short=True)
    trainer = Trainer(recipe, tmp_path / "w2s", "cpu")
    source = read_state_dict(embedded_weights(get_config("dim-tiny-digits")))
    state = trainer.model.state_dict()
    extra = trainer.model.extra_len
    assert state["additional_embed"].shape[1] == extra + 16 * 16 and source["additional_embed"].shape[1] == extra + 64
    assert torch.equal(state["additional_embed"], resize_position_table(source["additional_embed"], extra, 16))
    assert all(torch.equal(state[k], v) for k, v in source.items() if k != "additional_embed")
    res = run("train", "--recipe", str(ROOT / "recipes" / "dim-tiny-digits-64.yaml"), "--short", "-o",
              str(tmp_path / "cli"), "--device", "cpu")
    assert res.exit_code == 0, res.output
    load_checkpoint("dim-tiny-digits-64", tmp_path / "cli" / "ckpts" / "2.ckpt" / "nnet.pth")
    bad = Recipe.from_dict(dict(recipe.to_dict(), init_from="nope.pth"))
    with pytest.raises(InputError, match=r"init_from 'nope.pth' is neither a weights file nor a model id with "
                                         r"embedded weights"):
        Trainer(bad, tmp_path / "bad", "cpu")

"""Training a latent model on an image folder through a VAE (CPU, the width-shrunk random VAE of conftest.py): the
features are encoded once into a content-addressed cache and reused, any change re-encodes, they equal the VAE's
moments of the preprocessed images, each step samples latents from its own generator, and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dimexport.cli import main
from dimexport.configs import get_config
from dimexport.errors import InputError
from dimexport.models.checkpoint import load_checkpoint
from dimexport.models.vae import SCALE, load_vae, vae_sha256
from dimexport.train import encode
from dimexport.train.data import image_folder, load_dataset, sample_latents
from dimexport.train.recipe import Recipe
from dimexport.train.trainer import Trainer, _generator

SIZE = 64  # dim-tiny at 64 px: 4 x 8 x 8 latents, a 4 x 4 patch grid


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def _images(root: Path, seed: int = 0) -> Path:
    """2 classes x 3 random RGB images, not square (so the centre crop matters)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in ("ant", "bee"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE + 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _recipe(path: Path, images: Path, cache: Path | None = None, extra: str = "") -> Path:
    cache_line = f"feature_cache: {cache}\n" if cache else ""
    path.write_text(f"model: dim-tiny\ndata: {{kind: image_folder, path: {images}}}\nresolution: {SIZE}\nsteps: 100\n"
                    f"batch: 4\nwarmup: 1\nlog_every: 1\nckpt_every: 100\n{cache_line}{extra}"
                    "shortened: {steps: 2}\n")
    return path


@pytest.fixture
def encodes(monkeypatch) -> list[int]:
    """Counts the VAE's encoder calls (images per call)."""
    calls: list[int] = []
    real = encode.encode_moments

    def counted(vae, images):
        calls.append(len(images))
        return real(vae, images)

    monkeypatch.setattr(encode, "encode_moments", counted)
    return calls


def test_image_folder_is_encoded_once_and_trains(tmp_path, vae_folder, encodes):
    images, cache = _images(tmp_path / "images"), tmp_path / "cache"
    recipe = _recipe(tmp_path / "r.yaml", images, cache)
    res = run("train", "--recipe", str(recipe), "--short", "--vae", str(vae_folder), "-o", str(tmp_path / "a"),
              "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert encodes == [6]
    (entry,) = cache.iterdir()
    files = entry / "features.npz"
    with np.load(files) as z:
        moments, y = z["moments"], z["y"]
    with torch.no_grad():  # the VAE's posterior of the images as the pixel-space image_folder preprocesses them
        want = load_vae(vae_folder, get_config("dim-tiny")).encode(image_folder(images, SIZE, 3)[0]).latent_dist
    want = torch.cat([want.mean, want.logvar], dim=1)
    assert moments.shape == (6, 8, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(moments, want.numpy(), atol=1e-5, rtol=0)
    load_checkpoint("dim-tiny", tmp_path / "a" / "ckpts" / "2.ckpt" / "nnet_ema.pth", resolution=SIZE)

    stamp = files.stat().st_mtime_ns
    res = run("train", "--recipe", str(recipe), "--short", "--vae", str(vae_folder), "-o", str(tmp_path / "b"),
              "--device", "cpu", "--max-steps", "1")
    assert res.exit_code == 0, res.output
    assert encodes == [6] and files.stat().st_mtime_ns == stamp and len(list(cache.iterdir())) == 1  # reused

    old_key = encode.feature_key(images, SIZE, vae_sha256(vae_folder), False)
    _images(tmp_path / "other", seed=1)
    (images / "bee" / "2.png").write_bytes((tmp_path / "other" / "bee" / "2.png").read_bytes())
    assert encode.feature_key(images, SIZE, vae_sha256(vae_folder), False) != old_key
    assert encode.feature_key(images, SIZE, vae_sha256(vae_folder), True) != old_key
    res = run("train", "--recipe", str(recipe), "--short", "--vae", str(vae_folder), "-o", str(tmp_path / "c"),
              "--device", "cpu", "--max-steps", "1")
    assert res.exit_code == 0, res.output
    assert encodes == [6, 6] and len(list(cache.iterdir())) == 2  # one changed image: encoded again


def test_default_cache_is_in_the_run_folder_and_flip_adds_mirrors(tmp_path, vae_folder):
    images = _images(tmp_path / "images")
    cfg = get_config("dim-tiny")
    path = encode.cached_features({"kind": "image_folder", "path": str(images), "flip": True}, cfg, SIZE,
                                  str(vae_folder), tmp_path / "cache")
    pixels = image_folder(images, SIZE, 3)[0]
    with np.load(path) as z:
        moments, y = z["moments"], z["y"]
    assert moments.shape == (12, 8, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1] * 2
    with torch.no_grad():
        mirrored = load_vae(vae_folder, cfg).encode(pixels.flip(-1)).latent_dist
    mirrored = torch.cat([mirrored.mean, mirrored.logvar], dim=1)
    np.testing.assert_allclose(moments[6:], mirrored.numpy(), atol=1e-5, rtol=0)

    recipe = Recipe.from_dict(dict(name="t", model="dim-tiny", data={"kind": "image_folder", "path": str(images)},
                                   resolution=SIZE, steps=2, batch=4, vae=str(vae_folder)))
    trainer = Trainer(recipe, tmp_path / "run", "cpu")
    assert trainer.features_path.parent.parent == tmp_path / "run" / "features" and trainer.moments


def test_each_step_samples_latents_from_its_own_generator(tmp_path):
    """x0 = (mean + std * eps) * 0.18215 with eps from the step's generator: the same for a resumed run, fresh per
    step."""
    rng = np.random.default_rng(0)
    moments = rng.standard_normal((5, 8, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "m.npz", moments=moments, y=np.arange(5))
    data = {"kind": "features", "path": str(tmp_path / "m.npz")}
    recipe = Recipe.from_dict(dict(name="m", model="dim-tiny", data=data, resolution=SIZE, steps=2, batch=4, seed=3))
    a, b = Trainer(recipe, tmp_path / "a", "cpu"), Trainer(recipe, tmp_path / "b", "cpu")
    assert a.moments and a.x.shape == (5, 8, 8, 8)
    x0 = a.batch(7)[0]
    assert torch.equal(x0, b.batch(7)[0]) and not torch.equal(x0, a.batch(8)[0])
    idx = torch.randint(0, 5, (4,), generator=_generator(3, 7, 0))
    mean, logvar = torch.from_numpy(moments)[idx].chunk(2, dim=1)
    eps = torch.randn(mean.shape, generator=_generator(3, 7, 4))
    torch.testing.assert_close(x0, (mean + torch.exp(0.5 * logvar) * eps) * SCALE, rtol=0, atol=1e-6)
    assert torch.equal(sample_latents(torch.from_numpy(moments)[idx], _generator(3, 7, 4)), x0)
    with pytest.raises(InputError, match=r"the data gives posterior moments \(mean \| logvar\) of shape \(8, 8, 8\), "
                                         r"but dim-tiny at this resolution takes \(8, 16, 16\)"):
        load_dataset({"kind": "features", "path": str(tmp_path / "m.npz")}, get_config("dim-tiny"), 16)


def test_vae_errors(tmp_path, vae_folder):
    from diffusers import AutoencoderKL

    from dimexport.models.vae import SD_VAE_CONFIG

    images = _images(tmp_path / "images")
    recipe = _recipe(tmp_path / "r.yaml", images)
    res = run("train", "--recipe", str(recipe), "--short", "-o", str(tmp_path / "a"), "--device", "cpu")
    assert res.exit_code == 2
    assert ("dim-tiny is a latent model (4-channel latents at 1/8 of the image side): an image folder needs a VAE to "
            "encode it; pass --vae PATH (or vae: PATH in the recipe), or train on pre-extracted latents with "
            "data.kind: features") in " ".join(res.output.split())

    pixel = tmp_path / "p.yaml"
    pixel.write_text(f"model: dim-tiny-digits\ndata: {{kind: image_folder, path: {images}}}\nsteps: 2\nbatch: 2\n")
    res = run("train", "--recipe", str(pixel), "--vae", str(vae_folder), "-o", str(tmp_path / "b"), "--device", "cpu")
    assert res.exit_code == 2
    assert (f"--vae {vae_folder}: dim-tiny-digits trains in pixel space (1-channel images, no latents); drop --vae "
            "(and the recipe's vae:)") in " ".join(res.output.split())

    np.savez(tmp_path / "f.npz", x=np.zeros((2, 4, 8, 8), np.float32), y=np.array([0, 1]))
    feats = tmp_path / "f.yaml"
    feats.write_text(f"model: dim-tiny\ndata: {{kind: features, path: {tmp_path / 'f.npz'}}}\nresolution: {SIZE}\n"
                     f"steps: 2\nbatch: 2\nvae: {vae_folder}\n")
    res = run("train", "--recipe", str(feats), "-o", str(tmp_path / "c"), "--device", "cpu")
    assert res.exit_code == 2
    assert (f"--vae {vae_folder} encodes data.kind image_folder; data.kind features needs no VAE: drop --vae (and "
            "the recipe's vae:)") in " ".join(res.output.split())

    torch.manual_seed(0)
    wide = tmp_path / "vae-f4"  # three blocks: latents at 1/4 of the image side
    AutoencoderKL(**(SD_VAE_CONFIG | dict(block_out_channels=(8, 8, 16), layers_per_block=1, norm_num_groups=4,
                                          down_block_types=("DownEncoderBlock2D",) * 3,
                                          up_block_types=("UpDecoderBlock2D",) * 3))).save_pretrained(wide)
    res = run("train", "--recipe", str(recipe), "--short", "--vae", str(wide), "-o", str(tmp_path / "d"),
              "--device", "cpu")
    assert res.exit_code == 2
    assert (f"--vae {wide} makes 4-channel latents at 1/4 of the image side; dim-tiny needs 4 channels at 1/8"
            in " ".join(res.output.split()))
    with pytest.raises(InputError, match=r"data.flip mirrors an image folder's images; data.kind digits has no "
                                         r"images to mirror"):
        load_dataset({"kind": "digits", "flip": True}, get_config("dim-tiny-digits"), 32)


def _ddp_worker(rank: int, world: int, port: int, recipe: Recipe, out: str) -> None:
    import os

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(recipe, out, "cpu")
    trainer.run()
    trainer.close()


def test_two_gloo_processes_encode_once_and_match_one(tmp_path, vae_folder, encodes):
    """Rank 0 encodes and hands the cache entry to rank 1; the pair trains as one process on the same features."""
    import torch.multiprocessing as mp

    from tests.test_train import _free_port

    images = _images(tmp_path / "images")
    recipe = Recipe.from_dict(dict(name="ddp", model="dim-tiny", data={"kind": "image_folder", "path": str(images)},
                                   resolution=SIZE, steps=2, batch=4, warmup=1, ckpt_every=2, vae=str(vae_folder),
                                   feature_cache=str(tmp_path / "cache")))
    mp.spawn(_ddp_worker, args=(2, _free_port(), recipe, str(tmp_path / "ddp")), nprocs=2, join=True)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    torch.set_num_threads(1)
    Trainer(recipe, tmp_path / "one", "cpu").run()
    assert encodes == []  # this process found rank 0's entry
    for name in ("nnet.pth", "nnet_ema.pth"):
        a = torch.load(tmp_path / "ddp/ckpts/2.ckpt" / name, weights_only=True)
        b = torch.load(tmp_path / "one/ckpts/2.ckpt" / name, weights_only=True)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{name} {k}")

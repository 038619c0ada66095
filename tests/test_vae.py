"""Latent models decode through the SD VAE (diffusers' AutoencoderKL) from a local folder or weights file: a randomly
initialised VAE of the SD architecture shrunk in width stands in for the real one (83 M parameters). Its exported
decoder: tests/test_export_decoder.py."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dimexport.cli import main
from dimexport.configs import get_config
from dimexport.models.vae import SCALE, load_vae
from dimexport.runtime.decoder import TorchDecoder
from dimexport.errors import InputError

# vae_folder (tests/conftest.py): a randomly initialised width-shrunk SD VAE


def test_decode_is_the_vae_of_the_unscaled_latents(vae_folder):
    vae = load_vae(vae_folder, get_config("dim-tiny"))
    z = torch.randn(3, 4, 16, 16)
    images = TorchDecoder(vae, max_batch=2)(z)
    assert images.shape == (3, 3, 128, 128) and images.abs().max() <= 1
    with torch.no_grad():
        want = vae.decode(z / SCALE).sample.clamp(-1, 1)
    torch.testing.assert_close(images, want, rtol=1e-5, atol=1e-5)


def test_sample_decodes_latents_into_images(vae_folder, tmp_path):
    res = CliRunner().invoke(main, ["sample", "--model", "dim-tiny", "--classes", "1,2", "--per-class", "2", "--steps",
                                    "2", "--vae", str(vae_folder), "-o", str(tmp_path / "g.png"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["vae"] == str(vae_folder) and summary["preview"] is None and summary["decode_s"] > 0
    image = Image.open(tmp_path / "g.png")
    assert image.size == (2 * 130 + 2, 2 * 130 + 2) and image.mode == "RGB"


def test_vae_errors(vae_folder, tmp_path):
    with pytest.raises(InputError, match=r"makes 4-channel latents at 1/8 of the image side; dim-tiny-digits needs 1 "
                                         r"channels at 1/1"):
        load_vae(vae_folder, get_config("dim-tiny-digits"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"has no config.json: give a diffusers AutoencoderKL folder"):
        load_vae(tmp_path / "empty", get_config("dim-tiny"))
    from safetensors.torch import load_file, save_file

    small = load_file(str(vae_folder / "diffusion_pytorch_model.safetensors"))
    save_file(small, str(tmp_path / "small.safetensors"))
    with pytest.raises(InputError, match=r"is not an SD VAE in diffusers' layout: 68 weights missing .*, 174 of another shape"):
        load_vae(tmp_path / "small.safetensors", get_config("dim-tiny"))
    with pytest.raises(InputError, match=r"does not exist or is not a folder or a weights file"):
        load_vae(tmp_path / "nope.onnx", get_config("dim-tiny"))

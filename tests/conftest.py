"""Shared fixtures: GPU tests skip without CUDA; seeded realistic scan inputs; a small SD-architecture VAE."""

from __future__ import annotations

import pytest
import torch

from dimexport.ops.testing import realistic_scan_inputs


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def scan_inputs():
    return realistic_scan_inputs


# The SD VAE's architecture shrunk in width (the real one has 83 M parameters): same blocks, same 1/8 factor.
SMALL_VAE = dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)


@pytest.fixture(scope="session")
def vae_folder(tmp_path_factory):
    """A randomly initialised (seed 0) width-shrunk SD VAE saved as a diffusers AutoencoderKL folder."""
    from diffusers import AutoencoderKL

    from dimexport.models.vae import SD_VAE_CONFIG

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vae")
    AutoencoderKL(**(SD_VAE_CONFIG | SMALL_VAE)).save_pretrained(folder)
    return folder

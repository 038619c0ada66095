"""Shared fixtures: GPU tests skip without CUDA; seeded realistic scan inputs."""

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

"""The embedded default dim-tiny-digits, on the committed weights (not a model trained here): its sha256 pin, the
quality bar (a logistic-regression classifier reads >= 90 % of 100 generated digits as their class, default sampler,
steps and guidance, on the CPU kernel), and every command taking --model dim-tiny-digits with no other file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dimexport.cli import main
from dimexport.configs import get_config
from dimexport.diffusion.pipeline import sample
from dimexport.errors import CheckpointError
from dimexport.models import build_model
from dimexport.models.checkpoint import embedded_weights, load_model
from dimexport.runtime.denoiser import TorchDenoiser
from dimexport.train.quality import recognised_rate

CFG = get_config("dim-tiny-digits")


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_embedded_weights_are_pinned():
    path = embedded_weights(CFG)
    assert path is not None and path.name == "nnet_ema.pth" and CFG.weights_sha256
    bad = dataclasses.replace(CFG, weights_sha256="0" * 64)
    with pytest.raises(CheckpointError, match=r"nnet_ema.pth has sha256 [0-9a-f]{64}, but dim-tiny-digits pins 0{64}: "
                                              r"the file is damaged or was replaced; reinstall dimexport"):
        embedded_weights(bad)
    trained, untrained = load_model("dim-tiny-digits").state_dict(), build_model("dim-tiny-digits", seed=0).state_dict()
    assert trained.keys() == untrained.keys() and not all(torch.equal(trained[k], untrained[k]) for k in trained)


def test_generated_digits_are_recognised():
    """100 digits, 10 per class, with the registry's defaults (DPM-Solver, 20 steps, s = 1); measured 98 %."""
    den = TorchDenoiser(load_model("dim-tiny-digits"))
    labels = torch.arange(10).repeat_interleave(10)
    result = sample(den, labels, seed=0)
    assert result.settings["steps"] == CFG.steps == 20 and result.settings["guidance"] == CFG.guidance
    rate = recognised_rate(result.samples, labels)
    assert rate >= 0.90, f"only {rate:.0%} of the generated digits are recognised"


def test_commands_take_the_default_model_with_no_other_file(tmp_path):
    res = run("sample", "--model", "dim-tiny-digits", "--per-class", "1", "--steps", "3", "-o",
              str(tmp_path / "d.png"), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["weights"] == "embedded (dim-tiny-digits/nnet_ema.pth)" and (tmp_path / "d.png").is_file()
    assert "random weights" not in res.stderr
    res = run("forward", "--model", "dim-tiny-digits", "--batch", "2", "--repeat", "1", "--json")
    assert res.exit_code == 0, res.output
    res = run("export", "--model", "dim-tiny-digits", "--batch", "1:2:4", "-o", str(tmp_path / "art"), "--json")
    assert res.exit_code == 0, res.output
    folder = json.loads(res.stdout)["artifact"]
    res = run("verify", folder, "--sample", "3", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] and all(r["psnr_db"] >= 40 for r in report["samples"]["comparisons"])
    assert json.loads((Path(folder) / "manifest.json").read_text())["weights"].startswith("embedded:sha256:d1d7fcfd")
    res = run("export", "--model", "dim-tiny-digits", "--batch", "1:2:4", "--random-init", "-o", str(tmp_path / "art"),
              "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["manifest"]["weights"] == "random-init:seed=0"

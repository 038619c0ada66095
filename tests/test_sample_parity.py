"""Image-level parity: the same seed through PyTorch and ONNX Runtime (plugin and portable graphs) gives the same
images, reported by `verify --sample` beside the single-call numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from dimexport.cli import main
from dimexport.export.exporter import ExportSpec, export
from dimexport.verify import samples
from dimexport.verify.samples import psnr, sample_psnr


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    return {(m, scan): export(ExportSpec(m, 128, "fp32", scan), out)[0].folder
            for m in ("dim-tiny", "dis-tiny") for scan in ("plugin", "portable")}


@pytest.mark.parametrize("model", ["dim-tiny", "dis-tiny"])
@pytest.mark.parametrize("scan", ["plugin", "portable"])
def test_ort_samples_match_torch_images(artifacts, model, scan):
    res = CliRunner().invoke(main, ["verify", str(artifacts[model, scan]), "--sample", "3", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] and report["comparisons"][0]["rel_l2"] < 1e-5  # the single-call check, beside it
    s = report["samples"]
    assert s["settings"]["steps"] == 3 and s["settings"]["count"] == 4 and s["min_psnr_db"] == 40.0
    assert s["settings"]["sampler"] == ("dpm-solver" if model == "dim-tiny" else "ddpm")
    (row,) = s["comparisons"]
    assert row["backend"] == "ort" and row["passed"] and row["psnr_db"] >= 40.0, row


def test_image_parity_failure_exits_3(artifacts, monkeypatch):
    monkeypatch.setitem(samples.MIN_PSNR_DB, "fp32", 1000.0)
    res = CliRunner().invoke(main, ["verify", str(artifacts["dim-tiny", "portable"]), "--sample", "1"])
    assert res.exit_code == 3, res.output
    assert "samples: 4 images, dpm-solver 1 steps" in " ".join(res.output.split())


def test_psnr_is_over_the_image_range():
    ref = torch.zeros(2, 1, 4, 4)
    assert psnr(ref, ref, 2.0) == math.inf
    assert psnr(ref + 0.02, ref, 2.0) == pytest.approx(20 * math.log10(2 / 0.02))
    # pixels clamp to [-1, 1] first; latents use the reference's own range as the peak
    assert sample_psnr(ref + 5, ref + 1.5, pixels=True) == math.inf
    latents = torch.linspace(-4, 4, 32).view(2, 1, 4, 4)
    assert sample_psnr(latents + 0.08, latents, pixels=False) == pytest.approx(20 * math.log10(8 / 0.08))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cuda_graph_samples_match_eager(tmp_path, dtype):
    """torch eager vs the same module replayed from CUDA graphs, whole samples at fp16/bf16 on the GPU."""
    folder = export(ExportSpec("dim-tiny", 128, dtype, "plugin"), tmp_path)[0].folder
    res = CliRunner().invoke(main, ["verify", str(folder), "--backends", "torch,graph", "--device", "cuda",
                                    "--sample", "10", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["samples"]["comparisons"]
    assert row["backend"] == "graph" and row["psnr_db"] >= samples.MIN_PSNR_DB[dtype], row

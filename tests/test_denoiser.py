"""The one denoiser interface: every backend says what it runs, splits batches above its range and pads those
below it, and refuses an artifact that does not fit the request with the fix."""

from __future__ import annotations

import pytest
import torch

from dimexport.errors import InputError
from dimexport.export.exporter import ExportSpec, export
from dimexport.runtime import OrtDenoiser, load_denoiser

MODEL = "dim-tiny"


def inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 16, 16, generator=g), torch.rand(n, generator=g) * 999 + 1, torch.arange(n) % 11


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """dim-tiny's seed-0 weights exported with a batch range of 2..3, both graph forms."""
    out = tmp_path_factory.mktemp("den")
    return {scan: export(ExportSpec(MODEL, 128, "fp32", scan, (2, 2, 3)), out)[0] for scan in ("plugin", "portable")}


def test_torch_splits_and_pads_to_the_same_result():
    den = load_denoiser("torch", MODEL)
    assert (den.name, den.dtype, den.device.type, den.min_batch, den.max_batch) == ("torch", "fp32", "cpu", 1, None)
    x, t, y = inputs(5)
    whole = den(x, t, y)
    assert whole.shape == (5, 4, 16, 16) and whole.dtype == torch.float32
    den.max_batch = 2
    torch.testing.assert_close(den(x, t, y), whole, rtol=1e-5, atol=1e-5)
    den.max_batch, den.min_batch = None, 8
    torch.testing.assert_close(den(x, t, y), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan", ["plugin", "portable"])
def test_ort_keeps_batches_inside_the_export_range(artifacts, scan):
    den = load_denoiser("ort", MODEL, artifact=artifacts[scan].folder)
    assert isinstance(den, OrtDenoiser)
    assert (den.dtype, den.device.type, den.min_batch, den.max_batch) == ("fp32", "cpu", 2, 3)
    ref = load_denoiser("torch", artifact=artifacts[scan].folder)
    for n in (1, 5):  # 1: padded up to 2; 5: split into 3 + 2
        x, t, y = inputs(n, seed=n)
        torch.testing.assert_close(den(x, t, y), ref(x, t, y), rtol=1e-4, atol=1e-5)


def test_artifact_that_does_not_fit_is_refused(artifacts):
    folder = artifacts["plugin"].folder
    with pytest.raises(InputError, match=f"holds {MODEL}, not dis-tiny: pass an artifact of dis-tiny"):
        load_denoiser("ort", "dis-tiny", artifact=folder)
    with pytest.raises(InputError, match="was exported at 128 px, not 256: export again with --resolution 256"):
        load_denoiser("ort", MODEL, artifact=folder, resolution=256)


def test_bad_requests_name_the_fix():
    with pytest.raises(InputError, match="the ort backend runs an exported artifact: pass --artifact DIR"):
        load_denoiser("ort", MODEL)
    with pytest.raises(InputError, match="backend 'tensorflow' is not one of torch, graph, ort, trt"):
        load_denoiser("tensorflow", MODEL)
    with pytest.raises(InputError, match="the graph backend replays CUDA graphs: it needs --device cuda"):
        load_denoiser("graph", MODEL, device="cpu")
    den = load_denoiser("torch", MODEL)
    with pytest.raises(InputError, match=r"x has shape \(2, 4, 8, 8\), the model takes \(B, 4, 16, 16\)"):
        den(torch.zeros(2, 4, 8, 8), torch.ones(2), torch.zeros(2, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_graph_replays_match_eager(dtype):
    eager = load_denoiser("torch", MODEL, device="cuda", dtype=dtype)
    graph = load_denoiser("graph", MODEL, device="cuda", dtype=dtype)
    for n in (3, 3, 5):  # a second call replays the captured graph
        x, t, y = (v.cuda() for v in inputs(n, seed=n))
        torch.testing.assert_close(graph(x, t, y), eager(x, t, y), rtol=0, atol=0)


def test_empty_batch_is_refused():
    den = load_denoiser("torch", MODEL)
    with pytest.raises(InputError, match=r"torch: empty batch \(x has shape \(0, 4, 16, 16\)\)"):
        den(torch.zeros(0, 4, 16, 16), torch.ones(0), torch.zeros(0, dtype=torch.long))

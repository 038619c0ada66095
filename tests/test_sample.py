"""`dimexport sample`: a grid from every backend that runs here, reproducible per seed, and bad requests that exit 2
with the fix. Random weights make noise; tiny step counts keep the CPU reference scan fast."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dimexport.cli import main
from dimexport.export.exporter import ExportSpec, export
from dimexport.models import build_model


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def sample_json(*args: str) -> dict:
    res = run("sample", *args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    return export(ExportSpec("dim-tiny", 128, "fp32", "portable", (1, 4, 4)), out)[0].folder


def test_torch_grid_has_one_row_per_class_and_the_seed_decides(tmp_path):
    npys = []
    for i, seed in enumerate((0, 0, 1)):
        png, npy = tmp_path / f"g{i}.png", tmp_path / f"s{i}.npy"
        s = sample_json("--model", "dim-tiny", "--classes", "0,7", "--per-class", "2", "--steps", "3", "--seed",
                        str(seed), "-o", str(png), "--save-npy", str(npy), "--latent-preview")
        assert (s["sampler"], s["steps"], s["calls"], s["guidance"], s["count"]) == ("dpm-solver", 3, 3, 0.4, 4)
        assert s["weights"] == f"random (seed {seed})" and s["preview"].startswith("latent model: the grid previews")
        assert Image.open(png).size == (2 * 130 + 2, 2 * 130 + 2)  # 128 px tiles, 2-pixel gaps, 2 rows of 2
        npys.append(np.load(npy))
        assert npys[-1].shape == (4, 4, 16, 16) and np.isfinite(npys[-1]).all()
    assert np.array_equal(npys[0], npys[1]) and not np.array_equal(npys[0], npys[2])


def test_dis_defaults_to_ancestral_ddpm(tmp_path):
    s = sample_json("--model", "dis-tiny", "--classes", "3", "--per-class", "1", "--steps", "2", "-o",
                    str(tmp_path / "g.png"), "--latent-preview")
    assert (s["sampler"], s["steps"], s["calls"], s["guidance"]) == ("ddpm", 2, 2, 1.5)


def test_ort_backend_runs_the_artifact_in_its_batch_range(tmp_path, artifact):
    """6 images with guidance are 12 rows per call: split into the export's batches of at most 4."""
    s = sample_json("--model", "dim-tiny", "--backend", "ort", "--artifact", str(artifact), "--classes", "0-2",
                    "--per-class", "2", "--sampler", "ddim", "--steps", "2", "-o", str(tmp_path / "g.png"),
                    "--latent-preview")
    assert (s["backend"], s["sampler"], s["calls"], s["weights"]) == ("ort", "ddim", 2, "artifact")
    assert Image.open(tmp_path / "g.png").size == (2 * 130 + 2, 3 * 130 + 2)


def test_bad_requests_exit_2_with_the_fix(tmp_path, artifact):
    cases = [
        (["--model", "dim-tiny", "--classes", "3,10"],
         "--classes '3,10': dim-tiny has classes 0..9 (the null label 10 is for guidance only); got [10]"),
        (["--model", "dim-tiny", "--classes", "two"], "--classes 'two' must be ids and ranges such as 0-9 or 1,3,5"),
        (["--model", "dim-tiny", "--resolution", "100"], "dim-tiny: resolution 100 is not a multiple of 16"),
        (["--model", "dim-tiny", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["--model", "dim-tiny", "--sampler", "ddim", "--steps", "1001"], "ddim takes at most 1000 steps"),
        (["--model", "dim-tiny", "--per-class", "0"], "--per-class must be >= 1, got 0"),
        (["--model", "dim-tiny", "--backend", "ort"], "the ort backend runs an exported artifact: pass --artifact DIR"),
        (["--model", "dis-tiny", "--backend", "ort", "--artifact", str(artifact)],
         "holds dim-tiny, not dis-tiny: pass an artifact of dis-tiny"),
        (["--model", "dim-tiny", "--backend", "ort", "--artifact", str(artifact), "--resolution", "256"],
         "was exported at 128 px, not 256: export again with --resolution 256"),
        (["--model", "dim-tiny", "--backend", "graph"], "the graph backend replays CUDA graphs: it needs --device cuda"),
        (["--model", "dim-nano"], "unknown model id 'dim-nano'"),
        (["--model", "dis-tiny"], "dis-tiny samples SD-VAE latents: pass --vae PATH (a diffusers AutoencoderKL folder "
                                  "such as stabilityai/sd-vae-ft-ema saved locally, or its weights file)"),
        (["--model", "dim-tiny-digits", "--latent-preview"], "dim-tiny-digits samples pixels: drop --vae"),
    ]
    wrong = tmp_path / "dis.pth"
    torch.save(build_model("dis-tiny", seed=0).state_dict(), wrong)
    cases.append((["--model", "dim-tiny", "--checkpoint", str(wrong)], "does not fit dim-tiny; it fits dis-tiny: use --model dis-tiny"))
    for args, message in cases:
        preview = [] if "dim-tiny-digits" in args or args[1] == "dis-tiny" and len(args) == 2 else ["--latent-preview"]
        res = run("sample", *args, *preview, "-o", str(tmp_path / "never.png"))
        assert res.exit_code == 2, (args, res.output)
        assert message in " ".join(res.output.split()), (args, res.output)
    assert not (tmp_path / "never.png").exists()

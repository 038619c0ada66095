"""The latent pipeline on one backend: `export --vae` writes the VAE decoder (decoder.onnx) into the artifact, ORT
runs it like PyTorch, `sample --backend ort` decodes through it, `verify` checks it per call and on decoded samples,
`build` makes its engine beside the denoiser's. dim-tiny at 64 px (8x8 latents) with the shrunk VAE of conftest."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil

import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dimexport.cli import main
from dimexport.configs import get_config
from dimexport.errors import InputError
from dimexport.export.exporter import Artifact, ExportSpec, export, export_key, file_sha256
from dimexport.models.vae import load_vae, vae_sha256
from dimexport.runtime import OrtDecoder, load_decoder
from dimexport.runtime.decoder import TorchDecoder, torch_decoder_for
from dimexport.trt import api
from dimexport.trt.build import BuildOptions, make_job, read_build

HAVE_TRT = any(importlib.util.find_spec(m) for m in api.MODULES)
RES = 64  # dim-tiny allows any multiple of 16 px: 8x8 latents keep every step quick


@pytest.fixture(scope="module")
def art(vae_folder, tmp_path_factory):
    spec = ExportSpec("dim-tiny", RES, "fp32", "plugin", batch=(1, 2, 4), vae=str(vae_folder))
    return export(spec, tmp_path_factory.mktemp("decoder"))[0]


def test_export_writes_the_decoder_into_the_artifact(art, vae_folder):
    m = art.manifest
    d = m["decoder"]
    assert art.decoder_path == art.folder / "decoder.onnx" and d["file"] == "decoder.onnx"
    assert d["vae"]["path"] == str(vae_folder.resolve()) and d["vae"]["sha256"] == vae_sha256(vae_folder)
    assert d["scale"] == 0.18215 and d["inputs"] == {"latents": {"shape": ["batch", 4, 8, 8], "dtype": "fp32"}}
    assert d["outputs"]["images"]["shape"] == ["batch", 3, RES, RES] and d["outputs"]["images"]["range"] == [-1, 1]
    for name in ("decoder.onnx", "decoder.onnx.data"):  # hashed like the denoiser's files, so read_artifact checks them
        assert m["files"][name]["sha256"] == file_sha256(art.folder / name)
    assert m["spec"]["vae"] == str(vae_folder.resolve())
    proto = onnx.load(str(art.decoder_path), load_external_data=False)
    assert [i.name for i in proto.graph.input] == ["latents"] and [o.name for o in proto.graph.output] == ["images"]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {n.domain for n in proto.graph.node} <= {""} and not proto.functions  # standard ops only
    onnx.checker.check_model(str(art.decoder_path), full_check=True)


def test_ort_decoder_matches_the_torch_vae(art, vae_folder):
    z = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(3))  # 5 > max batch 4: split into 4 + 1
    ort_images = OrtDecoder(art)(z)
    ref = TorchDecoder(load_vae(vae_folder, get_config("dim-tiny")))(z)  # what `sample --vae` shows
    assert ort_images.shape == (5, 3, RES, RES) and ort_images.dtype == torch.float32
    err = float((ort_images - ref).abs().max())
    print(f"decoder ORT vs torch, fp32: max abs {err:.2e}")
    assert err < 1e-4 and float(ref.std()) > 0.05  # a real image signal, matched to fp32 rounding
    assert torch.equal(load_decoder("torch", art)(z), torch_decoder_for(art)(z))
    with pytest.raises(InputError, match=r"the exported decoder takes \(B, 4, 8, 8\): export at this resolution"):
        OrtDecoder(art)(torch.zeros(1, 4, 16, 16))


def test_sample_through_ort_decodes_with_the_artifacts_decoder(art, tmp_path):
    png = tmp_path / "g.png"
    res = CliRunner().invoke(main, ["sample", "--model", "dim-tiny", "--backend", "ort", "--artifact", str(art.folder),
                                    "--classes", "1,2", "--per-class", "2", "--steps", "2", "-o", str(png), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["decoder"] == "ort" and s["vae"] == art.manifest["decoder"]["vae"]["path"] and s["preview"] is None
    image = Image.open(png)
    assert image.size == (2 * (RES + 2) + 2,) * 2 and image.mode == "RGB"  # 2x2 decoded images, not 8x8 latents
    bare = tmp_path / "bare"  # the same artifact without its decoder: ort asks for one
    shutil.copytree(art.folder, bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    del manifest["decoder"], manifest["files"]["decoder.onnx"], manifest["files"]["decoder.onnx.data"]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(main, ["sample", "--model", "dim-tiny", "--backend", "ort", "--artifact", str(bare),
                                    "-o", str(tmp_path / "never.png")])
    assert res.exit_code == 2 and "or --latent-preview for a preview of the latent channels; or export the artifact " \
        "with --vae PATH so that it carries the decoder" in " ".join(res.output.split()), res.output


def test_upsample_through_ort_decodes_with_the_larger_exports_decoder(art, tmp_path):
    """--upsample 2 samples 16x16 latents: they are decoded by the decoder of the export at 2x (beside the base one)."""
    export(dataclasses.replace(ExportSpec(**{**art.manifest["spec"], "batch": (1, 2, 4)}), resolution=2 * RES),
           art.folder.parent.parent)
    png = tmp_path / "u.png"
    res = CliRunner().invoke(main, ["sample", "--model", "dim-tiny", "--backend", "ort", "--artifact", str(art.folder),
                                    "--upsample", "2", "--classes", "1,2", "--per-class", "2", "--steps", "2",
                                    "-o", str(png), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["resolution"] == 2 * RES
    assert Image.open(png).size == (2 * (2 * RES + 2) + 2,) * 2


def test_verify_checks_the_decoder_per_call_and_on_decoded_samples(art, tmp_path):
    res = CliRunner().invoke(main, ["verify", str(art.folder), "--sample", "2", "--json", "--save-io", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    den, dec = report["comparisons"]
    assert den["output"] == "out" and dec["output"] == "images" and dec["backend"] == "ort" and report["passed"]
    assert dec["rel_l2"] < 1e-5 and dec["max_abs"] < 1e-4, dec
    assert report["decoder"]["inputs"] == {"latents": [2, 4, 8, 8]}
    assert report["decoder"]["polygraphy"].startswith(f"polygraphy run {art.decoder_path} --onnxrt --load-inputs")
    assert (tmp_path / "inputs_decoder.json").is_file() and (tmp_path / "outputs_decoder_ort.json").is_file()
    (row,) = report["samples"]["comparisons"]
    print(f"decoded samples ORT vs torch: {row['decoded_psnr_db']:.1f} dB; per call max abs {dec['max_abs']:.2e}")
    assert row["decoder"] == "ort" and row["decoded_psnr_db"] >= 40 and row["passed"]
    text = CliRunner().invoke(main, ["verify", str(art.folder), "--atol", "images:0", "--rtol", "images:0"])
    assert text.exit_code == 3, text.output  # the decoder row is judged on its own tolerances
    assert "│ images │ ort/torch │" in text.stdout and "│ out    │ ort/torch │" in text.stdout
    assert "images: the VAE decoder on latents [2, 4, 8, 8]" in " ".join(text.stdout.split())


def test_vae_on_a_pixel_model_exits_2(vae_folder, tmp_path):
    for command in ("export", "build"):
        res = CliRunner().invoke(main, [command, "--model", "dim-tiny-digits", "--vae", str(vae_folder), "-o", str(tmp_path)])
        assert res.exit_code == 2, res.output
        assert "--vae: dim-tiny-digits samples pixels, it has no latents to decode: drop --vae" in " ".join(res.output.split())
    assert not any(tmp_path.iterdir())


def test_a_vae_that_does_not_fit_fails_before_any_folder_is_made(tmp_path):
    from diffusers import AutoencoderKL

    from dimexport.models.vae import SD_VAE_CONFIG
    from tests.conftest import SMALL_VAE

    AutoencoderKL(**(SD_VAE_CONFIG | SMALL_VAE | {"latent_channels": 8})).save_pretrained(tmp_path / "vae8")
    with pytest.raises(InputError, match=r"makes 8-channel latents at 1/8 of the image side; dim-tiny needs 4"):
        export(ExportSpec("dim-tiny", RES, vae=str(tmp_path / "vae8")), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))  # no scratch folder left


def test_a_changed_vae_changes_the_key_and_is_refused_as_reference(art, vae_folder, tmp_path):
    from diffusers import AutoencoderKL

    spec = ExportSpec("dim-tiny", RES, "fp32", "plugin", batch=(1, 2, 4), vae=str(vae_folder))
    weights = art.manifest["weights"]
    assert export_key(spec, weights, vae_sha256(vae_folder)) == art.manifest["key"]
    moved = tmp_path / "moved"
    shutil.copytree(vae_folder, moved)  # the same files elsewhere: the same key
    assert vae_sha256(moved) == vae_sha256(vae_folder)
    other = AutoencoderKL.from_pretrained(moved, low_cpu_mem_usage=False)
    with torch.no_grad():
        other.decoder.conv_out.bias.add_(0.01)
    other.save_pretrained(moved)
    changed = vae_sha256(moved)
    assert changed != vae_sha256(vae_folder)
    assert export_key(dataclasses.replace(spec, vae=str(moved)), weights, changed) != art.manifest["key"]
    assert export_key(dataclasses.replace(spec, vae=None), weights) != art.manifest["key"]
    stale = Artifact(art.folder, json.loads(json.dumps(art.manifest)))
    stale.manifest["decoder"]["vae"]["path"] = str(moved)
    with pytest.raises(InputError, match=r"the VAE at .*moved changed since its decoder was exported \(sha256 "
                                         r"[0-9a-f]{12}, now [0-9a-f]{12}\); re-export with --vae"):
        torch_decoder_for(stale)
    stale.manifest["decoder"]["vae"]["path"] = str(tmp_path / "gone")
    with pytest.raises(InputError, match=r"gone, is gone; restore it there or re-export with --vae PATH"):
        torch_decoder_for(stale)


def test_the_same_vae_elsewhere_reuses_the_artifact_and_records_its_new_place(art, vae_folder, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(art.folder.parent.parent, root)
    shutil.copytree(vae_folder, tmp_path / "copy")
    spec = ExportSpec(**{**art.manifest["spec"], "batch": tuple(art.manifest["spec"]["batch"]),
                         "vae": str(tmp_path / "copy")})
    found, reused = export(spec, root)
    assert reused and found.folder.name == art.folder.name
    on_disk = json.loads((found.folder / "manifest.json").read_text())
    assert on_disk["spec"]["vae"] == on_disk["decoder"]["vae"]["path"] == str(tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy")  # the reference now loads from the recorded place, which is gone
    with pytest.raises(InputError, match=r"copy, is gone; restore it there or re-export with --vae PATH"):
        torch_decoder_for(found)


def test_build_plans_the_decoder_engine_beside_the_denoisers(art, tmp_path):
    trt = api.TrtInfo("tensorrt", "10.14.1.48")
    den = make_job(trt, art, BuildOptions(), None, None, tmp_path, "e")
    dec = make_job(trt, art, BuildOptions(), None, None, tmp_path, "e", part="decoder")
    assert den["onnx"] == str(art.onnx_path) and dec["onnx"] == str(art.decoder_path)
    assert dec["batch"] == den["batch"] == [1, 2, 4] and dec["dtype"] == "fp32" and dec["plugin_library"] is None
    assert {k: dec[k].rsplit("/", 1)[1] for k in ("engine", "log", "result", "job")} == {
        "engine": "e-decoder.engine", "log": "build-decoder.log", "result": "result-decoder.json", "job": "job-decoder.json"}
    info = {"format": 1, "engine": {"file": "e.engine", "bytes": 4},
            "decoder": {"engine": {"file": "e-decoder.engine", "bytes": 3}}}
    (tmp_path / "build.json").write_text(json.dumps(info))
    (tmp_path / "e.engine").write_bytes(b"plan")
    (tmp_path / "e-decoder.engine").write_bytes(b"pl")
    with pytest.raises(InputError, match=r"e-decoder.engine is missing or truncated; rebuild with `dimexport build --force`"):
        read_build(tmp_path)
    (tmp_path / "e-decoder.engine").write_bytes(b"pla")
    assert read_build(tmp_path).decoder_path == tmp_path / "e-decoder.engine"


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_build_with_vae_without_tensorrt_exits_4_before_exporting(vae_folder, tmp_path):
    res = CliRunner().invoke(main, ["build", "--model", "dim-tiny", "--vae", str(vae_folder), "-o", str(tmp_path)])
    assert res.exit_code == 4 and "TensorRT is needed here and not usable" in res.output
    assert not any(tmp_path.iterdir())


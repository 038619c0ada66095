"""`dimexport serve`: the shipped digits model and a latent model with a VAE behind Triton (PyTriton) on the CPU: a
denoiser call through Triton equals the direct call, a whole sample equals `dimexport sample`'s (decoded by the VAE
for the latent model), bad requests fail alone (Triton's 400 for a wrong dtype; the model's own message for a class it
lacks) and the server keeps serving."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from dimexport.diffusion.images import to_uint8, viewable
from dimexport.diffusion.pipeline import sample
from dimexport.models import build_model
from dimexport.models.checkpoint import load_model
from dimexport.runtime.denoiser import TorchDenoiser

try:
    import tritonclient.http as http
    import pytriton.triton  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise RuntimeError("CI must test serving, but nvidia-pytriton is not installed (see .ci/run)")
    pytest.skip("nvidia-pytriton is not installed (pip install 'dimexport[serve]')", allow_module_level=True)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def server(vae_folder):
    """One Triton serving the shipped digits model and a latent dim-tiny (random weights) with a shrunk SD VAE."""
    from dimexport.models.vae import load_vae
    from dimexport.runtime.decoder import TorchDecoder
    from dimexport.serve import ServeConfig, bind_models, start

    den = TorchDenoiser(load_model("dim-tiny-digits"))
    latent = TorchDenoiser(build_model("dim-tiny", seed=0))
    decoder = TorchDecoder(load_vae(str(vae_folder), latent.cfg))
    http_port, grpc_port, metrics_port = free_ports(3)
    with start(ServeConfig(http_port, grpc_port, metrics_port)) as triton:
        names = bind_models(triton, den) + bind_models(triton, latent, decoder=decoder)
        triton.run()
        yield den, names, http.InferenceServerClient(f"127.0.0.1:{http_port}"), (latent, decoder)


def infer(client, model: str, **arrays: np.ndarray):
    inputs = []
    for name, value in arrays.items():
        tensor = http.InferInput(name, list(value.shape), {np.float32: "FP32", np.int64: "INT64",
                                                           np.int32: "INT32"}[value.dtype.type])
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return client.infer(model, inputs)


def test_models_are_served(server):
    den, names, client, _ = server
    assert names == ["dim-tiny-digits", "dim-tiny-digits-sample", "dim-tiny", "dim-tiny-sample"]
    assert all(client.is_model_ready(n) for n in names)


def test_denoiser_through_triton_equals_the_direct_call(server):
    den, _, client, _ = server
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 1, 32, 32, generator=g), torch.tensor([10.0, 500.0, 999.0]), torch.tensor([1, 7, 10])
    out = infer(client, "dim-tiny-digits", x=x.numpy(), t=t[:, None].numpy(), y=y[:, None].numpy()).as_numpy("eps")
    ref = den(x, t, y)
    assert out.shape == (3, 1, 32, 32)
    assert np.abs(out - ref.numpy()).max() < 1e-5


def test_a_sample_through_triton_equals_dimexport_sample(server):
    den, _, client, _ = server
    res = infer(client, "dim-tiny-digits-sample", class_id=np.array([3]), seed=np.array([5]),
                steps=np.array([4], dtype=np.int32)).as_numpy("image")
    ref = to_uint8(viewable(sample(den, torch.tensor([3]), n=1, seed=5, steps=4).samples, den.cfg))[0]
    assert res.shape == (32, 32, 1) and res.dtype == np.uint8 and np.array_equal(res, ref)


def test_a_latent_sample_through_triton_is_decoded_by_the_vae(server):
    """A latent model's whole sample: the sampled latents through the VAE decoder, as `dimexport sample --vae`."""
    _, _, client, (latent, decoder) = server
    res = infer(client, "dim-tiny-sample", class_id=np.array([2]), seed=np.array([1]),
                steps=np.array([3], dtype=np.int32)).as_numpy("image")
    ref = to_uint8(decoder(sample(latent, torch.tensor([2]), n=1, seed=1, steps=3).samples))[0]
    side = latent.resolution
    assert res.shape == (side, side, 3) and np.array_equal(res, ref)


def test_bad_requests_fail_alone_and_the_server_keeps_serving(server):
    _, _, client, _ = server
    with pytest.raises(http.InferenceServerException) as exc:  # Triton checks dtypes itself
        infer(client, "dim-tiny-digits-sample", class_id=np.array([3], dtype=np.int32), seed=np.array([0]))
    assert exc.value.status() == "400" and "data-type is 'INT32', but model 'dim-tiny-digits-sample' expects 'INT64'" \
        in exc.value.message()
    with pytest.raises(http.InferenceServerException) as exc:  # only the model knows its classes
        infer(client, "dim-tiny-digits-sample", class_id=np.array([12]), seed=np.array([0]))
    # PyTriton gives every error of the model function status 500 (no code); the message is the model's own
    assert exc.value.status() == "500" and "class 12 is outside dim-tiny-digits's classes 0..9" in exc.value.message()
    res = infer(client, "dim-tiny-digits-sample", class_id=np.array([1]), seed=np.array([0]),
                steps=np.array([2], dtype=np.int32))
    assert res.as_numpy("image").shape == (32, 32, 1)


def test_serve_command_refuses_bad_arguments_before_starting_triton():
    from click.testing import CliRunner

    from dimexport.cli import main

    res = CliRunner().invoke(main, ["serve", "--model", "dim-tiny-digits", "--backend", "ort"])
    assert res.exit_code == 2
    assert "the ort backend runs an exported artifact: pass --artifact DIR (made by `dimexport export`)" in res.output


def test_serve_refuses_a_vae_for_a_pixel_model():
    from click.testing import CliRunner

    from dimexport.cli import main

    res = CliRunner().invoke(main, ["serve", "--model", "dim-tiny-digits", "--vae", "somewhere"])
    assert res.exit_code == 2 and "dim-tiny-digits samples pixels: drop --vae" in res.output

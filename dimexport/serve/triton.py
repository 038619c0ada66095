"""Any dimexport denoiser behind NVIDIA Triton Inference Server, through PyTriton.

Two Triton models per served DiM/DiS:
  <model>         one denoiser call: x (C, H, W) fp32, t (1,) fp32, y (1,) int64 -> eps (C, H, W) fp32. Triton's dynamic
                  batcher merges concurrent requests into one call of the denoiser (up to its batch limit): the path
                  that scales, for clients that run their own sampler.
  <model>-sample  a whole sample: class_id (1,) int64, seed (1,) int64, optional steps (1,) int32 and guidance (1,)
                  fp32 -> image (H, W, C) uint8, with the model's official sampler (`dimexport sample` for one image);
                  one request at a time (no batching). Latent models get it when a VAE decoder is given (`serve --vae`
                  or an artifact exported with --vae): the sampled latents are decoded into the image.

Requests that Triton can check (shapes, dtypes) are refused by Triton with HTTP 400. Values only the model can judge
(a class id it lacks, steps < 1) fail with the message `dimexport sample` prints, and the server keeps serving; PyTriton
reports those as HTTP 500 (its errors carry no status code), and a bad label in a dynamically merged denoiser batch
fails the requests merged with it.
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion.images import to_uint8, viewable
from ..diffusion.pipeline import sample
from ..errors import EnvironmentProblem, InputError
from ..runtime.decoder import Decoder
from ..runtime.denoiser import Denoiser


@dataclass(frozen=True)
class ServeConfig:
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_queue_delay_us: int = 2000  # how long the dynamic batcher waits to fill a batch


def _use_this_libpython() -> None:
    """Triton's Python backend stub links libpython of this Python version; put this interpreter's own shared
    libpython first, or the loader may pick another build of that version whose C code does not match this
    interpreter's standard library (seen with pyenv beside a system Python 3.11)."""
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR")
        paths = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
        if libdir and libdir not in paths:
            os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *filter(None, paths)])


def bind_models(triton, denoiser: Denoiser, name: str | None = None, queue_delay_us: int = 2000,
                decoder: Decoder | None = None) -> list[str]:
    """Bind the denoiser and whole samples (pixel models, or latent models with their VAE `decoder`) to a
    pytriton.triton.Triton; returns the model names. `queue_delay_us`: how long Triton's dynamic batcher waits for
    more requests to fill a denoiser batch."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    cfg = denoiser.cfg
    name = name or cfg.id
    shape = tuple(cfg.input_shape(1, denoiser.resolution)[1:])
    max_batch = denoiser.max_batch or 16  # a module takes any batch; exported backends keep their range

    @batch
    def denoise(x: np.ndarray, t: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        labels = torch.from_numpy(y[:, 0].astype(np.int64))
        if cfg.num_classes and (int(labels.min()) < 0 or int(labels.max()) > cfg.num_classes):
            raise InputError(f"y must be a class id in 0..{cfg.num_classes - 1} or {cfg.num_classes} (the null "
                             f"label of guidance), got {labels.tolist()}")
        eps = denoiser(torch.from_numpy(x).to(denoiser.device), torch.from_numpy(t[:, 0]).to(denoiser.device),
                       labels.to(denoiser.device) if cfg.num_classes else None)
        return {"eps": eps.float().cpu().numpy()}

    batcher = DynamicBatcher(max_queue_delay_microseconds=queue_delay_us)
    triton.bind(model_name=name, infer_func=denoise,
                inputs=[Tensor(name="x", dtype=np.float32, shape=shape), Tensor(name="t", dtype=np.float32, shape=(1,)),
                        Tensor(name="y", dtype=np.int64, shape=(1,))],
                outputs=[Tensor(name="eps", dtype=np.float32, shape=shape)],
                config=ModelConfig(max_batch_size=max_batch, batcher=batcher), strict=True)
    names = [name]
    if cfg.latent_factor > 1 and decoder is None:
        return names

    def whole_sample(requests) -> list[dict[str, np.ndarray]]:
        """One image per request, requests never merged (no batching), so a bad request fails alone."""
        return [_sample_one(r["class_id"], r["seed"], r.data.get("steps"), r.data.get("guidance")) for r in requests]

    def _sample_one(class_id: np.ndarray, seed: np.ndarray, steps: np.ndarray | None,
                    guidance: np.ndarray | None) -> dict[str, np.ndarray]:
        if cfg.num_classes and not 0 <= int(class_id[0]) < cfg.num_classes:
            raise InputError(f"class {int(class_id[0])} is outside {cfg.id}'s classes 0..{cfg.num_classes - 1}")
        res = sample(denoiser, torch.tensor([int(class_id[0])]) if cfg.num_classes else None, n=1, seed=int(seed[0]),
                     steps=None if steps is None else int(steps[0]),
                     guidance=None if guidance is None else float(guidance[0]))
        return {"image": to_uint8(viewable(res.samples, cfg) if decoder is None else decoder(res.samples))[0]}

    side, channels = denoiser.resolution, cfg.in_channels if decoder is None else 3  # decoded: RGB
    triton.bind(model_name=f"{name}-sample", infer_func=whole_sample,
                inputs=[Tensor(name="class_id", dtype=np.int64, shape=(1,)), Tensor(name="seed", dtype=np.int64, shape=(1,)),
                        Tensor(name="steps", dtype=np.int32, shape=(1,), optional=True),
                        Tensor(name="guidance", dtype=np.float32, shape=(1,), optional=True)],
                outputs=[Tensor(name="image", dtype=np.uint8, shape=(side, side, channels))],
                config=ModelConfig(batching=False), strict=True)
    return names + [f"{name}-sample"]


def start(config: ServeConfig):
    """A pytriton Triton (not yet running) on the configured ports; use it as a context manager."""
    try:
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise EnvironmentProblem("serving needs PyTriton: pip install 'dimexport[serve]' (nvidia-pytriton)") from None
    _use_this_libpython()
    return Triton(config=TritonConfig(http_port=config.http_port, grpc_port=config.grpc_port,
                                      metrics_port=config.metrics_port, log_verbose=0))


def serve(denoiser: Denoiser, config: ServeConfig = ServeConfig(), name: str | None = None,
          decoder: Decoder | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    with start(config) as triton:
        bind_models(triton, denoiser, name, config.max_queue_delay_us, decoder)
        triton.serve()

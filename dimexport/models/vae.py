"""The Stable Diffusion VAE that turns DiM's and DiS's latents into images (diffusers' AutoencoderKL), loaded from a
local folder or weights file: nothing is downloaded. Both families scale latents by 0.18215 (DiM: U-ViT's
`libs/autoencoder.py`; DiS: `train.py`), so images = decode(latents / 0.18215).

It lives with the models (not in diffusion/) because export and the runtimes build its decoder too: `LatentDecoder`
is the one module that PyTorch runs, ONNX export traces and `verify` compares against.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from ..configs import ModelConfig
from ..errors import EnvironmentProblem, InputError
from .checkpoint import file_sha256

SCALE = 0.18215
# The SD VAE's architecture (stabilityai/sd-vae-ft-ema, ft-mse and the SD 1.x VAE share it), for weights files
# that come without a config.json.
SD_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=256,
    block_out_channels=(128, 256, 512, 512), scaling_factor=SCALE,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


class LatentDecoder(nn.Module):
    """Model-scaled latents (B, C, h, w) -> images in [-1, 1] (B, 3, H, W): the 1/0.18215 scaling and the clamp
    are part of the module, so an exported decoder takes the sampler's latents as they are."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: Tensor) -> Tensor:
        return self.vae.decode(latents / SCALE).sample.clamp(-1, 1)


def vae_files(path: str | Path) -> list[Path]:
    """The files that make up the VAE at `path` (a diffusers folder's config.json and weights, or one weights
    file), refusing anything else with the message `load_vae` gives."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"--vae {path} has no config.json: give a diffusers AutoencoderKL folder "
                             "(AutoencoderKL.save_pretrained) or its weights file")
        weights = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        return [path / "config.json", *weights]
    if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
        return [path]
    raise InputError(f"--vae {path} does not exist or is not a folder or a weights file ({', '.join(WEIGHT_SUFFIXES)})")


def vae_sha256(path: str | Path) -> str:
    """Content hash of the VAE at `path` (file names and contents; a file's hash is cached per version), so a
    cache key that includes it changes whenever the VAE does, wherever it is stored."""
    files = vae_files(path)
    if len(files) == 1 and files[0] == Path(path):
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def diffusers_version() -> str:
    """The diffusers version whose AutoencoderKL code runs the VAE: part of every cache key made from its outputs."""
    try:
        import diffusers
    except ImportError:
        return "not installed"
    return diffusers.__version__


def load_vae(path: str | Path, cfg: ModelConfig) -> nn.Module:
    """An AutoencoderKL from a diffusers folder (config.json + weights) or a weights file of the SD VAE in diffusers'
    key layout, checked against the model's latent channels and factor (eval mode, fp32, CPU)."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise EnvironmentProblem("decoding latents needs diffusers: pip install diffusers") from None
    path = Path(path)
    vae_files(path)  # validates
    if path.is_dir():
        try:
            # low_cpu_mem_usage needs accelerate; without it diffusers warns on stdout-facing logs at every load
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True,
                                                low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InputError(f"--vae {path}: diffusers cannot load it: {str(exc).strip()[:300]}") from None
    else:
        state = _read_weights(path)
        vae = AutoencoderKL(**SD_VAE_CONFIG)
        want = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
        missing = [k for k in want if k not in state]
        wrong = [k for k in want if k in state and tuple(state[k].shape) != want[k]]
        if missing or wrong:
            raise InputError(f"--vae {path} is not an SD VAE in diffusers' layout: {len(missing)} weights missing "
                             f"(e.g. {missing[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]}); give a "
                             "diffusers AutoencoderKL folder instead")
        vae.load_state_dict(state, strict=False)  # extra keys (EMA copies, the loss's discriminator) are ignored
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if vae.config.latent_channels != cfg.in_channels or factor != cfg.latent_factor:
        raise InputError(f"--vae {path} makes {vae.config.latent_channels}-channel latents at 1/{factor} of the "
                         f"image side; {cfg.id} needs {cfg.in_channels} channels at 1/{cfg.latent_factor}")
    return vae.eval()


def _read_weights(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many types
        raise InputError(f"cannot read --vae {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise InputError(f"--vae {path} holds a {type(state).__name__}, not a state dict of weights")
    return state

"""Every backend behind one denoiser interface (PyTorch eager and CUDA graphs, ONNX Runtime, TensorRT), the VAE
decoder behind one decoder interface, and the engines of `dimexport build` for Python applications (C++:
examples/cpp/)."""

from .decoder import Decoder, OrtDecoder, TorchDecoder, TrtDecoder, load_decoder
from .denoiser import BACKEND_NAMES, Denoiser, OrtDenoiser, TorchDenoiser, TrtDenoiser, load_denoiser
from .engine import Engine, TensorSpec, compatibility_problems, rebuild_command

__all__ = [
    "BACKEND_NAMES", "Decoder", "Denoiser", "Engine", "OrtDecoder", "OrtDenoiser", "TensorSpec", "TorchDecoder",
    "TorchDenoiser", "TrtDecoder", "TrtDenoiser", "compatibility_problems", "load_decoder", "load_denoiser",
    "rebuild_command",
]

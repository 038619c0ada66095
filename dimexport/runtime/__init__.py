"""Every backend behind one denoiser interface (PyTorch eager and CUDA graphs, ONNX Runtime, TensorRT), and the
engines of `dimexport build` for Python applications (C++: examples/cpp/)."""

from .denoiser import BACKEND_NAMES, Denoiser, OrtDenoiser, TorchDenoiser, TrtDenoiser, load_denoiser
from .engine import Engine, TensorSpec, compatibility_problems, rebuild_command

__all__ = [
    "BACKEND_NAMES", "Denoiser", "Engine", "OrtDenoiser", "TensorSpec", "TorchDenoiser", "TrtDenoiser",
    "compatibility_problems", "load_denoiser", "rebuild_command",
]

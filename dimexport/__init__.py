"""dimexport: train or load Diffusion-Mamba models, export them to ONNX and TensorRT, verify and run them."""

__version__ = "0.1.0"

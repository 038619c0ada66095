"""Serving through NVIDIA Triton Inference Server (PyTriton): `dimexport serve`."""

from .triton import ServeConfig, bind_models, serve, start

__all__ = ["ServeConfig", "bind_models", "serve", "start"]

"""Load and run engines from `dimexport build` in Python applications (C++: examples/cpp/)."""

from .engine import Engine, TensorSpec, compatibility_problems, rebuild_command

__all__ = ["Engine", "TensorSpec", "compatibility_problems", "rebuild_command"]

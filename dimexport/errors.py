"""Errors with documented process exit codes; the CLI maps each class to its code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # bad arguments or input: unknown model, wrong shape or dtype, checkpoint/config mismatch
EXIT_VERIFY_FAILED = 3  # a parity check failed
EXIT_ENVIRONMENT = 4  # something the environment lacks: TensorRT, the plugin library, a GPU, a package;
#                       or an engine built for another TensorRT version, GPU or plugin library
EXIT_BUILD_FAILED = 5  # the ONNX export, its checks, or the TensorRT parse/build failed


class DimexportError(Exception):
    """Base class: a message that says what is wrong and how to fix it, and an exit code."""

    exit_code = 1


class InputError(DimexportError, ValueError):
    """The caller passed something dimexport cannot use (shape, dtype, id, file)."""

    exit_code = EXIT_USAGE


class CheckpointError(InputError):
    """A checkpoint does not fit the model config it was loaded into."""


class EnvironmentProblem(DimexportError, RuntimeError):
    """A dependency, library or device is missing or unusable."""

    exit_code = EXIT_ENVIRONMENT

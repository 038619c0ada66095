"""The CMake options that build the C++ PyTorch operator against the torch importable here (one source for setup.py
and for building by hand): `cmake -S . -B build $(python3 -m dimexport.native_build_args)`. Prints nothing when torch
is not importable (an isolated pip build), and the operator is then skipped."""

from __future__ import annotations


def torch_cmake_args() -> list[str]:
    """-D options naming torch's include folders, library folder, C++ ABI and version, or [] without torch."""
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        return []
    return [
        f"-DDIMEX_TORCH_INCLUDE_DIRS={';'.join(cpp_extension.include_paths())}",
        f"-DDIMEX_TORCH_LIBRARY_DIR={cpp_extension.library_paths()[0]}",
        f"-DDIMEX_TORCH_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        f"-DDIMEX_TORCH_VERSION={torch.__version__}",
    ]


if __name__ == "__main__":
    print(" ".join(torch_cmake_args()))

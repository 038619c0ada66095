"""Builds the native library with the project's CMake for `pip install .`, `pip install -e .` and wheels.

libdimexport_scan.so always has the CPU kernel (a C++17 compiler is all it needs; OpenMP when the compiler has
it), the CUDA kernel when a CUDA compiler is found (architectures: $CMAKE_CUDA_ARCHITECTURES, else every supported
one), and the TensorRT plugin libraries come beside it when TensorRT headers are found ($TensorRT_ROOT, an
installed tensorrt package). When torch is importable at build time (`pip install --no-build-isolation`), the op's
C++ kernels, libdimexport_torch_ops.so, are built against that torch (dimexport/native_build_args.py). Everything lands
in dimexport/lib/: the source tree's for editable installs, the wheel's otherwise. The CMake build folder,
build/native/, is kept so that a reinstall recompiles only what changed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
OUTPUTS = ("*.so", "*.torch_version")  # the libraries, and the C++ operator's build stamp (torch version, scan ABI)


def torch_cmake_args() -> list[str]:
    """dimexport/native_build_args.py's options, read without importing the package (its dependencies may be absent)."""
    spec = importlib.util.spec_from_file_location("native_build_args", ROOT / "dimexport" / "native_build_args.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.torch_cmake_args()


class BuildNative(build_ext):
    """Configure, build and install the CMake project's libraries instead of compiling Python extensions."""

    def run(self) -> None:
        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError("dimexport needs CMake >= 3.24 to build its native library: pip install cmake")
        editable = self.inplace or getattr(self, "editable_mode", False)
        lib_dir = ROOT / "dimexport" / "lib" if editable else Path(self.build_lib) / "dimexport" / "lib"
        build_dir, stage = ROOT / "build" / "native", ROOT / "build" / "native-install"
        # Always the torch options that decide whether the C++ operator is built (empty without torch), so that a
        # cached configuration does not build it against a torch this build cannot see.
        torch_args = torch_cmake_args() or [f"-DDIMEX_TORCH_{k}=" for k in ("INCLUDE_DIRS", "LIBRARY_DIR", "VERSION")]
        args = ["-DCMAKE_BUILD_TYPE=Release", "-DDIMEX_BUILD_EXAMPLES=OFF", *torch_args]
        for var in ("CMAKE_CUDA_ARCHITECTURES", "TensorRT_ROOT", "TensorRT_INCLUDE_DIR", "DIMEX_CUDA"):
            if os.environ.get(var):
                args.append(f"-D{var}={os.environ[var]}")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        shutil.rmtree(stage, ignore_errors=True)
        subprocess.check_call([cmake, "-S", str(ROOT), "-B", str(build_dir), *args])
        subprocess.check_call([cmake, "--build", str(build_dir), "-j", jobs])
        subprocess.check_call([cmake, "--install", str(build_dir), "--prefix", str(stage)])
        lib_dir.mkdir(parents=True, exist_ok=True)
        for stale in (p for pattern in OUTPUTS for p in lib_dir.glob(pattern)):
            stale.unlink()  # e.g. a C++ operator of an earlier build against another torch
        self._outputs = []
        for built in sorted(p for pattern in OUTPUTS for p in (stage / "dimexport" / "lib").glob(pattern)):
            target = lib_dir / built.name
            shutil.copy2(built, target)
            self._outputs.append(str(target))

    def get_outputs(self) -> list[str]:
        return getattr(self, "_outputs", [])


setup(ext_modules=[Extension("dimexport.lib.native", sources=[])], cmdclass={"build_ext": BuildNative})

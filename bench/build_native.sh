# Sourced by the device scripts (bench/run_*.sh): the one command that builds a source tree's native libraries for
# the device machines (sm_90) — the kernels and the C++ PyTorch operator against the torch importable there — and
# installs them into its dimexport/lib. Without the operator's CMake options the ops would silently run through their
# slower fallbacks.
#   build_native [DIR] [JOBS]   prints the last lines of the build's output (nothing when it succeeds quietly)
build_native() {
  local dir="${1:-.}" jobs="${2:-16}"
  (cd "$dir" && cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES=90 \
     $(PYTHONPATH=. python3 -m dimexport.native_build_args) >/dev/null && cmake --build build -j "$jobs" >/dev/null &&
     cmake --install build --prefix . >/dev/null) 2>&1 | tail -5
}

// What every CPU kernel of the library shares: the loop over independent work items on OpenMP threads, and the run-time
// choice of the AVX2+FMA copies (hardware FMAs; without them fmaf is a libm call).
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define DIMEX_CPU_X86 1
#endif

namespace dimex {

// fn(i) for i in [0, items) on num_threads OpenMP threads (0: OpenMP's default; one thread without OpenMP), statically
// scheduled. Each item is computed the same way whichever thread runs it: results do not depend on the thread count.
template <typename Fn>
void parallel_items(int64_t items, int num_threads, const Fn& fn) {
#ifdef _OPENMP
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
#else
  (void)num_threads;
#endif
  for (int64_t i = 0; i < items; ++i) fn(i);
}

// True where this CPU runs the AVX2+FMA copies (x86-64 builds only; asked once).
inline bool cpu_has_avx2_fma() {
#ifdef DIMEX_CPU_X86
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

}  // namespace dimex

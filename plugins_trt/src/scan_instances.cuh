// Explicit instantiation of the compiled (NS, S) configurations for one I/O dtype.
#pragma once

#include "scan_kernel.cuh"

namespace dimex {

template <typename T, int NS, int S>
KernelInfo make_info() {
  return KernelInfo{&scan_fwd_kernel<T, NS, S, false>, &scan_fwd_kernel<T, NS, S, true>, KCfg<T, NS, S>::kSmem,
                    KCfg<T, NS, S>::kDc};
}

// Keep in sync with the candidate lists in selective_scan.cu.
template <typename T>
KernelInfo kernel_info_t(int ns, int s) {
  if (ns == 16 && s == 1) return make_info<T, 16, 1>();  // N = 16
  if (ns == 8 && s == 2) return make_info<T, 8, 2>();
  if (ns == 4 && s == 4) return make_info<T, 4, 4>();
  if (ns == 2 && s == 8) return make_info<T, 2, 8>();
  if (ns == 1 && s == 16) return make_info<T, 1, 16>();
  if (ns == 16 && s == 2) return make_info<T, 16, 2>();  // N = 32
  if (ns == 4 && s == 8) return make_info<T, 4, 8>();
  if (ns == 16 && s == 4) return make_info<T, 16, 4>();  // N = 64
  if (ns == 4 && s == 16) return make_info<T, 4, 16>();
  return KernelInfo{nullptr, nullptr, 0, 0};
}

}  // namespace dimex

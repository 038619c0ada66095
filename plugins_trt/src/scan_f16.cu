// Selective-scan kernels with __half I/O.
#include "scan_instances.cuh"

namespace dimex {
KernelInfo kernel_info_f16(int ns, int s) { return kernel_info_t<__half>(ns, s); }
}  // namespace dimex

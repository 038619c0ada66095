// Selective-scan kernels with __nv_bfloat16 I/O.
#include "scan_instances.cuh"

namespace dimex {
KernelInfo kernel_info_bf16(int ns, int s) { return kernel_info_t<__nv_bfloat16>(ns, s); }
}  // namespace dimex

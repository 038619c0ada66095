// Selective-scan kernels with float I/O.
#include "scan_instances.cuh"

namespace dimex {
KernelInfo kernel_info_f32(int ns, int s) { return kernel_info_t<float>(ns, s); }
}  // namespace dimex

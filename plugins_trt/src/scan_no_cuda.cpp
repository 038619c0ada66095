// The C ABI's CUDA entries of a library built without a CUDA compiler: they answer DIMEX_ERR_NO_CUDA, so a loader
// can tell "no CUDA kernel here" from a failure (the CPU entry is in scan_cpu.cpp).
#include "dimexport_scan.h"
#include "scan_status.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

DIMEX_EXPORT int dimex_scan_abi_version(void) { return DIMEX_SCAN_ABI_VERSION; }

DIMEX_EXPORT int dimex_scan_has_cuda(void) { return 0; }

DIMEX_EXPORT const char* dimex_status_string(int status) { return dimex::status_text(status); }

DIMEX_EXPORT int dimex_selective_scan_fwd(const dimex_scan_params*, cudaStream_t) { return DIMEX_ERR_NO_CUDA; }

DIMEX_EXPORT size_t dimex_selective_scan_workspace_size(const dimex_scan_params*) { return 0; }

DIMEX_EXPORT size_t dimex_selective_scan_bwd_workspace_size(const dimex_scan_bwd_params*) { return 0; }

DIMEX_EXPORT int dimex_selective_scan_bwd(const dimex_scan_bwd_params*, cudaStream_t) { return DIMEX_ERR_NO_CUDA; }

DIMEX_EXPORT int dimex_causal_conv1d_silu_fwd(const dimex_conv_params*, cudaStream_t) { return DIMEX_ERR_NO_CUDA; }

DIMEX_EXPORT int dimex_rms_norm_modulate_fwd(const dimex_norm_params*, cudaStream_t) { return DIMEX_ERR_NO_CUDA; }

DIMEX_EXPORT int dimex_gated_residual_fwd(const dimex_residual_params*, cudaStream_t) { return DIMEX_ERR_NO_CUDA; }

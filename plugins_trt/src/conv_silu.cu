// The causal conv1d + SiLU on the GPU (dimex_causal_conv1d_silu_fwd, include/dimexport_scan.h): one warp per (b, d)
// row, its lanes on consecutive tokens, so each of the K tap loads of a warp reads one contiguous run of x when the
// row is contiguous, and the K shifted reads hit L1. Token-major rows (the slice of in_proj's output the mixer hands
// over) load uncoalesced (KERNEL_NOTES.md). Memory-bound: the floor is reading x and writing out once (issue
// "Whole-denoiser speed" §2; bench/fused_ops.py).
#include <cuda_runtime.h>

#include "conv_silu.h"
#include "dtype_dispatch.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

namespace dimex {
namespace {

constexpr int kWarps = 4;  // rows per CTA

template <dimex_dtype DT, int K, bool kReverse>
__global__ void __launch_bounds__(kWarps * 32) conv_silu_kernel(dimex_conv_params p) {
  using T = typename Io<DT>::T;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= p.batch * p.dim) return;
  const int64_t b = row / p.dim, d = row - b * p.dim;
  const int lane = threadIdx.x % 32;
  const T* x = static_cast<const T*>(p.x) + b * p.x_stride[0] + d * p.x_stride[1];
  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + d * p.out_stride[1];
  const T* wrow = static_cast<const T*>(p.weight) + d * K;
  float w[K];
#pragma unroll
  for (int k = 0; k < K; ++k) w[k] = Io<DT>::load(wrow[k]);
  const float bias = p.bias ? Io<DT>::load(static_cast<const T*>(p.bias)[d]) : 0.0f;
  for (int64_t l = lane; l < p.seqlen; l += 32)
    out[l * p.out_stride[2]] = Io<DT>::store(conv_silu_at<DT, K, kReverse>(x, p.x_stride[2], p.seqlen, l, w, bias));
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_causal_conv1d_silu_fwd(const dimex_conv_params* p, cudaStream_t stream) {
  using namespace dimex;
  const int status = check_conv_params(p);
  if (status != DIMEX_OK) return status;
  if ((p->batch * p->dim + kWarps - 1) / kWarps > 0x7fffffff) return DIMEX_ERR_INVALID_ARGUMENT;
  (void)cudaGetLastError();  // an earlier, unrelated error must not be reported as this call's
  const unsigned blocks = static_cast<unsigned>((p->batch * p->dim + kWarps - 1) / kWarps);
  with_dtype(p->dtype, [&](auto dt) {
    with_width(p->width, [&](auto k) {
      with_flag(p->reverse != 0, [&](auto rev) {
        conv_silu_kernel<decltype(dt)::value, decltype(k)::value, decltype(rev)::value>
            <<<blocks, kWarps * 32, 0, stream>>>(*p);
      });
    });
  });
  return cudaPeekAtLastError() == cudaSuccess ? DIMEX_OK : DIMEX_ERR_CUDA;
}

// RMSNorm + adaLN modulation and the gated residual on the GPU (dimex_rms_norm_modulate_fwd, dimex_gated_residual_fwd,
// include/dimexport_scan.h). The norm: one warp per row, each lane on quads of 4 channels (one vector load or store of
// each operand), the row read twice (sum of squares, then the output; the second read hits L1/L2 for DiM's
// 1536-channel rows), written once. The residual: one CTA per row, threads along the channels a quad each.
// Memory-bound: the floor is reading the inputs and writing the output once (issue "Whole-denoiser speed" §2). Loading a
// batch of elements ahead of their stores measured slower for both (KERNEL_NOTES: third measurement).
#include <cuda_runtime.h>

#include "dtype_dispatch.h"
#include "norm_modulate.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

namespace dimex {
namespace {

constexpr int kWarps = 4;  // rows per CTA

// kQuads: every operand's rows are aligned quads (norm_quads), so its loads and stores are all vector ones.
template <dimex_dtype XT, dimex_dtype OT, bool kQuads>
__global__ void __launch_bounds__(kWarps * 32) norm_kernel(dimex_norm_params p) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= p.batch * p.rows) return;
  const int64_t b = r / p.rows;
  const NormRow<XT, OT> row(p, b, r - b * p.rows);
  const int lane = threadIdx.x % 32;
  float acc = partial_sum_sq<XT, kQuads>(row.x, row.xs, p.dim, lane);
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) acc = add_rn(acc, __shfl_xor_sync(0xffffffffu, acc, off));
  const float inv = inv_rms(acc, p.dim, p.eps, row.valid);
  // Not unrolled: by 4 this loop took the kernel to 164-168 registers (ptxas -v; 3 CTAs of 4 rows per SM, two waves of
  // rows at dim-h batch 8), without it 70-72 (7 CTAs per SM). Its loads cannot move above the previous quad's stores
  // anyway (out may alias them as far as the compiler knows).
#pragma unroll 1
  for (int64_t c0 = kNormQuad * lane; c0 < p.dim; c0 += kNormQuad * 32) {
    float v[kNormQuad];
    load_quad<XT, kQuads>(row.x, row.xs, p.dim, c0, v);
    row.template store_quad<kQuads>(p.dim, c0, v, inv);
  }
}

constexpr int kResidualThreads = 128;

// One CTA per (b, l) row, its threads along the channels a quad each: the row located once (no per-element 64-bit
// division), a warp's loads and stores of a channels-contiguous row contiguous and vectorised.
// kQuads as for the norm (residual_quads).
template <dimex_dtype RT, dimex_dtype YT, bool kQuads>
__global__ void __launch_bounds__(kResidualThreads) residual_kernel(dimex_residual_params p) {
  const int64_t b = blockIdx.x / p.rows;
  const ResidualRow<RT, YT> row(p, b, blockIdx.x - b * p.rows);
#pragma unroll 1
  for (int64_t c0 = kNormQuad * threadIdx.x; c0 < p.dim; c0 += kNormQuad * kResidualThreads)
    row.template apply_quad<kQuads>(p.dim, c0);
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_gated_residual_fwd(const dimex_residual_params* p, cudaStream_t stream) {
  using namespace dimex;
  const int status = check_residual_params(p);
  if (status != DIMEX_OK) return status;
  if (p->batch * p->rows > 0x7fffffff) return DIMEX_ERR_INVALID_ARGUMENT;
  (void)cudaGetLastError();  // an earlier, unrelated error must not be reported as this call's
  const unsigned blocks = static_cast<unsigned>(p->batch * p->rows);
  with_dtype(p->res_dtype, [&](auto rt) {
    with_dtype(p->y_dtype, [&](auto yt) {
      with_flag(residual_quads(*p), [&](auto quads) {
        residual_kernel<decltype(rt)::value, decltype(yt)::value, decltype(quads)::value>
            <<<blocks, kResidualThreads, 0, stream>>>(*p);
      });
    });
  });
  return cudaPeekAtLastError() == cudaSuccess ? DIMEX_OK : DIMEX_ERR_CUDA;
}

DIMEX_EXPORT int dimex_rms_norm_modulate_fwd(const dimex_norm_params* p, cudaStream_t stream) {
  using namespace dimex;
  const int status = check_norm_params(p);
  if (status != DIMEX_OK) return status;
  if ((p->batch * p->rows + kWarps - 1) / kWarps > 0x7fffffff) return DIMEX_ERR_INVALID_ARGUMENT;
  (void)cudaGetLastError();  // an earlier, unrelated error must not be reported as this call's
  const unsigned blocks = static_cast<unsigned>((p->batch * p->rows + kWarps - 1) / kWarps);
  with_dtype(p->x_dtype, [&](auto xt) {
    with_dtype(p->out_dtype, [&](auto ot) {
      with_flag(norm_quads(*p), [&](auto quads) {
        norm_kernel<decltype(xt)::value, decltype(ot)::value, decltype(quads)::value>
            <<<blocks, kWarps * 32, 0, stream>>>(*p);
      });
    });
  });
  return cudaPeekAtLastError() == cudaSuccess ? DIMEX_OK : DIMEX_ERR_CUDA;
}

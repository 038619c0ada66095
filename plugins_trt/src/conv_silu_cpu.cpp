// The causal conv1d + SiLU on the CPU (dimex_causal_conv1d_silu_fwd_cpu, include/dimexport_scan.h): rows (b, d) spread
// over OpenMP threads, each computed by conv_silu.h's arithmetic, as the CUDA kernel does, so the two agree bit for
// bit and the result does not depend on the thread count. x86-64 builds carry an AVX2+FMA copy of the row loop
// (hardware FMAs; without them fmaf is a libm call), chosen at run time.
#include "conv_silu.h"
#include "cpu_parallel.h"
#include "dtype_dispatch.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

namespace dimex {
namespace {

using RowFn = void (*)(const dimex_conv_params&, int64_t);

template <dimex_dtype DT, int K, bool kReverse>
DIMEX_HD void row_impl(const dimex_conv_params& p, int64_t row) {
  using T = typename Io<DT>::T;
  const int64_t b = row / p.dim, d = row - b * p.dim;
  const T* x = static_cast<const T*>(p.x) + b * p.x_stride[0] + d * p.x_stride[1];
  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + d * p.out_stride[1];
  const T* wrow = static_cast<const T*>(p.weight) + d * K;
  float w[K];
  for (int k = 0; k < K; ++k) w[k] = Io<DT>::load(wrow[k]);
  const float bias = p.bias ? Io<DT>::load(static_cast<const T*>(p.bias)[d]) : 0.0f;
  for (int64_t l = 0; l < p.seqlen; ++l)
    out[l * p.out_stride[2]] = Io<DT>::store(conv_silu_at<DT, K, kReverse>(x, p.x_stride[2], p.seqlen, l, w, bias));
}

template <dimex_dtype DT, int K, bool kReverse>
void row_default(const dimex_conv_params& p, int64_t row) { row_impl<DT, K, kReverse>(p, row); }

#ifdef DIMEX_CPU_X86
template <dimex_dtype DT, int K, bool kReverse>
__attribute__((target("avx2,fma"))) void row_avx2(const dimex_conv_params& p, int64_t row) {
  row_impl<DT, K, kReverse>(p, row);
}
#endif

template <dimex_dtype DT, int K, bool kReverse>
RowFn pick_row() {
#ifdef DIMEX_CPU_X86
  if (cpu_has_avx2_fma()) return row_avx2<DT, K, kReverse>;
#endif
  return row_default<DT, K, kReverse>;
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_causal_conv1d_silu_fwd_cpu(const dimex_conv_params* p, int num_threads) {
  using namespace dimex;
  const int status = check_conv_params(p);
  if (status != DIMEX_OK) return status;
  const RowFn fn = with_dtype(p->dtype, [&](auto dt) {
    return with_width(p->width, [&](auto k) {
      return with_flag(p->reverse != 0, [&](auto rev) {
        return pick_row<decltype(dt)::value, decltype(k)::value, decltype(rev)::value>();
      });
    });
  });
  parallel_items(p->batch * p->dim, num_threads, [&](int64_t row) { fn(*p, row); });
  return DIMEX_OK;
}

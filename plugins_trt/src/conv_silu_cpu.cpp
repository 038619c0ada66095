// The causal conv1d + SiLU on the CPU (dimex_causal_conv1d_silu_fwd_cpu, include/dimexport_scan.h): rows (b, d) spread
// over OpenMP threads, each computed by conv_silu.h's arithmetic, as the CUDA kernel does, so the two agree bit for
// bit and the result does not depend on the thread count. x86-64 builds carry an AVX2+FMA copy of the row loop
// (hardware FMAs; without them fmaf is a libm call), chosen at run time.
#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv_silu.h"

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

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
template <dimex_dtype DT, int K, bool kReverse>
__attribute__((target("avx2,fma"))) void row_avx2(const dimex_conv_params& p, int64_t row) {
  row_impl<DT, K, kReverse>(p, row);
}
#endif

template <dimex_dtype DT, int K, bool kReverse>
RowFn pick_row() {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
  static const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (fma) return row_avx2<DT, K, kReverse>;
#endif
  return row_default<DT, K, kReverse>;
}

template <dimex_dtype DT, int K>
RowFn pick_reverse(bool reverse) { return reverse ? pick_row<DT, K, true>() : pick_row<DT, K, false>(); }

template <dimex_dtype DT>
RowFn pick_width(int64_t width, bool reverse) {
  switch (width) {
    case 1: return pick_reverse<DT, 1>(reverse);
    case 2: return pick_reverse<DT, 2>(reverse);
    case 3: return pick_reverse<DT, 3>(reverse);
    case 4: return pick_reverse<DT, 4>(reverse);
    case 5: return pick_reverse<DT, 5>(reverse);
    case 6: return pick_reverse<DT, 6>(reverse);
    case 7: return pick_reverse<DT, 7>(reverse);
    default: return pick_reverse<DT, 8>(reverse);
  }
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_causal_conv1d_silu_fwd_cpu(const dimex_conv_params* p, int num_threads) {
  const int status = dimex::check_conv_params(p);
  if (status != DIMEX_OK) return status;
  const bool rev = p->reverse != 0;
  const dimex::RowFn fn = p->dtype == DIMEX_FLOAT16    ? dimex::pick_width<DIMEX_FLOAT16>(p->width, rev)
                          : p->dtype == DIMEX_BFLOAT16 ? dimex::pick_width<DIMEX_BFLOAT16>(p->width, rev)
                                                       : dimex::pick_width<DIMEX_FLOAT32>(p->width, rev);
  const int64_t rows = p->batch * p->dim;
#ifdef _OPENMP
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
  for (int64_t row = 0; row < rows; ++row) fn(*p, row);
  (void)num_threads;
  return DIMEX_OK;
}

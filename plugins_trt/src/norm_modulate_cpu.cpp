// RMSNorm + adaLN modulation and the gated residual on the CPU (dimex_rms_norm_modulate_fwd_cpu,
// dimex_gated_residual_fwd_cpu, include/dimexport_scan.h): rows spread over OpenMP threads; each norm row replays the
// CUDA kernel's order (32 lane partial sums, the xor butterfly), so the CPU and the GPU give the same bits for any
// thread count. x86-64 builds carry an AVX2+FMA copy of the norm (hardware FMAs).
#ifdef _OPENMP
#include <omp.h>
#endif

#include "norm_modulate.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

namespace dimex {
namespace {

using RowFn = void (*)(const dimex_norm_params&, int64_t);

template <dimex_dtype XT, dimex_dtype OT>
DIMEX_HD void norm_row(const dimex_norm_params& p, int64_t r) {
  using X = typename Io<XT>::T;
  using O = typename Io<OT>::T;
  const int64_t b = r / p.rows, l = r - b * p.rows;
  const X* x = static_cast<const X*>(p.x) + b * p.x_stride[0] + l * p.x_stride[1];
  O* out = static_cast<O*>(p.out) + b * p.out_stride[0] + l * p.out_stride[1];
  float part[kNormLanes];
  for (int lane = 0; lane < kNormLanes; ++lane) part[lane] = partial_sum_sq<XT>(x, p.x_stride[2], p.dim, lane);
  for (int off = kNormLanes / 2; off >= 1; off /= 2) {
    float next[kNormLanes];
    for (int lane = 0; lane < kNormLanes; ++lane) next[lane] = add_rn(part[lane], part[lane ^ off]);
    for (int lane = 0; lane < kNormLanes; ++lane) part[lane] = next[lane];
  }
  const float inv = inv_rms(part[0], p.dim, p.eps);
  for (int64_t c = 0; c < p.dim; ++c)
    out[c * p.out_stride[2]] = Io<OT>::store(modulate_at<OT>(p, b, c, Io<XT>::load(x[c * p.x_stride[2]]), inv));
}

template <dimex_dtype XT, dimex_dtype OT>
void row_default(const dimex_norm_params& p, int64_t r) { norm_row<XT, OT>(p, r); }

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
template <dimex_dtype XT, dimex_dtype OT>
__attribute__((target("avx2,fma"))) void row_avx2(const dimex_norm_params& p, int64_t r) { norm_row<XT, OT>(p, r); }
#endif

template <dimex_dtype XT, dimex_dtype OT>
RowFn pick() {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
  static const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (fma) return row_avx2<XT, OT>;
#endif
  return row_default<XT, OT>;
}

template <dimex_dtype XT>
RowFn pick_out(dimex_dtype out) {
  return out == DIMEX_FLOAT16 ? pick<XT, DIMEX_FLOAT16>() : out == DIMEX_BFLOAT16 ? pick<XT, DIMEX_BFLOAT16>()
                                                                                   : pick<XT, DIMEX_FLOAT32>();
}

template <dimex_dtype RT, dimex_dtype YT>
void residual_rows(const dimex_residual_params& p, int num_threads) {
  const int64_t rows = p.batch * p.rows;
#ifdef _OPENMP
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / p.rows, l = r - b * p.rows;
    for (int64_t c = 0; c < p.dim; ++c) gated_residual_at<RT, YT>(p, b, l, c);
  }
  (void)num_threads;
}

template <dimex_dtype RT>
void residual_y(const dimex_residual_params& p, int num_threads) {
  switch (p.y_dtype) {
    case DIMEX_FLOAT16: residual_rows<RT, DIMEX_FLOAT16>(p, num_threads); break;
    case DIMEX_BFLOAT16: residual_rows<RT, DIMEX_BFLOAT16>(p, num_threads); break;
    default: residual_rows<RT, DIMEX_FLOAT32>(p, num_threads); break;
  }
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_gated_residual_fwd_cpu(const dimex_residual_params* p, int num_threads) {
  const int status = dimex::check_residual_params(p);
  if (status != DIMEX_OK) return status;
  switch (p->res_dtype) {
    case DIMEX_FLOAT16: dimex::residual_y<DIMEX_FLOAT16>(*p, num_threads); break;
    case DIMEX_BFLOAT16: dimex::residual_y<DIMEX_BFLOAT16>(*p, num_threads); break;
    default: dimex::residual_y<DIMEX_FLOAT32>(*p, num_threads); break;
  }
  return DIMEX_OK;
}

DIMEX_EXPORT int dimex_rms_norm_modulate_fwd_cpu(const dimex_norm_params* p, int num_threads) {
  const int status = dimex::check_norm_params(p);
  if (status != DIMEX_OK) return status;
  const dimex::RowFn fn = p->x_dtype == DIMEX_FLOAT16    ? dimex::pick_out<DIMEX_FLOAT16>(p->out_dtype)
                          : p->x_dtype == DIMEX_BFLOAT16 ? dimex::pick_out<DIMEX_BFLOAT16>(p->out_dtype)
                                                         : dimex::pick_out<DIMEX_FLOAT32>(p->out_dtype);
  const int64_t rows = p->batch * p->rows;
#ifdef _OPENMP
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
  for (int64_t r = 0; r < rows; ++r) fn(*p, r);
  (void)num_threads;
  return DIMEX_OK;
}

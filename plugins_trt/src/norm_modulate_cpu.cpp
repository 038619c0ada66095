// RMSNorm + adaLN modulation and the gated residual on the CPU (dimex_rms_norm_modulate_fwd_cpu,
// dimex_gated_residual_fwd_cpu, include/dimexport_scan.h): rows spread over OpenMP threads; each norm row replays the
// CUDA kernel's order (32 lane partial sums, the xor butterfly), so the CPU and the GPU give the same bits for any
// thread count. x86-64 builds carry an AVX2+FMA copy of the norm (hardware FMAs).
#include "cpu_parallel.h"
#include "dtype_dispatch.h"
#include "norm_modulate.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

namespace dimex {
namespace {

using RowFn = void (*)(const dimex_norm_params&, int64_t);

template <dimex_dtype XT, dimex_dtype OT>
DIMEX_HD void norm_row(const dimex_norm_params& p, int64_t r) {
  const int64_t b = r / p.rows, l = r - b * p.rows;
  const NormRow<XT, OT> row(p, b, l);
  float part[kNormLanes];
  for (int lane = 0; lane < kNormLanes; ++lane) part[lane] = partial_sum_sq<XT>(row.x, row.xs, p.dim, lane);
  for (int off = kNormLanes / 2; off >= 1; off /= 2) {
    float next[kNormLanes];
    for (int lane = 0; lane < kNormLanes; ++lane) next[lane] = add_rn(part[lane], part[lane ^ off]);
    for (int lane = 0; lane < kNormLanes; ++lane) part[lane] = next[lane];
  }
  const float inv = inv_rms(part[0], p.dim, p.eps, row.valid);
  for (int64_t c0 = 0; c0 < p.dim; c0 += kNormQuad) {
    float v[kNormQuad];
    load_quad<XT>(row.x, row.xs, p.dim, c0, v);
    row.store_quad(p.dim, c0, v, inv);
  }
}

template <dimex_dtype XT, dimex_dtype OT>
void row_default(const dimex_norm_params& p, int64_t r) { norm_row<XT, OT>(p, r); }

#ifdef DIMEX_CPU_X86
template <dimex_dtype XT, dimex_dtype OT>
__attribute__((target("avx2,fma"))) void row_avx2(const dimex_norm_params& p, int64_t r) { norm_row<XT, OT>(p, r); }
#endif

template <dimex_dtype XT, dimex_dtype OT>
RowFn pick() {
#ifdef DIMEX_CPU_X86
  if (cpu_has_avx2_fma()) return row_avx2<XT, OT>;
#endif
  return row_default<XT, OT>;
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_gated_residual_fwd_cpu(const dimex_residual_params* p, int num_threads) {
  using namespace dimex;
  const int status = check_residual_params(p);
  if (status != DIMEX_OK) return status;
  with_dtype(p->res_dtype, [&](auto rt) {
    with_dtype(p->y_dtype, [&](auto yt) {
      parallel_items(p->batch * p->rows, num_threads, [&](int64_t r) {
        const int64_t b = r / p->rows, l = r - b * p->rows;
        const ResidualRow<decltype(rt)::value, decltype(yt)::value> row(*p, b, l);
        for (int64_t c0 = 0; c0 < p->dim; c0 += kNormQuad) row.apply_quad(p->dim, c0);
      });
    });
  });
  return DIMEX_OK;
}

DIMEX_EXPORT int dimex_rms_norm_modulate_fwd_cpu(const dimex_norm_params* p, int num_threads) {
  using namespace dimex;
  const int status = check_norm_params(p);
  if (status != DIMEX_OK) return status;
  const RowFn fn = with_dtype(p->x_dtype, [&](auto xt) {
    return with_dtype(p->out_dtype, [&](auto ot) { return pick<decltype(xt)::value, decltype(ot)::value>(); });
  });
  parallel_items(p->batch * p->rows, num_threads, [&](int64_t r) { fn(*p, r); });
  return DIMEX_OK;
}

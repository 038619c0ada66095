// RMSNorm + adaLN modulation of dimexport_scan.h: the single definition of its arithmetic, shared by the CUDA kernel
// (norm_modulate.cu, one warp per row) and the CPU kernel (norm_modulate_cpu.cpp, which replays the warp's order),
// so that the two give the same bits.
#pragma once

#include <cstdint>

#include "conv_silu.h"

namespace dimex {

constexpr int kNormLanes = 32;

inline bool io_dtype_ok(dimex_dtype t) { return t == DIMEX_FLOAT32 || t == DIMEX_FLOAT16 || t == DIMEX_BFLOAT16; }

inline int check_norm_params(const dimex_norm_params* p) {
  if (p == nullptr || !p->x || !p->weight || !p->out) return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->batch <= 0 || p->rows <= 0 || p->dim <= 0 || !(p->eps >= 0.0f)) return DIMEX_ERR_INVALID_ARGUMENT;
  if (!io_dtype_ok(p->x_dtype) || !io_dtype_ok(p->out_dtype)) return DIMEX_ERR_UNSUPPORTED;
  return DIMEX_OK;
}

// Lane `lane`'s partial sum of squares of one row: channels lane, lane + 32, ... in turn, with FMAs.
template <dimex_dtype XT>
DIMEX_HD float partial_sum_sq(const typename Io<XT>::T* row, int64_t sc, int64_t dim, int lane) {
  float acc = 0.0f;
  for (int64_t c = lane; c < dim; c += kNormLanes) {
    const float v = Io<XT>::load(row[c * sc]);
    acc = fmaf(v, v, acc);
  }
  return acc;
}

// 1 / sqrt(mean + eps) with IEEE square root and division (no rsqrt approximation): the same on both devices.
DIMEX_HD float inv_rms(float sum_sq, int64_t dim, float eps) {
  return 1.0f / sqrtf(add_rn(sum_sq / static_cast<float>(dim), eps));
}

// One output element from x, the row's inverse RMS, the weight and the (optional) modulation.
DIMEX_HD float modulate(float x, float inv, float w, const float* scale, const float* shift) {
  float y = mul_rn(mul_rn(x, inv), w);
  if (scale) y = mul_rn(y, add_rn(1.0f, *scale));
  if (shift) y = add_rn(y, *shift);
  return y;
}

}  // namespace dimex

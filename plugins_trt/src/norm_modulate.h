// RMSNorm + adaLN modulation and the gated residual of dimexport_scan.h: the single definition of their arithmetic,
// shared by the CUDA kernels (norm_modulate.cu; the norm one warp per row) and the CPU kernels (norm_modulate_cpu.cpp,
// which replay the warp's order), so that the two give the same bits.
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

constexpr int kNormQuad = 4;  // consecutive channels a lane takes per step

// Channels c0 .. c0 + 3 of a row as fp32, 0 past dim. On the GPU one 16-byte (fp32) or 8-byte (16-bit) load where the
// row is contiguous and aligned there: a warp per row then has a quarter of the loads in flight.
template <dimex_dtype XT>
DIMEX_HD void load_quad(const typename Io<XT>::T* row, int64_t sc, int64_t dim, int64_t c0, float (&v)[kNormQuad]) {
  using T = typename Io<XT>::T;
#if defined(__CUDA_ARCH__)
  if (sc == 1 && c0 + kNormQuad <= dim && reinterpret_cast<uintptr_t>(row + c0) % (kNormQuad * sizeof(T)) == 0) {
    if constexpr (sizeof(T) == 4) {
      const float4 q = *reinterpret_cast<const float4*>(row + c0);
      v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
      const uint2 q = *reinterpret_cast<const uint2*>(row + c0);
      v[0] = Io<XT>::load(static_cast<T>(q.x & 0xffffu)), v[1] = Io<XT>::load(static_cast<T>(q.x >> 16));
      v[2] = Io<XT>::load(static_cast<T>(q.y & 0xffffu)), v[3] = Io<XT>::load(static_cast<T>(q.y >> 16));
    }
    return;
  }
#endif
  for (int e = 0; e < kNormQuad; ++e) v[e] = c0 + e < dim ? Io<XT>::load(row[(c0 + e) * sc]) : 0.0f;
}

// Lane `lane`'s partial sum of squares of one row: channels 4 lane .. 4 lane + 3, then the next 128 channels' quad, ...
// in turn, with FMAs (the zeros past dim add nothing). The CPU kernel replays it for all 32 lanes.
template <dimex_dtype XT>
DIMEX_HD float partial_sum_sq(const typename Io<XT>::T* row, int64_t sc, int64_t dim, int lane) {
  float acc = 0.0f;
#pragma unroll 4
  for (int64_t c0 = kNormQuad * lane; c0 < dim; c0 += kNormQuad * kNormLanes) {
    float v[kNormQuad];
    load_quad<XT>(row, sc, dim, c0, v);
#pragma unroll
    for (int e = 0; e < kNormQuad; ++e) acc = fmaf(v[e], v[e], acc);
  }
  return acc;
}

// 1 / sqrt(mean + eps) with IEEE square root and division (no rsqrt approximation): the same on both devices.
DIMEX_HD float inv_rms(float sum_sq, int64_t dim, float eps) {
  return 1.0f / sqrtf(add_rn(sum_sq / static_cast<float>(dim), eps));
}

// Output channel c of batch b's row from its input value x and the row's inverse RMS: x * inv * weight, then the
// modulation when given.
template <dimex_dtype OT>
DIMEX_HD float modulate_at(const dimex_norm_params& p, int64_t b, int64_t c, float x, float inv) {
  using O = typename Io<OT>::T;
  float y = mul_rn(mul_rn(x, inv), Io<OT>::load(static_cast<const O*>(p.weight)[c]));
  if (p.scale)
    y = mul_rn(y, add_rn(1.0f, Io<OT>::load(static_cast<const O*>(p.scale)[b * p.scale_stride[0] +
                                                                          c * p.scale_stride[1]])));
  if (p.shift)
    y = add_rn(y, Io<OT>::load(static_cast<const O*>(p.shift)[b * p.shift_stride[0] + c * p.shift_stride[1]]));
  return y;
}

inline int check_residual_params(const dimex_residual_params* p) {
  if (p == nullptr || !p->residual || !p->y || !p->out) return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->batch <= 0 || p->rows <= 0 || p->dim <= 0) return DIMEX_ERR_INVALID_ARGUMENT;
  if (!io_dtype_ok(p->res_dtype) || !io_dtype_ok(p->y_dtype)) return DIMEX_ERR_UNSUPPORTED;
  return DIMEX_OK;
}

// residual + (1 + gate) * y, each operation rounded once in fp32 (gate 0: exactly residual + y).
DIMEX_HD float gated_residual(float residual, float gate, float y) {
  return add_rn(residual, mul_rn(add_rn(1.0f, gate), y));
}

// Element (b, l, c) of the gated residual.
template <dimex_dtype RT, dimex_dtype YT>
DIMEX_HD void gated_residual_at(const dimex_residual_params& p, int64_t b, int64_t l, int64_t c) {
  using R = typename Io<RT>::T;
  using Y = typename Io<YT>::T;
  const float r = Io<RT>::load(static_cast<const R*>(p.residual)[b * p.residual_stride[0] + l * p.residual_stride[1] +
                                                                 c * p.residual_stride[2]]);
  const float y = Io<YT>::load(static_cast<const Y*>(p.y)[b * p.y_stride[0] + l * p.y_stride[1] + c * p.y_stride[2]]);
  const float g = p.gate ? Io<YT>::load(static_cast<const Y*>(p.gate)[b * p.gate_stride[0] + c * p.gate_stride[1]])
                         : 0.0f;
  static_cast<R*>(p.out)[b * p.out_stride[0] + l * p.out_stride[1] + c * p.out_stride[2]] =
      Io<RT>::store(gated_residual(r, g, y));
}

}  // namespace dimex

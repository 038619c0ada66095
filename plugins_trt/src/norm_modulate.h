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

// 1 / sqrt(mean + eps) with IEEE square root and division (no rsqrt approximation): the same on both devices; NaN for
// a row that is not valid (NormRow::valid), which makes all its outputs NaN.
DIMEX_HD float inv_rms(float sum_sq, int64_t dim, float eps, bool valid) {
  return valid ? 1.0f / sqrtf(add_rn(sum_sq / static_cast<float>(dim), eps)) : NAN;
}

// One row (b, l) of the norm: its input, modulation and output located once, so that the kernels only add channel
// offsets; the row index (x_rows) is applied here.
template <dimex_dtype XT, dimex_dtype OT>
struct NormRow {
  using X = typename Io<XT>::T;
  using O = typename Io<OT>::T;
  bool valid;  // false for an x_rows index out of range: the row reads row l and comes out NaN
  const X* x;
  const O *weight, *scale, *shift;
  O* out;
  int64_t xs, ss, hs, os;  // channel strides

  DIMEX_HD NormRow(const dimex_norm_params& p, int64_t b, int64_t l)
      : valid(!p.x_rows || (p.x_rows[l] >= 0 && p.x_rows[l] < p.rows)),
        x(static_cast<const X*>(p.x) + b * p.x_stride[0] + (valid && p.x_rows ? p.x_rows[l] : l) * p.x_stride[1]),
        weight(static_cast<const O*>(p.weight)),
        scale(p.scale ? static_cast<const O*>(p.scale) + b * p.scale_stride[0] : nullptr),
        shift(p.shift ? static_cast<const O*>(p.shift) + b * p.shift_stride[0] : nullptr),
        out(static_cast<O*>(p.out) + b * p.out_stride[0] + l * p.out_stride[1]),
        xs(p.x_stride[2]), ss(p.scale_stride[1]), hs(p.shift_stride[1]), os(p.out_stride[2]) {}

  // Channel c's modulation as fp32: m[0] = weight, m[1] = 1 + scale, m[2] = shift (the last two when given).
  DIMEX_HD void modulation(int64_t c, float (&m)[3]) const {
    m[0] = Io<OT>::load(weight[c]);
    m[1] = scale ? add_rn(1.0f, Io<OT>::load(scale[c * ss])) : 1.0f;
    m[2] = shift ? Io<OT>::load(shift[c * hs]) : 0.0f;
  }

  // Stores channel c from its input value x, the row's inverse RMS and its modulation: x * inv * weight, then the
  // modulation when given.
  DIMEX_HD void store(int64_t c, float xv, float inv, const float (&m)[3]) const {
    float y = mul_rn(mul_rn(xv, inv), m[0]);
    if (scale) y = mul_rn(y, m[1]);
    if (shift) y = add_rn(y, m[2]);
    out[c * os] = Io<OT>::store(y);
  }
};

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

// One row (b, l) of the gated residual, located once (as NormRow, residual_rows applied here).
template <dimex_dtype RT, dimex_dtype YT>
struct ResidualRow {
  using R = typename Io<RT>::T;
  using Y = typename Io<YT>::T;
  bool valid;  // false for a residual_rows index out of range: the row reads row l and comes out NaN
  const R* residual;
  const Y *y, *gate;
  R* out;
  int64_t rs, ys, gs, os;  // channel strides

  DIMEX_HD ResidualRow(const dimex_residual_params& p, int64_t b, int64_t l)
      : valid(!p.residual_rows || (p.residual_rows[l] >= 0 && p.residual_rows[l] < p.rows)),
        residual(static_cast<const R*>(p.residual) + b * p.residual_stride[0] +
                 (valid && p.residual_rows ? p.residual_rows[l] : l) * p.residual_stride[1]),
        y(static_cast<const Y*>(p.y) + b * p.y_stride[0] + l * p.y_stride[1]),
        gate(p.gate ? static_cast<const Y*>(p.gate) + b * p.gate_stride[0] : nullptr),
        out(static_cast<R*>(p.out) + b * p.out_stride[0] + l * p.out_stride[1]),
        rs(p.residual_stride[2]), ys(p.y_stride[2]), gs(p.gate_stride[1]), os(p.out_stride[2]) {}

  // Channel c's inputs as fp32: v[0] = residual, v[1] = gate (0 without), v[2] = y.
  DIMEX_HD void load(int64_t c, float (&v)[3]) const {
    v[0] = valid ? Io<RT>::load(residual[c * rs]) : NAN;
    v[1] = gate ? Io<YT>::load(gate[c * gs]) : 0.0f;
    v[2] = Io<YT>::load(y[c * ys]);
  }

  DIMEX_HD void store(int64_t c, const float (&v)[3]) const {
    out[c * os] = Io<RT>::store(gated_residual(v[0], v[1], v[2]));
  }
};

}  // namespace dimex

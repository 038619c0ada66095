// RMSNorm + adaLN modulation and the gated residual of dimexport_scan.h: the single definition of their arithmetic,
// shared by the CUDA kernels (norm_modulate.cu; the norm one warp per row) and the CPU kernels (norm_modulate_cpu.cpp,
// which replay the warp's order), so that the two give the same bits.
#pragma once

#include <cstdint>
#include <initializer_list>

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

#ifdef __NVCC__  // with kAligned the scalar loops below are unreachable on the GPU, as meant
#pragma nv_diagnostic push
#pragma nv_diag_suppress 128
#endif
// Channels c0 .. c0 + 3 of a row as fp32, 0 past dim. On the GPU one 16-byte (fp32) or 8-byte (16-bit) load where the
// row is contiguous and aligned there: a warp per row then has a quarter of the loads in flight. kAligned: the caller
// knows that it is (quad_rows), so the kernel carries no scalar path.
template <dimex_dtype XT, bool kAligned = false>
DIMEX_HD void load_quad(const typename Io<XT>::T* row, int64_t sc, int64_t dim, int64_t c0, float (&v)[kNormQuad]) {
  using T = typename Io<XT>::T;
#if defined(__CUDA_ARCH__)
  if (kAligned ||
      (sc == 1 && c0 + kNormQuad <= dim && reinterpret_cast<uintptr_t>(row + c0) % (kNormQuad * sizeof(T)) == 0)) {
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

// Stores channels c0 .. c0 + 3 of a row (those below dim) from fp32: one 16-byte (fp32) or 8-byte (16-bit) store on
// the GPU where the row is contiguous and aligned there, as load_quad.
template <dimex_dtype T_, bool kAligned = false>
DIMEX_HD void store_quad(typename Io<T_>::T* row, int64_t sc, int64_t dim, int64_t c0, const float (&v)[kNormQuad]) {
  using T = typename Io<T_>::T;
#if defined(__CUDA_ARCH__)
  if (kAligned ||
      (sc == 1 && c0 + kNormQuad <= dim && reinterpret_cast<uintptr_t>(row + c0) % (kNormQuad * sizeof(T)) == 0)) {
    if constexpr (sizeof(T) == 4) {
      *reinterpret_cast<float4*>(row + c0) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      const auto pair = [](float a, float b) {
        return static_cast<unsigned>(Io<T_>::store(a)) | static_cast<unsigned>(Io<T_>::store(b)) << 16;
      };
      *reinterpret_cast<uint2*>(row + c0) = make_uint2(pair(v[0], v[1]), pair(v[2], v[3]));
    }
    return;
  }
#endif
  for (int e = 0; e < kNormQuad; ++e)
    if (c0 + e < dim) row[(c0 + e) * sc] = Io<T_>::store(v[e]);
}

#ifdef __NVCC__
#pragma nv_diagnostic pop
#endif

// Lane `lane`'s partial sum of squares of one row: channels 4 lane .. 4 lane + 3, then the next 128 channels' quad, ...
// in turn, with FMAs (the zeros past dim add nothing). The CPU kernel replays it for all 32 lanes.
template <dimex_dtype XT, bool kAligned = false>
DIMEX_HD float partial_sum_sq(const typename Io<XT>::T* row, int64_t sc, int64_t dim, int lane) {
  float acc = 0.0f;
#pragma unroll 4
  for (int64_t c0 = kNormQuad * lane; c0 < dim; c0 += kNormQuad * kNormLanes) {
    float v[kNormQuad];
    load_quad<XT, kAligned>(row, sc, dim, c0, v);
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

  // Channels c0 .. c0 + 3 (those below dim) from their input values v and the row's inverse RMS: x * inv * weight,
  // then the modulation when given; the weight, scale and shift read and the output written a quad at a time.
  template <bool kAligned = false>
  DIMEX_HD void store_quad(int64_t dim, int64_t c0, const float (&v)[kNormQuad], float inv) const {
    float w[kNormQuad], s[kNormQuad], h[kNormQuad], y[kNormQuad];
    load_quad<OT, kAligned>(weight, 1, dim, c0, w);
    if (scale) load_quad<OT, kAligned>(scale, ss, dim, c0, s);
    if (shift) load_quad<OT, kAligned>(shift, hs, dim, c0, h);
#pragma unroll
    for (int e = 0; e < kNormQuad; ++e) {
      y[e] = mul_rn(mul_rn(v[e], inv), w[e]);
      if (scale) y[e] = mul_rn(y[e], add_rn(1.0f, s[e]));
      if (shift) y[e] = add_rn(y[e], h[e]);
    }
    dimex::store_quad<OT, kAligned>(out, os, dim, c0, y);
  }
};

// Whether every row of an operand is whole aligned quads (load_quad's vector path everywhere): channels contiguous, the
// base pointer and every other stride multiples of a quad; the kernels add dim % 4 == 0.
inline bool quad_rows(const void* base, dimex_dtype dtype, int64_t channel_stride,
                      std::initializer_list<int64_t> strides) {
  const uintptr_t quad_bytes = kNormQuad * (dtype == DIMEX_FLOAT32 ? 4 : 2);
  if (channel_stride != 1 || reinterpret_cast<uintptr_t>(base) % quad_bytes != 0) return false;
  for (const int64_t s : strides)
    if (s % kNormQuad != 0) return false;
  return true;
}

inline bool norm_quads(const dimex_norm_params& p) {
  return p.dim % kNormQuad == 0 && quad_rows(p.x, p.x_dtype, p.x_stride[2], {p.x_stride[0], p.x_stride[1]}) &&
         quad_rows(p.weight, p.out_dtype, 1, {}) && quad_rows(p.out, p.out_dtype, p.out_stride[2],
                                                              {p.out_stride[0], p.out_stride[1]}) &&
         (!p.scale || quad_rows(p.scale, p.out_dtype, p.scale_stride[1], {p.scale_stride[0]})) &&
         (!p.shift || quad_rows(p.shift, p.out_dtype, p.shift_stride[1], {p.shift_stride[0]}));
}

inline int check_residual_params(const dimex_residual_params* p) {
  if (p == nullptr || !p->residual || !p->y || !p->out) return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->batch <= 0 || p->rows <= 0 || p->dim <= 0) return DIMEX_ERR_INVALID_ARGUMENT;
  if (!io_dtype_ok(p->res_dtype) || !io_dtype_ok(p->y_dtype)) return DIMEX_ERR_UNSUPPORTED;
  return DIMEX_OK;
}

inline bool residual_quads(const dimex_residual_params& p) {
  return p.dim % kNormQuad == 0 &&
         quad_rows(p.residual, p.res_dtype, p.residual_stride[2], {p.residual_stride[0], p.residual_stride[1]}) &&
         quad_rows(p.y, p.y_dtype, p.y_stride[2], {p.y_stride[0], p.y_stride[1]}) &&
         (!p.gate || quad_rows(p.gate, p.y_dtype, p.gate_stride[1], {p.gate_stride[0]})) &&
         quad_rows(p.out, p.res_dtype, p.out_stride[2], {p.out_stride[0], p.out_stride[1]});
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

  // Channels c0 .. c0 + 3 (those below dim), each input read and the output written a quad at a time.
  template <bool kAligned = false>
  DIMEX_HD void apply_quad(int64_t dim, int64_t c0) const {
    float r[kNormQuad], g[kNormQuad] = {0.0f, 0.0f, 0.0f, 0.0f}, v[kNormQuad];
    load_quad<RT, kAligned>(residual, rs, dim, c0, r);
    if (gate) load_quad<YT, kAligned>(gate, gs, dim, c0, g);
    load_quad<YT, kAligned>(y, ys, dim, c0, v);
#pragma unroll
    for (int e = 0; e < kNormQuad; ++e) v[e] = gated_residual(valid ? r[e] : NAN, g[e], v[e]);
    store_quad<RT, kAligned>(out, os, dim, c0, v);
  }
};

}  // namespace dimex

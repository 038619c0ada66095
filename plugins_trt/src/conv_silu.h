// The causal conv1d + SiLU of dimexport_scan.h, one output at a time: the single definition of its arithmetic, shared
// by the CUDA kernel (conv_silu.cu) and the CPU kernel (conv_silu_cpu.cpp) so that the two give the same bits.
#pragma once

#include <cstdint>

#include "dimexport_scan.h"
#include "scan_math_common.h"

namespace dimex {

// The argument checks of both entries (sizes, dtype, pointers).
inline int check_conv_params(const dimex_conv_params* p) {
  if (p == nullptr || !p->x || !p->weight || !p->out) return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->batch <= 0 || p->dim <= 0 || p->seqlen <= 0 || p->width < 1 || p->width > DIMEX_CONV_MAX_WIDTH)
    return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->dtype != DIMEX_FLOAT32 && p->dtype != DIMEX_FLOAT16 && p->dtype != DIMEX_BFLOAT16)
    return DIMEX_ERR_UNSUPPORTED;
  return DIMEX_OK;
}

template <dimex_dtype DT>
struct Io;
template <>
struct Io<DIMEX_FLOAT32> {
  using T = float;
  static DIMEX_HD float load(T v) { return v; }
  static DIMEX_HD T store(float v) { return v; }
};
template <>
struct Io<DIMEX_FLOAT16> {
  using T = uint16_t;
  static DIMEX_HD float load(T v) { return half_to_float(v); }
  static DIMEX_HD T store(float v) { return float_to_half(v); }
};
template <>
struct Io<DIMEX_BFLOAT16> {
  using T = uint16_t;
  static DIMEX_HD float load(T v) { return bf16_to_float(v); }
  static DIMEX_HD T store(float v) { return float_to_bf16(v); }
};

DIMEX_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// SiLU in fp32 through the shared FMA-only exp2 (relative error 9e-8), so the CPU and the GPU agree bit for bit
// (libm's and CUDA's expf may differ in the last place); one IEEE division.
DIMEX_HD float silu(float a) { return a / add_rn(1.0f, ex2_poly(mul_rn(-a, kLog2e))); }

// One output from the K inputs it reads, win[j] = x[l + off + j] with off = -(K-1) (causal) or 0 (reverse), w/bias
// already fp32. The taps are summed in a fixed order (k = 0..K-1, then the bias) with explicit FMAs on both devices;
// every kernel goes through here, so they all give the same bits.
template <int K, bool kReverse>
DIMEX_HD float conv_silu_window(const float (&win)[K], const float* w, float bias) {
  float acc = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) acc = fmaf(w[k], win[kReverse ? K - 1 - k : k], acc);
  return silu(add_rn(acc, bias));
}

// The first input position of output l's window.
template <int K, bool kReverse>
DIMEX_HD int64_t window_start(int64_t l) { return kReverse ? l : l - (K - 1); }

// x[pos] of one (b, d) row as fp32, 0 outside 0..seqlen-1 (the conv's zero padding): `row` points at x[b, d, 0], `sl`
// is x's token stride.
template <dimex_dtype DT>
DIMEX_HD float x_at(const typename Io<DT>::T* row, int64_t sl, int64_t seqlen, int64_t pos) {
  return (pos >= 0 && pos < seqlen) ? Io<DT>::load(row[pos * sl]) : 0.0f;
}

// out[l] of one (b, d) row (`row`, `sl` as for x_at).
template <dimex_dtype DT, int K, bool kReverse>
DIMEX_HD float conv_silu_at(const typename Io<DT>::T* row, int64_t sl, int64_t seqlen, int64_t l, const float* w,
                            float bias) {
  float win[K];
  const int64_t start = window_start<K, kReverse>(l);
#pragma unroll
  for (int j = 0; j < K; ++j) win[j] = x_at<DT>(row, sl, seqlen, start + j);
  return conv_silu_window<K, kReverse>(win, w, bias);
}

}  // namespace dimex

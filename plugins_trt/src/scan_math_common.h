// Scalar math shared by the CUDA kernel (scan_math.cuh) and the CPU kernel (scan_cpu.cpp), so the two cannot
// drift: the polynomial exp2, softplus's log1p polynomial, and fp16/bf16 <-> fp32 conversions in plain integer
// and float arithmetic (vectorisable on the CPU, no intrinsics needed). On the device each function is compiled
// exactly as the kernel always used it (round-to-nearest adds where the order matters).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DIMEX_HD __host__ __device__ __forceinline__
#else
#define DIMEX_HD inline __attribute__((always_inline))
#endif

namespace dimex {

constexpr float kLog2e = 1.4426950408889634f;

DIMEX_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

DIMEX_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// a + b and a - b rounded once each (never contracted with a neighbouring multiply).
DIMEX_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
DIMEX_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// max(a, b) for a number b: a NaN a gives b. The device's fmaxf; on the host a compare-and-select, which
// vectorises (libm's fmaxf is a call unless -ffast-math).
DIMEX_HD float max_or(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fmaxf(a, b);
#else
  return a > b ? a : b;
#endif
}
DIMEX_HD float min_or(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fminf(a, b);
#else
  return a < b ? a : b;
#endif
}

// 2^x with FMAs only (the CUDA kernel's FMA-pipe offload, the CPU kernel's exp). x = j + f with j = rint(x),
// f in [-0.5, 0.5]; 2^f = 1 + f * r(f) with r a degree-5 near-minimax fit of (2^f - 1)/f, so decays close to 1
// keep their relative accuracy in (1 - decay) (scan_kernels.md §7b trap 5): max relative error 9e-8. x is
// clamped to [-126, 126]: below, a decay of 1e-38 (zero for the state); above, a value no caller reaches
// (silu's exp(-z) for z < -87 is then 2^126 instead of inf, so silu returns -1e-36 instead of -0).
DIMEX_HD float ex2_poly(float x) {
  x = min_or(max_or(x, -126.0f), 126.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits
  const float t = add_rn(x, magic);
  const float j = sub_rn(t, magic);
  const float f = sub_rn(x, j);
  float r = 1.540351223e-04f;
  r = fmaf(r, f, 1.339073526e-03f);
  r = fmaf(r, f, 9.618237615e-03f);
  r = fmaf(r, f, 5.550357327e-02f);
  r = fmaf(r, f, 2.402264923e-01f);
  r = fmaf(r, f, 6.931471825e-01f);
  const float p = fmaf(f, r, 1.0f);
  // The integer j sits in the low bits of t; shifting t's bits by 23 moves it into the exponent field
  // (the magic's own bits shift out of the 32-bit word).
  return bits_to_float(float_to_bits(p) + (float_to_bits(t) << 23));
}

// softplus with PyTorch's threshold (x > 20 -> x), given e = exp(-|x|): max(x, 0) + log1p(e), with
// log1p(e) = e * q(e) and q a degree-7 near-minimax fit of log1p(e)/e on [0, 1] (max relative error 4e-7).
// Accurate to a few ulp everywhere, also for small dt (log(1 + e) computed directly would not be).
DIMEX_HD float softplus_from_exp(float x, float e) {
  float q = -8.539198898e-03f;
  q = fmaf(q, e, 4.408959672e-02f);
  q = fmaf(q, e, -1.076816618e-01f);
  q = fmaf(q, e, 1.774523854e-01f);
  q = fmaf(q, e, -2.449546158e-01f);
  q = fmaf(q, e, 3.327547908e-01f);
  q = fmaf(q, e, -4.999740422e-01f);
  q = fmaf(q, e, 9.999998212e-01f);
  const float r = fmaf(e, q, max_or(x, 0.0f));
  return x > 20.0f ? x : r;
}

// The conversions between fp32 and the 16-bit formats: on the GPU the hardware's (one cvt each: exact, and round to
// nearest even), on the CPU the bit-exact software ones below, so both devices give the same bits (NaNs aside: each
// gives a quiet NaN of its own payload). The software float -> half alone was 15 instructions per element of the
// fused ops' SASS (sm_90).

// IEEE half (bits) -> float, exact, branch-free: the exponent is rebased by a multiply by 2^112, which also
// normalises subnormals; infinities and NaNs get the all-ones exponent back.
DIMEX_HD float half_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  const float mag = bits_to_float(em << 13) * bits_to_float(0x77800000u);  // * 2^112
  const uint32_t inf_nan = em >= 0x7c00u ? 0x7f800000u : 0u;
  return bits_to_float(sign | float_to_bits(mag) | inf_nan);
#endif
}

// float -> IEEE half (bits), rounded to nearest even, branch-free (the FP16 library's method: the rounding is
// done by a float add at a rebased exponent). Overflow gives inf, NaN a quiet NaN.
DIMEX_HD uint16_t float_to_half(float f) {
#if defined(__CUDA_ARCH__)
  uint16_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
#else
  const float scale_to_inf = bits_to_float(0x77800000u);   // 2^112
  const float scale_to_zero = bits_to_float(0x08800000u);  // 2^-110
  float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = float_to_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xff000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = bits_to_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = float_to_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007c00u) + (bits & 0x00000fffu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
#endif
}

DIMEX_HD float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// float -> bfloat16 (bits), rounded to nearest even; NaN stays a (quiet) NaN.
DIMEX_HD uint16_t float_to_bf16(float f) {
#if defined(__CUDA_ARCH__)
  uint16_t h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
#else
  const uint32_t u = float_to_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : rounded);
#endif
}

}  // namespace dimex

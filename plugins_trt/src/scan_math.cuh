// Scalar math of the selective-scan kernel: explicit special-function intrinsics (the library is built
// without --use_fast_math), an accurate softplus, and a polynomial exp2 that runs on the FMA pipes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

namespace dimex {

constexpr float kLog2e = 1.4426950408889634f;

// 2^x on the special-function unit. Max error ~2 ulp; denormal results flush to zero, which only
// affects decays below 1e-38 (their contribution to the state is far below fp32 resolution).
__device__ __forceinline__ float ex2_sfu(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 1/x on the special-function unit (~1 ulp). rcp(inf) = 0, which the gate relies on.
__device__ __forceinline__ float rcp_sfu(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 2^x on the FMA pipes (FlashAttention-3 style offload). x = j + f with j = rint(x), f in [-0.5, 0.5];
// 2^f = 1 + f * r(f) with r a degree-5 near-minimax fit of (2^f - 1)/f, so that decays close to 1 keep
// their relative accuracy in (1 - decay) (scan_kernels.md §7b trap 5): max relative error 9e-8 over the
// range, better than ex2.approx. Inputs below -126 return 2^-126 (a decay of 1e-38, i.e. zero for the
// state); the kernel only passes x = dt * A * log2(e) <= 0.
__device__ __forceinline__ float ex2_poly(float x) {
  x = fmaxf(x, -126.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits
  const float t = __fadd_rn(x, magic);
  const float j = __fsub_rn(t, magic);
  const float f = __fsub_rn(x, j);
  float r = 1.540351223e-04f;
  r = fmaf(r, f, 1.339073526e-03f);
  r = fmaf(r, f, 9.618237615e-03f);
  r = fmaf(r, f, 5.550357327e-02f);
  r = fmaf(r, f, 2.402264923e-01f);
  r = fmaf(r, f, 6.931471825e-01f);
  const float p = fmaf(f, r, 1.0f);
  // The integer j sits in the low bits of t; shifting t's bits by 23 moves it into the exponent field
  // (the magic's own bits shift out of the 32-bit word).
  return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}

// softplus with PyTorch's threshold (x > 20 -> x), accurate to a few ulp everywhere:
// softplus(x) = max(x, 0) + log1p(e) with e = exp(-|x|) in (0, 1], and log1p(e) = e * q(e) with q a
// degree-7 near-minimax fit of log1p(e)/e on [0, 1] (max relative error 4e-7). One SFU op. Computing
// log(1 + e) with lg2.approx instead loses all relative accuracy for small dt (lg2 near 1 has an
// absolute, not relative, error bound).
__device__ __forceinline__ float softplus_acc(float x) {
  const float e = ex2_sfu(-fabsf(x) * kLog2e);
  float q = -8.539198898e-03f;
  q = fmaf(q, e, 4.408959672e-02f);
  q = fmaf(q, e, -1.076816618e-01f);
  q = fmaf(q, e, 1.774523854e-01f);
  q = fmaf(q, e, -2.449546158e-01f);
  q = fmaf(q, e, 3.327547908e-01f);
  q = fmaf(q, e, -4.999740422e-01f);
  q = fmaf(q, e, 9.999998212e-01f);
  const float r = fmaf(e, q, fmaxf(x, 0.0f));
  return x > 20.0f ? x : r;
}

// z * sigmoid(z) = z / (1 + exp(-z)); two SFU ops. For z -> -inf, exp overflows to inf and rcp gives 0.
__device__ __forceinline__ float silu_acc(float z) {
  return z * rcp_sfu(1.0f + ex2_sfu(-z * kLog2e));
}

// ---- element access for fp32 / fp16 / bf16 I/O ---------------------------------------------------
// Staged runs are kept as packed 32-bit words; get(w, k) reads element k (k a compile-time index after
// unrolling), put2 packs elements k and k+1 (k even) from fp32, rounding to nearest.

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T> struct Elem;

template <> struct Elem<float> {
  __device__ static __forceinline__ float get(const uint32_t* w, int k) { return __uint_as_float(w[k]); }
  __device__ static __forceinline__ void put2(uint32_t* w, int k, float a, float b) {
    w[k] = __float_as_uint(a);
    w[k + 1] = __float_as_uint(b);
  }
};

template <> struct Elem<__half> {
  __device__ static __forceinline__ float get(const uint32_t* w, int k) {
    const uint32_t x = w[k >> 1];
    return __half2float(__ushort_as_half(static_cast<unsigned short>((k & 1) ? (x >> 16) : (x & 0xffffu))));
  }
  __device__ static __forceinline__ void put2(uint32_t* w, int k, float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    w[k >> 1] = *reinterpret_cast<const uint32_t*>(&h);
  }
};

template <> struct Elem<__nv_bfloat16> {
  __device__ static __forceinline__ float get(const uint32_t* w, int k) {
    const uint32_t x = w[k >> 1];
    return __uint_as_float((k & 1) ? (x & 0xffff0000u) : (x << 16));
  }
  __device__ static __forceinline__ void put2(uint32_t* w, int k, float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    w[k >> 1] = *reinterpret_cast<const uint32_t*>(&h);
  }
};

}  // namespace dimex

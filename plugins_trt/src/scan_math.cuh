// Scalar math of the selective-scan kernel: explicit special-function intrinsics (the library is built
// without --use_fast_math), an accurate softplus, and a polynomial exp2 that runs on the FMA pipes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#include "scan_math_common.h"

namespace dimex {

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

// softplus with PyTorch's threshold (x > 20 -> x), accurate to a few ulp everywhere (scan_math_common.h). One
// SFU op. Computing log(1 + e) with lg2.approx instead loses all relative accuracy for small dt (lg2 near 1 has an
// absolute, not relative, error bound).
__device__ __forceinline__ float softplus_acc(float x) { return softplus_from_exp(x, ex2_sfu(-fabsf(x) * kLog2e)); }

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

// The fused selective-scan forward on the CPU: the C ABI's dimex_selective_scan_fwd_cpu. Same semantics and
// parameters as the CUDA kernel (include/dimexport_scan.h), the same math (scan_math_common.h).
//
// Work is split into items of (batch, block of kW channels of one group), spread over OpenMP threads; an item
// walks its sequence in tiles of kT tokens. A tile's inputs are converted to fp32 and transposed to
// token-major [t][channel] buffers, so the recurrence runs kW channels per vector (B_t and C_t are shared by the
// channels of a group, one broadcast each), with the fp32 state h[n][channel] staying in registers and L1. Nothing
// of size (batch, dim, seqlen, dstate) exists. Each item is computed the same way whichever thread runs it, so
// the result does not depend on the thread count. x86-64 builds carry AVX2+FMA (8 channels per vector) and
// AVX-512 (16) copies of the item function, chosen at run time from the CPU's features (GCC's target_clones would
// choose "arch=" clones by CPU model); every copy gives the same bits, since each channel's arithmetic is the same
// (explicit FMAs, no contraction, no reduction across channels). DIMEX_SCAN_CPU_NO_AVX512=1 skips AVX-512.
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "dimexport_scan.h"
#include "scan_math_common.h"
#include "scan_validate.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define DIMEX_CPU_X86 1
#endif

namespace dimex {
namespace {

constexpr int kT = 64;  // tokens per tile

DIMEX_HD float load_elem(const void* p, int64_t i, dimex_dtype dt) {
  switch (dt) {
    case DIMEX_FLOAT16: return half_to_float(static_cast<const uint16_t*>(p)[i]);
    case DIMEX_BFLOAT16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

DIMEX_HD void store_elem(void* p, int64_t i, float v, dimex_dtype dt) {
  switch (dt) {
    case DIMEX_FLOAT16: static_cast<uint16_t*>(p)[i] = float_to_half(v); break;
    case DIMEX_BFLOAT16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// One item: batch b, channels [d0, d0 + nc) of group g (nc <= kW), every token. NP: dstate rounded up to 16, 32
// or 64 (padded states have A = B = C = 0 and stay 0). kW: channels per vector (8 for AVX2, 16 for AVX-512); each
// channel's arithmetic is the same whatever kW is, so every variant gives the same bits.
template <int NP, int kW>
DIMEX_HD void scan_item(const dimex_scan_params* p, int64_t b, int64_t g, int64_t d0, int nc) {
  const dimex_dtype dt = p->dtype;
  const int N = static_cast<int>(p->dstate);
  const int64_t L = p->seqlen;
  alignas(64) float A2[NP][kW];  // A * log2(e), per state and channel
  alignas(64) float h[NP][kW] = {};
  alignas(64) float dtv[kT][kW], dtu[kT][kW], uu[kT][kW], zz[kT][kW], y[kT][kW];
  alignas(64) float Bt[kT][NP], Ct[kT][NP];
  float Dv[kW], bias[kW];
  for (int n = 0; n < NP; ++n)
    for (int c = 0; c < kW; ++c) A2[n][c] = (n < N && c < nc) ? p->A[(d0 + c) * N + n] * kLog2e : 0.0f;
  for (int c = 0; c < kW; ++c) {
    Dv[c] = (p->D && c < nc) ? p->D[d0 + c] : 0.0f;
    bias[c] = (p->delta_bias && c < nc) ? p->delta_bias[d0 + c] : 0.0f;
  }
  const int64_t ntiles = (L + kT - 1) / kT;
  for (int64_t k = 0; k < ntiles; ++k) {
    const int64_t tile = p->reverse ? ntiles - 1 - k : k;
    const int64_t l0 = tile * kT;
    const int len = static_cast<int>(std::min<int64_t>(kT, L - l0));
    // Stage: fp32, token-major. Channels past nc and tokens past len are zeros that are never stored.
    for (int c = 0; c < kW; ++c) {
      const bool live = c < nc;
      const int64_t d = d0 + (live ? c : 0);
      const int64_t ou = b * p->u_stride[0] + d * p->u_stride[1];
      const int64_t od = b * p->delta_stride[0] + d * p->delta_stride[1];
      const int64_t oz = p->z ? b * p->z_stride[0] + d * p->z_stride[1] : 0;
      for (int t = 0; t < kT; ++t) {
        const bool in = live && t < len;
        uu[t][c] = in ? load_elem(p->u, ou + (l0 + t) * p->u_stride[2], dt) : 0.0f;
        dtv[t][c] = in ? load_elem(p->delta, od + (l0 + t) * p->delta_stride[2], dt) + bias[c] : 0.0f;
        zz[t][c] = in && p->z ? load_elem(p->z, oz + (l0 + t) * p->z_stride[2], dt) : 0.0f;
      }
    }
    if (p->delta_softplus)
      for (int t = 0; t < kT; ++t)
#pragma omp simd
        for (int c = 0; c < kW; ++c) dtv[t][c] = softplus_from_exp(dtv[t][c], ex2_poly(-fabsf(dtv[t][c]) * kLog2e));
    for (int t = 0; t < kT; ++t)
#pragma omp simd
      for (int c = 0; c < kW; ++c) dtu[t][c] = dtv[t][c] * uu[t][c];
    const int64_t oB = b * p->B_stride[0] + g * p->B_stride[1], oC = b * p->C_stride[0] + g * p->C_stride[1];
    for (int n = 0; n < NP; ++n)
      for (int t = 0; t < kT; ++t) {
        const bool in = n < N && t < len;
        Bt[t][n] = in ? load_elem(p->B, oB + n * p->B_stride[2] + (l0 + t) * p->B_stride[3], dt) : 0.0f;
        Ct[t][n] = in ? load_elem(p->C, oC + n * p->C_stride[2] + (l0 + t) * p->C_stride[3], dt) : 0.0f;
      }
    // The recurrence, kW channels at a time: h = 2^(dt A log2 e) h + dt u B_t, y = <h, C_t>.
    for (int s = 0; s < len; ++s) {
      const int t = p->reverse ? len - 1 - s : s;
      float acc[kW] = {};
      for (int n = 0; n < NP; ++n) {
        const float bn = Bt[t][n], cn = Ct[t][n];
#pragma omp simd
        for (int c = 0; c < kW; ++c) {
          const float decay = ex2_poly(dtv[t][c] * A2[n][c]);
          h[n][c] = fmaf(decay, h[n][c], dtu[t][c] * bn);
          acc[c] = fmaf(h[n][c], cn, acc[c]);
        }
      }
      for (int c = 0; c < kW; ++c) y[t][c] = fmaf(Dv[c], uu[t][c], acc[c]);
    }
    // Gate and store: out = y * silu(z), silu(z) = z / (1 + 2^(-z log2 e)).
    if (p->z)
      for (int t = 0; t < len; ++t)
#pragma omp simd
        for (int c = 0; c < kW; ++c) y[t][c] *= zz[t][c] / (1.0f + ex2_poly(-zz[t][c] * kLog2e));
    for (int c = 0; c < nc; ++c) {
      const int64_t oo = b * p->out_stride[0] + (d0 + c) * p->out_stride[1];
      for (int t = 0; t < len; ++t) store_elem(p->out, oo + (l0 + t) * p->out_stride[2], y[t][c], dt);
    }
  }
}

using ItemFn = void (*)(const dimex_scan_params*, int64_t, int64_t, int64_t, int);

// A variant: the item function for NP states, and its channels per item.
struct Variant {
  ItemFn fn;
  int width;
};

template <int NP>
void item_base(const dimex_scan_params* p, int64_t b, int64_t g, int64_t d0, int nc) {
  scan_item<NP, 8>(p, b, g, d0, nc);
}

#ifdef DIMEX_CPU_X86
template <int NP>
__attribute__((target("avx2,fma"))) void item_avx2(const dimex_scan_params* p, int64_t b, int64_t g, int64_t d0,
                                                   int nc) {
  scan_item<NP, 8>(p, b, g, d0, nc);
}

template <int NP>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))) void item_avx512(const dimex_scan_params* p, int64_t b,
                                                                               int64_t g, int64_t d0, int nc) {
  scan_item<NP, 16>(p, b, g, d0, nc);
}
#endif

template <int NP>
Variant variant() {
#ifdef DIMEX_CPU_X86
  static const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool avx512 = fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                             __builtin_cpu_supports("avx512dq") && std::getenv("DIMEX_SCAN_CPU_NO_AVX512") == nullptr;
  if (avx512) return {item_avx512<NP>, 16};
  if (fma) return {item_avx2<NP>, 8};
#endif
  return {item_base<NP>, 8};
}

template <int NP>
void scan_all(const dimex_scan_params* p, int num_threads) {
  const Variant v = variant<NP>();
  const int64_t dg = p->dim / p->ngroups;
  const int64_t blocks = (dg + v.width - 1) / v.width;  // channel blocks per group: none straddles two groups
  const int64_t items = p->batch * p->ngroups * blocks;
#ifdef _OPENMP
  const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
#else
  (void)num_threads;  // built without OpenMP: one thread
#endif
  for (int64_t i = 0; i < items; ++i) {
    const int64_t blk = i % blocks, g = (i / blocks) % p->ngroups, b = i / (blocks * p->ngroups);
    const int64_t d0 = g * dg + blk * v.width;
    v.fn(p, b, g, d0, static_cast<int>(std::min<int64_t>(v.width, dg - blk * v.width)));
  }
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_selective_scan_fwd_cpu(const dimex_scan_params* p, int num_threads) {
  using namespace dimex;
  const int status = check_scan_params(p);
  if (status != DIMEX_OK) return status;
  if (p->dstate <= 16) scan_all<16>(p, num_threads);
  else if (p->dstate <= 32) scan_all<32>(p, num_threads);
  else scan_all<64>(p, num_threads);
  return DIMEX_OK;
}

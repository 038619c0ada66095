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
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "cpu_parallel.h"
#include "dimexport_scan.h"
#include "scan_math_common.h"
#include "scan_validate.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))


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

// A block of W channels [d0, d0 + nc) of one group: its fp32 parameters, and one tile of its inputs staged as fp32,
// token-major. Channels past nc and tokens past len are zeros that are never stored. NP: dstate rounded up to 16,
// 32 or 64 (padded states have A = B = C = 0 and stay 0). Shared by the forward and the backward, so both compute
// dt, dt*u and the states from the same values.
template <int NP, int W>
struct Block {
  alignas(64) float Af[NP][W], A2[NP][W];  // A, and A * log2(e)
  float Dv[W], bias[W];
  alignas(64) float xr[kT][W], dtv[kT][W], dtu[kT][W], uu[kT][W], zz[kT][W];  // delta + bias, dt, dt*u, u, z
  alignas(64) float Bt[kT][NP], Ct[kT][NP];

  DIMEX_HD void setup(const dimex_scan_params* p, int64_t d0, int nc) {
    const int N = static_cast<int>(p->dstate);
    for (int n = 0; n < NP; ++n)
      for (int c = 0; c < W; ++c) {
        Af[n][c] = (n < N && c < nc) ? p->A[(d0 + c) * N + n] : 0.0f;
        A2[n][c] = Af[n][c] * kLog2e;
      }
    for (int c = 0; c < W; ++c) {
      Dv[c] = (p->D && c < nc) ? p->D[d0 + c] : 0.0f;
      bias[c] = (p->delta_bias && c < nc) ? p->delta_bias[d0 + c] : 0.0f;
    }
  }

  DIMEX_HD void stage(const dimex_scan_params* p, int64_t b, int64_t g, int64_t d0, int nc, int64_t l0, int len) {
    const dimex_dtype dt = p->dtype;
    const int N = static_cast<int>(p->dstate);
    for (int c = 0; c < W; ++c) {
      const bool live = c < nc;
      const int64_t d = d0 + (live ? c : 0);
      const int64_t ou = b * p->u_stride[0] + d * p->u_stride[1];
      const int64_t od = b * p->delta_stride[0] + d * p->delta_stride[1];
      const int64_t oz = p->z ? b * p->z_stride[0] + d * p->z_stride[1] : 0;
      for (int t = 0; t < kT; ++t) {
        const bool in = live && t < len;
        uu[t][c] = in ? load_elem(p->u, ou + (l0 + t) * p->u_stride[2], dt) : 0.0f;
        xr[t][c] = in ? load_elem(p->delta, od + (l0 + t) * p->delta_stride[2], dt) + bias[c] : 0.0f;
        zz[t][c] = in && p->z ? load_elem(p->z, oz + (l0 + t) * p->z_stride[2], dt) : 0.0f;
      }
    }
    if (p->delta_softplus)
      for (int t = 0; t < kT; ++t)
#pragma omp simd
        for (int c = 0; c < W; ++c) dtv[t][c] = softplus_from_exp(xr[t][c], ex2_poly(-fabsf(xr[t][c]) * kLog2e));
    else
      for (int t = 0; t < kT; ++t)
        for (int c = 0; c < W; ++c) dtv[t][c] = xr[t][c];
    for (int t = 0; t < kT; ++t)
#pragma omp simd
      for (int c = 0; c < W; ++c) dtu[t][c] = dtv[t][c] * uu[t][c];
    const int64_t oB = b * p->B_stride[0] + g * p->B_stride[1], oC = b * p->C_stride[0] + g * p->C_stride[1];
    for (int n = 0; n < NP; ++n)
      for (int t = 0; t < kT; ++t) {
        const bool in = n < N && t < len;
        Bt[t][n] = in ? load_elem(p->B, oB + n * p->B_stride[2] + (l0 + t) * p->B_stride[3], dt) : 0.0f;
        Ct[t][n] = in ? load_elem(p->C, oC + n * p->C_stride[2] + (l0 + t) * p->C_stride[3], dt) : 0.0f;
      }
  }
};

// One item: batch b, channels [d0, d0 + nc) of group g (nc <= kW), every token. kW: channels per vector (8 for AVX2,
// 16 for AVX-512); each channel's arithmetic is the same whatever kW is, so every variant gives the same bits.
template <int NP, int kW>
DIMEX_HD void scan_item(const dimex_scan_params* p, int64_t b, int64_t g, int64_t d0, int nc) {
  const int64_t L = p->seqlen;
  Block<NP, kW> k_;
  alignas(64) float h[NP][kW] = {};
  alignas(64) float y[kT][kW];
  k_.setup(p, d0, nc);
  const auto& A2 = k_.A2;
  const auto& dtv = k_.dtv;
  const auto& dtu = k_.dtu;
  const auto& uu = k_.uu;
  const auto& zz = k_.zz;
  const auto& Bt = k_.Bt;
  const auto& Ct = k_.Ct;
  const int64_t ntiles = (L + kT - 1) / kT;
  for (int64_t k = 0; k < ntiles; ++k) {
    const int64_t tile = p->reverse ? ntiles - 1 - k : k;
    const int64_t l0 = tile * kT;
    const int len = static_cast<int>(std::min<int64_t>(kT, L - l0));
    k_.stage(p, b, g, d0, nc, l0, len);
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
      for (int c = 0; c < kW; ++c) y[t][c] = fmaf(k_.Dv[c], uu[t][c], acc[c]);
    }
    // Gate and store: out = y * silu(z), silu(z) = z / (1 + 2^(-z log2 e)).
    if (p->z)
      for (int t = 0; t < len; ++t)
#pragma omp simd
        for (int c = 0; c < kW; ++c) y[t][c] *= zz[t][c] / (1.0f + ex2_poly(-zz[t][c] * kLog2e));
    for (int c = 0; c < nc; ++c) {
      const int64_t oo = b * p->out_stride[0] + (d0 + c) * p->out_stride[1];
      for (int t = 0; t < len; ++t) store_elem(p->out, oo + (l0 + t) * p->out_stride[2], y[t][c], p->dtype);
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
  static const bool fma = cpu_has_avx2_fma();
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
  parallel_items(items, num_threads, [&](int64_t i) {
    const int64_t blk = i % blocks, g = (i / blocks) % p->ngroups, b = i / (blocks * p->ngroups);
    const int64_t d0 = g * dg + blk * v.width;
    v.fn(p, b, g, d0, static_cast<int>(std::min<int64_t>(v.width, dg - blk * v.width)));
  });
}

// ---- backward ------------------------------------------------------------------------------------------------
// The adjoint of h_t = a_t h_{t-1} + b_t is the same recurrence run backwards: G_t = gy_t C_t + a_{t+1} G_{t+1}.
// One item is (batch b, group g): its channel blocks run one after another, so the item alone writes its rows of
// dL/dB and dL/dC (no atomics, deterministic); dL/dA, dL/dD and dL/d(delta_bias) go to per-batch rows that the
// caller's entry point sums in batch order. States are recomputed tile by tile from checkpoints taken at each
// tile's start by a first forward pass (nothing of size (B, D, L, N) is stored).
constexpr int kBW = 8;  // channels per block in the backward

struct BwdArgs {
  const dimex_scan_bwd_params* q;
  float* gA_rows;  // [batch][dim][dstate]
  float* gD_rows;  // [batch][dim]
  float* gbias_rows;
};

template <int NP>
DIMEX_HD void bwd_item(const BwdArgs& a, int64_t b, int64_t g) {
  const dimex_scan_bwd_params* q = a.q;
  const dimex_scan_params* p = &q->fwd;
  const dimex_dtype dt = p->dtype;
  const int N = static_cast<int>(p->dstate);
  const int64_t L = p->seqlen, dim = p->dim, dg = dim / p->ngroups;
  const int64_t ntiles = (L + kT - 1) / kT;
  std::vector<float> ckpt(static_cast<size_t>(ntiles) * NP * kBW);
  Block<NP, kBW> k_;
  alignas(64) float h[NP][kBW], carry[NP][kBW], go[kT][kBW];
  alignas(64) float gBt[kT][NP], gCt[kT][NP];
  const auto& Af = k_.Af;
  const auto& A2 = k_.A2;
  const auto& Dv = k_.Dv;
  const auto& xr = k_.xr;
  const auto& dtv = k_.dtv;
  const auto& dtu = k_.dtu;
  const auto& uu = k_.uu;
  const auto& zz = k_.zz;
  const auto& Bt = k_.Bt;
  const auto& Ct = k_.Ct;
  static thread_local std::vector<float> hs_buf, as_buf;
  hs_buf.resize(static_cast<size_t>(kT) * NP * kBW);
  as_buf.resize(static_cast<size_t>(kT) * NP * kBW);
  float* hs = hs_buf.data();  // [step][n][c]: the state after each processing step of the tile
  float* as = as_buf.data();  // [step][n][c]: its decay
  for (int n = 0; n < N; ++n)
    for (int64_t l = 0; l < L; ++l) {
      q->g_B[((b * p->ngroups + g) * N + n) * L + l] = 0.0f;
      q->g_C[((b * p->ngroups + g) * N + n) * L + l] = 0.0f;
    }
  for (int64_t d0 = g * dg; d0 < (g + 1) * dg; d0 += kBW) {
    const int nc = static_cast<int>(std::min<int64_t>(kBW, (g + 1) * dg - d0));
    float gD[kBW] = {}, gbias[kBW] = {}, gA[NP][kBW] = {};
    k_.setup(p, d0, nc);
    // Stage tile `tile` as the forward does, plus grad_out (fp32, token-major; dead lanes/tokens are zeros).
    auto stage = [&](int64_t tile, int len, bool with_grad) {
      const int64_t l0 = tile * kT;
      k_.stage(p, b, g, d0, nc, l0, len);
      for (int c = 0; c < kBW; ++c) {
        const int64_t d = d0 + (c < nc ? c : 0);
        for (int t = 0; t < kT; ++t)
          go[t][c] = c < nc && t < len && with_grad
                         ? load_elem(q->grad_out, b * q->grad_out_stride[0] + d * q->grad_out_stride[1] +
                                                      (l0 + t) * q->grad_out_stride[2], dt)
                         : 0.0f;
      }
    };
    // Pass 1: the forward recurrence, keeping the state at the start of each tile (in processing order).
    for (int n = 0; n < NP; ++n)
      for (int c = 0; c < kBW; ++c) h[n][c] = 0.0f;
    for (int64_t k = 0; k < ntiles; ++k) {
      const int64_t tile = p->reverse ? ntiles - 1 - k : k;
      const int len = static_cast<int>(std::min<int64_t>(kT, L - tile * kT));
      std::copy(&h[0][0], &h[0][0] + NP * kBW, ckpt.data() + k * NP * kBW);
      stage(tile, len, false);
      for (int s = 0; s < len; ++s) {
        const int t = p->reverse ? len - 1 - s : s;
        for (int n = 0; n < NP; ++n)
#pragma omp simd
          for (int c = 0; c < kBW; ++c)
            h[n][c] = fmaf(ex2_poly(dtv[t][c] * A2[n][c]), h[n][c], dtu[t][c] * Bt[t][n]);
      }
    }
    // Pass 2: tiles in reverse processing order; recompute the tile's states, then walk it backwards.
    for (int n = 0; n < NP; ++n)
      for (int c = 0; c < kBW; ++c) carry[n][c] = 0.0f;
    for (int64_t k = ntiles - 1; k >= 0; --k) {
      const int64_t tile = p->reverse ? ntiles - 1 - k : k;
      const int64_t l0 = tile * kT;
      const int len = static_cast<int>(std::min<int64_t>(kT, L - l0));
      stage(tile, len, true);
      std::copy(ckpt.data() + k * NP * kBW, ckpt.data() + (k + 1) * NP * kBW, &h[0][0]);
      for (int s = 0; s < len; ++s) {
        const int t = p->reverse ? len - 1 - s : s;
        for (int n = 0; n < NP; ++n)
#pragma omp simd
          for (int c = 0; c < kBW; ++c) {
            const float decay = ex2_poly(dtv[t][c] * A2[n][c]);
            h[n][c] = fmaf(decay, h[n][c], dtu[t][c] * Bt[t][n]);
            hs[(s * NP + n) * kBW + c] = h[n][c];
            as[(s * NP + n) * kBW + c] = decay;
          }
      }
      for (int t = 0; t < kT; ++t)
        for (int n = 0; n < NP; ++n) gBt[t][n] = gCt[t][n] = 0.0f;
      for (int s = len - 1; s >= 0; --s) {
        const int t = p->reverse ? len - 1 - s : s;
        const float* hcur = hs + s * NP * kBW;
        const float* hprev = s > 0 ? hs + (s - 1) * NP * kBW : ckpt.data() + k * NP * kBW;
        const float* acur = as + s * NP * kBW;
        float y[kBW] = {}, gy[kBW], gdtu[kBW] = {}, gdtA[kBW] = {};
        for (int n = 0; n < NP; ++n)
          for (int c = 0; c < kBW; ++c) y[c] = fmaf(hcur[n * kBW + c], Ct[t][n], y[c]);
        for (int c = 0; c < kBW; ++c) {
          y[c] = fmaf(Dv[c], uu[t][c], y[c]);
          gy[c] = go[t][c];
          if (p->z) {
            const float zc = zz[t][c], sig = 1.0f / (1.0f + ex2_poly(-zc * kLog2e));
            gy[c] = go[t][c] * zc * sig;
            if (q->g_z && c < nc)
              q->g_z[(b * dim + d0 + c) * L + l0 + t] = go[t][c] * y[c] * sig * (1.0f + zc * (1.0f - sig));
          }
        }
        for (int n = 0; n < NP; ++n)
          for (int c = 0; c < kBW; ++c) {
            const float G = fmaf(gy[c], Ct[t][n], carry[n][c]);
            gCt[t][n] = fmaf(gy[c], hcur[n * kBW + c], gCt[t][n]);
            gBt[t][n] = fmaf(G, dtu[t][c], gBt[t][n]);
            gdtu[c] = fmaf(G, Bt[t][n], gdtu[c]);
            const float glogdA = G * hprev[n * kBW + c] * acur[n * kBW + c];
            gA[n][c] = fmaf(glogdA, dtv[t][c], gA[n][c]);
            gdtA[c] = fmaf(glogdA, Af[n][c], gdtA[c]);
            carry[n][c] = acur[n * kBW + c] * G;
          }
        for (int c = 0; c < nc; ++c) {
          const int64_t o = (b * dim + d0 + c) * L + l0 + t;
          const float gdt = fmaf(gdtu[c], uu[t][c], gdtA[c]);
          q->g_u[o] = fmaf(gdtu[c], dtv[t][c], gy[c] * Dv[c]);
          gD[c] = fmaf(gy[c], uu[t][c], gD[c]);
          const float x = xr[t][c];
          const float gx = p->delta_softplus && x <= 20.0f ? gdt / (1.0f + ex2_poly(-x * kLog2e)) : gdt;
          q->g_delta[o] = gx;
          gbias[c] += gx;
        }
      }
      for (int n = 0; n < N; ++n)
        for (int t = 0; t < len; ++t) {
          q->g_B[((b * p->ngroups + g) * N + n) * L + l0 + t] += gBt[t][n];
          q->g_C[((b * p->ngroups + g) * N + n) * L + l0 + t] += gCt[t][n];
        }
    }
    for (int c = 0; c < nc; ++c) {
      for (int n = 0; n < N; ++n) a.gA_rows[(b * dim + d0 + c) * N + n] = gA[n][c];
      a.gD_rows[b * dim + d0 + c] = gD[c];
      a.gbias_rows[b * dim + d0 + c] = gbias[c];
    }
  }
}

using BwdFn = void (*)(const BwdArgs&, int64_t, int64_t);

template <int NP>
void bwd_base(const BwdArgs& a, int64_t b, int64_t g) { bwd_item<NP>(a, b, g); }

#ifdef DIMEX_CPU_X86
template <int NP>
__attribute__((target("avx2,fma"))) void bwd_avx2(const BwdArgs& a, int64_t b, int64_t g) { bwd_item<NP>(a, b, g); }
#endif

template <int NP>
void bwd_all(const BwdArgs& a, int num_threads) {
  BwdFn fn = bwd_base<NP>;
#ifdef DIMEX_CPU_X86
  if (cpu_has_avx2_fma()) fn = bwd_avx2<NP>;
#endif
  const dimex_scan_params* p = &a.q->fwd;
  const int64_t items = p->batch * p->ngroups;
  parallel_items(items, num_threads, [&](int64_t i) { fn(a, i / p->ngroups, i % p->ngroups); });
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

DIMEX_EXPORT int dimex_selective_scan_bwd_cpu(const dimex_scan_bwd_params* q, int num_threads) {
  using namespace dimex;
  const int status = check_bwd_params(q);
  if (status != DIMEX_OK) return status;
  const dimex_scan_params* p = &q->fwd;
  const int64_t rows = p->batch * p->dim;
  std::vector<float> gA_rows(static_cast<size_t>(rows * p->dstate)), gD_rows(rows), gbias_rows(rows);
  const BwdArgs a{q, gA_rows.data(), gD_rows.data(), gbias_rows.data()};
  if (p->dstate <= 16) bwd_all<16>(a, num_threads);
  else if (p->dstate <= 32) bwd_all<32>(a, num_threads);
  else bwd_all<64>(a, num_threads);
  // The per-batch rows summed in batch order: the same bits for any thread count.
  const int64_t nA = p->dim * p->dstate;
  for (int64_t i = 0; i < nA; ++i) {
    float acc = 0.0f;
    for (int64_t b = 0; b < p->batch; ++b) acc += gA_rows[b * nA + i];
    q->g_A[i] = acc;
  }
  for (int64_t d = 0; d < p->dim; ++d) {
    float accD = 0.0f, accb = 0.0f;
    for (int64_t b = 0; b < p->batch; ++b) {
      accD += gD_rows[b * p->dim + d];
      accb += gbias_rows[b * p->dim + d];
    }
    if (q->g_D) q->g_D[d] = accD;
    if (q->g_delta_bias) q->g_delta_bias[d] = accb;
  }
  return DIMEX_OK;
}

// Backward of the selective scan on the GPU (dimex_selective_scan_bwd in include/dimexport_scan.h), the forward
// kernel's sibling for training: the same math header, the same C ABI style (enqueue only, caller's workspace,
// capturable in a CUDA graph).
//
// Work decomposition:
//   * a CTA of 256 threads owns kCh channels of one (batch, group); a channel is NS adjacent lanes, one state each
//     (NS = dstate rounded up to 8, 16 or 32);
//   * pass 1 walks the sequence in chunks of 16 tokens and writes the state entering every chunk but the first to
//     the workspace (B * D * L/16 * N floats: nothing of size (B, D, L, N) is stored);
//   * pass 2 walks the chunks backwards: it recomputes the chunk's 16 states from its checkpoint (kept in
//     registers with their decays), then runs the adjoint recurrence G_t = gy_t C_t + a_{t+1} G_{t+1} down the
//     chunk, with gy = grad_out * silu(z);
//   * per-token, per-channel scalars (dt, dt*u, gy) are computed once per channel by one lane each and broadcast
//     by shuffles; B and C of the chunk are staged in shared memory by the whole CTA (coalesced), as fp32;
//   * sums over the states (y for the gate's gradient, sum_n G B, sum_n G A h_{t-1} a_t) go through a per-warp
//     [token][lane] scratch and are summed by the lane that owns the token, which writes g_u, g_delta and g_z;
//   * dL/dB and dL/dC sum over the channels of a group: the CTA reduces its channels in shared memory in a fixed
//     order and writes one partial row per CTA; dL/dA, dL/dD and dL/d(delta_bias) sum over the batch: one partial
//     per (batch, channel). A second, small kernel sums the partials in a fixed order. No atomics: the gradients
//     are bit-identical from run to run (reproducible training and exact resume), at the price of workspace of
//     about B * D/kCh * 2 * N * L floats (1/kCh of the states tensor) plus the checkpoints.
// fp32 state and accumulation; decays on the SFU (ex2.approx) as in the forward kernel.
#include "dimexport_scan.h"

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "scan_math.cuh"
#include "scan_validate.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

namespace dimex {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kK = 16;        // tokens per recomputed chunk
constexpr int kRowP = 36;     // padded row of the per-warp [token][lane] scratch: float4 column sums, no conflicts

template <int NS>
struct Cfg {
  static constexpr int kCw = 32 / NS;           // channels per warp
  static constexpr int kCh = kThreads / NS;     // channels per CTA
  static constexpr int kNe = NS < kK ? NS : kK;  // lanes of a channel that own tokens
  static constexpr int kPt = kK / kNe;           // tokens owned per such lane and chunk
  static constexpr int kRowBC = NS + 1;          // padded row of the staged B/C chunk
  static constexpr int kStage = (kK * NS + kThreads - 1) / kThreads;  // B (and C) elements staged per thread
  // Shared memory (floats): per-warp sums scratch [warp][3][kK][kRowP], per-warp dB/dC [warp][2][kK][32],
  // staged B and C [2][kK][kRowBC].
  static constexpr int kOffP = 0;
  static constexpr int kOffG = kOffP + kWarps * 3 * kK * kRowP;
  static constexpr int kOffBC = kOffG + kWarps * 2 * kK * 32;
  static constexpr int kFloats = kOffBC + 2 * kK * kRowBC;
  static constexpr int kSmem = kFloats * 4;
};

// Workspace layout (float offsets, each 16-byte aligned).
struct Layout {
  int64_t nchunks, slices;  // chunks of kK tokens; CTAs (channel blocks) per group
  int64_t ckpt, part_bc, part_a, part_d, part_db, floats;
};

int lanes_for(int64_t dstate) { return dstate <= 8 ? 8 : dstate <= 16 ? 16 : 32; }

Layout layout(const dimex_scan_params& p) {
  const int ns = lanes_for(p.dstate);
  const int64_t ch = kThreads / ns, cpg = p.dim / p.ngroups;
  Layout w{};
  w.nchunks = (p.seqlen + kK - 1) / kK;
  w.slices = (cpg + ch - 1) / ch;
  auto take = [&](int64_t n) {
    const int64_t at = w.floats;
    w.floats += (n + 3) / 4 * 4;
    return at;
  };
  w.ckpt = take(p.batch * p.dim * (w.nchunks - 1) * p.dstate);
  w.part_bc = take(p.batch * p.ngroups * w.slices * 2 * p.seqlen * p.dstate);
  w.part_a = take(p.batch * p.dim * p.dstate);
  w.part_d = take(p.batch * p.dim);
  w.part_db = take(p.batch * p.dim);
  return w;
}

struct Args {
  dimex_scan_bwd_params q;
  Layout w;
  float* ws;
};

template <typename T>
__device__ __forceinline__ float ld(const void* base, int64_t i) {
  return to_f(static_cast<const T*>(base)[i]);
}

__device__ __forceinline__ float sigmoid_acc(float x) { return rcp_sfu(1.0f + ex2_sfu(-x * kLog2e)); }

// The sum of a lane's NS consecutive floats of a scratch row (16-byte aligned): float4 loads into four partial sums.
template <int NS>
__device__ __forceinline__ float row_sum(const float* row) {
  float4 acc = *reinterpret_cast<const float4*>(row);
#pragma unroll
  for (int i = 4; i < NS; i += 4) {
    const float4 q = *reinterpret_cast<const float4*>(row + i);
    acc.x += q.x, acc.y += q.y, acc.z += q.z, acc.w += q.w;
  }
  return (acc.x + acc.y) + (acc.z + acc.w);
}

template <typename T, int NS, bool kRev>
__global__ void __launch_bounds__(kThreads, 2) scan_bwd_kernel(const Args a) {
  using Cf = Cfg<NS>;
  extern __shared__ float smem[];
  const dimex_scan_params& p = a.q.fwd;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int n = lane % NS, cw = lane / NS;
  const int N = static_cast<int>(p.dstate);
  const int64_t L = p.seqlen, dim = p.dim, G = p.ngroups, cpg = dim / G;
  const int64_t b = blockIdx.z, g = blockIdx.y;
  const int64_t c_local = int64_t(blockIdx.x) * Cf::kCh + warp * Cf::kCw + cw;
  const bool ch_on = c_local < cpg;
  const int64_t d = g * cpg + (ch_on ? c_local : 0);
  const bool on = ch_on && n < N;
  const float Aa = on ? p.A[d * N + n] : 0.0f;
  const float A2 = Aa * kLog2e;
  const float Dd = p.D ? p.D[d] : 0.0f;
  const float bias = p.delta_bias ? p.delta_bias[d] : 0.0f;
  const bool has_z = p.z != nullptr;
  const bool owner = ch_on && n < Cf::kNe;  // this lane owns tokens n, n + kNe, ... of each chunk

  const T* u_row = static_cast<const T*>(p.u) + b * p.u_stride[0] + d * p.u_stride[1];
  const T* dl_row = static_cast<const T*>(p.delta) + b * p.delta_stride[0] + d * p.delta_stride[1];
  const T* z_row = has_z ? static_cast<const T*>(p.z) + b * p.z_stride[0] + d * p.z_stride[1] : nullptr;
  const T* go_row = static_cast<const T*>(a.q.grad_out) + b * a.q.grad_out_stride[0] + d * a.q.grad_out_stride[1];
  const int64_t su = p.u_stride[2], sdl = p.delta_stride[2], sz = p.z_stride[2], sg = a.q.grad_out_stride[2];
  const T* Bg = static_cast<const T*>(p.B) + b * p.B_stride[0] + g * p.B_stride[1];
  const T* Cg = static_cast<const T*>(p.C) + b * p.C_stride[0] + g * p.C_stride[1];
  const int64_t orow = (b * dim + d) * L;  // (b, d, 0) of the fp32 (B, D, L) gradients

  float* sP = smem + Cf::kOffP + warp * 3 * kK * kRowP;
  float* sG = smem + Cf::kOffG + warp * 2 * kK * 32;
  float* sB = smem + Cf::kOffBC;
  float* sC = sB + kK * Cf::kRowBC;
  float* ckpt = a.ws + a.w.ckpt + (b * dim + d) * (a.w.nchunks - 1) * N;

  auto tok = [&](int64_t s) { return kRev ? L - 1 - s : s; };

  // Global reads of a chunk are issued one chunk ahead into registers (the next chunk's B/C elements this thread
  // stages, the raw scalars of the tokens this lane owns), so their latency overlaps the current chunk's work.
  float nB[Cf::kStage], nC[Cf::kStage], ndl[Cf::kPt], nu[Cf::kPt], nz[Cf::kPt], ngo[Cf::kPt];
  auto fetch = [&](int64_t s0, bool grads) {
#pragma unroll
    for (int j = 0; j < Cf::kStage; ++j) {
      const int e = tid + j * kThreads, k = e % kK, nn = e / kK;
      const int64_t s = s0 + k;
      const bool ok = e < kK * NS && nn < N && s < L;
      const int64_t t = ok ? tok(s) : 0;
      nB[j] = ok ? to_f(Bg[nn * p.B_stride[2] + t * p.B_stride[3]]) : 0.0f;
      nC[j] = ok && grads ? to_f(Cg[nn * p.C_stride[2] + t * p.C_stride[3]]) : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < Cf::kPt; ++i) {
      const int64_t s = s0 + i * Cf::kNe + n;
      const bool ok = owner && s < L;
      const int64_t t = ok ? tok(s) : 0;
      ndl[i] = ok ? to_f(dl_row[t * sdl]) : 0.0f;
      nu[i] = ok ? to_f(u_row[t * su]) : 0.0f;
      ngo[i] = ok && grads ? to_f(go_row[t * sg]) : 0.0f;
      nz[i] = ok && grads && has_z ? to_f(z_row[t * sz]) : 0.0f;
    }
  };
  // Makes the fetched chunk current: B/C into shared memory (between barriers: the previous chunk's readers are
  // done, this chunk's are not yet started) and the per-token scalars (zero past the sequence).
  float xv[Cf::kPt], dtv[Cf::kPt], uv[Cf::kPt], duv[Cf::kPt], zv[Cf::kPt], gov[Cf::kPt], gyv[Cf::kPt];
  auto take = [&](int64_t s0, bool grads) {
    __syncthreads();
#pragma unroll
    for (int j = 0; j < Cf::kStage; ++j) {
      const int e = tid + j * kThreads, k = e % kK, nn = e / kK;
      if (e < kK * NS) {
        sB[k * Cf::kRowBC + nn] = nB[j];
        if (grads) sC[k * Cf::kRowBC + nn] = nC[j];
      }
    }
#pragma unroll
    for (int i = 0; i < Cf::kPt; ++i) {
      const bool ok = owner && s0 + i * Cf::kNe + n < L;
      xv[i] = ok ? ndl[i] + bias : 0.0f;
      dtv[i] = ok ? (p.delta_softplus ? softplus_acc(xv[i]) : xv[i]) : 0.0f;
      uv[i] = nu[i];
      duv[i] = dtv[i] * uv[i];
      zv[i] = nz[i];
      gov[i] = ngo[i];
      gyv[i] = has_z ? gov[i] * silu_acc(zv[i]) : gov[i];
    }
    __syncthreads();
  };
  auto bcast = [&](const float* v, int k) { return __shfl_sync(0xffffffffu, v[k / Cf::kNe], k % Cf::kNe, NS); };

  // Pass 1: the state entering each chunk but the first.
  const int64_t nc = a.w.nchunks;
  float h = 0.0f;
  if (nc > 1) fetch(0, false);
  for (int64_t c = 0; c + 1 < nc; ++c) {
    take(c * kK, false);
    if (c + 2 < nc) fetch((c + 1) * kK, false);
#pragma unroll
    for (int k = 0; k < kK; ++k) {
      const float ha = ex2_sfu(bcast(dtv, k) * A2) * h;
      h = fmaf(bcast(duv, k), sB[k * Cf::kRowBC + n], ha);
    }
    if (on) ckpt[c * N + n] = h;
  }

  // Pass 2: chunks backwards, states recomputed from the checkpoints, the adjoint carried across chunks.
  float G_ = 0.0f, a_next = 1.0f, gA = 0.0f, gD = 0.0f, gdb = 0.0f;
  float* part_bc = a.ws + a.w.part_bc + ((b * G + g) * a.w.slices + blockIdx.x) * 2 * L * N;
  fetch((nc - 1) * kK, true);
  for (int64_t c = nc - 1; c >= 0; --c) {
    const int64_t s0 = c * kK;
    h = (on && c > 0) ? ckpt[(c - 1) * N + n] : 0.0f;
    take(s0, true);
    if (c > 0) fetch(s0 - kK, true);
    float as[kK], ha[kK];
#pragma unroll
    for (int k = 0; k < kK; ++k) {
      as[k] = ex2_sfu(bcast(dtv, k) * A2);
      ha[k] = as[k] * h;
      h = fmaf(bcast(duv, k), sB[k * Cf::kRowBC + n], ha[k]);
    }
#pragma unroll
    for (int k = kK - 1; k >= 0; --k) {
      const float Bk = sB[k * Cf::kRowBC + n], Ck = sC[k * Cf::kRowBC + n];
      const float dtk = bcast(dtv, k), duk = bcast(duv, k), gyk = bcast(gyv, k);
      const float hk = fmaf(duk, Bk, ha[k]);
      G_ = fmaf(a_next, G_, gyk * Ck);
      a_next = as[k];
      const float gha = G_ * ha[k];  // dL/d(dt A) through the decay
      gA = fmaf(gha, dtk, gA);
      sP[(0 * kK + k) * kRowP + lane] = Ck * hk;
      sP[(1 * kK + k) * kRowP + lane] = G_ * Bk;
      sP[(2 * kK + k) * kRowP + lane] = gha * Aa;
      sG[(0 * kK + k) * 32 + lane] = G_ * duk;
      sG[(1 * kK + k) * 32 + lane] = gyk * hk;
    }
    __syncthreads();
    // Per-token gradients by the owning lane: its channel's NS columns of the scratch rows summed.
#pragma unroll
    for (int i = 0; i < Cf::kPt; ++i) {
      const int j = i * Cf::kNe + n;
      const int64_t s = s0 + j;
      if (!(owner && s < L)) continue;
      const int64_t t = tok(s);
      const float y = fmaf(Dd, uv[i], row_sum<NS>(sP + (0 * kK + j) * kRowP + cw * NS));
      const float sum_u = row_sum<NS>(sP + (1 * kK + j) * kRowP + cw * NS);
      const float sum_a = row_sum<NS>(sP + (2 * kK + j) * kRowP + cw * NS);
      const float g_u = fmaf(sum_u, dtv[i], gyv[i] * Dd);
      const float g_dt = fmaf(sum_u, uv[i], sum_a);
      const float g_x = p.delta_softplus && xv[i] <= 20.0f ? g_dt * sigmoid_acc(xv[i]) : g_dt;
      a.q.g_u[orow + t] = g_u;
      a.q.g_delta[orow + t] = g_x;
      if (has_z) {
        const float sg_z = sigmoid_acc(zv[i]);
        a.q.g_z[orow + t] = gov[i] * y * sg_z * fmaf(zv[i], 1.0f - sg_z, 1.0f);
      }
      gD = fmaf(gyv[i], uv[i], gD);
      gdb += g_x;
    }
    // dL/dB, dL/dC of the chunk: this CTA's channels summed in a fixed order.
    for (int i = tid; i < 2 * kK * NS; i += kThreads) {
      const int nn = i % NS, k = (i / NS) % kK, which = i / (NS * kK);
      const int64_t s = s0 + k;
      if (nn >= N || s >= L) continue;
      float acc = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w)
#pragma unroll
        for (int q = 0; q < Cf::kCw; ++q)
          acc += smem[Cf::kOffG + w * 2 * kK * 32 + (which * kK + k) * 32 + q * NS + nn];
      part_bc[(which * L + tok(s)) * N + nn] = acc;
    }
    // (the next chunk's take() starts with a barrier before the scratch is written again)
  }
  if (on) a.ws[a.w.part_a + (b * dim + d) * N + n] = gA;
#pragma unroll
  for (int off = NS / 2; off > 0; off /= 2) {
    gD += __shfl_xor_sync(0xffffffffu, gD, off, NS);
    gdb += __shfl_xor_sync(0xffffffffu, gdb, off, NS);
  }
  if (ch_on && n == 0) {
    a.ws[a.w.part_d + b * dim + d] = gD;
    a.ws[a.w.part_db + b * dim + d] = gdb;
  }
}

// Sums the partials in a fixed order: dL/dB and dL/dC over a group's channel blocks, dL/dA, dL/dD and
// dL/d(delta_bias) over the batch.
__global__ void __launch_bounds__(256) reduce_kernel(const Args a) {
  const dimex_scan_params& p = a.q.fwd;
  const int64_t N = p.dstate, L = p.seqlen, G = p.ngroups, dim = p.dim, batch = p.batch;
  const int64_t nbc = batch * G * N * L, na = dim * N;
  const int64_t total = 2 * nbc + na + 2 * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    if (i < 2 * nbc) {
      const int64_t which = i / nbc, r = i % nbc;  // r: (b, g, n, t) of g_B / g_C
      const int64_t t = r % L, nn = (r / L) % N, bg = r / (L * N);
      const float* src = a.ws + a.w.part_bc + bg * a.w.slices * 2 * L * N + (which * L + t) * N + nn;
      float acc = 0.0f;
      for (int64_t s = 0; s < a.w.slices; ++s) acc += src[s * 2 * L * N];
      (which ? a.q.g_C : a.q.g_B)[r] = acc;
    } else if (i < 2 * nbc + na) {
      const int64_t r = i - 2 * nbc;
      float acc = 0.0f;
      for (int64_t bb = 0; bb < batch; ++bb) acc += a.ws[a.w.part_a + bb * na + r];
      a.q.g_A[r] = acc;
    } else {
      const int64_t r = i - 2 * nbc - na, which = r / dim, dd = r % dim;
      float* dst = which ? a.q.g_delta_bias : a.q.g_D;
      if (dst == nullptr) continue;
      const int64_t part = which ? a.w.part_db : a.w.part_d;
      float acc = 0.0f;
      for (int64_t bb = 0; bb < batch; ++bb) acc += a.ws[part + bb * dim + dd];
      dst[dd] = acc;
    }
  }
}

using BwdFn = void (*)(Args);

template <typename T, int NS>
BwdFn pick(bool rev) {
  return rev ? &scan_bwd_kernel<T, NS, true> : &scan_bwd_kernel<T, NS, false>;
}

template <typename T>
BwdFn pick_t(int ns, bool rev) {
  return ns == 8 ? pick<T, 8>(rev) : ns == 16 ? pick<T, 16>(rev) : pick<T, 32>(rev);
}

int smem_for(int ns) { return ns == 8 ? Cfg<8>::kSmem : ns == 16 ? Cfg<16>::kSmem : Cfg<32>::kSmem; }

// cudaFuncSetAttribute once per (kernel, device): a bit per device in a slot per compiled kernel.
constexpr int kKernels = 3 * 3 * 2;
std::atomic<uint64_t> g_smem_set[kKernels];

int kernel_slot(dimex_dtype dtype, int ns, bool rev) {
  return (static_cast<int>(dtype) * 3 + (ns == 8 ? 0 : ns == 16 ? 1 : 2)) * 2 + (rev ? 1 : 0);
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT size_t dimex_selective_scan_bwd_workspace_size(const dimex_scan_bwd_params* q) {
  using namespace dimex;
  if (q == nullptr || check_scan_sizes(&q->fwd) != DIMEX_OK || q->fwd.dstate > 32) return 0;
  return static_cast<size_t>(layout(q->fwd).floats) * sizeof(float);
}

DIMEX_EXPORT int dimex_selective_scan_bwd(const dimex_scan_bwd_params* q, cudaStream_t stream) {
  using namespace dimex;
  const int status = check_bwd_params(q);
  if (status != DIMEX_OK) return status;
  const dimex_scan_params& p = q->fwd;
  if (p.dstate > 32) return DIMEX_ERR_UNSUPPORTED;
  if (p.batch > 65535 || p.ngroups > 65535) return DIMEX_ERR_INVALID_ARGUMENT;
  const Layout w = layout(p);
  if (p.workspace == nullptr || p.workspace_bytes < static_cast<size_t>(w.floats) * sizeof(float) ||
      reinterpret_cast<uintptr_t>(p.workspace) % DIMEX_SCAN_WORKSPACE_ALIGN != 0)
    return DIMEX_ERR_INVALID_ARGUMENT;
  const int ns = lanes_for(p.dstate);
  const bool rev = p.reverse != 0;
  const BwdFn fn = p.dtype == DIMEX_FLOAT32   ? pick_t<float>(ns, rev)
                   : p.dtype == DIMEX_FLOAT16 ? pick_t<__half>(ns, rev)
                                              : pick_t<__nv_bfloat16>(ns, rev);
  const int smem = smem_for(ns);
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return DIMEX_ERR_CUDA;
  std::atomic<uint64_t>& set = g_smem_set[kernel_slot(p.dtype, ns, rev)];
  const uint64_t bit = uint64_t(1) << (dev % 64);
  if (!(set.load(std::memory_order_acquire) & bit)) {
    if (cudaFuncSetAttribute(reinterpret_cast<const void*>(fn), cudaFuncAttributeMaxDynamicSharedMemorySize, smem) !=
        cudaSuccess)
      return DIMEX_ERR_CUDA;
    set.fetch_or(bit, std::memory_order_acq_rel);
  }
  (void)cudaGetLastError();  // an earlier, unrelated error must not be reported as this call's
  const Args a{*q, w, static_cast<float*>(p.workspace)};
  const dim3 grid(static_cast<unsigned>(w.slices), static_cast<unsigned>(p.ngroups), static_cast<unsigned>(p.batch));
  fn<<<grid, kThreads, smem, stream>>>(a);
  if (cudaPeekAtLastError() != cudaSuccess) return DIMEX_ERR_CUDA;  // left for the caller's cudaGetLastError()
  const int64_t total = 2 * p.batch * p.ngroups * p.dstate * p.seqlen + p.dim * p.dstate + 2 * p.dim;
  const int64_t blocks = (total + 255) / 256;
  reduce_kernel<<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096), 256, 0, stream>>>(a);
  return cudaPeekAtLastError() == cudaSuccess ? DIMEX_OK : DIMEX_ERR_CUDA;
}

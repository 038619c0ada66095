// Host side of the fused selective-scan forward: the C ABI of include/dimexport_scan.h.
// One object serves the PyTorch op (through ctypes) and the TensorRT plugin (linked later).
// Enqueue only: no allocation and no synchronisation, so a call can be captured in a CUDA graph once
// the library has been called outside capture at least once (CUDA runtime initialisation).
#include "dimexport_scan.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "scan_args.h"
#include "scan_validate.h"
#include "scan_status.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

namespace dimex {
namespace {

constexpr int kMaxDevices = 64;

// One compiled configuration: NS states per lane, S lanes per channel (N = NS * S).
struct Config {
  int ns, s;
};

// Candidates per padded dstate, in order of increasing lanes per channel (compiled in scan_instances.cuh).
constexpr Config kCfg16[] = {{16, 1}, {8, 2}, {4, 4}, {2, 8}, {1, 16}};
constexpr Config kCfg32[] = {{16, 2}, {4, 8}};
constexpr Config kCfg64[] = {{16, 4}, {4, 16}};

// Relative cost per element of splitting a channel over S lanes (shuffles, broadcast reads, B/C
// conversion shared by fewer channels), fitted to the forced-split and forced-chunk sweeps on the H100
// (KERNEL_NOTES.md, v3).
// S = 1 (16 states per lane, 3 CTAs per SM) is fitted at full load only; it never wins at small batch.
double split_cost(int s) {
  switch (s) {
    case 1: return 1.59;
    case 2: return 1.00;
    case 4: return 1.16;
    case 8: return 1.58;
    default: return 2.54;
  }
}

// Throughput of an SM as a function of its resident warps: (warps / kSaturatingWarps)^kRateExponent, at most 1
// (same fit).
constexpr double kSaturatingWarps = 14.8;
constexpr double kRateExponent = 0.575;

// Time model of a launch in nanoseconds (same fit): estimate() units per token, fixed cost of a launch, and
// per-CTA start-up in token equivalents. Fitted jointly (180 timings: the v2 forced-split sweep and the v3
// forced-chunk sweep at B = 1; rms error 4.4 %).
constexpr double kNsPerUnitToken = 1.19;
constexpr double kLaunchNs = 3100.0;
constexpr double kCtaTokens = 4.0;
// Sequence split: cost of a state-pass token relative to an output-pass one (no C . h, gate, z or store),
// and of combining one earlier chunk's state in the output pass's prologue, in token equivalents.
constexpr double kStatePassCost = 0.56;
constexpr double kCombineTokens = 0.36;
constexpr int kTile = DIMEX_SCAN_TILE_TOKENS;  // chunks are whole B/C tiles
constexpr int kMaxChunks = 64;
// Rows (batch * dim * (chunks - 1)) of chunk states a split may use: bounds the workspace independently of
// the device (about 1000 channels per SM of a 132-SM GPU, more than a split ever needs to fill it).
constexpr int64_t kMaxStateRows = 131072;

KernelInfo kernel_info(dimex_dtype dt, Config c) {
  switch (dt) {
    case DIMEX_FLOAT32: return kernel_info_f32(c.ns, c.s);
    case DIMEX_FLOAT16: return kernel_info_f16(c.ns, c.s);
    default: return kernel_info_bf16(c.ns, c.s);
  }
}

// Per-device facts, read once: SM count, and per kernel whether the dynamic shared-memory limit has
// been raised and how many CTAs fit on an SM. Host-side queries only (no stream work), so safe in capture.
struct DeviceCache {
  std::atomic<int> sms{0};
};
DeviceCache g_dev[kMaxDevices];

int sm_count(int dev) {
  int v = g_dev[dev].sms.load(std::memory_order_relaxed);
  if (v == 0) {
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0) v = 1;
    g_dev[dev].sms.store(v, std::memory_order_relaxed);
  }
  return v;
}

// Occupancy (CTAs per SM) of one kernel on one device; raises its dynamic shared-memory limit first.
// Cached in a small open-addressing table keyed by (kernel, device); a lost race only repeats the query.
struct OccSlot {
  std::atomic<const void*> fn{nullptr};
  std::atomic<int> dev{-1};
  std::atomic<int> occ{0};
};
constexpr int kOccSlots = 1024;
OccSlot g_occ[kOccSlots];

int occupancy(KernelFn fn, int smem, int dev) {
  const uintptr_t key = reinterpret_cast<uintptr_t>(fn) ^ (static_cast<uintptr_t>(dev) * 0x9e3779b97f4a7c15ull);
  int idx = static_cast<int>((key >> 4) % kOccSlots);
  for (int probe = 0; probe < kOccSlots; ++probe, idx = (idx + 1) % kOccSlots) {
    OccSlot& sl = g_occ[idx];
    const void* f = sl.fn.load(std::memory_order_acquire);
    if (f == reinterpret_cast<const void*>(fn) && sl.dev.load(std::memory_order_acquire) == dev) {
      const int o = sl.occ.load(std::memory_order_acquire);
      if (o > 0) return o;
      break;
    }
    if (f == nullptr) break;
  }
  if (cudaFuncSetAttribute(reinterpret_cast<const void*>(fn), cudaFuncAttributeMaxDynamicSharedMemorySize, smem) !=
      cudaSuccess)
    return 0;
  int occ = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, reinterpret_cast<const void*>(fn), 128, smem) !=
      cudaSuccess)
    return 0;
  idx = static_cast<int>((key >> 4) % kOccSlots);
  for (int probe = 0; probe < kOccSlots; ++probe, idx = (idx + 1) % kOccSlots) {
    OccSlot& sl = g_occ[idx];
    const void* expected = nullptr;
    if (sl.fn.compare_exchange_strong(expected, reinterpret_cast<const void*>(fn))) {
      sl.dev.store(dev, std::memory_order_release);
      sl.occ.store(occ, std::memory_order_release);
      break;
    }
    if (expected == reinterpret_cast<const void*>(fn) && sl.dev.load(std::memory_order_acquire) == dev) break;
  }
  return occ;
}

// Estimated time per token (arbitrary units) of one launch: CTAs are whole channel groups that run for
// the same number of tokens, so the busiest SM decides; an SM needs kSaturatingWarps resident warps to
// reach its throughput, and a last, partial wave of CTAs runs at the rate of its own warps.
double estimate(int64_t ctas, int occ, int sms, int dc, double cost) {
  auto rate = [](double warps) {
    return warps >= kSaturatingWarps ? 1.0 : std::pow(warps / kSaturatingWarps, kRateExponent);
  };
  const int64_t slots = static_cast<int64_t>(occ) * sms;
  const double per_cta = dc * cost;
  if (ctas <= slots) {
    const int64_t per_sm = (ctas + sms - 1) / sms;
    return per_sm * per_cta / rate(4.0 * per_sm);
  }
  const int64_t full = ctas / slots, rem = ctas % slots;
  double t = full * occ * per_cta / rate(4.0 * occ);
  if (rem > 0) {
    const int64_t per_sm = (rem + sms - 1) / sms;
    t += per_sm * per_cta / rate(4.0 * per_sm);
  }
  return t;
}

// Time (ns) of one launch of `ctas` CTAs of dc channels that each walk `tokens` tokens.
double launch_ns(int64_t ctas, int occ, int sms, int dc, double cost, double tokens) {
  return kLaunchNs + estimate(ctas, occ, sms, dc, cost) * (tokens + kCtaTokens) * kNsPerUnitToken;
}

int elem_size(dimex_dtype dt) { return dt == DIMEX_FLOAT32 ? 4 : 2; }

// dstate rounded up to a compiled size: the state stride of the workspace and the kernel's N.
int padded_dstate(int64_t n) { return n <= 16 ? 16 : n <= 32 ? 32 : 64; }

// Chunks of a split into (about) k chunks: whole tiles of `len` tokens, `count` of them (the last may be short).
struct Chunks {
  int len, count;
};
Chunks chunks_of(int L, int k) {
  const int per = (L + k - 1) / k;
  const int len = (per + kTile - 1) / kTile * kTile;
  return Chunks{len, (L + len - 1) / len};
}

// Rows of chunk states a split of (batch, dim, seqlen) may need: the workspace bound of the ABI.
int64_t max_state_rows(int64_t batch, int64_t dim, int64_t seqlen) {
  const int64_t kmax = (seqlen + kTile - 1) / kTile;
  if (kmax <= 1) return 0;
  if (batch >= kMaxStateRows || batch * dim >= kMaxStateRows) return kMaxStateRows;
  return std::min<int64_t>(kMaxStateRows, (std::min<int64_t>(kmax, kMaxChunks) - 1) * batch * dim);
}

// Widest vector (bytes, <= 16) for copies along a contiguous token dimension, or 0 if the token
// dimension is strided or rows are not even 4-byte aligned (then the element path is used).
int vec_width(const void* ptr, const int64_t* s, int nlead, int64_t stok, int es) {
  if (stok != 1) return 0;
  int w = 16;
  while (w >= 4) {
    bool ok = reinterpret_cast<uintptr_t>(ptr) % w == 0;
    for (int k = 0; k < nlead; ++k) ok = ok && (s[k] * es) % w == 0;
    if (ok) return w;
    w /= 2;
  }
  return 0;
}

// Width of the kernel's channel-tile path for a (b, d, l) tensor (ScanArgs::cwU): its channels contiguous and the
// rows of a warp's tile (row_bytes: the warp's channels) aligned to the width in every batch, group and token; else 0.
int channel_width(const void* ptr, const int64_t* s, int dg, int row_bytes, int es) {
  if (s[1] != 1) return 0;
  for (int w = 16; w >= 4; w /= 2) {
    if (w > row_bytes) continue;
    if (reinterpret_cast<uintptr_t>(ptr) % w == 0 && (s[0] * es) % w == 0 && (s[2] * es) % w == 0 &&
        (static_cast<int64_t>(dg) * es) % w == 0)
      return w;
  }
  return 0;
}

// Which configuration to run: the environment variables DIMEX_SCAN_FORCE_SPLIT (lanes per channel) and
// DIMEX_SCAN_FORCE_CHUNKS (sequence chunks, 1 = none) override the estimate; they exist for benchmarks
// and tests. A forced choice that is not possible here (not compiled, too little workspace) is ignored.
int env_int(const char* name) {
  const char* e = std::getenv(name);
  return e ? std::atoi(e) : 0;
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_scan_abi_version(void) { return DIMEX_SCAN_ABI_VERSION; }

DIMEX_EXPORT int dimex_scan_has_cuda(void) { return 1; }

DIMEX_EXPORT const char* dimex_status_string(int status) { return dimex::status_text(status); }

DIMEX_EXPORT int dimex_selective_scan_fwd(const dimex_scan_params* p, cudaStream_t stream) {
  using namespace dimex;
  const int checked = check_scan_params(p);
  if (checked != DIMEX_OK) return checked;

  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return DIMEX_ERR_CUDA;
  const int sms = sm_count(dev);

  const int es = elem_size(p->dtype);
  const int dg = static_cast<int>(p->dim / p->ngroups);
  const int ncap = padded_dstate(p->dstate);
  const Config* cands = ncap == 16 ? kCfg16 : ncap == 32 ? kCfg32 : kCfg64;
  const int ncand = ncap == 16 ? 5 : 2;

  // Workspace rows available to a split.
  const bool has_ws = p->workspace != nullptr && p->workspace_bytes > 0;
  if (has_ws && reinterpret_cast<uintptr_t>(p->workspace) % DIMEX_SCAN_WORKSPACE_ALIGN != 0)
    return DIMEX_ERR_INVALID_ARGUMENT;
  const int64_t rows = p->batch * p->dim;
  const int64_t ws_rows = has_ws ? std::min<int64_t>(max_state_rows(p->batch, p->dim, p->seqlen),
                                                     static_cast<int64_t>(p->workspace_bytes /
                                                                          ((ncap + 1) * sizeof(float))))
                                 : 0;
  const int L = static_cast<int>(p->seqlen);
  const int kmax = static_cast<int>(std::min<int64_t>(kMaxChunks, (L + kTile - 1) / kTile));

  KernelInfo best{nullptr, nullptr, 0, 0};
  Chunks best_ch{L, 1};
  auto choose = [&](int force_s, int force_k) {
    double best_t = 0.0;
    for (int i = 0; i < ncand; ++i) {
      if (force_s > 0 && cands[i].s != force_s) continue;
      const KernelInfo ki = kernel_info(p->dtype, cands[i]);
      if (!ki.fwd) continue;
      const int occ = occupancy(ki.fwd, ki.smem, dev);
      if (occ <= 0) continue;
      const int64_t nblk = (dg + ki.dc - 1) / ki.dc;
      const int64_t ctas = p->batch * p->ngroups * nblk;
      if (ctas > INT_MAX) continue;
      const double cost = split_cost(cands[i].s);
      for (int k = 1; k <= kmax; ++k) {
        if (force_k > 0 && k != std::min(force_k, kmax)) continue;
        const Chunks ch = k == 1 ? Chunks{L, 1} : chunks_of(L, k);
        if (ch.count < k && force_k <= 0) continue;  // the same split as a smaller k
        if ((ch.count - 1) * rows > ws_rows) continue;
        const double t = ch.count == 1
                             ? launch_ns(ctas, occ, sms, ki.dc, cost, L)
                             : launch_ns(ctas * (ch.count - 1), occ, sms, ki.dc, cost, kStatePassCost * ch.len) +
                                   launch_ns(ctas * ch.count, occ, sms, ki.dc, cost,
                                             ch.len + kCombineTokens * (ch.count - 1));
        if (!best.fwd || t < best_t) {
          best = ki;
          best_ch = ch;
          best_t = t;
        }
      }
    }
  };
  const int force_s = env_int("DIMEX_SCAN_FORCE_SPLIT"), force_k = env_int("DIMEX_SCAN_FORCE_CHUNKS");
  if (force_s > 0 || force_k > 0) choose(force_s, force_k);
  if (!best.fwd && force_k > 0) choose(force_s, 0);
  if (!best.fwd) choose(0, 0);
  if (!best.fwd) return DIMEX_ERR_CUDA;

  ScanArgs a{};
  a.u = p->u;
  a.delta = p->delta;
  a.z = p->z;
  a.out = p->out;
  a.Bm = p->B;
  a.Cm = p->C;
  a.A = p->A;
  a.Dp = p->D;
  a.bias = p->delta_bias;
  for (int k = 0; k < 3; ++k) {
    a.su[k] = p->u_stride[k];
    a.sdl[k] = p->delta_stride[k];
    a.sz[k] = p->z ? p->z_stride[k] : 0;
    a.so[k] = p->out_stride[k];
  }
  for (int k = 0; k < 4; ++k) {
    a.sB[k] = p->B_stride[k];
    a.sC[k] = p->C_stride[k];
  }
  a.L = L;
  a.Dg = dg;
  a.G = static_cast<int>(p->ngroups);
  a.N = static_cast<int>(p->dstate);
  a.nblk = (dg + best.dc - 1) / best.dc;
  a.wU = vec_width(p->u, p->u_stride, 2, p->u_stride[2], es);
  a.wDl = vec_width(p->delta, p->delta_stride, 2, p->delta_stride[2], es);
  a.wZ = p->z ? vec_width(p->z, p->z_stride, 2, p->z_stride[2], es) : 0;
  a.wO = vec_width(p->out, p->out_stride, 2, p->out_stride[2], es);
  // A warp's channels (4 warps per CTA) as bytes; DIMEX_SCAN_CHANNEL_TILES=0 turns the channel tiles off (benchmarks).
  const char* tiles = std::getenv("DIMEX_SCAN_CHANNEL_TILES");
  const int tile_row = tiles && std::atoi(tiles) == 0 ? 0 : best.dc / 4 * es;
  a.cwU = a.wU ? 0 : channel_width(p->u, p->u_stride, dg, tile_row, es);
  a.cwDl = a.wDl ? 0 : channel_width(p->delta, p->delta_stride, dg, tile_row, es);
  a.cwZ = a.wZ || !p->z ? 0 : channel_width(p->z, p->z_stride, dg, tile_row, es);
  a.wB = vec_width(p->B, p->B_stride, 3, p->B_stride[3], es);
  a.wC = vec_width(p->C, p->C_stride, 3, p->C_stride[3], es);
  a.tfB = p->B_stride[3] <= p->B_stride[2];
  a.tfC = p->C_stride[3] <= p->C_stride[2];
  a.softplus = p->delta_softplus != 0;
  a.has_z = p->z != nullptr;
  a.chunk_len = best_ch.len;
  a.nchunk = best_ch.count;
  a.rows = rows;
  if (best_ch.count > 1) {
    a.ws_h = static_cast<float*>(p->workspace);
    a.ws_s = a.ws_h + (best_ch.count - 1) * rows * ncap;
  }

  const int64_t ctas = p->batch * p->ngroups * a.nblk;
  KernelFn fn = p->reverse ? best.rev : best.fwd;
  if (p->reverse && occupancy(fn, best.smem, dev) <= 0) return DIMEX_ERR_CUDA;
  (void)cudaGetLastError();  // drop stale, non-sticky errors of the queries above
  auto launch = [&](int state_pass, int nchunks) {
    a.state_pass = state_pass;
    void* kargs[] = {&a};
    return cudaLaunchKernel(reinterpret_cast<const void*>(fn), dim3(static_cast<unsigned>(ctas), nchunks), dim3(128),
                            kargs, static_cast<size_t>(best.smem), stream) == cudaSuccess;
  };
  // Split: the state pass over every chunk but the last, then the output pass over all of them.
  if (best_ch.count > 1 && !launch(1, best_ch.count - 1)) return DIMEX_ERR_CUDA;
  if (!launch(0, best_ch.count)) return DIMEX_ERR_CUDA;
  // Peek, not Get: the cause stays readable through cudaGetLastError(), as the header promises.
  return cudaPeekAtLastError() == cudaSuccess ? DIMEX_OK : DIMEX_ERR_CUDA;
}

DIMEX_EXPORT size_t dimex_selective_scan_workspace_size(const dimex_scan_params* p) {
  using namespace dimex;
  if (p == nullptr || p->batch <= 0 || p->dim <= 0 || p->seqlen <= 0 || p->dstate <= 0 || p->dstate > 64) return 0;
  return static_cast<size_t>(max_state_rows(p->batch, p->dim, p->seqlen)) * (padded_dstate(p->dstate) + 1) *
         sizeof(float);
}

// Fused selective-scan forward kernel (Mamba-1 / S6), inference only. Shared by the PyTorch op and
// the TensorRT plugin through the C ABI in include/dimexport_scan.h; see plugins_trt/KERNEL_NOTES.md.
//
// Work decomposition (scan_kernels.md §7a):
//   * a CTA of 128 threads owns kDc channels of one (batch, group) for the whole sequence;
//   * a channel is owned by a group of S adjacent lanes, each holding NS = N / S fp32 states in registers,
//     so that small batches still fill the GPU (S = 1 for large B*D, up to 16 for B = 1);
//   * tokens are walked sequentially (forwards, or backwards for `reverse`) in sub-blocks of 16;
//   * B and C of the CTA's (batch, group) are staged once per 32-token tile in shared memory as fp32,
//     [token][2N], and read as warp-wide broadcasts by every channel of the CTA (the next tile lands with
//     cp.async during the current one and is converted between two barriers);
//   * each lane copies its own run of u, delta and z (the tokens whose pointwise work it does) for the
//     next 16-token sub-block into a private, double-buffered shared-memory slot with cp.async when the
//     token dimension is contiguous and aligned (element loads otherwise: any strides are accepted);
//     private slots need no warp synchronisation and cost one instruction per copied piece; where the channels are
//     contiguous instead (token-major storage, the Mamba mixer's layout) the warp copies the sub-block's
//     [16 tokens][its channels] tile with cp.async and each lane reads its channel's column (copy_tile);
//   * only the gated output is written, straight from registers;
//   * for small batch * dim the host splits the sequence into chunks (blockIdx.y) and launches twice: a state
//     pass (each chunk but the last scanned from h = 0: end state and sum of dt to the workspace; no C, z or
//     output) and an output pass (each chunk starts from the state combined over the chunks before it).
// Per token and channel: dt = softplus(delta + bias) (fp32), du = dt * u, h = 2^(dt * A * log2 e) * h + B du,
// y = C . h + D u, out = y * silu(z). With S > 1 the lanes of a group split the per-token pointwise work
// (softplus, gate) by token and exchange dt/du through shared memory; the partial sums of C . h are
// combined by a shuffle reduce-scatter that leaves each lane the finished y of its own tokens.
#pragma once

#include <cstdint>

#include "scan_args.h"
#include "scan_math.cuh"

#ifndef DIMEX_SCAN_POLY_EVERY
// One decay exp in DIMEX_SCAN_POLY_EVERY is computed with the FMA-pipe polynomial instead of the SFU
// (0 = none). Chosen by measurement, see KERNEL_NOTES.md.
#define DIMEX_SCAN_POLY_EVERY 0
#endif

namespace dimex {

template <typename T, int NS_, int S_>
struct KCfg {
  static constexpr int NS = NS_, S = S_, N = NS * S;
  static constexpr int kThreads = 128, kWarps = 4, kCw = 32 / S, kDc = kWarps * kCw;
  static constexpr int kSB = 16;  // tokens per sub-block (u/delta/z staging, register-unrolled loop)
  static constexpr int kT = DIMEX_SCAN_TILE_TOKENS;  // tokens per B/C tile (a multiple of kSB)
  static constexpr int V = kSB / S;  // tokens whose pointwise work one lane does per sub-block
  static constexpr int ES = static_cast<int>(sizeof(T));
  static constexpr int kRun = V * ES;                 // bytes of a lane's run of one tensor
  static constexpr int kSlot = kRun < 4 ? 4 : kRun;   // its staging slot (a 2-byte run sits in a 4-byte window)
  static constexpr int kUnit = kSlot < 16 ? kSlot : 16;  // slot bytes per thread-interleaved unit row
  static constexpr int kUnits = kSlot / kUnit;
  static constexpr int kRowBC = kT * ES;    // bytes of one raw B/C row per tile (64 or 128)
  static constexpr int kUPRBC = kRowBC / 16;
  static constexpr int kScrRow = kSB + 4;   // padded floats per dt/du scratch row (conflict-free float4)
  static constexpr int kBcfFloats = kT * 2 * N;  // one fp32 [kT][2N] B/C tile
  static constexpr int kRawBytes = 2 * N * kRowBC;  // one raw (input dtype) B/C tile
  static constexpr int kOffBcf = 0;                  // 2 fp32 tiles: in use, next
  static constexpr int kOffRaw = kOffBcf + 2 * kBcfFloats * 4;  // 1 raw tile: landing
  static constexpr int kOffStage = kOffRaw + kRawBytes;
  static constexpr int kStageBuf = 3 * kSlot * kThreads;  // u, delta, z slots of all lanes, one buffer
  static constexpr int kOffScr = kOffStage + 2 * kStageBuf;
  static constexpr int kScrWarp = S > 1 ? 2 * kCw * kScrRow : 0;  // floats
  static constexpr int kSmem = kOffScr + kWarps * kScrWarp * 4;
  static_assert(S >= 1 && S <= 16 && (S & (S - 1)) == 0, "lanes per channel");
  static_assert(NS == 1 || NS == 2 || NS == 4 || NS == 8 || NS == 16, "states per lane");
  static_assert(V * ES >= 2, "run size");
};

// XOR swizzle of 16-byte units inside rows of `rowbytes` (UPR units): 8 consecutive rows read at the same
// logical unit hit 8 different bank quads, and cp.async pieces stay 16-byte aligned.
template <int UPR>
__device__ __forceinline__ int swz(int row, int rowbytes, int o) {
  constexpr int kRowsPerCycle = UPR >= 8 ? 1 : 8 / UPR;
  constexpr int kMask = UPR >= 8 ? 7 : UPR - 1;
  return row * rowbytes + ((((o >> 4) ^ ((row / kRowsPerCycle) & kMask))) << 4) + (o & 15);
}

__device__ __forceinline__ void cp_async(void* dst, const void* src, int w, int nbytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  if (w == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(nbytes) : "memory");
  } else if (w == 8) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(s), "l"(src), "r"(nbytes) : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src), "r"(nbytes) : "memory");
  }
}
// Same, for a whole piece (no zero fill): the common case, one instruction with immediate offsets.
template <int W>
__device__ __forceinline__ void cp_async_full(void* dst, const void* src) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  if constexpr (W == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(s), "l"(src), "n"(W) : "memory");
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ int ilog2(int x) { return 31 - __clz(x); }

// c ? a : b as a PTX select. Written in asm so that the compiler cannot turn a select between two
// elements of a register array into a dynamically indexed (local-memory) load.
__device__ __forceinline__ float selp(bool c, float a, float b) {
  float r;
  asm("{\n .reg .pred p;\n setp.ne.u32 p, %3, 0;\n selp.f32 %0, %1, %2, p;\n}" : "=f"(r) : "f"(a), "f"(b), "r"((unsigned)c));
  return r;
}

// Returns x through an empty volatile asm, so that address arithmetic derived from it is recomputed
// where it is used instead of being hoisted out of the token loop into (scarce) registers.
__device__ __forceinline__ int opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}

// Per-lane staging slot of one tensor: [buffer][tensor][unit][thread] units of kUnit bytes, so that the
// lanes of a warp touch consecutive 16-byte units (no bank conflicts).
template <class C>
__device__ __forceinline__ uint8_t* slot_ptr(uint8_t* stage, int buf, int x, int tid) {
  return stage + (buf * 3 + x) * (C::kSlot * C::kThreads) + tid * C::kUnit;
}

// Starts the copy of this lane's run (tokens [tr, tr + V) of its row `src`, token stride `stok`) into its
// slot. Vector path (w > 0: contiguous and w-aligned rows): cp.async pieces, zero-filled past L; a 2-byte
// run is fetched as the aligned 4-byte window that contains it. Element path otherwise (synchronous).
template <class C, typename T>
__device__ __forceinline__ void copy_run(uint8_t* slot, const T* __restrict__ src, int64_t stok, int tr, int L,
                                         int w) {
  constexpr int kStride = C::kThreads * C::kUnit;  // bytes between a thread's consecutive units
  if (w > 0) {
    const int tw = C::kRun < 4 ? (tr & ~1) : tr;  // first token of the copied window
    const T* g = src + tw;
    const int pw = min(w, C::kSlot);
    auto dst = [&](int off) { return slot + (off / C::kUnit) * kStride + off % C::kUnit; };
    if (tw + C::kSlot / C::ES <= L) {  // whole window inside the sequence
      const uint8_t* gb = reinterpret_cast<const uint8_t*>(g);
      if (pw == 16) {
#pragma unroll
        for (int off = 0; off < C::kSlot; off += 16) cp_async_full<16>(dst(off), gb + off);
      } else if (pw == 8) {
#pragma unroll
        for (int off = 0; off < C::kSlot; off += 8) cp_async_full<8>(dst(off), gb + off);
      } else {
#pragma unroll
        for (int off = 0; off < C::kSlot; off += 4) cp_async_full<4>(dst(off), gb + off);
      }
    } else {  // the last sub-block: pieces past L are zero-filled (src-size), never read
      for (int off = 0; off < C::kSlot; off += pw) {
        const int nb = max(0, min(pw, (L - (tw + off / C::ES)) * C::ES));
        cp_async(dst(off), nb > 0 ? g + off / C::ES : src, pw, nb);
      }
    }
  } else {
    const int base = C::kRun < 4 ? (tr & 1) * C::ES : 0;  // same position as the vector path's window
#pragma unroll
    for (int q = 0; q < C::V; ++q) {
      const int off = base + q * C::ES;
      const T v = tr + q < L ? src[static_cast<int64_t>(tr + q) * stok] : from_f<T>(0.0f);
      *reinterpret_cast<T*>(slot + (off / C::kUnit) * kStride + off % C::kUnit) = v;
    }
  }
}

// Reads this lane's run back as 32-bit words (a 2-byte run is returned in the low half of word 0): from its private
// slot, or with cs > 0 from its column of a warp's channel tile (V elements cs bytes apart, see copy_tile).
template <class C>
__device__ __forceinline__ void read_run(uint32_t* w, const uint8_t* slot, int tr, int cs) {
  constexpr int kStride = C::kThreads * C::kUnit;
  if (cs > 0) {
    if constexpr (C::ES == 4) {
#pragma unroll
      for (int q = 0; q < C::V; ++q) w[q] = *reinterpret_cast<const uint32_t*>(slot + q * cs);
    } else {
#pragma unroll
      for (int k = 0; k < (C::V + 1) / 2; ++k) {
        const uint32_t lo = *reinterpret_cast<const uint16_t*>(slot + 2 * k * cs);
        const uint32_t hi = 2 * k + 1 < C::V ? *reinterpret_cast<const uint16_t*>(slot + (2 * k + 1) * cs) : 0u;
        w[k] = lo | (hi << 16);
      }
    }
  } else if constexpr (C::kUnit == 16) {
#pragma unroll
    for (int k = 0; k < C::kUnits; ++k) {
      const uint4 v = *reinterpret_cast<const uint4*>(slot + k * kStride);
      w[4 * k] = v.x;
      w[4 * k + 1] = v.y;
      w[4 * k + 2] = v.z;
      w[4 * k + 3] = v.w;
    }
  } else if constexpr (C::kUnit == 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(slot);
    w[0] = v.x;
    w[1] = v.y;
  } else {
    const uint32_t v = *reinterpret_cast<const uint32_t*>(slot);
    w[0] = C::kRun < 4 ? (v >> (16 * (tr & 1))) : v;
  }
}

// The channel-tile path (token-major u, delta or z): the warp copies the [kSB tokens][kCw channels] tile of one
// sub-block, starting at token t0, from `src0` (its first channel's element of token 0; channels contiguous, token
// stride stok) into `tile`, rows of kCw * ES bytes, in w-byte cp.async pieces; channels past the warp's `nrows`
// valid ones and tokens past L are zero-filled (`base`, a valid address, stands in where nothing is read). Each warp
// load is a contiguous run of the warp's channels, where lanes walking their own channel's tokens would touch a
// different row per element.
template <class C, typename T>
__device__ __forceinline__ void copy_tile(uint8_t* tile, const T* __restrict__ src0, const T* base, int64_t stok,
                                          int t0, int L, int nrows, int w, int lane) {
  constexpr int kRow = C::kCw * C::ES;
  const int lppr = ilog2(kRow) - ilog2(w);
  const int vbytes = max(0, nrows) * C::ES;
  for (int q = lane; q < (C::kSB << lppr); q += 32) {
    const int t = q >> lppr;
    const int o = (q - (t << lppr)) * w;
    const int nb = t0 + t < L ? max(0, min(w, vbytes - o)) : 0;
    const T* src = nb > 0 ? reinterpret_cast<const T*>(reinterpret_cast<const uint8_t*>(
                                src0 + static_cast<int64_t>(t0 + t) * stok) + o)
                          : base;
    cp_async(tile + t * kRow + o, src, w, nb);
  }
}

// A whole tile of B (or C) rows (token-contiguous, W-aligned) into the raw buffer, no bounds checks. kThreads is a
// multiple of the pieces per row, so a thread's pieces share their offset o in the row and step by dn rows: one
// 64-bit source address per tile, advanced per piece (the generic loop of load_bc forms it per piece).
template <class C, int W, typename T>
__device__ __forceinline__ void load_bc_tile(uint8_t* raw, int rowbase, const T* __restrict__ src, int64_t sn,
                                             int tid) {
  constexpr int kPPR = C::kRowBC / W;       // pieces per row
  constexpr int kDn = C::kThreads / kPPR;   // rows between a thread's pieces
  constexpr int kTrips = (C::N + kDn - 1) / kDn;
  static_assert(C::kThreads % kPPR == 0, "pieces per row");
  const int n0 = tid / kPPR;
  const int o = (tid % kPPR) * W;
  src += n0 * sn + o / C::ES;
  const int64_t step = kDn * sn;
#pragma unroll
  for (int r = 0; r < kTrips; ++r) {
    const int n = n0 + r * kDn;
    if (C::N % kDn == 0 || n < C::N) cp_async_full<W>(raw + swz<C::kUPRBC>(rowbase + n, C::kRowBC, o), src);
    src += step;
  }
}

// Loads the B (or C) rows of one tile: with cp.async into the raw buffer (converted later by
// convert_bc), or with element loads converted straight into the fp32 tile.
template <class C, typename T>
__device__ __forceinline__ void load_bc(uint8_t* raw, float* bcf, int rowbase, const T* __restrict__ base,
                                        int64_t off, int64_t sn, int64_t sl, int tk0, int L, int Nreal, int w,
                                        int tokfast, int tid) {
  tid = opaque(tid);
  if (w > 0) {
    const int lppr = ilog2(C::kRowBC) - ilog2(w);
    if (Nreal == C::N && tk0 + C::kT <= L) {  // whole tile, all rows real: the common case
      const T* src = base + (off + tk0);
      if (w == 16) load_bc_tile<C, 16>(raw, rowbase, src, sn, tid);
      else if (w == 8) load_bc_tile<C, 8>(raw, rowbase, src, sn, tid);
      else load_bc_tile<C, 4>(raw, rowbase, src, sn, tid);
      return;
    }
    const int total = C::N << lppr;
    for (int q = tid; q < total; q += C::kThreads) {
      const int n = q >> lppr;
      const int o = (q - (n << lppr)) * w;
      const int t = tk0 + o / C::ES;
      int nb = 0;
      const T* src = base;
      if (n < Nreal && t < L) {
        nb = min(w, (L - t) * C::ES);
        src = base + off + n * sn + t;
      }
      cp_async(raw + swz<C::kUPRBC>(rowbase + n, C::kRowBC, o), src, w, nb);
    }
  } else {
    constexpr int kPer = C::N * C::kT / C::kThreads;
    T v[kPer];
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
      const int e = tid + C::kThreads * r;
      const int n = tokfast ? e / C::kT : e % C::N;
      const int t = tokfast ? e % C::kT : e / C::N;
      v[r] = (n < Nreal && tk0 + t < L) ? base[off + n * sn + static_cast<int64_t>(tk0 + t) * sl]
                                        : from_f<T>(0.0f);
    }
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
      const int e = tid + C::kThreads * r;
      const int n = tokfast ? e / C::kT : e % C::N;
      const int t = tokfast ? e % C::kT : e / C::N;
      bcf[t * 2 * C::N + rowbase + n] = to_f(v[r]);
    }
  }
}

// Raw (swizzled, input dtype) B or C rows -> fp32 [kT][2N] tile.
template <class C, typename T>
__device__ __forceinline__ void convert_bc(const uint8_t* raw, float* bcf, int rowbase, int tid) {
  tid = opaque(tid);
  constexpr int kUnits = C::N * C::kUPRBC;
  constexpr int kPerUnit = 16 / C::ES;
#pragma unroll
  for (int q0 = 0; q0 < kUnits; q0 += C::kThreads) {
    const int q = q0 + tid;
    if (kUnits % C::kThreads == 0 || q < kUnits) {
      const int n = q % C::N;
      const int j = q / C::N;
      const uint4 v = *reinterpret_cast<const uint4*>(raw + swz<C::kUPRBC>(rowbase + n, C::kRowBC, j * 16));
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int k = 0; k < kPerUnit; ++k) bcf[(j * kPerUnit + k) * 2 * C::N + rowbase + n] = Elem<T>::get(w, k);
    }
  }
}

// Stores a run of `count` elements held as packed words: vector stores of up to `w` bytes when the
// run is complete and the token dimension is contiguous (w > 0), else element stores with stride.
template <typename T, int NB>
__device__ __forceinline__ void st_run(T* __restrict__ dst, int64_t stok, const uint32_t* wv, int nvalid, int w) {
  constexpr int ES = static_cast<int>(sizeof(T));
  constexpr int kCount = NB / ES;
  if (NB >= 4 && w >= 4 && nvalid == kCount) {
    const int pw = min(w, NB >= 16 ? 16 : NB);
    uint8_t* d = reinterpret_cast<uint8_t*>(dst);
    if (pw == 16) {
#pragma unroll
      for (int k = 0; k < (NB >= 16 ? NB / 16 : 0); ++k)
        *reinterpret_cast<uint4*>(d + 16 * k) = make_uint4(wv[4 * k], wv[4 * k + 1], wv[4 * k + 2], wv[4 * k + 3]);
    } else if (pw == 8) {
#pragma unroll
      for (int k = 0; k < (NB >= 8 ? NB / 8 : 0); ++k)
        *reinterpret_cast<uint2*>(d + 8 * k) = make_uint2(wv[2 * k], wv[2 * k + 1]);
    } else {
#pragma unroll
      for (int k = 0; k < NB / 4; ++k) *reinterpret_cast<uint32_t*>(d + 4 * k) = wv[k];
    }
  } else {
#pragma unroll
    for (int e = 0; e < kCount; ++e) {
      if (e < nvalid) {
        if constexpr (ES == 4) {
          *reinterpret_cast<uint32_t*>(dst + e * stok) = wv[e];
        } else {
          const uint32_t x = wv[e >> 1];
          *reinterpret_cast<uint16_t*>(dst + e * stok) = static_cast<uint16_t>((e & 1) ? (x >> 16) : (x & 0xffffu));
        }
      }
    }
  }
}

// A lane's NS consecutive floats (a B or C row slice in shared memory, a chunk state in the workspace), aligned
// to their size up to 16 bytes, moved in the widest accesses that allows.
template <int NS>
__device__ __forceinline__ void load_vec(float* v, const float* src) {
  if constexpr (NS >= 4) {
#pragma unroll
    for (int k = 0; k < NS; k += 4) {
      const float4 x = *reinterpret_cast<const float4*>(src + k);
      v[k] = x.x; v[k + 1] = x.y; v[k + 2] = x.z; v[k + 3] = x.w;
    }
  } else if constexpr (NS == 2) {
    const float2 x = *reinterpret_cast<const float2*>(src);
    v[0] = x.x; v[1] = x.y;
  } else {
    v[0] = src[0];
  }
}
template <int NS>
__device__ __forceinline__ void store_vec(float* dst, const float* v) {
  if constexpr (NS >= 4) {
#pragma unroll
    for (int k = 0; k < NS; k += 4) *reinterpret_cast<float4*>(dst + k) = make_float4(v[k], v[k + 1], v[k + 2], v[k + 3]);
  } else if constexpr (NS == 2) {
    *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
  } else {
    dst[0] = v[0];
  }
}

// Whether the decay exp of (token index ii, lane state k) uses the FMA-pipe polynomial.
template <int NS>
__host__ __device__ constexpr bool use_poly(int ii, int k) {
  return DIMEX_SCAN_POLY_EVERY > 0 && ((ii * NS + k) % (DIMEX_SCAN_POLY_EVERY > 0 ? DIMEX_SCAN_POLY_EVERY : 1)) == 0;
}

// Per-lane scan state and the per-sub-block computation.
template <typename T, int NS, int S, bool kRev>
struct Scanner {
  using C = KCfg<T, NS, S>;
  float h[NS];
  float A2[NS];
  float Dv, bias;
  float dtsum;  // sum of dt over the chunk (state pass only)
  int softplus, has_z;

  // One state update for token position p (in the sub-block) with the fp32 B/C row `bc` (2N floats);
  // returns this lane's part of C . h (kEmit), or 0 in the state pass (C is neither loaded nor used).
  template <bool kEmit>
  __device__ __forceinline__ float step(const float* bc, int sl, float dt, float du, int ii) {
    float b[NS], c[NS];
    load_vec<NS>(b, bc + sl * NS);
    if constexpr (kEmit) load_vec<NS>(c, bc + C::N + sl * NS);
    float y0 = 0.0f, y1 = 0.0f;  // two chains halve the dependent-FMA latency of C . h
#pragma unroll
    for (int k = 0; k < NS; ++k) {
      const float x = dt * A2[k];
      const float dA = use_poly<NS>(ii, k) ? ex2_poly(x) : ex2_sfu(x);
      h[k] = fmaf(dA, h[k], b[k] * du);
      if constexpr (kEmit) {
        if (k & 1) y1 = fmaf(c[k], h[k], y1); else y0 = fmaf(c[k], h[k], y0);
      }
    }
    return y0 + y1;
  }

  // Branch-free on purpose: a (uniform) branch per token splits the unrolled sub-block into basic blocks
  // and stops the scheduler from overlapping consecutive tokens (measured 3-4x slower, KERNEL_NOTES.md).
  // Without softplus (rare) the unused result costs one SFU op.
  __device__ __forceinline__ float dt_of(float delta) const {
    const float x = delta + bias;
    return selp(softplus != 0, softplus_acc(x), x);
  }

  // out * silu(z), or out when there is no z (the gate is then computed on stale shared memory and
  // discarded by the select: two SFU ops per element wasted, instead of a branch per token).
  __device__ __forceinline__ float gate(float o, float z) const { return selp(has_z != 0, o * silu_acc(z), o); }

  // S == 1: the lane owns the whole channel; everything stays in registers. Without kEmit (state pass)
  // only the state and the sum of dt are advanced.
  template <bool kFull, bool kEmit>
  __device__ __forceinline__ void sub_block_s1(const uint8_t* su, const uint8_t* sd, const uint8_t* sz,
                                               const int* cs, const float* bcs, int t0, int L, T* orow,
                                               int64_t ostok, int wO, int nvalid) {
    constexpr int kWords = C::kRun / 4;
    uint32_t wu[kWords], wd[kWords], wz[kWords], wo[kWords];
    read_run<C>(wu, su, t0, cs[0]);
    read_run<C>(wd, sd, t0, cs[1]);
    if constexpr (kEmit) read_run<C>(wz, sz, t0, cs[2]);
    float prev = 0.0f;
#pragma unroll
    for (int ii = 0; ii < C::kSB; ++ii) {
      const int p = kRev ? C::kSB - 1 - ii : ii;
      const float uu = Elem<T>::get(wu, p);
      float dt = dt_of(Elem<T>::get(wd, p));
      if (!kFull && t0 + p >= L) dt = 0.0f;  // past the end: identity update (trap 7)
      const float du = dt * uu;
      const float y = step<kEmit>(bcs + p * 2 * C::N, 0, dt, du, ii);
      if constexpr (kEmit) {
        const float o = gate(fmaf(Dv, uu, y), Elem<T>::get(wz, p));
        if (ii & 1) {
          if (kRev) Elem<T>::put2(wo, p, o, prev); else Elem<T>::put2(wo, p - 1, prev, o);
        } else {
          prev = o;
        }
      } else {
        dtsum += dt;
      }
    }
    if constexpr (kEmit) st_run<T, C::kRun>(orow, ostok, wo, nvalid, wO);
  }

  // S > 1: lanes of a group split the pointwise work by token and the states by index. Without kEmit (state
  // pass) only the state and the sum of dt (of all the group's tokens, in every lane) are advanced.
  template <bool kFull, bool kEmit>
  __device__ __forceinline__ void sub_block_split(const uint8_t* su, const uint8_t* sd, const uint8_t* sz,
                                                  const int* cs, const float* bcs, float* scr, int grp, int sl,
                                                  int t0, int L, T* orun, int64_t ostok, int wO, int nvalid) {
    constexpr int RB = C::kRun;                  // bytes of a lane's run
    constexpr int kW = RB >= 4 ? RB / 4 : 1;     // words of a lane's run
    float* sdt = scr + grp * C::kScrRow;
    float* sdu = scr + (C::kCw + grp) * C::kScrRow;
    const int p0 = sl * C::V;
    uint32_t wu[kW], wz[kW], wo[kW];
    {
      uint32_t wd[kW];
      read_run<C>(wu, su, t0 + p0, cs[0]);
      read_run<C>(wd, sd, t0 + p0, cs[1]);
#pragma unroll
      for (int q = 0; q < C::V; ++q) {
        float dt = dt_of(Elem<T>::get(wd, q));
        if (!kFull && t0 + p0 + q >= L) dt = 0.0f;
        sdt[p0 + q] = dt;
        sdu[p0 + q] = dt * Elem<T>::get(wu, q);
      }
    }
    if constexpr (kEmit) read_run<C>(wz, sz, t0 + p0, cs[2]);
    __syncwarp();
    float yv[C::kSB];
    float4 dt4, du4;
#pragma unroll
    for (int ii = 0; ii < C::kSB; ++ii) {
      const int p = kRev ? C::kSB - 1 - ii : ii;
      if ((ii & 3) == 0) {
        dt4 = *reinterpret_cast<const float4*>(sdt + (p & ~3));
        du4 = *reinterpret_cast<const float4*>(sdu + (p & ~3));
      }
      const int e = p & 3;
      const float dt = e == 0 ? dt4.x : e == 1 ? dt4.y : e == 2 ? dt4.z : dt4.w;
      const float du = e == 0 ? du4.x : e == 1 ? du4.y : e == 2 ? du4.z : du4.w;
      yv[p] = step<kEmit>(bcs + p * 2 * C::N, sl, dt, du, ii);
      if constexpr (!kEmit) dtsum += dt;
    }
    if constexpr (kEmit) {
      // Reduce-scatter over the S lanes: lane sl ends with the full sums of positions [sl*V, sl*V + V).
      constexpr int kSteps = S == 2 ? 1 : S == 4 ? 2 : S == 8 ? 3 : 4;
#pragma unroll
      for (int st = 0; st < kSteps; ++st) {
        const int m = S >> (st + 1), cnt = C::kSB >> st;
        const bool up = (sl & m) != 0;
#pragma unroll
        for (int q = 0; q < C::kSB / 2; ++q) {  // constant trip count, so that it unrolls before st does
          if (q >= cnt / 2) break;
          const float send = selp(up, yv[q], yv[q + cnt / 2]);
          const float keep = selp(up, yv[q + cnt / 2], yv[q]);
          yv[q] = keep + __shfl_xor_sync(0xffffffffu, send, m);
        }
      }
      float prev = 0.0f;
#pragma unroll
      for (int q = 0; q < C::V; ++q) {
        const float o = gate(fmaf(Dv, Elem<T>::get(wu, q), yv[q]), Elem<T>::get(wz, q));
        if constexpr (C::V == 1) {
          if constexpr (C::ES == 4) wo[0] = __float_as_uint(o);
          else { Elem<T>::put2(wo, 0, o, 0.0f); }
        } else {
          if (q & 1) Elem<T>::put2(wo, q - 1, prev, o); else prev = o;
        }
      }
      st_run<T, RB>(orun, ostok, wo, nvalid, wO);
    }
  }
};

// Register cap: enough CTAs per SM to hide latency (see KERNEL_NOTES.md); unbounded, ptxas hoists the
// loads of the whole unrolled sub-block and runs out of registers.
#ifndef DIMEX_SCAN_MIN_BLOCKS_WIDE
#define DIMEX_SCAN_MIN_BLOCKS_WIDE 3  // CTAs per SM for 16 states per lane: 168 registers
#endif
#ifndef DIMEX_SCAN_MIN_BLOCKS_HALF
// CTAs per SM for 8 states per lane (N = 16 over S = 2): 168 registers. At 128 it spilled in the token loop, and the
// 3 CTAs per SM that B = 8, D = 3072 needs (384 CTAs on 132 SMs) leave the fourth's registers unused anyway.
#define DIMEX_SCAN_MIN_BLOCKS_HALF 3
#endif
#ifndef DIMEX_SCAN_MIN_BLOCKS_NARROW
#define DIMEX_SCAN_MIN_BLOCKS_NARROW 4  // CTAs per SM for fewer states per lane: 128 registers
#endif
template <int NS, int S>
constexpr int min_blocks() {
  return NS >= 16 ? DIMEX_SCAN_MIN_BLOCKS_WIDE : NS >= 8 ? DIMEX_SCAN_MIN_BLOCKS_HALF : DIMEX_SCAN_MIN_BLOCKS_NARROW;
}

template <typename T, int NS, int S, bool kRev>
__global__ void __launch_bounds__(128, min_blocks<NS, S>()) scan_fwd_kernel(const ScanArgs a) {
  using C = KCfg<T, NS, S>;
  extern __shared__ __align__(16) uint8_t smem[];
  float* bcf = reinterpret_cast<float*>(smem + C::kOffBcf);
  uint8_t* raw = smem + C::kOffRaw;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int grp = lane / S, sl = lane % S;
  const int L = a.L;

  const int jc = blockIdx.y;                           // chunk, in processing order
  const int jt = kRev ? a.nchunk - 1 - jc : jc;        // the same chunk in token order
  const int tok0 = jt * a.chunk_len;                   // a multiple of kT
  const int tok1 = min(L, tok0 + a.chunk_len);
  const bool emit = !a.state_pass;

  const int cb = blockIdx.x % a.nblk;
  const int bg = blockIdx.x / a.nblk;
  const int g = bg % a.G;
  const int64_t b = bg / a.G;
  const int cw0 = cb * C::kDc + warp * C::kCw;  // first channel of this warp, within the group
  const int nrows = min(C::kCw, a.Dg - cw0);    // valid channel rows of this warp (may be <= 0)
  const int64_t dw = static_cast<int64_t>(g) * a.Dg + cw0;  // global channel of the warp's row 0
  const bool cvalid = grp < nrows;
  const int64_t d = cvalid ? dw + grp : 0;  // clamped for parameter reads

  Scanner<T, NS, S, kRev> sc;
#pragma unroll
  for (int k = 0; k < NS; ++k) {
    const int n = sl * NS + k;
    sc.A2[k] = n < a.N ? a.A[d * a.N + n] * kLog2e : 0.0f;  // log2(e) applied exactly once (trap 1)
    sc.h[k] = 0.0f;
  }
  sc.Dv = a.Dp ? a.Dp[d] : 0.0f;
  sc.bias = a.bias ? a.bias[d] : 0.0f;
  sc.softplus = a.softplus;
  sc.has_z = a.has_z;
  sc.dtsum = 0.0f;
  // Workspace row of this lane's channel (clamped like d for invalid lanes, which store nothing).
  const int64_t wrow = b * (static_cast<int64_t>(a.G) * a.Dg) + d;
  if (emit && jc > 0) {
    // Output pass: the state entering chunk jc, combined in order over the chunks before it:
    // h <- 2^(A log2e * sum dt) h + h_end (the affine maps of consecutive chunks composed).
    for (int i = 0; i < jc; ++i) {
      const float s = a.ws_s[i * a.rows + wrow];
      float he[NS];
      load_vec<NS>(he, a.ws_h + (i * a.rows + wrow) * C::N + sl * NS);
#pragma unroll
      for (int k = 0; k < NS; ++k) sc.h[k] = fmaf(ex2_sfu(sc.A2[k] * s), sc.h[k], he[k]);
    }
  }

  const T* u = static_cast<const T*>(a.u);
  const T* dl = static_cast<const T*>(a.delta);
  const T* zz = static_cast<const T*>(a.z);
  T* out = static_cast<T*>(a.out);
  const T* Bm = static_cast<const T*>(a.Bm);
  const T* Cm = static_cast<const T*>(a.Cm);
  const int64_t offB = b * a.sB[0] + g * a.sB[1];
  const int64_t offC = b * a.sC[0] + g * a.sC[1];
  // This lane's rows (its channel): output, and the sources of its runs.
  const int64_t dl_row = dw + (cvalid ? grp : 0);
  T* orow = out + b * a.so[0] + dl_row * a.so[1];
  const T* urow = u + b * a.su[0] + dl_row * a.su[1];
  const T* drow = dl + b * a.sdl[0] + dl_row * a.sdl[1];
  const T* zrow = a.has_z ? zz + b * a.sz[0] + dl_row * a.sz[1] : u;

  uint8_t* stage = smem + C::kOffStage;
  float* scr = reinterpret_cast<float*>(smem + C::kOffScr) + warp * C::kScrWarp;
  // The chunk's sub-blocks [sb0, sb1) and tiles [tl0, tl1), walked backwards for reverse.
  const int sb0 = tok0 / C::kSB, sb1 = (tok1 + C::kSB - 1) / C::kSB;
  const int tl0 = tok0 / C::kT, tl1 = (tok1 + C::kT - 1) / C::kT;
  const int nsb = sb1 - sb0;
  const int ntiles = tl1 - tl0;
  constexpr int kSBperT = C::kT / C::kSB;

  auto sb_at = [&](int i) { return kRev ? sb1 - 1 - i : sb0 + i; };
  // The warp's channel tile of tensor x in buffer buf (the channel-tile path; it fits in the tensor's slots).
  static_assert(C::kWarps * C::kSB * C::kCw * C::ES <= C::kSlot * C::kThreads, "channel tiles");
  constexpr int kTileRow = C::kCw * C::ES;
  auto tile_ptr = [&](int buf, int x) {
    return stage + (buf * 3 + x) * (C::kSlot * C::kThreads) + warp * (C::kSB * kTileRow);
  };
  const bool z_used = a.has_z && emit;
  auto stage_all = [&](int buf, int j) {
    const int t0 = j * C::kSB;  // the whole warp copies the channel tiles
    if (a.cwU) copy_tile<C>(tile_ptr(buf, 0), u + b * a.su[0] + dw, u, a.su[2], t0, L, nrows, a.cwU, lane);
    if (a.cwDl) copy_tile<C>(tile_ptr(buf, 1), dl + b * a.sdl[0] + dw, dl, a.sdl[2], t0, L, nrows, a.cwDl, lane);
    if (z_used && a.cwZ)
      copy_tile<C>(tile_ptr(buf, 2), zz + b * a.sz[0] + dw, zz, a.sz[2], t0, L, nrows, a.cwZ, lane);
    if (!cvalid) return;  // nothing of an invalid channel is stored; its stale slots are harmless
    const int tr = t0 + sl * C::V;
    if (!a.cwU) copy_run<C>(slot_ptr<C>(stage, buf, 0, tid), urow, a.su[2], tr, L, a.wU);
    if (!a.cwDl) copy_run<C>(slot_ptr<C>(stage, buf, 1, tid), drow, a.sdl[2], tr, L, a.wDl);
    if (z_used && !a.cwZ) copy_run<C>(slot_ptr<C>(stage, buf, 2, tid), zrow, a.sz[2], tr, L, a.wZ);
  };
  // Where this lane reads its runs in buffer buf: its slot, or its column (channel grp, from token sl * V) of the tile.
  const int cs[3] = {a.cwU ? kTileRow : 0, a.cwDl ? kTileRow : 0, a.cwZ ? kTileRow : 0};
  auto run_ptr = [&](int buf, int x) -> const uint8_t* {
    return cs[x] ? tile_ptr(buf, x) + grp * C::ES + sl * C::V * kTileRow : slot_ptr<C>(stage, buf, x, tid);
  };
  auto bc_tile = [&](int c) { return kRev ? tl1 - 1 - c : tl0 + c; };  // tile index of the c-th tile processed
  auto bcf_buf = [&](int c) { return bcf + (c & 1) * C::kBcfFloats; };
  // Starts loading the c-th tile: into the raw buffer (cp.async path) or straight into its fp32 buffer.
  auto bc_issue = [&](int c) {
    const int tk0 = bc_tile(c) * C::kT;
    load_bc<C>(raw, bcf_buf(c), 0, Bm, offB, a.sB[2], a.sB[3], tk0, L, a.N, a.wB, a.tfB, tid);
    if (emit) load_bc<C>(raw, bcf_buf(c), C::N, Cm, offC, a.sC[2], a.sC[3], tk0, L, a.N, a.wC, a.tfC, tid);
  };
  auto bc_convert = [&](int c) {
    if (a.wB > 0) convert_bc<C, T>(raw, bcf_buf(c), 0, tid);
    // C's units start at the other half of the CTA, so that with fewer units than threads (N = 16 in fp16/bf16:
    // 64 per matrix) all four warps convert, not the first two twice.
    if (a.wC > 0 && emit) convert_bc<C, T>(raw, bcf_buf(c), C::N, (tid + C::kThreads / 2) % C::kThreads);
  };

  // Prologue: first sub-block's u/delta/z and first tile's B/C.
  stage_all(0, sb_at(0));
  bc_issue(0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  bc_convert(0);
  __syncthreads();

  int c = 0;  // ordinal of the tile being processed
  for (int i = 0; i < nsb; ++i) {
    const int j = sb_at(i);
    const int tile = j / kSBperT;
    const bool has_next = i + 1 < nsb;
    const int jn = has_next ? sb_at(i + 1) : j;
    const bool tile_first = i == 0 || sb_at(i - 1) / kSBperT != tile;
    const bool tile_last = !has_next || jn / kSBperT != tile;
    // The raw buffer and the other fp32 buffer were released by the barriers that ended the last tile.
    if (tile_first && c + 1 < ntiles) bc_issue(c + 1);
    if (has_next) stage_all((i + 1) & 1, jn);
    cp_async_commit();
    cp_async_wait<1>();  // this lane's pieces of sub-block j: its slots, its part of the warp's channel tiles
    __syncwarp();        // ... and the other lanes' parts of the channel tiles
    if (nrows > 0) {
      const uint8_t* su = run_ptr(i & 1, 0);
      const uint8_t* sd = run_ptr(i & 1, 1);
      const uint8_t* sz = run_ptr(i & 1, 2);
      const float* bcs = bcf_buf(c) + (j % kSBperT) * C::kSB * 2 * C::N;
      const int t0 = j * C::kSB;
      const bool full = t0 + C::kSB <= L;
      // Rows past the group's end are computed on zeros and store nothing.
      const int tr = t0 + sl * C::V;  // first token of this lane's run (the whole sub-block if S == 1)
      const int nvalid = cvalid ? max(0, min(C::V, L - tr)) : 0;
      T* o = orow + tr * a.so[2];
      // CTA-uniform choice of one of four unrolled bodies (a branch inside one would split its tokens).
      if constexpr (S == 1) {
        if (emit) {
          if (full) sc.template sub_block_s1<true, true>(su, sd, sz, cs, bcs, t0, L, o, a.so[2], a.wO, nvalid);
          else sc.template sub_block_s1<false, true>(su, sd, sz, cs, bcs, t0, L, o, a.so[2], a.wO, nvalid);
        } else {
          if (full) sc.template sub_block_s1<true, false>(su, sd, sz, cs, bcs, t0, L, o, a.so[2], a.wO, nvalid);
          else sc.template sub_block_s1<false, false>(su, sd, sz, cs, bcs, t0, L, o, a.so[2], a.wO, nvalid);
        }
      } else {
        if (emit) {
          if (full)
            sc.template sub_block_split<true, true>(su, sd, sz, cs, bcs, scr, grp, sl, t0, L, o, a.so[2], a.wO,
                                                       nvalid);
          else
            sc.template sub_block_split<false, true>(su, sd, sz, cs, bcs, scr, grp, sl, t0, L, o, a.so[2], a.wO,
                                                        nvalid);
        } else {
          if (full)
            sc.template sub_block_split<true, false>(su, sd, sz, cs, bcs, scr, grp, sl, t0, L, o, a.so[2], a.wO,
                                                        nvalid);
          else
            sc.template sub_block_split<false, false>(su, sd, sz, cs, bcs, scr, grp, sl, t0, L, o, a.so[2], a.wO,
                                                         nvalid);
        }
      }
    }
    __syncwarp();
    if (tile_last && has_next) {
      cp_async_wait<0>();  // the next tile has landed (this thread's pieces)
      __syncthreads();     // ... all pieces; every warp is done with the current tile
      bc_convert(c + 1);
      __syncthreads();
      ++c;
    }
  }
  if (!emit && cvalid) {  // state pass: this chunk's end state (scanned from h = 0) and its sum of dt
    store_vec<NS>(a.ws_h + (jc * a.rows + wrow) * C::N + sl * NS, sc.h);
    if (sl == 0) a.ws_s[jc * a.rows + wrow] = sc.dtsum;
  }
}

}  // namespace dimex

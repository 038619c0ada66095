// The causal conv1d + SiLU on the GPU (dimex_causal_conv1d_silu_fwd, include/dimexport_scan.h). Two thread mappings,
// chosen by x's layout, both through conv_silu.h's arithmetic (the same bits):
// - channels contiguous (token-major x: the slice of in_proj's output the mixer hands over, whose output the op
//   allocates token-major too): a CTA takes 128 threads' channels (pairs where aligned) of one batch row and a tile of
//   64, 16 or 8 tokens, each thread walking the tokens with a register window of its K inputs per channel, so each
//   load and store of a warp covers 32 or 64 neighbouring channels of one token;
// - otherwise one warp per (b, d) row, lanes on consecutive tokens (contiguous loads and stores along L).
// Memory-bound: the floor is reading x and writing out once (issue "Whole-denoiser speed" §2; bench/fused_ops.py).
#include <cuda_runtime.h>

#include "conv_silu.h"
#include "dtype_dispatch.h"

#define DIMEX_EXPORT extern "C" __attribute__((visibility("default")))

namespace dimex {
namespace {

constexpr int kWarps = 4;  // rows per CTA

template <dimex_dtype DT, int K, bool kReverse>
__global__ void __launch_bounds__(kWarps * 32) conv_silu_kernel(dimex_conv_params p) {
  using T = typename Io<DT>::T;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= p.batch * p.dim) return;
  const int64_t b = row / p.dim, d = row - b * p.dim;
  const int lane = threadIdx.x % 32;
  const T* x = static_cast<const T*>(p.x) + b * p.x_stride[0] + d * p.x_stride[1];
  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + d * p.out_stride[1];
  const T* wrow = static_cast<const T*>(p.weight) + d * K;
  float w[K];
#pragma unroll
  for (int k = 0; k < K; ++k) w[k] = Io<DT>::load(wrow[k]);
  const float bias = p.bias ? Io<DT>::load(static_cast<const T*>(p.bias)[d]) : 0.0f;
  for (int64_t l = lane; l < p.seqlen; l += 32)
    out[l * p.out_stride[2]] = Io<DT>::store(conv_silu_at<DT, K, kReverse>(x, p.x_stride[2], p.seqlen, l, w, bias));
}

constexpr int kChannels = 128;  // threads per CTA of the channel mapping
// Tokens per CTA of the channel mapping: the longest of these tiles that gives kMinTiles CTAs, else the shortest
// (dim-h at batch 1: 144 CTAs of 64 sequential tokens were latency-bound, 29 us).
constexpr int kTiles[] = {64, 16, 8};
constexpr int kMinTiles = 1024;
// Tokens whose loads a thread has in flight together (divides every tile): 8 single channels or 4 pairs, 16 bytes of a
// 16-bit x either way (8 pairs took the kernel from 64 to 80 registers).
template <int V>
constexpr int kBatch = 8 / V;

// Channels d .. d + V - 1 of token pos as fp32 (0 outside 0..seqlen-1, the conv's padding): one load of V neighbouring
// channels (V = 2: 4 bytes of a 16-bit x, 8 of an fp32 one).
template <dimex_dtype DT, int V>
__device__ void x_channels(const typename Io<DT>::T* x, int64_t sl, int64_t seqlen, int64_t pos, float (&v)[V]) {
  using T = typename Io<DT>::T;
  if (pos < 0 || pos >= seqlen) {
#pragma unroll
    for (int c = 0; c < V; ++c) v[c] = 0.0f;
    return;
  }
  const T* at = x + pos * sl;
  if constexpr (V == 1) {
    v[0] = Io<DT>::load(*at);
  } else if constexpr (sizeof(T) == 2) {
    static_assert(V == 2, "a 16-bit pair");
    const unsigned q = *reinterpret_cast<const unsigned*>(at);
    v[0] = Io<DT>::load(static_cast<T>(q & 0xffffu)), v[1] = Io<DT>::load(static_cast<T>(q >> 16));
  } else {
    static_assert(V == 2, "an fp32 pair");
    const float2 q = *reinterpret_cast<const float2*>(at);
    v[0] = q.x, v[1] = q.y;
  }
}

template <dimex_dtype DT, int V>
__device__ void store_channels(typename Io<DT>::T* out, const float (&v)[V]) {
  using T = typename Io<DT>::T;
  if constexpr (V == 1) {
    *out = Io<DT>::store(v[0]);
  } else if constexpr (sizeof(T) == 2) {
    *reinterpret_cast<unsigned*>(out) =
        static_cast<unsigned>(Io<DT>::store(v[0])) | static_cast<unsigned>(Io<DT>::store(v[1])) << 16;
  } else {
    *reinterpret_cast<float2*>(out) = make_float2(v[0], v[1]);
  }
}

// The channel mapping: each thread takes V neighbouring channels (V = 2 where x's and out's pairs are aligned,
// channel_pairs) and walks the tile's tokens with a register window of their K inputs, so that a warp's loads and
// stores each cover 32 V neighbouring channels of one token (128 bytes for V = 2 and 16-bit x).
template <dimex_dtype DT, int K, bool kReverse, int V>
__global__ void __launch_bounds__(kChannels) conv_silu_channels_kernel(dimex_conv_params p, int tile) {
  using T = typename Io<DT>::T;
  const int64_t d = (static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x) * V;
  if (d >= p.dim) return;
  const int64_t b = blockIdx.z, l0 = static_cast<int64_t>(blockIdx.y) * tile;
  const int64_t l1 = p.seqlen - l0 < tile ? p.seqlen : l0 + tile;
  const T* x = static_cast<const T*>(p.x) + b * p.x_stride[0] + d * p.x_stride[1];
  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + d * p.out_stride[1];  // (pairs: both strides 1)
  const int64_t sl = p.x_stride[2];
  float w[V][K], bias[V], win[V][K];
#pragma unroll
  for (int c = 0; c < V; ++c) {
#pragma unroll
    for (int k = 0; k < K; ++k) w[c][k] = Io<DT>::load(static_cast<const T*>(p.weight)[(d + c) * K + k]);
    bias[c] = p.bias ? Io<DT>::load(static_cast<const T*>(p.bias)[d + c]) : 0.0f;
  }
  const int64_t start = window_start<K, kReverse>(l0);  // win[c][j] holds x[l + start - l0 + j] for output l
#pragma unroll
  for (int j = 0; j < K - 1; ++j) {
    float v[V];
    x_channels<DT, V>(x, sl, p.seqlen, start + j, v);
#pragma unroll
    for (int c = 0; c < V; ++c) win[c][j] = v[c];
  }
  // kBatch<V> tokens' inputs loaded before any of their outputs is stored: the loads do not wait on each other's
  // latency (out may alias x as far as the compiler knows, so it would not hoist a load above the previous store).
  for (int64_t l = l0; l < l1; l += kBatch<V>) {
    float next[kBatch<V>][V];
#pragma unroll
    for (int i = 0; i < kBatch<V>; ++i) x_channels<DT, V>(x, sl, p.seqlen, start + (l - l0) + K - 1 + i, next[i]);
#pragma unroll
    for (int i = 0; i < kBatch<V>; ++i) {
      float o[V];
#pragma unroll
      for (int c = 0; c < V; ++c) {
        win[c][K - 1] = next[i][c];
        o[c] = conv_silu_window<K, kReverse>(win[c], w[c], bias[c]);
#pragma unroll
        for (int j = 0; j < K - 1; ++j) win[c][j] = win[c][j + 1];
      }
      if (l + i < l1) store_channels<DT, V>(out + (l + i) * p.out_stride[2], o);
    }
  }
}

// Whether the channel mapping can take channel pairs: dim even, x's and out's channels contiguous and every pair
// aligned (base pointers and their other strides even).
bool channel_pairs(const dimex_conv_params& p) {
  const uintptr_t pair_bytes = 2 * (p.dtype == DIMEX_FLOAT32 ? 4 : 2);
  return p.dim % 2 == 0 && p.x_stride[1] == 1 && p.out_stride[1] == 1 &&
         reinterpret_cast<uintptr_t>(p.x) % pair_bytes == 0 && reinterpret_cast<uintptr_t>(p.out) % pair_bytes == 0 &&
         p.x_stride[0] % 2 == 0 && p.x_stride[2] % 2 == 0 && p.out_stride[0] % 2 == 0 && p.out_stride[2] % 2 == 0;
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_causal_conv1d_silu_fwd(const dimex_conv_params* p, cudaStream_t stream) {
  using namespace dimex;
  const int status = check_conv_params(p);
  if (status != DIMEX_OK) return status;
  // The channel mapping where x's channels are contiguous and its grid fits (token tiles and batch <= 65535).
  const int vec = channel_pairs(*p) ? 2 : 1;
  const int64_t cblocks = (p->dim + kChannels * vec - 1) / (kChannels * vec);
  int tile = 0;
  for (const int t : kTiles) {
    tile = t;
    if (p->batch * cblocks * ((p->seqlen + t - 1) / t) >= kMinTiles) break;
  }
  const bool channels =
      p->dim > 1 && p->x_stride[1] == 1 && p->batch <= 65535 && (p->seqlen + tile - 1) / tile <= 65535;
  const int64_t rows = (p->batch * p->dim + kWarps - 1) / kWarps;
  if (!channels && rows > 0x7fffffff) return DIMEX_ERR_INVALID_ARGUMENT;
  (void)cudaGetLastError();  // an earlier, unrelated error must not be reported as this call's
  const dim3 tiles(static_cast<unsigned>(cblocks), static_cast<unsigned>((p->seqlen + tile - 1) / tile),
                   static_cast<unsigned>(p->batch));
  with_dtype(p->dtype, [&](auto dt) {
    with_width(p->width, [&](auto k) {
      with_flag(p->reverse != 0, [&](auto rev) {
        constexpr dimex_dtype DT = decltype(dt)::value;
        constexpr int K = decltype(k)::value;
        constexpr bool kRev = decltype(rev)::value;
        if (channels && vec == 2)
          conv_silu_channels_kernel<DT, K, kRev, 2><<<tiles, kChannels, 0, stream>>>(*p, tile);
        else if (channels)
          conv_silu_channels_kernel<DT, K, kRev, 1><<<tiles, kChannels, 0, stream>>>(*p, tile);
        else
          conv_silu_kernel<DT, K, kRev><<<static_cast<unsigned>(rows), kWarps * 32, 0, stream>>>(*p);
      });
    });
  });
  return cudaPeekAtLastError() == cudaSuccess ? DIMEX_OK : DIMEX_ERR_CUDA;
}

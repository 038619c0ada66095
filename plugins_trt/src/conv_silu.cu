// The causal conv1d + SiLU on the GPU (dimex_causal_conv1d_silu_fwd, include/dimexport_scan.h). Two thread mappings,
// chosen by x's layout, both through conv_silu.h's arithmetic (the same bits):
// - channels contiguous (token-major x: the slice of in_proj's output the mixer hands over, whose output the op
//   allocates token-major too): a CTA takes 128 channels of one batch row and a tile of 64 (or 16) tokens, one
//   thread per channel walking the tokens with a register window of its K inputs, so each load and store of a warp
//   covers 32 neighbouring channels of one token;
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

constexpr int kChannels = 128;  // channels (threads) per CTA of the channel mapping
// Tokens per CTA of the channel mapping: 64, or 16 where that leaves fewer than kMinTiles CTAs (dim-h at batch 1: 144
// CTAs of 64 sequential tokens were latency-bound, 29 us; 576 of 16).
constexpr int kTile = 64, kShortTile = 16, kMinTiles = 1024;
constexpr int kBatch = 8;  // tokens whose loads a thread has in flight together (divides both tiles)

template <dimex_dtype DT, int K, bool kReverse>
__global__ void __launch_bounds__(kChannels) conv_silu_channels_kernel(dimex_conv_params p, int tile) {
  using T = typename Io<DT>::T;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  if (d >= p.dim) return;
  const int64_t b = blockIdx.z, l0 = static_cast<int64_t>(blockIdx.y) * tile;
  const int64_t l1 = p.seqlen - l0 < tile ? p.seqlen : l0 + tile;
  const T* x = static_cast<const T*>(p.x) + b * p.x_stride[0] + d * p.x_stride[1];
  T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + d * p.out_stride[1];
  const int64_t sl = p.x_stride[2];
  const T* wrow = static_cast<const T*>(p.weight) + d * K;
  float w[K], win[K];
#pragma unroll
  for (int k = 0; k < K; ++k) w[k] = Io<DT>::load(wrow[k]);
  const float bias = p.bias ? Io<DT>::load(static_cast<const T*>(p.bias)[d]) : 0.0f;
  const int64_t start = window_start<K, kReverse>(l0);  // win[j] holds x[l + start - l0 + j] for output l
#pragma unroll
  for (int j = 0; j < K - 1; ++j) win[j] = x_at<DT>(x, sl, p.seqlen, start + j);
  // kBatch tokens' inputs loaded before any of their outputs is stored: the loads do not wait on each other's latency
  // (out may alias x as far as the compiler knows, so it would not hoist a load above the previous store).
  for (int64_t l = l0; l < l1; l += kBatch) {
    float next[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) next[i] = x_at<DT>(x, sl, p.seqlen, start + (l - l0) + K - 1 + i);
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      win[K - 1] = next[i];
      if (l + i < l1) out[(l + i) * p.out_stride[2]] = Io<DT>::store(conv_silu_window<K, kReverse>(win, w, bias));
#pragma unroll
      for (int j = 0; j < K - 1; ++j) win[j] = win[j + 1];
    }
  }
}

}  // namespace
}  // namespace dimex

DIMEX_EXPORT int dimex_causal_conv1d_silu_fwd(const dimex_conv_params* p, cudaStream_t stream) {
  using namespace dimex;
  const int status = check_conv_params(p);
  if (status != DIMEX_OK) return status;
  // The channel mapping where x's channels are contiguous and its grid fits (token tiles and batch <= 65535).
  const int64_t cblocks = (p->dim + kChannels - 1) / kChannels;
  const int tile = p->batch * cblocks * ((p->seqlen + kTile - 1) / kTile) < kMinTiles ? kShortTile : kTile;
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
        if (channels)
          conv_silu_channels_kernel<DT, K, kRev><<<tiles, kChannels, 0, stream>>>(*p, tile);
        else
          conv_silu_kernel<DT, K, kRev><<<static_cast<unsigned>(rows), kWarps * 32, 0, stream>>>(*p);
      });
    });
  });
  return cudaPeekAtLastError() == cudaSuccess ? DIMEX_OK : DIMEX_ERR_CUDA;
}

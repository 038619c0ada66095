// Host/device interface between the C ABI (selective_scan.cu) and the kernel instantiations
// (scan_f32.cu, scan_f16.cu, scan_bf16.cu; one file per dtype so that they compile in parallel).
#pragma once

#include <cstdint>

#ifndef DIMEX_SCAN_TILE_TOKENS
// Tokens per B/C tile: 64 measured within +-5 % of 32 (KERNEL_NOTES.md); 32 needs half the shared memory.
// Sequence-split chunks are whole tiles, so the host needs it too.
#define DIMEX_SCAN_TILE_TOKENS 32
#endif

namespace dimex {

// Launch-time description of one scan, built on the host from dimex_scan_params.
struct ScanArgs {
  const void* u;
  const void* delta;
  const void* z;
  void* out;
  const void* Bm;
  const void* Cm;
  const float* A;
  const float* Dp;
  const float* bias;
  int64_t su[3], sdl[3], sz[3], so[3];  // (b, d, l) element strides
  int64_t sB[4], sC[4];                 // (b, g, n, l) element strides
  int L, Dg, G, N, nblk;                // N: the real dstate (<= the compiled one); nblk: CTAs per group
  // Width in bytes (4, 8, 16) of the vector path along the token dimension, or 0 for the element path.
  int wU, wDl, wZ, wO, wB, wC;
  // Width in bytes (4, 8, 16) of the channel-tile path of u, delta, z when their channels are contiguous (token-major
  // storage) and aligned, or 0: the warp copies each sub-block's [tokens][its channels] tile with cp.async and every
  // lane reads its channel's column.
  int cwU, cwDl, cwZ;
  // B/C element path: 1 if the token stride is the smaller one (threads then walk tokens, else states).
  int tfB, tfC;
  int softplus, has_z;
  // Sequence split: blockIdx.y is the CTA's chunk (in processing order: reversed for `reverse`) of
  // chunk_len tokens (whole B/C tiles); nchunk = 1 without a split. The state pass scans each chunk but the
  // last from h = 0 and writes its end state and sum of dt; the output pass starts each chunk from the
  // state carried over the chunks before it and writes the output.
  int chunk_len, nchunk, state_pass;
  int64_t rows;  // batch * dim: rows of one chunk's slice of the workspace
  float* ws_h;   // [nchunk - 1][rows][compiled N] chunk-end states
  float* ws_s;   // [nchunk - 1][rows] sums of dt over the chunk
};

using KernelFn = void (*)(ScanArgs);

// One compiled configuration: forward and reverse kernels, dynamic shared memory, channels per CTA.
struct KernelInfo {
  KernelFn fwd, rev;
  int smem;
  int dc;
};

// The kernels for NS states per lane and S lanes per channel (N = NS * S), or all-null if not compiled.
KernelInfo kernel_info_f32(int ns, int s);
KernelInfo kernel_info_f16(int ns, int s);
KernelInfo kernel_info_bf16(int ns, int s);

}  // namespace dimex

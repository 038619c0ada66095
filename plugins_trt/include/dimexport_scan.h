/* dimexport selective-scan kernel: the C ABI shared by the PyTorch op and the TensorRT plugin.
 *
 * Semantics (identical to mamba-ssm's selective_scan_fn forward, plus `reverse`), per batch b, channel d:
 *   dt_t  = softplus(delta[b,d,t] + delta_bias[d])      (softplus only if delta_softplus; threshold 20)
 *   h_t   = exp(dt_t * A[d,n]) * h_{t-1} + dt_t * B[b,g,n,t] * u[b,d,t]     (fp32 state, h_{-1} = 0)
 *   y_t   = sum_n C[b,g,n,t] * h_t[n] + D[d] * u[b,d,t]
 *   out   = y_t * silu(z[b,d,t])                         (if z is given)
 * with g = d / (dim / ngroups). With reverse != 0 the recurrence runs from t = L-1 down to 0
 * (the same as flipping every sequence input, scanning forward and flipping the output back).
 *
 * Layout: every sequence tensor is addressed by element strides, so (B, D, L) contiguous tensors and
 * transposed views of token-major (B, L, D) tensors are both accepted without copies.
 * u, delta, z, B, C and out share one dtype; A, D and delta_bias are fp32 and contiguous.
 *
 * Workspace (ABI version 2): when batch * dim is too small to fill the GPU, the library splits the sequence
 * into chunks scanned by separate CTAs (two launches: chunk-end states, then the output from the carried
 * states). That needs scratch memory which the caller provides: dimex_selective_scan_workspace_size() says how
 * much, `workspace` / `workspace_bytes` pass it. A NULL workspace or 0 bytes is valid and disables the split
 * (the result is then computed in one pass, as in version 1). The split changes rounding only.
 *
 * CPU (ABI version 3): dimex_selective_scan_fwd_cpu computes the same scan on host memory with OpenMP threads.
 * The library may be built without CUDA (dimex_scan_has_cuda); code compiled with DIMEX_SCAN_NO_CUDA needs no CUDA
 * header, cudaStream_t is then only an opaque pointer type.
 *
 * Backward (ABI version 4 on the CPU, version 5 on the GPU): dimex_selective_scan_bwd_cpu and
 * dimex_selective_scan_bwd compute the gradients of every input for training, both deterministic.
 *
 * Causal conv + SiLU (ABI version 6): dimex_causal_conv1d_silu_fwd / _cpu compute the Mamba mixer's depthwise
 * causal conv1d and its SiLU in one pass (the conv's input read in place, through strides), for the PyTorch op
 * only: TensorRT fuses a standard Conv + SiLU itself.
 *
 * RMSNorm + modulation and the gated residual (ABI version 7): dimex_rms_norm_modulate_fwd / _cpu normalise each
 * token and apply DiM's adaLN modulation in one pass, dimex_gated_residual_fwd / _cpu add a block's gated output to
 * the residual stream (for the PyTorch op only, like the conv). ABI version 8 lets both read their rows through an
 * index (DiM's per-layer scan order, gathered by the kernels instead of by a copy of the residual stream).
 */
#ifndef DIMEXPORT_SCAN_H
#define DIMEXPORT_SCAN_H

#include <stddef.h>
#include <stdint.h>
#ifdef DIMEX_SCAN_NO_CUDA
typedef struct CUstream_st* cudaStream_t;
#else
#include <cuda_runtime_api.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define DIMEX_SCAN_ABI_VERSION 8

typedef enum { DIMEX_FLOAT32 = 0, DIMEX_FLOAT16 = 1, DIMEX_BFLOAT16 = 2 } dimex_dtype;

typedef enum {
  DIMEX_OK = 0,
  DIMEX_ERR_INVALID_ARGUMENT = 1, /* a null pointer, a non-positive or too large size, ngroups not dividing
                                     dim, a workspace not aligned to DIMEX_SCAN_WORKSPACE_ALIGN bytes */
  DIMEX_ERR_UNSUPPORTED = 2,      /* dstate > 64 (> 32 for the GPU backward), dtype unknown */
  DIMEX_ERR_CUDA = 3,             /* a CUDA launch error; cudaGetLastError() holds the cause */
  DIMEX_ERR_NO_CUDA = 4           /* the library was built without CUDA (dimex_scan_has_cuda() == 0) */
} dimex_status;

typedef struct {
  int64_t batch, dim, seqlen, dstate, ngroups;
  dimex_dtype dtype;                                  /* of u, delta, z, B, C, out */
  const void* u;      int64_t u_stride[3];            /* (b, d, l) element strides */
  const void* delta;  int64_t delta_stride[3];
  const float* A;                                     /* (dim, dstate), contiguous, negative: -exp(A_log) */
  const void* B;      int64_t B_stride[4];            /* (b, g, n, l) */
  const void* C;      int64_t C_stride[4];
  const float* D;                                     /* (dim,) or NULL */
  const void* z;      int64_t z_stride[3];            /* or NULL */
  const float* delta_bias;                            /* (dim,) or NULL */
  void* out;          int64_t out_stride[3];
  int32_t delta_softplus;
  int32_t reverse;
  void* workspace;         /* device scratch for the sequence split, or NULL; its contents need no setup */
  size_t workspace_bytes;  /* usable bytes at `workspace` (0 = no split); a split that needs more is not used */
} dimex_scan_params;

#define DIMEX_SCAN_WORKSPACE_ALIGN 16

/* Bytes of workspace that let dimex_selective_scan_fwd choose any split for the sizes in `params` (batch,
 * dim, seqlen, dstate; pointers, strides and the workspace fields are ignored) AND for every smaller batch,
 * dim, seqlen and dstate: so a TensorRT plugin can size it once from a profile's largest shapes. A function of
 * the sizes only (no device query): at most about 131072 * (dstate rounded up to 16/32/64, + 1) * 4 bytes
 * (9 MB for dstate 16). 0 when no split is possible (seqlen <= 32) or for invalid sizes. */
size_t dimex_selective_scan_workspace_size(const dimex_scan_params* params);

/* Enqueues the forward scan on `stream` (one or two kernel launches). No allocation, no synchronisation:
 * capturable in a CUDA graph. The workspace is used by these launches only, in stream order. */
int dimex_selective_scan_fwd(const dimex_scan_params* params, cudaStream_t stream);

/* The forward scan on the CPU: every pointer is host memory, the workspace fields are ignored. Runs on
 * `num_threads` OpenMP threads (0: OpenMP's default) and returns when done; the result does not depend on the
 * number of threads. fp32 state and math (the CUDA kernel's polynomials), fp16/bf16 I/O rounded to nearest. */
int dimex_selective_scan_fwd_cpu(const dimex_scan_params* params, int num_threads);

/* The gradients of the forward above on the CPU (ABI version 4), for training. `fwd` holds the forward's inputs
 * (its out and workspace fields are ignored), grad_out the gradient of the output (the I/O dtype, any strides).
 * Every gradient is fp32 and contiguous: g_u, g_delta, g_z (batch, dim, seqlen; g_z only with z), g_A (dim,
 * dstate), g_B, g_C (batch, ngroups, dstate, seqlen), g_D and g_delta_bias (dim,; only with D / delta_bias). States
 * are recomputed tile by tile from the inputs; no atomics: the same bits for any thread count. */
typedef struct {
  dimex_scan_params fwd;
  const void* grad_out; int64_t grad_out_stride[3];
  float* g_u; float* g_delta; float* g_z; float* g_A; float* g_B; float* g_C; float* g_D; float* g_delta_bias;
} dimex_scan_bwd_params;

int dimex_selective_scan_bwd_cpu(const dimex_scan_bwd_params* params, int num_threads);

/* The same gradients on the GPU (ABI version 5), enqueued on `stream` (two launches; no allocation or
 * synchronisation: capturable in a CUDA graph). Every pointer is device memory. dstate <= 32 (else
 * DIMEX_ERR_UNSUPPORTED). The scratch comes from the caller in fwd.workspace / fwd.workspace_bytes and must hold
 * dimex_selective_scan_bwd_workspace_size() bytes (else DIMEX_ERR_INVALID_ARGUMENT): checkpoints of the state
 * every 16 tokens and the partial sums of dL/dB, dL/dC (per block of channels) and dL/dA, dL/dD,
 * dL/d(delta_bias) (per batch row), summed in a fixed order by the second launch: no atomics, the same bits on
 * every run. Batch and ngroups at most 65535. */
size_t dimex_selective_scan_bwd_workspace_size(const dimex_scan_bwd_params* params);
int dimex_selective_scan_bwd(const dimex_scan_bwd_params* params, cudaStream_t stream);

/* The depthwise causal conv1d of the Mamba mixer followed by SiLU (ABI version 6), per batch b, channel d, token l:
 *   acc = bias[d] + sum_{k<K} weight[d,k] * x[b,d,l-(K-1)+k]      (x = 0 outside 0..L-1; fp32 accumulation)
 *   out[b,d,l] = acc / (1 + exp(-acc))
 * which is torch's silu(conv1d(x, weight, bias, padding=K-1, groups=dim)[..., :L]). With reverse != 0 the conv looks
 * ahead instead, acc = bias[d] + sum_k weight[d,k] * x[b,d,l+(K-1)-k]: the causal conv of the flipped sequence,
 * returned in the original order. x, weight, bias and out share one dtype; weight (dim, K) and bias (dim,) are
 * contiguous, bias may be NULL; x and out are addressed by element strides (x typically a view into the mixer's
 * in_proj output). 1 <= K <= DIMEX_CONV_MAX_WIDTH. Rounded once, from fp32, to the I/O dtype. */
#define DIMEX_CONV_MAX_WIDTH 8

typedef struct {
  int64_t batch, dim, seqlen, width;
  dimex_dtype dtype;
  const void* x;      int64_t x_stride[3];   /* (b, d, l) element strides */
  const void* weight;                        /* (dim, width), contiguous */
  const void* bias;                          /* (dim,) or NULL */
  void* out;          int64_t out_stride[3];
  int32_t reverse;
} dimex_conv_params;

/* Enqueued on `stream` (one launch; no allocation or synchronisation: capturable in a CUDA graph). */
int dimex_causal_conv1d_silu_fwd(const dimex_conv_params* params, cudaStream_t stream);

/* The same on host memory with `num_threads` OpenMP threads (0: OpenMP's default); the same bits for any count. */
int dimex_causal_conv1d_silu_fwd_cpu(const dimex_conv_params* params, int num_threads);

/* RMSNorm with a weight, then the adaLN modulation (ABI version 7; x_rows: 8), per row r = (b, l) of D channels,
 * reading x's row xr = x_rows[l] (x_rows NULL: xr = l):
 *   ms  = (sum_c x[b,xr,c]^2) / D       (fp32; the sum in a fixed order: lane j of 32 adds the quads of channels
 *                                        4j..4j+3, 4j+128..4j+131, ... in turn, then the 32 partial sums are combined
 *                                        by an xor butterfly)
 *   y   = x[b,xr,c] * (1 / sqrt(ms + eps)) * weight[c]
 *   out = y * (1 + scale[b,c]) + shift[b,c]     (only when scale / shift are given)
 * x is fp32, fp16 or bf16 (x_dtype); weight, scale, shift and out share out_dtype. x is (batch, rows, D) and out
 * (batch, rows, D), both by element strides; weight (D,) contiguous; scale and shift (batch, D) by strides, or NULL;
 * x_rows (rows,) int64 in device (or, for _cpu, host) memory, or NULL; an index outside 0..rows-1 gives a row of
 * NaN (and no read outside x). out must not overlap x. Rounded once, from fp32, to out_dtype; the CPU and the GPU give
 * the same bits. */
typedef struct {
  int64_t batch, rows, dim;
  dimex_dtype x_dtype, out_dtype;
  float eps;
  const void* x;       int64_t x_stride[3];
  const void* weight;
  const void* scale;   int64_t scale_stride[2];
  const void* shift;   int64_t shift_stride[2];
  void* out;           int64_t out_stride[3];
  const int64_t* x_rows;
} dimex_norm_params;

int dimex_rms_norm_modulate_fwd(const dimex_norm_params* params, cudaStream_t stream);
int dimex_rms_norm_modulate_fwd_cpu(const dimex_norm_params* params, int num_threads);

/* DiM's gated residual (ABI version 7; residual_rows: 8), per batch b, token l, channel c, with the residual's row
 * rr = residual_rows[l] (residual_rows NULL: rr = l):
 *   out[b,l,c] = residual[b,rr,c] + (1 + gate[b,c]) * y[b,l,c]       (fp32 math, rounded once to res_dtype)
 * or, with gate NULL, residual + y (DiS's residual add). residual and out share res_dtype, y and gate share y_dtype;
 * all (batch, rows, dim) by element strides, gate (batch, dim); residual_rows (rows,) int64 as the norm's x_rows (an
 * index outside 0..rows-1 gives a row of NaN). out may be residual itself (in place) when residual_rows is NULL. */
typedef struct {
  int64_t batch, rows, dim;
  dimex_dtype res_dtype, y_dtype;
  const void* residual; int64_t residual_stride[3];
  const void* y;        int64_t y_stride[3];
  const void* gate;     int64_t gate_stride[2];
  void* out;            int64_t out_stride[3];
  const int64_t* residual_rows;
} dimex_residual_params;

int dimex_gated_residual_fwd(const dimex_residual_params* params, cudaStream_t stream);
int dimex_gated_residual_fwd_cpu(const dimex_residual_params* params, int num_threads);

/* A static, human-readable description of a dimex_status code. */
const char* dimex_status_string(int status);

/* 1 if the library has the CUDA kernel (built with a CUDA compiler), else 0: then dimex_selective_scan_fwd returns
 * DIMEX_ERR_NO_CUDA and only the CPU entry computes. */
int dimex_scan_has_cuda(void);

/* DIMEX_SCAN_ABI_VERSION of the library, so that loaders can refuse a mismatched build. */
int dimex_scan_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* DIMEXPORT_SCAN_H */

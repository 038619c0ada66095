// The argument checks of the C ABI's entries (CUDA and CPU, forward and backward): one definition, one set of status codes.
#pragma once

#include <climits>

#include "dimexport_scan.h"

namespace dimex {

// Sizes and dtype only (pointers are not looked at).
inline int check_scan_sizes(const dimex_scan_params* p) {
  if (p == nullptr) return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->batch <= 0 || p->dim <= 0 || p->seqlen <= 0 || p->dstate <= 0 || p->ngroups <= 0)
    return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->dim % p->ngroups != 0) return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->dstate > 64) return DIMEX_ERR_UNSUPPORTED;
  if (p->dtype != DIMEX_FLOAT32 && p->dtype != DIMEX_FLOAT16 && p->dtype != DIMEX_BFLOAT16)
    return DIMEX_ERR_UNSUPPORTED;
  if (p->seqlen > INT_MAX / 2 || p->dim > INT_MAX / 2 || p->batch > INT_MAX) return DIMEX_ERR_INVALID_ARGUMENT;
  return DIMEX_OK;
}

inline int check_scan_params(const dimex_scan_params* p) {
  const int status = check_scan_sizes(p);
  if (status != DIMEX_OK) return status;
  if (!p->u || !p->delta || !p->A || !p->B || !p->C || !p->out) return DIMEX_ERR_INVALID_ARGUMENT;
  return DIMEX_OK;
}

// The backward's: the forward's inputs (its `out` is not used), grad_out and every gradient its inputs need.
inline int check_bwd_params(const dimex_scan_bwd_params* q) {
  if (q == nullptr) return DIMEX_ERR_INVALID_ARGUMENT;
  const dimex_scan_params* p = &q->fwd;
  const int status = check_scan_sizes(p);
  if (status != DIMEX_OK) return status;
  if (!p->u || !p->delta || !p->A || !p->B || !p->C || !q->grad_out || !q->g_u || !q->g_delta || !q->g_A ||
      !q->g_B || !q->g_C || (p->z && !q->g_z) || (p->D && !q->g_D) || (p->delta_bias && !q->g_delta_bias))
    return DIMEX_ERR_INVALID_ARGUMENT;
  return DIMEX_OK;
}

}  // namespace dimex

// The argument checks of the C ABI's forward entries (CUDA and CPU): one definition, one set of status codes.
#pragma once

#include <climits>

#include "dimexport_scan.h"

namespace dimex {

inline int check_scan_params(const dimex_scan_params* p) {
  if (p == nullptr) return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->batch <= 0 || p->dim <= 0 || p->seqlen <= 0 || p->dstate <= 0 || p->ngroups <= 0)
    return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->dim % p->ngroups != 0) return DIMEX_ERR_INVALID_ARGUMENT;
  if (!p->u || !p->delta || !p->A || !p->B || !p->C || !p->out) return DIMEX_ERR_INVALID_ARGUMENT;
  if (p->dstate > 64) return DIMEX_ERR_UNSUPPORTED;
  if (p->dtype != DIMEX_FLOAT32 && p->dtype != DIMEX_FLOAT16 && p->dtype != DIMEX_BFLOAT16)
    return DIMEX_ERR_UNSUPPORTED;
  if (p->seqlen > INT_MAX / 2 || p->dim > INT_MAX / 2 || p->batch > INT_MAX) return DIMEX_ERR_INVALID_ARGUMENT;
  return DIMEX_OK;
}

}  // namespace dimex

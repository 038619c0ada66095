// The text of each dimex_status code: one table for the CUDA and the CUDA-less builds of the library.
#pragma once

#include "dimexport_scan.h"

namespace dimex {

inline const char* status_text(int status) {
  switch (status) {
    case DIMEX_OK: return "ok";
    case DIMEX_ERR_INVALID_ARGUMENT:
      return "invalid argument (null pointer, non-positive or too large size, ngroups not dividing dim, a conv "
             "width outside 1..8, a negative eps, or a misaligned workspace)";
    case DIMEX_ERR_UNSUPPORTED: return "unsupported (dstate > 64, dstate > 32 for the GPU backward, or unknown dtype)";
    case DIMEX_ERR_CUDA: return "CUDA launch error (see cudaGetLastError)";
    case DIMEX_ERR_NO_CUDA:
      return "this libdimexport_scan.so was built without CUDA (no CUDA compiler at build time): reinstall dimexport "
             "where nvcc is found";
    default: return "unknown dimex status";
  }
}

}  // namespace dimex

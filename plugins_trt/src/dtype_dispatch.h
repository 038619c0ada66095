// Run-time parameters of the fused ops' launchers as compile-time template arguments: one switch each, shared by the
// CUDA and the CPU launchers. f receives a std::integral_constant (its ::value is the constant).
#pragma once

#include <cstdint>
#include <type_traits>

#include "dimexport_scan.h"

namespace dimex {

template <typename F>
decltype(auto) with_dtype(dimex_dtype dtype, F&& f) {
  switch (dtype) {
    case DIMEX_FLOAT16: return f(std::integral_constant<dimex_dtype, DIMEX_FLOAT16>{});
    case DIMEX_BFLOAT16: return f(std::integral_constant<dimex_dtype, DIMEX_BFLOAT16>{});
    default: return f(std::integral_constant<dimex_dtype, DIMEX_FLOAT32>{});
  }
}

// width in 1..DIMEX_CONV_MAX_WIDTH (checked by the caller).
template <typename F>
decltype(auto) with_width(int64_t width, F&& f) {
  static_assert(DIMEX_CONV_MAX_WIDTH == 8, "one case per width");
  switch (width) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

template <typename F>
decltype(auto) with_flag(bool flag, F&& f) {
  if (flag) return f(std::true_type{});
  return f(std::false_type{});
}

}  // namespace dimex

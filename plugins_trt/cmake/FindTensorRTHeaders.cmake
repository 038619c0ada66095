# FindTensorRTHeaders: the TensorRT C++ headers only (the plugin libraries compile against headers and never
# link libnvinfer). Searched, first hit wins:
#   1. TensorRT_INCLUDE_DIR      (CMake cache variable): the folder holding NvInferRuntime.h
#   2. TensorRT_ROOT             (CMake variable or environment variable): <root>/include
#   3. installed Python packages: tensorrt, tensorrt_libs (<pkg>/include) and kernel_lens
#      (<pkg>/include/tensorrt, the TensorRT 10.14 headers of the PyPI wheel kernel-lens==2.0.1)
#   4. system locations: /usr/include/x86_64-linux-gnu (Debian/Ubuntu packages), /usr/local/TensorRT/include
# Defines:
#   TensorRTHeaders_FOUND, TensorRT_INCLUDE_DIR, TensorRT_VERSION (major.minor.patch), TensorRT_VERSION_MAJOR,
#   and the INTERFACE target TensorRT::headers (SYSTEM include, so the headers' own warnings stay quiet).
include_guard(GLOBAL)

set(_trt_hints)
if(DEFINED TensorRT_ROOT AND NOT "${TensorRT_ROOT}" STREQUAL "")
  list(APPEND _trt_hints "${TensorRT_ROOT}/include" "${TensorRT_ROOT}")
endif()
if(DEFINED ENV{TensorRT_ROOT} AND NOT "$ENV{TensorRT_ROOT}" STREQUAL "")
  list(APPEND _trt_hints "$ENV{TensorRT_ROOT}/include" "$ENV{TensorRT_ROOT}")
endif()

# Python packages: locate them without importing them (importing tensorrt would load libnvinfer).
if(NOT TensorRT_INCLUDE_DIR)
  find_package(Python3 QUIET COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    execute_process(
      COMMAND "${Python3_EXECUTABLE}" -c
"import importlib.util, os
for name in ('tensorrt', 'tensorrt_libs', 'kernel_lens'):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        continue
    for loc in (spec.submodule_search_locations or []) if spec else []:
        for sub in ('include', os.path.join('include', 'tensorrt')):
            print(os.path.join(loc, sub))"
      OUTPUT_VARIABLE _trt_py_dirs
      OUTPUT_STRIP_TRAILING_WHITESPACE
      ERROR_QUIET
      TIMEOUT 30)
    if(_trt_py_dirs)
      string(REPLACE "\n" ";" _trt_py_dirs "${_trt_py_dirs}")
      list(APPEND _trt_hints ${_trt_py_dirs})
    endif()
  endif()
endif()

find_path(TensorRT_INCLUDE_DIR
  NAMES NvInferRuntime.h
  HINTS ${_trt_hints}
  PATHS /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/local/TensorRT/include
        /usr/local/tensorrt/include /opt/tensorrt/include
  DOC "Folder holding the TensorRT headers (NvInferRuntime.h, NvInferVersion.h)")

set(TensorRT_VERSION "")
set(TensorRT_VERSION_MAJOR "")
if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
  file(READ "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _trt_version_h)
  foreach(_part MAJOR MINOR PATCH)
    # TensorRT >= 10.? spells it TRT_<PART>_ENTERPRISE; older headers define NV_TENSORRT_<PART> directly.
    if(_trt_version_h MATCHES "#define[ \t]+TRT_${_part}_ENTERPRISE[ \t]+([0-9]+)")
      set(_trt_${_part} "${CMAKE_MATCH_1}")
    elseif(_trt_version_h MATCHES "#define[ \t]+NV_TENSORRT_${_part}[ \t]+([0-9]+)")
      set(_trt_${_part} "${CMAKE_MATCH_1}")
    else()
      set(_trt_${_part} "0")
    endif()
  endforeach()
  set(TensorRT_VERSION "${_trt_MAJOR}.${_trt_MINOR}.${_trt_PATCH}")
  set(TensorRT_VERSION_MAJOR "${_trt_MAJOR}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRTHeaders
  REQUIRED_VARS TensorRT_INCLUDE_DIR TensorRT_VERSION
  VERSION_VAR TensorRT_VERSION
  NAME_MISMATCHED)

if(TensorRTHeaders_FOUND AND NOT TARGET TensorRT::headers)
  add_library(TensorRT::headers INTERFACE IMPORTED)
  set_target_properties(TensorRT::headers PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIR}"
                                                     INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIR}")
endif()
mark_as_advanced(TensorRT_INCLUDE_DIR)

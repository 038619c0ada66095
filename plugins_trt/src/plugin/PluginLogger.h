// Logging for the DimSelectiveScan plugin: every error the plugin reports goes through here.
//
// Dynamic library (libdimexport_trt_plugin.so): TensorRT hands over an ILoggerFinder through the exported
// setLoggerFinder() when it loads the library (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, a
// version-compatible plan); messages go to the logger of the builder or runtime that called the plugin.
// Static-registration library (libdimexport_trt_plugin_static.so): no finder is handed over; messages go to
// TensorRT's global logger (getLogger() of the libnvinfer already loaded in the process), found at run time.
// Without either, errors and warnings are printed to stderr so that nothing fails silently.
#pragma once

#include <NvInferRuntime.h>

#include <string>

namespace dimexport {
namespace trt {

// Sets the finder once (later calls with another finder are ignored, as TensorRT's own libraries do).
void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

// Logs `msg` with the prefix "DimSelectiveScan: ". Never throws.
void pluginLog(nvinfer1::ILogger::Severity severity, char const* msg) noexcept;

inline void logError(std::string const& msg) noexcept { pluginLog(nvinfer1::ILogger::Severity::kERROR, msg.c_str()); }
inline void logWarning(std::string const& msg) noexcept
{
    pluginLog(nvinfer1::ILogger::Severity::kWARNING, msg.c_str());
}
inline void logVerbose(std::string const& msg) noexcept
{
    pluginLog(nvinfer1::ILogger::Severity::kVERBOSE, msg.c_str());
}

// In the static-registration build: resolves an extern "C" symbol of the TensorRT library already loaded
// in this process (the executable's own link, then libnvinfer.so.<major> and its lean/dispatch variants
// loaded RTLD_LOCAL, e.g. by the tensorrt Python module). Returns nullptr when TensorRT is not loaded.
// Never loads a library itself, so it cannot pull a second, different libnvinfer into the process.
void* findTensorRTSymbol(char const* name) noexcept;

} // namespace trt
} // namespace dimexport

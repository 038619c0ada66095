// Entry points of the dynamically loaded library libdimexport_trt_plugin.so, for
// IPluginRegistry::loadLibrary / load_library, trtexec --dynamicPlugins and setPluginsToSerialize
// (version-compatible plans). No static registrar here: loadLibrary fails if a creator is already registered.
// The version script (dimexport_trt_plugin.map) exports exactly these three symbols.
#include "DimSelectiveScanPlugin.h"
#include "PluginLogger.h"

#define DIMEX_TRT_API extern "C" __attribute__((visibility("default")))

namespace {

dimexport::trt::DimSelectiveScanPluginCreator& creator()
{
    static dimexport::trt::DimSelectiveScanPluginCreator sCreator;
    return sCreator;
}

} // namespace

DIMEX_TRT_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const sCreators[] = {&creator()};
    nbCreators = static_cast<int32_t>(sizeof(sCreators) / sizeof(sCreators[0]));
    return sCreators;
}

// The name TensorRT 10.0-10.1 trtexec looked up; same list.
DIMEX_TRT_API nvinfer1::IPluginCreatorInterface* const* getPluginCreators(int32_t& nbCreators)
{
    return getCreators(nbCreators);
}

DIMEX_TRT_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    dimexport::trt::setPluginLoggerFinder(finder);
}

// Self-registration of libdimexport_trt_plugin_static.so when it is loaded (dlopen / ctypes.CDLL):
// polygraphy --plugins, trtexec --staticPlugins, or any process that loads it after TensorRT.
//
// This is REGISTER_TENSORRT_PLUGIN's PluginRegistrar with two differences, both deliberate:
//  * the creator is registered under its own namespace ("dimexport"), which is what the ONNX node's
//    plugin_namespace looks up; the stock macro passes "" as the namespace argument;
//  * getPluginRegistry() is taken from the libnvinfer already loaded in the process (see
//    findTensorRTSymbol) instead of being an undefined symbol bound by the dynamic linker: Python loads
//    libnvinfer RTLD_LOCAL (the tensorrt module, ctypes), so an undefined symbol would not resolve there.
// Without TensorRT in the process the library loads, registers nothing and says so on stderr.
#include "DimSelectiveScanPlugin.h"
#include "PluginLogger.h"

#include <string>

namespace dimexport {
namespace trt {
namespace {

using GetPluginRegistryFn = nvinfer1::IPluginRegistry* (*) ();

class StaticRegistrar
{
public:
    StaticRegistrar() noexcept
    {
        try
        {
            registerCreator();
        }
        catch (...)
        {
            pluginLog(nvinfer1::ILogger::Severity::kERROR, "static registration failed");
        }
    }

private:
    void registerCreator()
    {
        void* sym = findTensorRTSymbol("getPluginRegistry");
        nvinfer1::IPluginRegistry* registry = sym ? reinterpret_cast<GetPluginRegistryFn>(sym)() : nullptr;
        std::string const key
            = std::string(mCreator.getPluginNamespace()) + "::" + mCreator.getPluginName() + " version "
            + mCreator.getPluginVersion();
        if (registry == nullptr)
        {
            pluginLog(nvinfer1::ILogger::Severity::kERROR,
                ("cannot register " + key
                    + ": TensorRT (libnvinfer) is not loaded in this process; load it first (import tensorrt, or "
                      "link libnvinfer), or use libdimexport_trt_plugin.so with IPluginRegistry::loadLibrary")
                    .c_str());
            return;
        }
        if (!registry->registerCreator(mCreator, mCreator.getPluginNamespace()))
        {
            pluginLog(nvinfer1::ILogger::Severity::kERROR,
                ("could not register " + key + " (already registered, e.g. by the dynamic library?)").c_str());
            return;
        }
        pluginLog(nvinfer1::ILogger::Severity::kVERBOSE, ("registered plugin creator " + key).c_str());
    }

    DimSelectiveScanPluginCreator mCreator;
};

// Never deregistered, like TensorRT's PluginRegistrar: at process exit the registry may already be gone.
StaticRegistrar gRegistrar;

} // namespace
} // namespace trt
} // namespace dimexport

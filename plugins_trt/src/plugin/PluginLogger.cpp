#include "PluginLogger.h"

#include <cstdio>
#include <mutex>

#if DIMEX_TRT_STATIC_REGISTRATION
#include <dlfcn.h>
#endif

namespace dimexport {
namespace trt {
namespace {

constexpr char kPrefix[] = "DimSelectiveScan: ";

std::mutex gMutex;
nvinfer1::ILoggerFinder* gFinder = nullptr;

char const* severityName(nvinfer1::ILogger::Severity s) noexcept
{
    switch (s)
    {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case nvinfer1::ILogger::Severity::kERROR: return "ERROR";
    case nvinfer1::ILogger::Severity::kWARNING: return "WARNING";
    case nvinfer1::ILogger::Severity::kINFO: return "INFO";
    default: return "VERBOSE";
    }
}

#if DIMEX_TRT_STATIC_REGISTRATION
using GetLoggerFn = nvinfer1::ILogger* (*) ();

nvinfer1::ILogger* globalTensorRTLogger() noexcept
{
    void* sym = findTensorRTSymbol("getLogger");
    return sym ? reinterpret_cast<GetLoggerFn>(sym)() : nullptr;
}
#endif

} // namespace

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    std::lock_guard<std::mutex> lock(gMutex);
    if (gFinder == nullptr && finder != nullptr)
    {
        gFinder = finder;
    }
}

void pluginLog(nvinfer1::ILogger::Severity severity, char const* msg) noexcept
{
    try
    {
        std::string const line = std::string(kPrefix) + (msg ? msg : "");
        nvinfer1::ILogger* logger = nullptr;
        {
            std::lock_guard<std::mutex> lock(gMutex);
            if (gFinder != nullptr)
            {
                logger = gFinder->findLogger();
            }
        }
#if DIMEX_TRT_STATIC_REGISTRATION
        if (logger == nullptr)
        {
            logger = globalTensorRTLogger();
        }
#endif
        if (logger != nullptr)
        {
            logger->log(severity, line.c_str());
            return;
        }
        if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "[%s] %s\n", severityName(severity), line.c_str());
        }
    }
    catch (...)
    {
        // Out of memory while formatting a message: nothing sensible is left to do.
    }
}

void* findTensorRTSymbol(char const* name) noexcept
{
#if DIMEX_TRT_STATIC_REGISTRATION
#define DIMEX_STR2(x) #x
#define DIMEX_STR(x) DIMEX_STR2(x)
    // 1. Global scope: the executable links libnvinfer (trtexec, C++ applications) or another library
    //    exported it RTLD_GLOBAL.
    if (void* sym = dlsym(RTLD_DEFAULT, name))
    {
        return sym;
    }
    // 2. Loaded, but in a local scope (Python extension modules and ctypes load RTLD_LOCAL): RTLD_NOLOAD
    //    only returns a handle to a library that is already in the process.
    static char const* const kLibraries[] = {
        "libnvinfer.so." DIMEX_STR(NV_TENSORRT_MAJOR),
        "libnvinfer_lean.so." DIMEX_STR(NV_TENSORRT_MAJOR),
        "libnvinfer_dispatch.so." DIMEX_STR(NV_TENSORRT_MAJOR),
        "libnvinfer.so",
    };
#undef DIMEX_STR
#undef DIMEX_STR2
    for (char const* lib : kLibraries)
    {
        void* handle = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == nullptr)
        {
            continue;
        }
        void* sym = dlsym(handle, name);
        dlclose(handle); // drops only the reference RTLD_NOLOAD added; the library stays loaded
        if (sym != nullptr)
        {
            return sym;
        }
    }
    return nullptr;
#else
    (void) name;
    return nullptr;
#endif
}

} // namespace trt
} // namespace dimexport

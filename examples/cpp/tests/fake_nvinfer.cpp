// A stand-in for libnvinfer that lets CI drive dimexport_run past the TensorRT loading step without TensorRT:
// it exports the three entry points dimexport_run resolves.
//   getInferLibVersion           the compiled-against version, or $DIMEXPORT_FAKE_TRT_VERSION (e.g. 110100)
//   getPluginRegistry            a registry whose loadLibrary registers what a library's getCreators returns
//   createInferRuntime_INTERNAL  nullptr (there is no runtime to create)
// It is also a plugin library whose getCreators returns no creator.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
class FakeRegistry : public IPluginRegistry
{
public:
    PluginLibraryHandle loadLibrary(AsciiChar const* path) noexcept override
    {
        void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        using GetCreators = IPluginCreatorInterface* const* (*) (std::int32_t&);
        auto getCreators = handle ? reinterpret_cast<GetCreators>(dlsym(handle, "getCreators")) : nullptr;
        if (!getCreators)
        {
            return nullptr;
        }
        std::int32_t n = 0;
        IPluginCreatorInterface* const* creators = getCreators(n);
        for (std::int32_t i = 0; i < n; ++i)
        {
            mCreators.push_back(creators[i]);
        }
        return handle;
    }
    IPluginCreatorInterface* const* getAllCreators(std::int32_t* const n) const noexcept override
    {
        *n = static_cast<std::int32_t>(mCreators.size());
        return mCreators.data();
    }
    IPluginCreatorInterface* getCreator(
        AsciiChar const* const name, AsciiChar const* const version, AsciiChar const* const ns) noexcept override
    {
        for (IPluginCreatorInterface* c : mCreators)
        {
            if (std::strcmp(c->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
            {
                continue;
            }
            auto* v3 = static_cast<IPluginCreatorV3One*>(c);
            if (!std::strcmp(v3->getPluginName(), name) && !std::strcmp(v3->getPluginVersion(), version)
                && !std::strcmp(v3->getPluginNamespace(), ns))
            {
                return c;
            }
        }
        return nullptr;
    }

    // Not used by dimexport_run.
#if NV_TENSORRT_MAJOR < 11
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
    IPluginCreator* const* getPluginCreatorList(std::int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept
        override
    {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
#endif
#if NV_TENSORRT_MAJOR > 10 || NV_TENSORRT_MINOR >= 10 // added in TensorRT 10.10
    IPluginCreatorInterface* const* getAllCreatorsRecursive(std::int32_t* const n) noexcept override
    {
        return getAllCreators(n);
    }
#endif
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface&, AsciiChar const* const) noexcept override { return false; }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return false; }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    std::int32_t releasePluginResource(AsciiChar const*) noexcept override { return 0; }

private:
    std::vector<IPluginCreatorInterface*> mCreators;
};
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic pop
#endif

} // namespace

extern "C" std::int32_t getInferLibVersion() noexcept
{
    char const* v = std::getenv("DIMEXPORT_FAKE_TRT_VERSION");
    return v ? std::atoi(v) : static_cast<std::int32_t>(NV_TENSORRT_VERSION);
}

extern "C" IPluginRegistry* getPluginRegistry() noexcept
{
    static FakeRegistry registry;
    return &registry;
}

extern "C" void* createInferRuntime_INTERNAL(void*, std::int32_t) noexcept
{
    return nullptr;
}

extern "C" IPluginCreatorInterface* const* getCreators(std::int32_t& nbCreators) noexcept
{
    nbCreators = 0;
    return nullptr;
}

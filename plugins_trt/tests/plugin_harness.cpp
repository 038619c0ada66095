// test_plugin_harness: drives the DimSelectiveScan TensorRT plugin without a TensorRT runtime (headers + CUDA only).
//
// It loads the two built libraries with dlopen, exactly as TensorRT would, and plays TensorRT's part:
//   * dynamic library: the exported entry points (getCreators, getPluginCreators, setLoggerFinder) and nothing else;
//     setLoggerFinder receives a stub finder whose logger records every message;
//   * static-registration library: this executable exports stand-ins for libnvinfer's getPluginRegistry() and
//     getLogger(), and checks that loading the library registers the creator under (name, version, namespace);
//   * creator: field names, createPlugin(kBUILD) from ONNX-style fields with and without optional attributes,
//     rejection of malformed fields;
//   * plugin: capabilities, identity, clone, getNbOutputs, getOutputDataTypes, the full supportsFormatCombination
//     truth table (every position x every DataType x every TensorFormat), getOutputShapes (stub IExprBuilder),
//     configurePlugin / onShapeChange with valid and invalid descriptors (invalid: non-zero and a logged error),
//     getWorkspaceSize, getTimingCacheID, getFieldsToSerialize -> createPlugin(kRUNTIME) -> attachToContext;
//   * GPU (when a CUDA device is present): enqueue on device buffers for fp32/fp16/bf16 x has_z x reverse x groups 1/2
//     (plus dstate 5/64, delta_softplus 0, length 1, a DiM-sized case, every kernel split and forced sequence
//     chunks), compared with a float64 CPU reference of the scan, each with the workspace of getWorkspaceSize
//     (sequence split allowed) and without one; the serialized round trip and a CUDA-graph capture must reproduce
//     the output bit for bit; enqueue with bad descriptors or pointers must fail cleanly.
//
// Usage: test_plugin_harness [--cpu-only | --probe-first-capture] [--lib PATH] [--static-lib PATH] [--quiet]
// Exit status: 0 all passed; 1 a check failed; 77 only the interface checks ran (no CUDA device; ctest: skipped).
// The last line is always "N passed, N failed".
#include <NvInferRuntime.h>

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#ifndef DIMEX_PLUGIN_LIB
#define DIMEX_PLUGIN_LIB "libdimexport_trt_plugin.so"
#endif
#ifndef DIMEX_PLUGIN_STATIC_LIB
#define DIMEX_PLUGIN_STATIC_LIB "libdimexport_trt_plugin_static.so"
#endif

using namespace nvinfer1;

namespace {

// ------------------------------------------------------------------------------------------------------------------
// Checks and bookkeeping

int gPassed = 0;
int gFailed = 0;
bool gQuiet = false;

bool check(bool ok, std::string const& what)
{
    if (ok)
    {
        ++gPassed;
        if (!gQuiet)
        {
            std::printf("[PASS] %s\n", what.c_str());
        }
    }
    else
    {
        ++gFailed;
        std::printf("[FAIL] %s\n", what.c_str());
    }
    std::fflush(stdout);
    return ok;
}

constexpr int32_t kNbIn = 8;
constexpr int32_t kNbIO = 9;
constexpr char const* kNames[kNbIO] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "out"};

// ------------------------------------------------------------------------------------------------------------------
// TensorRT stand-ins: logger, logger finder, plugin registry, expression builder

class RecordingLogger : public ILogger
{
public:
    explicit RecordingLogger(char const* tag)
        : mTag(tag)
    {
    }

    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mCounts[static_cast<int32_t>(severity)]++;
        mLast = msg ? msg : "";
        if (severity <= Severity::kWARNING && !mMuted)
        {
            std::printf("    %s log [%s] %s\n", mTag, severity == Severity::kWARNING ? "W" : "E", mLast.c_str());
        }
    }

    int32_t errors()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        return mCounts[0] + mCounts[1];
    }
    int32_t warnings()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        return mCounts[2];
    }
    int32_t total()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        return mCounts[0] + mCounts[1] + mCounts[2] + mCounts[3] + mCounts[4];
    }
    std::string last()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        return mLast;
    }
    void mute(bool m) { mMuted = m; }

private:
    char const* mTag;
    std::mutex mMutex;
    int32_t mCounts[5]{};
    std::string mLast;
    bool mMuted{false};
};

class StubLoggerFinder : public ILoggerFinder
{
public:
    explicit StubLoggerFinder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ~StubLoggerFinder() override = default;
    ILogger* findLogger() override
    {
        ++mCalls;
        return mLogger;
    }
    int32_t calls() const { return mCalls; }

private:
    ILogger* mLogger;
    int32_t mCalls{0};
};

RecordingLogger gLogger("plugin");        // reached through setLoggerFinder (dynamic library)
RecordingLogger gGlobalLogger("global");  // what the static library finds as TensorRT's getLogger()

#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
// Records registrations, as libnvinfer's registry would hold them.
class StubRegistry : public IPluginRegistry
{
public:
    struct Entry
    {
        IPluginCreatorInterface* creator;
        std::string nameSpace;
    };
    std::vector<Entry> entries;
    std::vector<IPluginCreatorInterface*> list;
    int32_t registerCalls{0};

#if NV_TENSORRT_MAJOR < 11
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override
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
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const pluginNamespace) noexcept override
    {
        ++registerCalls;
        entries.push_back({&creator, pluginNamespace ? pluginNamespace : ""});
        list.push_back(&creator);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        *n = static_cast<int32_t>(list.size());
        return list.data();
    }
    IPluginCreatorInterface* getCreator(
        AsciiChar const* const name, AsciiChar const* const version, AsciiChar const* const ns) noexcept override
    {
        for (auto const& e : entries)
        {
            auto* c = static_cast<IPluginCreatorV3One*>(e.creator);
            if (!std::strcmp(c->getPluginName(), name) && !std::strcmp(c->getPluginVersion(), version)
                && e.nameSpace == (ns ? ns : ""))
            {
                return e.creator;
            }
        }
        return nullptr;
    }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return false; }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return 0; }
#if NV_TENSORRT_MAJOR > 10 || NV_TENSORRT_MINOR >= 10 // added in TensorRT 10.10
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override
    {
        return getAllCreators(n);
    }
#endif
};
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic pop
#endif

StubRegistry gRegistry;
int32_t gRegistryLookups = 0;

// getOutputShapes only copies expressions; these objects are never dereferenced through mImpl.
class StubDimExpr : public IDimensionExpr
{
public:
    StubDimExpr() { mImpl = nullptr; }
    ~StubDimExpr() override = default;
};

class StubExprBuilder : public IExprBuilder
{
public:
    StubExprBuilder() { mImpl = nullptr; }
    ~StubExprBuilder() override = default;
};

} // namespace

// Stand-ins for libnvinfer's C entry points, exported from this executable (ENABLE_EXPORTS), for the
// static-registration library to find when it is loaded.
extern "C" TENSORRTAPI IPluginRegistry* getPluginRegistry() noexcept
{
    ++gRegistryLookups;
    return &gRegistry;
}

extern "C" TENSORRTAPI ILogger* getLogger() noexcept
{
    return &gGlobalLogger;
}

namespace {

// ------------------------------------------------------------------------------------------------------------------
// Host-side 16-bit conversions (round to nearest even), independent of cuda_fp16.h

uint16_t floatToHalf(float f)
{
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t const sign = (x >> 16) & 0x8000u;
    uint32_t const ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)
    {
        return static_cast<uint16_t>(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
    }
    if (ax >= 0x477ff000u) // >= 65520 rounds to infinity
    {
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (ax < 0x38800000u) // below 2^-14: subnormal or zero, in units of 2^-24
    {
        float af;
        std::memcpy(&af, &ax, 4);
        return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(af * 16777216.0f)));
    }
    uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13);
    uint32_t const rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
    {
        ++h;
    }
    return static_cast<uint16_t>(sign | h);
}

float halfToFloat(uint16_t h)
{
    int const e = (h >> 10) & 0x1f;
    int const m = h & 0x3ff;
    float v;
    if (e == 0)
    {
        v = std::ldexp(static_cast<float>(m), -24);
    }
    else if (e == 31)
    {
        v = m ? NAN : INFINITY;
    }
    else
    {
        v = std::ldexp(static_cast<float>(m | 0x400), e - 25);
    }
    return (h & 0x8000) ? -v : v;
}

uint16_t floatToBf16(float f)
{
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
    {
        return static_cast<uint16_t>((x >> 16) | 0x40u);
    }
    x += 0x7fffu + ((x >> 16) & 1u);
    return static_cast<uint16_t>(x >> 16);
}

float bf16ToFloat(uint16_t b)
{
    uint32_t const x = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}

char const* typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "fp32";
    case DataType::kHALF: return "fp16";
    case DataType::kBF16: return "bf16";
    default: return "?";
    }
}

// Unit roundoff of the I/O type: the error bound of rounding the output once.
double unitRoundoff(DataType t)
{
    return t == DataType::kHALF ? std::ldexp(1.0, -11) : t == DataType::kBF16 ? std::ldexp(1.0, -8) : 0.0;
}

// ------------------------------------------------------------------------------------------------------------------
// Shapes and descriptors

struct Shape
{
    int64_t batch, dim, seqlen, dstate, groups;
};

Dims makeDims(std::initializer_list<int64_t> v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    int32_t i = 0;
    for (int64_t x : v)
    {
        d.d[i++] = x;
    }
    return d;
}

std::array<Dims, kNbIO> shapeDims(Shape const& s)
{
    Dims const bdl = makeDims({s.batch, s.dim, s.seqlen});
    Dims const bgnl = makeDims({s.batch, s.groups, s.dstate, s.seqlen});
    return {bdl, bdl, makeDims({s.dim, s.dstate}), bgnl, bgnl, makeDims({s.dim}), bdl, makeDims({s.dim}), bdl};
}

bool isParam(int32_t pos)
{
    return pos == 2 || pos == 5 || pos == 7;
}

std::array<DataType, kNbIO> ioTypes(DataType t)
{
    std::array<DataType, kNbIO> types{};
    for (int32_t p = 0; p < kNbIO; ++p)
    {
        types[p] = isParam(p) ? DataType::kFLOAT : t;
    }
    return types;
}

std::array<PluginTensorDesc, kNbIO> tensorDescs(Shape const& s, DataType t)
{
    auto const dims = shapeDims(s);
    auto const types = ioTypes(t);
    std::array<PluginTensorDesc, kNbIO> descs{};
    for (int32_t p = 0; p < kNbIO; ++p)
    {
        descs[p].dims = dims[p];
        descs[p].type = types[p];
        descs[p].format = TensorFormat::kLINEAR;
        descs[p].scale = 1.0f;
    }
    return descs;
}

// Build-time descriptors as TensorRT gives them for a profile: dynamic batch and sequence length appear as -1
// in desc.dims, with [minS, maxS] as the profile bounds.
std::array<DynamicPluginTensorDesc, kNbIO> dynamicDescs(Shape const& minS, Shape const& maxS, DataType t)
{
    Shape wild = maxS;
    wild.batch = minS.batch == maxS.batch ? maxS.batch : -1;
    wild.seqlen = minS.seqlen == maxS.seqlen ? maxS.seqlen : -1;
    auto const d = tensorDescs(wild, t);
    auto const lo = shapeDims(minS);
    auto const hi = shapeDims(maxS);
    std::array<DynamicPluginTensorDesc, kNbIO> out{};
    for (int32_t p = 0; p < kNbIO; ++p)
    {
        out[p].desc = d[p];
        out[p].min = lo[p];
        out[p].max = hi[p];
        out[p].opt = hi[p];
    }
    return out;
}

// ------------------------------------------------------------------------------------------------------------------
// Plugin access helpers

struct PluginDeleter
{
    void operator()(IPluginV3* p) const { delete p; }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

IPluginV3OneCore* core(IPluginV3* p)
{
    return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
}
IPluginV3OneBuild* build(IPluginV3* p)
{
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime(IPluginV3* p)
{
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

struct Attrs
{
    int32_t softplus, reverse, hasZ;
};

// ONNX-style field collection: the parser turns each INT attribute into a kINT32 field of length 1.
struct Fields
{
    std::vector<PluginField> fields;
    std::vector<int32_t> values;
    PluginFieldCollection fc{};

    explicit Fields(std::vector<std::pair<char const*, int32_t>> const& kv)
    {
        values.reserve(kv.size());
        for (auto const& p : kv)
        {
            values.push_back(p.second);
        }
        for (size_t i = 0; i < kv.size(); ++i)
        {
            fields.emplace_back(kv[i].first, &values[i], PluginFieldType::kINT32, 1);
        }
        fc.nbFields = static_cast<int32_t>(fields.size());
        fc.fields = fields.data();
    }
};

PluginPtr createFromAttrs(IPluginCreatorV3One* creator, Attrs a, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    Fields f({{"delta_softplus", a.softplus}, {"reverse", a.reverse}, {"has_z", a.hasZ}});
    return PluginPtr(creator->createPlugin("scan_node", &f.fc, phase));
}

// Reads back the serialized fields of a plugin as name -> int value (-999 for non-int fields).
bool serializedAttrs(IPluginV3* p, Attrs& a, int32_t& formatVersion, int32_t& nbFields)
{
    PluginFieldCollection const* fc = runtime(p)->getFieldsToSerialize();
    if (fc == nullptr)
    {
        return false;
    }
    nbFields = fc->nbFields;
    a = {-1, -1, -1};
    formatVersion = -1;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        if (f.type != PluginFieldType::kINT32 || f.length != 1 || f.data == nullptr)
        {
            return false;
        }
        int32_t const v = *static_cast<int32_t const*>(f.data);
        if (!std::strcmp(f.name, "delta_softplus"))
            a.softplus = v;
        else if (!std::strcmp(f.name, "reverse"))
            a.reverse = v;
        else if (!std::strcmp(f.name, "has_z"))
            a.hasZ = v;
        else if (!std::strcmp(f.name, "format_version"))
            formatVersion = v;
        else
            return false;
    }
    return true;
}

std::string attrString(Attrs a)
{
    return "(softplus " + std::to_string(a.softplus) + ", reverse " + std::to_string(a.reverse) + ", has_z "
        + std::to_string(a.hasZ) + ")";
}

bool sameAttrs(Attrs a, Attrs b)
{
    return a.softplus == b.softplus && a.reverse == b.reverse && a.hasZ == b.hasZ;
}

// ------------------------------------------------------------------------------------------------------------------
// Library loading

struct Library
{
    void* handle{nullptr};
    std::string path;
};

using GetCreatorsFn = IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinderFn = void (*)(ILoggerFinder*);

template <typename Fn>
Fn symbol(void* handle, char const* name)
{
    return reinterpret_cast<Fn>(dlsym(handle, name));
}

IPluginCreatorV3One* testDynamicLibrary(Library& lib, StubLoggerFinder& finder)
{
    lib.handle = dlopen(lib.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!check(lib.handle != nullptr, "dlopen " + lib.path + (lib.handle ? "" : std::string(": ") + dlerror())))
    {
        return nullptr;
    }
    auto getCreators = symbol<GetCreatorsFn>(lib.handle, "getCreators");
    auto getPluginCreators = symbol<GetCreatorsFn>(lib.handle, "getPluginCreators");
    auto setLoggerFinder = symbol<SetLoggerFinderFn>(lib.handle, "setLoggerFinder");
    check(getCreators && getPluginCreators && setLoggerFinder,
        "dynamic library exports getCreators, getPluginCreators and setLoggerFinder");
    check(dlsym(lib.handle, "dimex_selective_scan_fwd") == nullptr && dlsym(lib.handle, "cudaMalloc") == nullptr
            && dlsym(lib.handle, "getPluginRegistry") == nullptr,
        "dynamic library hides the kernel ABI and the static CUDA runtime (version script)");
    if (!getCreators || !setLoggerFinder)
    {
        return nullptr;
    }
    setLoggerFinder(&finder);
    int32_t n = -1;
    IPluginCreatorInterface* const* creators = getCreators(n);
    int32_t n2 = -1;
    IPluginCreatorInterface* const* creators2 = getPluginCreators ? getPluginCreators(n2) : nullptr;
    if (!check(creators != nullptr && n == 1, "getCreators returns one creator (got " + std::to_string(n) + ")"))
    {
        return nullptr;
    }
    check(creators2 != nullptr && n2 == 1 && creators2[0] == creators[0], "getPluginCreators returns the same list");
    InterfaceInfo const info = creators[0]->getInterfaceInfo();
    if (!check(info.kind && !std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") && info.major == 1,
            std::string("creator interface is PLUGIN CREATOR_V3ONE 1.x (got ") + (info.kind ? info.kind : "null") + " "
                + std::to_string(info.major) + "." + std::to_string(info.minor) + ")"))
    {
        return nullptr;
    }
    return static_cast<IPluginCreatorV3One*>(creators[0]);
}

void testStaticLibrary(Library& lib)
{
    int32_t const before = gRegistry.registerCalls;
    lib.handle = dlopen(lib.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!check(lib.handle != nullptr, "dlopen " + lib.path + (lib.handle ? "" : std::string(": ") + dlerror())))
    {
        return;
    }
    check(gRegistryLookups >= 1 && gRegistry.registerCalls == before + 1,
        "static library registered one creator when loaded (getPluginRegistry resolved from the host process)");
    check(dlsym(lib.handle, "getCreators") == nullptr && dlsym(lib.handle, "dimex_selective_scan_fwd") == nullptr,
        "static library exports no entry points (it is not a loadLibrary library)");
    if (gRegistry.entries.empty())
    {
        return;
    }
    auto const& e = gRegistry.entries.back();
    auto* c = static_cast<IPluginCreatorV3One*>(e.creator);
    check(!std::strcmp(c->getPluginName(), "DimSelectiveScan") && !std::strcmp(c->getPluginVersion(), "1")
            && !std::strcmp(c->getPluginNamespace(), "dimexport") && e.nameSpace == "dimexport",
        "static registration: DimSelectiveScan version 1 under namespace 'dimexport' (registry key = ONNX "
        "plugin_namespace)");
    check(gRegistry.getCreator("DimSelectiveScan", "1", "dimexport") == e.creator,
        "registry lookup (DimSelectiveScan, 1, dimexport) finds the static creator");
    PluginPtr p(c->createPlugin("static_node", nullptr, TensorRTPhase::kBUILD));
    check(p != nullptr && !std::strcmp(core(p.get())->getPluginName(), "DimSelectiveScan"),
        "static library's creator builds a plugin");
    // The static library logs through TensorRT's global logger (our getLogger stand-in).
    int32_t const globalBefore = gGlobalLogger.errors();
    gGlobalLogger.mute(true);
    Fields bad({{"reverse", 7}});
    PluginPtr q(c->createPlugin("static_node", &bad.fc, TensorRTPhase::kBUILD));
    gGlobalLogger.mute(false);
    check(q == nullptr && gGlobalLogger.errors() > globalBefore,
        "static library reports errors through TensorRT's global logger (getLogger)");
}

// ------------------------------------------------------------------------------------------------------------------
// Interface tests (no GPU)

void testCreator(IPluginCreatorV3One* creator)
{
    check(!std::strcmp(creator->getPluginName(), "DimSelectiveScan") && !std::strcmp(creator->getPluginVersion(), "1")
            && !std::strcmp(creator->getPluginNamespace(), "dimexport"),
        "creator identity: DimSelectiveScan / 1 / dimexport");
    PluginFieldCollection const* names = creator->getFieldNames();
    bool namesOk = names != nullptr && names->nbFields == 3;
    char const* expected[] = {"delta_softplus", "reverse", "has_z"};
    for (int32_t i = 0; namesOk && i < 3; ++i)
    {
        namesOk = !std::strcmp(names->fields[i].name, expected[i]) && names->fields[i].type == PluginFieldType::kINT32
            && names->fields[i].length == 1;
    }
    check(namesOk, "getFieldNames: delta_softplus, reverse, has_z as kINT32[1] (the node's INT attributes)");

    struct Case
    {
        std::vector<std::pair<char const*, int32_t>> kv;
        Attrs expect;
        char const* what;
    };
    std::vector<Case> cases = {
        {{{"delta_softplus", 1}, {"reverse", 0}, {"has_z", 1}}, {1, 0, 1}, "all attributes (1, 0, 1)"},
        {{{"delta_softplus", 0}, {"reverse", 1}, {"has_z", 0}}, {0, 1, 0}, "all attributes (0, 1, 0)"},
        {{{"has_z", 0}, {"delta_softplus", 1}, {"reverse", 1}}, {1, 1, 0}, "attributes in another order"},
        {{}, {1, 0, 1}, "no attributes: defaults delta_softplus 1, reverse 0, has_z 1"},
        {{{"reverse", 1}}, {1, 1, 1}, "only reverse: the others default"},
    };
    for (auto const& c : cases)
    {
        Fields f(c.kv);
        PluginPtr p(creator->createPlugin("scan_node", &f.fc, TensorRTPhase::kBUILD));
        Attrs got{};
        int32_t fv = 0, nb = 0;
        bool const ok = p && serializedAttrs(p.get(), got, fv, nb) && sameAttrs(got, c.expect);
        check(ok, std::string("createPlugin(kBUILD), ") + c.what + " -> " + attrString(got));
    }
    {
        PluginPtr p(creator->createPlugin("scan_node", nullptr, TensorRTPhase::kBUILD));
        Attrs got{};
        int32_t fv = 0, nb = 0;
        check(p && serializedAttrs(p.get(), got, fv, nb) && sameAttrs(got, {1, 0, 1}),
            "createPlugin(kBUILD) with a null field collection uses the defaults");
    }
    {
        // Other integer widths (Python callers), and the node's string attributes passed through.
        int64_t const rev64 = 1;
        char const ns[] = "dimexport";
        char const ver[] = "1";
        std::vector<PluginField> fs;
        fs.emplace_back("reverse", &rev64, PluginFieldType::kINT64, 1);
        fs.emplace_back("plugin_namespace", ns, PluginFieldType::kCHAR, static_cast<int32_t>(sizeof(ns)));
        fs.emplace_back("plugin_version", ver, PluginFieldType::kCHAR, static_cast<int32_t>(sizeof(ver)));
        PluginFieldCollection fc{static_cast<int32_t>(fs.size()), fs.data()};
        int32_t const warnBefore = gLogger.warnings();
        PluginPtr p(creator->createPlugin("scan_node", &fc, TensorRTPhase::kBUILD));
        Attrs got{};
        int32_t fv = 0, nb = 0;
        check(p && serializedAttrs(p.get(), got, fv, nb) && sameAttrs(got, {1, 1, 1}) && gLogger.warnings() == warnBefore,
            "kINT64 attribute accepted; plugin_version/plugin_namespace fields ignored silently");
    }
    {
        Fields f({{"reverse", 1}, {"unknown_attr", 5}});
        int32_t const warnBefore = gLogger.warnings();
        PluginPtr p(creator->createPlugin("scan_node", &f.fc, TensorRTPhase::kBUILD));
        check(p != nullptr && gLogger.warnings() == warnBefore + 1, "unknown field: plugin created, one warning logged");
    }
    // Malformed fields: nullptr and an error in the log, never a crash.
    auto expectReject = [&](PluginFieldCollection const* fc, TensorRTPhase phase, char const* what) {
        int32_t const errBefore = gLogger.errors();
        PluginPtr p(creator->createPlugin("scan_node", fc, phase));
        check(p == nullptr && gLogger.errors() > errBefore, std::string("createPlugin rejects ") + what + " (logged)");
    };
    {
        Fields f({{"reverse", 2}});
        expectReject(&f.fc, TensorRTPhase::kBUILD, "reverse = 2");
    }
    {
        Fields f({{"has_z", -1}});
        expectReject(&f.fc, TensorRTPhase::kBUILD, "has_z = -1");
    }
    {
        float const one = 1.0f;
        PluginField fld("delta_softplus", &one, PluginFieldType::kFLOAT32, 1);
        PluginFieldCollection fc{1, &fld};
        expectReject(&fc, TensorRTPhase::kBUILD, "a kFLOAT32 delta_softplus");
    }
    {
        PluginField fld("reverse", nullptr, PluginFieldType::kINT32, 1);
        PluginFieldCollection fc{1, &fld};
        expectReject(&fc, TensorRTPhase::kBUILD, "a field without data");
    }
    {
        PluginFieldCollection fc{2, nullptr};
        expectReject(&fc, TensorRTPhase::kBUILD, "a collection without a field array");
    }
    {
        Fields f({{"delta_softplus", 1}, {"reverse", 0}, {"has_z", 1}, {"format_version", 2}});
        expectReject(&f.fc, TensorRTPhase::kRUNTIME, "format_version 2 at kRUNTIME (engine from another plugin version)");
    }
}

void testPluginInterfaces(IPluginCreatorV3One* creator)
{
    PluginPtr p = createFromAttrs(creator, {1, 0, 1});
    if (!check(p != nullptr, "createPlugin(kBUILD) for interface tests"))
    {
        return;
    }
    IPluginV3OneCore* c = core(p.get());
    IPluginV3OneBuild* b = build(p.get());
    IPluginV3OneRuntime* r = runtime(p.get());
    if (!check(c && b && r, "getCapabilityInterface serves kCORE, kBUILD and kRUNTIME"))
    {
        return;
    }
    auto infoIs = [](IVersionedInterface* i, char const* kind) {
        InterfaceInfo const info = i->getInterfaceInfo();
        return info.kind && !std::strcmp(info.kind, kind) && info.major == 1;
    };
    check(infoIs(c, "PLUGIN_V3ONE_CORE") && infoIs(b, "PLUGIN_V3ONE_BUILD") && infoIs(r, "PLUGIN_V3ONE_RUNTIME"),
        "capability interface infos: PLUGIN_V3ONE_CORE / _BUILD / _RUNTIME version 1");
    InterfaceInfo const pi = p->getInterfaceInfo();
    check(pi.kind && !std::strcmp(pi.kind, "PLUGIN") && pi.major == 1, "IPluginV3 interface info PLUGIN 1.x");
    check(!std::strcmp(c->getPluginName(), "DimSelectiveScan") && !std::strcmp(c->getPluginVersion(), "1")
            && !std::strcmp(c->getPluginNamespace(), "dimexport"),
        "plugin identity equals the creator's: DimSelectiveScan / 1 / dimexport");

    // clone: a distinct, fully initialised copy.
    PluginPtr cl(p->clone());
    Attrs a0{}, a1{};
    int32_t fv0 = 0, fv1 = 0, nb0 = 0, nb1 = 0;
    check(cl && cl.get() != p.get() && core(cl.get()) && build(cl.get()) && runtime(cl.get())
            && serializedAttrs(p.get(), a0, fv0, nb0) && serializedAttrs(cl.get(), a1, fv1, nb1) && sameAttrs(a0, a1)
            && !std::strcmp(build(cl.get())->getTimingCacheID(), b->getTimingCacheID()),
        "clone: distinct object, all capabilities, same attributes and timing-cache ID");

    check(b->getNbOutputs() == 1, "getNbOutputs = 1");

    // getOutputDataTypes: output = u's type.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    {
        auto const in = ioTypes(t);
        DataType out = DataType::kINT8;
        int32_t const rc = b->getOutputDataTypes(&out, 1, in.data(), kNbIn);
        check(rc == 0 && out == t, std::string("getOutputDataTypes: output type = u's type (") + typeName(t) + ")");
    }
    {
        gLogger.mute(true);
        auto in = ioTypes(DataType::kFLOAT);
        in[0] = DataType::kINT32;
        DataType out{};
        int32_t const errBefore = gLogger.errors();
        int32_t const rc1 = b->getOutputDataTypes(&out, 1, in.data(), kNbIn);
        in[0] = DataType::kFLOAT;
        int32_t const rc2 = b->getOutputDataTypes(&out, 1, in.data(), 7);
        gLogger.mute(false);
        check(rc1 != 0 && rc2 != 0 && gLogger.errors() >= errBefore + 2,
            "getOutputDataTypes rejects an int32 u and 7 inputs (non-zero, logged)");
    }

    // supportsFormatCombination: the whole truth table. Expected: every tensor kLINEAR; u in {fp32, fp16, bf16};
    // A, D, delta_bias fp32; delta, B, C, z and out of u's type. Positions after pos hold garbage, which the plugin
    // must not read.
    {
        // Every DataType value of TensorRT 10.12+ (kFLOAT = 0 ... kE8M0 = 11; older headers end earlier, and the
        // extra values are simply more unsupported types) and every TensorFormat (kLINEAR = 0 ... kDHWC = 12).
        std::vector<DataType> allTypes;
        for (int32_t t = 0; t <= 11; ++t)
        {
            allTypes.push_back(static_cast<DataType>(t));
        }
        std::vector<TensorFormat> allFormats;
        for (int32_t f = 0; f <= static_cast<int32_t>(TensorFormat::kDHWC); ++f)
        {
            allFormats.push_back(static_cast<TensorFormat>(f));
        }
        auto valid = [](DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; };
        int64_t queries = 0, trues = 0, mismatches = 0;
        std::string firstMismatch;
        for (DataType t0 : allTypes)
        {
            for (int32_t pos = 0; pos < kNbIO; ++pos)
            {
                if (pos == 0 && t0 != allTypes.front())
                {
                    continue; // position 0 does not depend on t0
                }
                for (DataType t : allTypes)
                {
                    for (TensorFormat f : allFormats)
                    {
                        std::array<DynamicPluginTensorDesc, kNbIO> io{};
                        for (int32_t q = 0; q < kNbIO; ++q)
                        {
                            io[q].desc.dims = makeDims({1});
                            if (q < pos)
                            {
                                io[q].desc.type = q == 0 ? t0 : (isParam(q) ? DataType::kFLOAT : t0);
                                io[q].desc.format = TensorFormat::kLINEAR;
                            }
                            else
                            {
                                io[q].desc.type = DataType::kINT8; // garbage beyond pos
                                io[q].desc.format = TensorFormat::kCHW32;
                            }
                        }
                        io[pos].desc.type = t;
                        io[pos].desc.format = f;
                        DataType const u = pos == 0 ? t : t0;
                        bool const expect = f == TensorFormat::kLINEAR && valid(u)
                            && (pos == 0 || (isParam(pos) ? t == DataType::kFLOAT : t == t0));
                        bool const got = b->supportsFormatCombination(pos, io.data(), kNbIn, 1);
                        ++queries;
                        trues += got;
                        if (got != expect)
                        {
                            if (mismatches++ == 0)
                            {
                                firstMismatch = "pos " + std::to_string(pos) + " type " + std::to_string(int(t))
                                    + " format " + std::to_string(int(f)) + " u " + std::to_string(int(t0));
                            }
                        }
                    }
                }
            }
        }
        // 3 accepted at pos 0, then per valid u type one accepted type at each of the 8 other positions.
        check(mismatches == 0 && trues == 3 + 3 * 8,
            "supportsFormatCombination truth table: " + std::to_string(queries) + " queries, "
                + std::to_string(trues) + " accepted (expected 27), " + std::to_string(mismatches) + " mismatches"
                + (firstMismatch.empty() ? "" : " (first: " + firstMismatch + ")"));
        std::array<DynamicPluginTensorDesc, kNbIO> io{};
        for (auto& d : io)
        {
            d.desc.type = DataType::kFLOAT;
            d.desc.format = TensorFormat::kLINEAR;
        }
        check(!b->supportsFormatCombination(9, io.data(), kNbIn, 1) && !b->supportsFormatCombination(-1, io.data(), kNbIn, 1)
                && !b->supportsFormatCombination(0, io.data(), 7, 1) && !b->supportsFormatCombination(0, io.data(), 8, 2),
            "supportsFormatCombination: false for positions outside 0..8 and wrong I/O counts");
    }

    // getOutputShapes: out = u's expressions; wrong ranks are refused.
    {
        std::array<StubDimExpr, 32> exprs;
        std::array<DimsExprs, kNbIn> in{};
        int32_t const ranks[kNbIn] = {3, 3, 2, 4, 4, 1, 3, 1};
        int32_t k = 0;
        for (int32_t pos = 0; pos < kNbIn; ++pos)
        {
            in[pos].nbDims = ranks[pos];
            for (int32_t i = 0; i < ranks[pos]; ++i)
            {
                in[pos].d[i] = &exprs[static_cast<size_t>(k++)];
            }
        }
        StubExprBuilder eb;
        DimsExprs out{};
        int32_t const rc = b->getOutputShapes(in.data(), kNbIn, nullptr, 0, &out, 1, eb);
        check(rc == 0 && out.nbDims == 3 && out.d[0] == in[0].d[0] && out.d[1] == in[0].d[1] && out.d[2] == in[0].d[2],
            "getOutputShapes: output 0 = u's (batch, dim, seqlen) expressions");
        gLogger.mute(true);
        int32_t const errBefore = gLogger.errors();
        in[2].nbDims = 3; // A with rank 3
        int32_t const rc2 = b->getOutputShapes(in.data(), kNbIn, nullptr, 0, &out, 1, eb);
        in[2].nbDims = 2;
        int32_t const rc3 = b->getOutputShapes(in.data(), 7, nullptr, 0, &out, 1, eb);
        gLogger.mute(false);
        check(rc2 != 0 && rc3 != 0 && gLogger.errors() >= errBefore + 2,
            "getOutputShapes rejects a rank-3 A and 7 inputs (non-zero, logged)");
    }

    // configurePlugin: valid static and dynamic profiles, then invalid descriptors.
    {
        Shape const s{2, 96, 517, 16, 2};
        auto const st = dynamicDescs(s, s, DataType::kHALF);
        check(b->configurePlugin(st.data(), kNbIn, st.data() + kNbIn, 1) == 0,
            "configurePlugin accepts static shapes (2, 96, 517), N 16, G 2, fp16");
        Shape const lo{1, 96, 1, 16, 2}, hi{8, 96, 4096, 16, 2};
        for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
        {
            auto const dyn = dynamicDescs(lo, hi, t);
            check(b->configurePlugin(dyn.data(), kNbIn, dyn.data() + kNbIn, 1) == 0,
                std::string("configurePlugin accepts a dynamic profile (batch 1..8, seqlen 1..4096, -1 in desc), ")
                    + typeName(t));
        }
        // The kernel's documented bound: (min(ceil(L / 32), 64) - 1) * B * D chunk states (at most 131072) of
        // (dstate padded to 16) + 1 floats, from the profile's largest shapes.
        auto const dyn = dynamicDescs(lo, hi, DataType::kHALF);
        auto const shortSeq = dynamicDescs(Shape{2, 96, 32, 16, 2}, Shape{2, 96, 32, 16, 2}, DataType::kHALF);
        size_t const wsStatic = b->getWorkspaceSize(st.data(), kNbIn, st.data() + kNbIn, 1);
        size_t const wsDynamic = b->getWorkspaceSize(dyn.data(), kNbIn, dyn.data() + kNbIn, 1);
        size_t const wsShort = b->getWorkspaceSize(shortSeq.data(), kNbIn, shortSeq.data() + kNbIn, 1);
        check(wsStatic == 16u * 2 * 96 * 17 * 4 && wsDynamic == 63u * 8 * 96 * 17 * 4 && wsShort == 0,
            "getWorkspaceSize: the sequence split's chunk states for the profile's largest shapes (" + std::to_string(wsStatic)
                + ", " + std::to_string(wsDynamic) + " bytes), none for seqlen 32 (" + std::to_string(wsShort) + ")");
        char const* id = b->getTimingCacheID();
        PluginPtr rev = createFromAttrs(creator, {1, 1, 1});
        check(id && std::strlen(id) > 0 && rev && std::strcmp(id, build(rev.get())->getTimingCacheID()) != 0,
            std::string("getTimingCacheID from the attributes: '") + (id ? id : "null") + "', differs for reverse=1");

        struct Bad
        {
            std::string what;
            std::array<DynamicPluginTensorDesc, kNbIO> d;
            int32_t nbIn;
        };
        std::vector<Bad> bad;
        auto base = [&]() { return dynamicDescs(s, s, DataType::kHALF); };
        {
            auto d = base();
            d[2].desc.dims = makeDims({95, 16});
            d[2].min = d[2].max = d[2].opt = d[2].desc.dims;
            bad.push_back({"A's dim 95 != u's dim 96", d, kNbIn});
        }
        {
            Shape g = s;
            g.groups = 5;
            auto d = dynamicDescs(g, g, DataType::kHALF);
            bad.push_back({"groups 5 not dividing dim 96", d, kNbIn});
        }
        {
            Shape n = s;
            n.dstate = 65;
            auto d = dynamicDescs(n, n, DataType::kHALF);
            bad.push_back({"dstate 65 > 64", d, kNbIn});
        }
        {
            // dstate dynamic (-1) at build time, 16..80 in the profile: only the profile's max is wrong.
            auto d = base();
            for (auto [pos, axis] : {std::pair<int, int>{2, 1}, {3, 2}, {4, 2}})
            {
                d[static_cast<size_t>(pos)].desc.dims.d[axis] = -1;
                d[static_cast<size_t>(pos)].max.d[axis] = 80;
            }
            bad.push_back({"dstate up to 80 in the profile's max (dynamic dstate)", d, kNbIn});
        }
        {
            auto d = base();
            d[0].desc.dims = makeDims({2, 96, 517, 1});
            bad.push_back({"rank-4 u", d, kNbIn});
        }
        {
            auto d = base();
            d[3].desc.dims.d[3] = 516;
            d[3].min = d[3].max = d[3].opt = d[3].desc.dims;
            bad.push_back({"B's seqlen 516 != 517", d, kNbIn});
        }
        {
            auto d = base();
            d[4].desc.dims.d[2] = 8;
            bad.push_back({"C's dstate 8 != B's 16", d, kNbIn});
        }
        {
            auto d = base();
            d[6].desc.dims.d[0] = 3;
            bad.push_back({"z's batch 3 != 2", d, kNbIn});
        }
        {
            auto d = base();
            d[5].desc.type = DataType::kHALF;
            bad.push_back({"fp16 D (parameters must be fp32)", d, kNbIn});
        }
        {
            auto d = base();
            d[1].desc.type = DataType::kFLOAT;
            bad.push_back({"fp32 delta with fp16 u", d, kNbIn});
        }
        {
            auto d = dynamicDescs(s, s, DataType::kINT8);
            bad.push_back({"int8 activations", d, kNbIn});
        }
        {
            auto d = base();
            bad.push_back({"7 inputs", d, 7});
        }
        for (auto& x : bad)
        {
            int32_t const errBefore = gLogger.errors();
            std::printf("  configurePlugin, %s:\n", x.what.c_str());
            int32_t const rc = b->configurePlugin(x.d.data(), x.nbIn, x.d.data() + kNbIn, 1);
            check(rc != 0 && gLogger.errors() == errBefore + 1,
                "configurePlugin refuses " + x.what + " (non-zero, one error logged)");
        }
    }

    // onShapeChange: concrete shapes; -1 or inconsistent shapes refused.
    {
        Shape const s{2, 96, 517, 16, 2};
        auto d = tensorDescs(s, DataType::kBF16);
        check(r->onShapeChange(d.data(), kNbIn, d.data() + kNbIn, 1) == 0, "onShapeChange accepts concrete shapes (bf16)");
        gLogger.mute(true);
        int32_t const errBefore = gLogger.errors();
        d[0].dims.d[2] = -1;
        int32_t const rc1 = r->onShapeChange(d.data(), kNbIn, d.data() + kNbIn, 1);
        d = tensorDescs({2, 96, 517, 16, 7}, DataType::kBF16);
        int32_t const rc2 = r->onShapeChange(d.data(), kNbIn, d.data() + kNbIn, 1);
        gLogger.mute(false);
        check(rc1 != 0 && rc2 != 0 && gLogger.errors() >= errBefore + 2,
            "onShapeChange refuses a -1 extent and groups 7 (non-zero, logged)");
    }

    // Serialization round trip and attachToContext.
    {
        for (Attrs a : {Attrs{1, 0, 1}, Attrs{0, 1, 0}, Attrs{1, 1, 0}})
        {
            PluginPtr src = createFromAttrs(creator, a);
            PluginFieldCollection const* fc = src ? runtime(src.get())->getFieldsToSerialize() : nullptr;
            PluginPtr rt(fc ? creator->createPlugin("scan_node", fc, TensorRTPhase::kRUNTIME) : nullptr);
            Attrs got{};
            int32_t fv = 0, nb = 0;
            bool const ok = rt && serializedAttrs(rt.get(), got, fv, nb) && sameAttrs(got, a) && fv == 1 && nb == 4
                && core(rt.get()) && runtime(rt.get());
            check(ok, "getFieldsToSerialize -> createPlugin(kRUNTIME) round trip " + attrString(a)
                    + " (4 fields incl. format_version 1)");
            if (rt)
            {
                PluginPtr ctx(runtime(rt.get())->attachToContext(nullptr));
                Attrs ca{};
                check(ctx && ctx.get() != rt.get() && serializedAttrs(ctx.get(), ca, fv, nb) && sameAttrs(ca, a),
                    "attachToContext returns a full clone " + attrString(a));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// GPU: enqueue against a float64 reference

struct HostTensor
{
    std::vector<double> value;  // the exact values the device sees (after rounding to the I/O type)
    std::vector<uint8_t> bytes; // device representation
};

HostTensor makeTensor(std::vector<float> const& v, DataType t)
{
    HostTensor h;
    h.value.resize(v.size());
    size_t const es = t == DataType::kFLOAT ? 4 : 2;
    h.bytes.resize(v.size() * es);
    for (size_t i = 0; i < v.size(); ++i)
    {
        if (t == DataType::kFLOAT)
        {
            std::memcpy(&h.bytes[i * 4], &v[i], 4);
            h.value[i] = v[i];
        }
        else
        {
            uint16_t const b = t == DataType::kHALF ? floatToHalf(v[i]) : floatToBf16(v[i]);
            std::memcpy(&h.bytes[i * 2], &b, 2);
            h.value[i] = t == DataType::kHALF ? halfToFloat(b) : bf16ToFloat(b);
        }
    }
    return h;
}

std::vector<double> decode(std::vector<uint8_t> const& bytes, DataType t)
{
    size_t const es = t == DataType::kFLOAT ? 4 : 2;
    std::vector<double> v(bytes.size() / es);
    for (size_t i = 0; i < v.size(); ++i)
    {
        if (t == DataType::kFLOAT)
        {
            float f;
            std::memcpy(&f, &bytes[i * 4], 4);
            v[i] = f;
        }
        else
        {
            uint16_t b;
            std::memcpy(&b, &bytes[i * 2], 2);
            v[i] = t == DataType::kHALF ? halfToFloat(b) : bf16ToFloat(b);
        }
    }
    return v;
}

struct Problem
{
    Shape s;
    DataType type;
    Attrs attrs;
    HostTensor in[kNbIn];
};

// Realistic Mamba-1 statistics: u, B, C, z ~ N(0, 1); A = -exp(A_log) with S4D-real A_log = log(n + 1) (+ noise);
// delta_bias = softplus^-1(dt) with dt log-uniform in [1e-3, 1e-1]; delta ~ N(0, 0.5^2) (pre-softplus);
// without softplus, delta is a positive dt in [1e-3, 1e-1]; D ~ 1 + N(0, 0.1^2).
Problem makeProblem(Shape s, DataType t, Attrs a, uint32_t seed)
{
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> unif(0.0f, 1.0f);
    size_t const nBDL = static_cast<size_t>(s.batch * s.dim * s.seqlen);
    size_t const nBC = static_cast<size_t>(s.batch * s.groups * s.dstate * s.seqlen);
    std::vector<float> u(nBDL), delta(nBDL), z(nBDL), Am(static_cast<size_t>(s.dim * s.dstate)), Bm(nBC), Cm(nBC),
        Dv(static_cast<size_t>(s.dim)), bias(static_cast<size_t>(s.dim));
    for (auto& x : u)
        x = normal(rng);
    for (auto& x : delta)
        x = a.softplus ? 0.5f * normal(rng) : std::exp(std::log(1e-3f) + unif(rng) * std::log(100.0f));
    for (auto& x : z)
        x = normal(rng);
    for (int64_t d = 0; d < s.dim; ++d)
    {
        for (int64_t n = 0; n < s.dstate; ++n)
        {
            Am[static_cast<size_t>(d * s.dstate + n)]
                = -std::exp(std::log(static_cast<float>(n + 1)) + 0.1f * normal(rng));
        }
        float const dt = std::exp(std::log(1e-3f) + unif(rng) * std::log(100.0f));
        bias[static_cast<size_t>(d)] = a.softplus ? dt + std::log(-std::expm1(-dt)) : 0.01f * unif(rng);
        Dv[static_cast<size_t>(d)] = 1.0f + 0.1f * normal(rng);
    }
    for (auto& x : Bm)
        x = normal(rng);
    for (auto& x : Cm)
        x = normal(rng);
    Problem p{s, t, a, {}};
    p.in[0] = makeTensor(u, t);
    p.in[1] = makeTensor(delta, t);
    p.in[2] = makeTensor(Am, DataType::kFLOAT);
    p.in[3] = makeTensor(Bm, t);
    p.in[4] = makeTensor(Cm, t);
    p.in[5] = makeTensor(Dv, DataType::kFLOAT);
    p.in[6] = makeTensor(z, t);
    p.in[7] = makeTensor(bias, DataType::kFLOAT);
    return p;
}

// The scan in float64, straight from the formula of include/dimexport_scan.h.
std::vector<double> reference(Problem const& p)
{
    Shape const& s = p.s;
    std::vector<double> out(static_cast<size_t>(s.batch * s.dim * s.seqlen));
    std::vector<double> h(static_cast<size_t>(s.dstate));
    int64_t const perGroup = s.dim / s.groups;
    auto const& u = p.in[0].value;
    auto const& delta = p.in[1].value;
    auto const& A = p.in[2].value;
    auto const& B = p.in[3].value;
    auto const& C = p.in[4].value;
    auto const& D = p.in[5].value;
    auto const& z = p.in[6].value;
    auto const& bias = p.in[7].value;
    for (int64_t b = 0; b < s.batch; ++b)
    {
        for (int64_t d = 0; d < s.dim; ++d)
        {
            int64_t const g = d / perGroup;
            std::fill(h.begin(), h.end(), 0.0);
            for (int64_t k = 0; k < s.seqlen; ++k)
            {
                int64_t const t = p.attrs.reverse ? s.seqlen - 1 - k : k;
                size_t const i = static_cast<size_t>((b * s.dim + d) * s.seqlen + t);
                double dt = delta[i] + bias[static_cast<size_t>(d)];
                if (p.attrs.softplus)
                {
                    dt = dt <= 20.0 ? std::log1p(std::exp(dt)) : dt;
                }
                double y = 0.0;
                for (int64_t n = 0; n < s.dstate; ++n)
                {
                    size_t const j = static_cast<size_t>(((b * s.groups + g) * s.dstate + n) * s.seqlen + t);
                    double const a = A[static_cast<size_t>(d * s.dstate + n)];
                    h[static_cast<size_t>(n)] = std::exp(dt * a) * h[static_cast<size_t>(n)] + dt * B[j] * u[i];
                    y += C[j] * h[static_cast<size_t>(n)];
                }
                y += D[static_cast<size_t>(d)] * u[i];
                if (p.attrs.hasZ)
                {
                    y *= z[i] / (1.0 + std::exp(-z[i]));
                }
                out[i] = y;
            }
        }
    }
    return out;
}

#define CUDA_OK(call) cudaCheck((call), #call, __LINE__)
bool cudaCheck(cudaError_t e, char const* what, int line)
{
    if (e != cudaSuccess)
    {
        std::printf("[CUDA] %s failed at line %d: %s\n", what, line, cudaGetErrorString(e));
        return false;
    }
    return true;
}

struct DeviceBuffers
{
    void* in[kNbIn]{};
    void* out{nullptr};
    size_t outBytes{0};
    void* workspace{nullptr}; // what TensorRT would hand to enqueue: getWorkspaceSize of the profile
    ~DeviceBuffers()
    {
        for (void* p : in)
            if (p)
                cudaFree(p);
        if (out)
            cudaFree(out);
        if (workspace)
            cudaFree(workspace);
    }
};

bool upload(Problem const& p, DeviceBuffers& buf)
{
    for (int32_t i = 0; i < kNbIn; ++i)
    {
        auto const& bytes = p.in[i].bytes;
        if (!CUDA_OK(cudaMalloc(&buf.in[i], bytes.size()))
            || !CUDA_OK(cudaMemcpy(buf.in[i], bytes.data(), bytes.size(), cudaMemcpyHostToDevice)))
        {
            return false;
        }
    }
    buf.outBytes = p.in[0].bytes.size();
    return CUDA_OK(cudaMalloc(&buf.out, buf.outBytes));
}

// Plays TensorRT's sequence for one plugin: configurePlugin and getWorkspaceSize (build; the workspace is allocated
// once per buffer set), onShapeChange + enqueue (runtime). Without `useWorkspace` enqueue gets none, as TensorRT
// passes when the size is 0: the kernel then runs without the sequence split.
int32_t runPlugin(IPluginV3* plugin, Problem const& p, DeviceBuffers& buf, cudaStream_t stream, bool configure,
    std::vector<uint8_t>& result, bool useWorkspace = true)
{
    if (configure)
    {
        Shape lo = p.s, hi = p.s;
        lo.batch = 1;
        lo.seqlen = 1;
        hi.batch = p.s.batch * 2;
        hi.seqlen = p.s.seqlen * 2;
        auto const dyn = dynamicDescs(lo, hi, p.type);
        if (build(plugin)->configurePlugin(dyn.data(), kNbIn, dyn.data() + kNbIn, 1) != 0)
        {
            return -100;
        }
        size_t const wsBytes = build(plugin)->getWorkspaceSize(dyn.data(), kNbIn, dyn.data() + kNbIn, 1);
        if (buf.workspace == nullptr && wsBytes > 0 && !CUDA_OK(cudaMalloc(&buf.workspace, wsBytes)))
        {
            return -105;
        }
    }
    auto const d = tensorDescs(p.s, p.type);
    IPluginV3OneRuntime* r = runtime(plugin);
    if (r->onShapeChange(d.data(), kNbIn, d.data() + kNbIn, 1) != 0)
    {
        return -101;
    }
    if (!CUDA_OK(cudaMemsetAsync(buf.out, 0xff, buf.outBytes, stream))) // NaN pattern: unwritten output shows
    {
        return -102;
    }
    void* outs[1] = {buf.out};
    int32_t const rc = r->enqueue(d.data(), d.data() + kNbIn, buf.in, outs, useWorkspace ? buf.workspace : nullptr,
        stream);
    if (rc != 0)
    {
        return rc;
    }
    if (!CUDA_OK(cudaStreamSynchronize(stream)))
    {
        return -103;
    }
    result.resize(buf.outBytes);
    return CUDA_OK(cudaMemcpy(result.data(), buf.out, buf.outBytes, cudaMemcpyDeviceToHost)) ? 0 : -104;
}

struct ErrorStats
{
    double relL2{0}, maxAbs{0}, maxRelToRms{0}, refRms{0};
    int64_t nonFinite{0}, elementViolations{0};
};

ErrorStats compare(std::vector<double> const& got, std::vector<double> const& ref, double u)
{
    ErrorStats e;
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); ++i)
    {
        den += ref[i] * ref[i];
    }
    e.refRms = std::sqrt(den / static_cast<double>(std::max<size_t>(1, ref.size())));
    for (size_t i = 0; i < ref.size(); ++i)
    {
        if (!std::isfinite(got[i]))
        {
            ++e.nonFinite;
            continue;
        }
        double const err = std::fabs(got[i] - ref[i]);
        num += err * err;
        e.maxAbs = std::max(e.maxAbs, err);
        // Elementwise: one rounding to the I/O type plus a small fp32-level error relative to the output scale.
        if (err > 2.0 * u * std::fabs(ref[i]) + 1e-4 * e.refRms)
        {
            ++e.elementViolations;
        }
    }
    e.relL2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    e.maxRelToRms = e.refRms > 0 ? e.maxAbs / e.refRms : e.maxAbs;
    return e;
}

struct GpuSummary
{
    double worstRelL2[3]{};
    double worstMaxAbs[3]{};
    int32_t cases[3]{};
};

int typeIndex(DataType t)
{
    return t == DataType::kFLOAT ? 0 : t == DataType::kHALF ? 1 : 2;
}

void runCase(IPluginCreatorV3One* creator, Shape s, DataType t, Attrs a, uint32_t seed, cudaStream_t stream,
    GpuSummary& sum, char const* label = "", bool graph = false)
{
    char name[256];
    std::snprintf(name, sizeof(name), "%s B%lld D%lld L%lld N%lld G%lld %s softplus %d has_z %d reverse %d", label,
        static_cast<long long>(s.batch), static_cast<long long>(s.dim), static_cast<long long>(s.seqlen),
        static_cast<long long>(s.dstate), static_cast<long long>(s.groups), typeName(t), a.softplus, a.hasZ, a.reverse);
    Problem const p = makeProblem(s, t, a, seed);
    DeviceBuffers buf;
    if (!check(upload(p, buf), std::string("upload ") + name))
    {
        return;
    }
    auto const t0 = std::chrono::steady_clock::now();
    std::vector<double> const ref = reference(p);
    double const refMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

    PluginPtr plugin = createFromAttrs(creator, a, TensorRTPhase::kBUILD);
    std::vector<uint8_t> out1;
    int32_t const rc = plugin ? runPlugin(plugin.get(), p, buf, stream, true, out1) : -1;
    if (!check(rc == 0, std::string("enqueue ") + name + " (rc " + std::to_string(rc) + ")"))
    {
        return;
    }
    double const u = unitRoundoff(t);
    double const tol = t == DataType::kFLOAT ? 1e-5 : u;
    auto checkOutput = [&](std::vector<uint8_t> const& out, char const* how) {
        ErrorStats const e = compare(decode(out, t), ref, u);
        char msg[512];
        std::snprintf(msg, sizeof(msg),
            "%s%s: rel L2 %.3e (tol %.2e), max abs %.3e, max abs/rms %.3e, non-finite %lld, elementwise > 2u|ref| + "
            "1e-4 rms: %lld  [ref %.0f ms]",
            name, how, e.relL2, tol, e.maxAbs, e.maxRelToRms, static_cast<long long>(e.nonFinite),
            static_cast<long long>(e.elementViolations), refMs);
        check(e.nonFinite == 0 && e.relL2 <= tol && e.elementViolations == 0, msg);
        int const ti = typeIndex(t);
        sum.worstRelL2[ti] = std::max(sum.worstRelL2[ti], e.relL2);
        sum.worstMaxAbs[ti] = std::max(sum.worstMaxAbs[ti], e.maxAbs);
        sum.cases[ti]++;
    };
    checkOutput(out1, "");
    // The same enqueue without a workspace (one pass, no sequence split).
    std::vector<uint8_t> out0;
    int32_t const rc0 = runPlugin(plugin.get(), p, buf, stream, false, out0, false);
    if (check(rc0 == 0, std::string("enqueue without workspace ") + name + " (rc " + std::to_string(rc0) + ")"))
    {
        checkOutput(out0, " [no workspace]");
    }

    // Engine round trip: serialized fields -> createPlugin(kRUNTIME) -> attachToContext -> same bits.
    PluginFieldCollection const* fc = runtime(plugin.get())->getFieldsToSerialize();
    PluginPtr rt(fc ? creator->createPlugin("scan_node", fc, TensorRTPhase::kRUNTIME) : nullptr);
    PluginPtr ctx(rt ? runtime(rt.get())->attachToContext(nullptr) : nullptr);
    std::vector<uint8_t> out2;
    int32_t const rc2 = ctx ? runPlugin(ctx.get(), p, buf, stream, false, out2) : -1;
    check(rc2 == 0 && out2 == out1,
        std::string("round trip (kRUNTIME + attachToContext) reproduces the output bit for bit: ") + name);

    if (graph)
    {
        // Capture enqueue into a CUDA graph (global capture mode, the strictest), replay, compare bits.
        auto const d = tensorDescs(p.s, p.type);
        void* outs[1] = {buf.out};
        cudaGraph_t g = nullptr;
        cudaGraphExec_t ge = nullptr;
        bool ok = CUDA_OK(cudaMemset(buf.out, 0, buf.outBytes))
            && CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        int32_t const rcg = ok
            ? runtime(ctx.get())->enqueue(d.data(), d.data() + kNbIn, buf.in, outs, buf.workspace, stream)
            : -1;
        ok = CUDA_OK(cudaStreamEndCapture(stream, &g)) && ok && rcg == 0;
        ok = ok && CUDA_OK(cudaGraphInstantiate(&ge, g, 0)) && CUDA_OK(cudaGraphLaunch(ge, stream))
            && CUDA_OK(cudaGraphLaunch(ge, stream)) && CUDA_OK(cudaStreamSynchronize(stream));
        std::vector<uint8_t> out3(buf.outBytes);
        ok = ok && CUDA_OK(cudaMemcpy(out3.data(), buf.out, buf.outBytes, cudaMemcpyDeviceToHost));
        check(ok && out3 == out1, std::string("enqueue captured in a CUDA graph (no sync, no allocation) and replayed: "
                                              "same bits: ")
                + name);
        if (ge)
            cudaGraphExecDestroy(ge);
        if (g)
            cudaGraphDestroy(g);
    }
}

void testEnqueueErrors(IPluginCreatorV3One* creator, cudaStream_t stream)
{
    Shape const s{1, 32, 40, 16, 1};
    Problem const p = makeProblem(s, DataType::kFLOAT, {1, 0, 1}, 7);
    DeviceBuffers buf;
    if (!upload(p, buf))
    {
        return;
    }
    PluginPtr plugin = createFromAttrs(creator, {1, 0, 1});
    IPluginV3OneRuntime* r = runtime(plugin.get());
    void* outs[1] = {buf.out};
    auto expectFail = [&](std::array<PluginTensorDesc, kNbIO> const& d, void* const* ins, void* const* os,
                          char const* what) {
        int32_t const errBefore = gLogger.errors();
        std::printf("  enqueue, %s:\n", what);
        int32_t const rc = r->enqueue(d.data(), d.data() + kNbIn, ins, os, nullptr, stream);
        check(rc != 0 && gLogger.errors() == errBefore + 1,
            std::string("enqueue refuses ") + what + " (non-zero, logged, no launch)");
    };
    {
        auto d = tensorDescs({1, 32, 40, 65, 1}, DataType::kFLOAT);
        expectFail(d, buf.in, outs, "dstate 65");
    }
    {
        auto d = tensorDescs(s, DataType::kFLOAT);
        d[7].dims = makeDims({31});
        expectFail(d, buf.in, outs, "delta_bias of 31 for dim 32");
    }
    {
        auto d = tensorDescs(s, DataType::kINT8);
        expectFail(d, buf.in, outs, "int8 tensors");
    }
    {
        auto d = tensorDescs(s, DataType::kFLOAT);
        void* ins[kNbIn];
        std::memcpy(ins, buf.in, sizeof(ins));
        ins[3] = nullptr;
        expectFail(d, ins, outs, "a null B pointer");
    }
    {
        auto d = tensorDescs(s, DataType::kFLOAT);
        void* nullOut[1] = {nullptr};
        expectFail(d, buf.in, nullOut, "a null output pointer");
    }
    {
        auto d = tensorDescs({0, 32, 40, 16, 1}, DataType::kFLOAT);
        int32_t const rc = r->enqueue(d.data(), d.data() + kNbIn, buf.in, outs, nullptr, stream);
        check(rc == 0, "enqueue with batch 0 (empty tensors) succeeds without work");
    }
    // has_z = 0: the z pointer is not read, so a null z is fine.
    {
        PluginPtr noZ = createFromAttrs(creator, {1, 0, 0});
        auto d = tensorDescs(s, DataType::kFLOAT);
        void* ins[kNbIn];
        std::memcpy(ins, buf.in, sizeof(ins));
        ins[6] = nullptr;
        int32_t const rc = runtime(noZ.get())->enqueue(d.data(), d.data() + kNbIn, ins, outs, nullptr, stream);
        check(rc == 0 && CUDA_OK(cudaStreamSynchronize(stream)), "has_z = 0 ignores the z input (null z accepted)");
    }
}

// Informational (--probe-first-capture, run in a process of its own): the plugin library's very first enqueue in the
// process (its static CUDA runtime not yet initialised, kernel attributes not yet set) made inside a CUDA-graph
// capture. TensorRT's guidance is to run enqueueV3 once before capturing; this shows what happens without that.
void probeFirstEnqueueInCapture(IPluginCreatorV3One* creator)
{
    Shape const s{1, 64, 64, 16, 1};
    Problem const p = makeProblem(s, DataType::kHALF, {1, 0, 1}, 4242);
    DeviceBuffers buf;
    cudaStream_t stream = nullptr;
    if (!upload(p, buf) || !CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)))
    {
        return;
    }
    PluginPtr plugin = createFromAttrs(creator, p.attrs);
    auto const d = tensorDescs(s, p.type);
    void* outs[1] = {buf.out};
    int32_t rc = -1;
    cudaGraph_t g = nullptr;
    cudaError_t endErr = cudaErrorUnknown;
    if (CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal)))
    {
        gLogger.mute(true);
        rc = runtime(plugin.get())->enqueue(d.data(), d.data() + kNbIn, buf.in, outs, nullptr, stream);
        gLogger.mute(false);
        endErr = cudaStreamEndCapture(stream, &g);
    }
    cudaGraphExec_t ge = nullptr;
    bool replayed = rc == 0 && endErr == cudaSuccess && g != nullptr && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess
        && cudaGraphLaunch(ge, stream) == cudaSuccess && cudaStreamSynchronize(stream) == cudaSuccess;
    bool same = false;
    if (replayed)
    {
        std::vector<uint8_t> out(buf.outBytes);
        same = cudaMemcpy(out.data(), buf.out, buf.outBytes, cudaMemcpyDeviceToHost) == cudaSuccess
            && compare(decode(out, p.type), reference(p), unitRoundoff(p.type)).relL2 <= unitRoundoff(p.type);
    }
    std::printf("[INFO] first enqueue of the process inside a global-mode graph capture: enqueue rc %d, end capture "
                "%s, replay %s, output %s%s\n",
        rc, cudaGetErrorString(endErr), replayed ? "ok" : "failed", same ? "correct" : "not checked/wrong",
        rc != 0 ? (" (plugin said: " + gLogger.last() + ")").c_str() : "");
    if (ge)
        cudaGraphExecDestroy(ge);
    if (g)
        cudaGraphDestroy(g);
    cudaStreamDestroy(stream);
    (void) cudaGetLastError();
}

void testGpu(IPluginCreatorV3One* creator)
{
    int dev = 0;
    cudaDeviceProp prop{};
    int driver = 0, rt = 0;
    CUDA_OK(cudaGetDevice(&dev));
    CUDA_OK(cudaGetDeviceProperties(&prop, dev));
    CUDA_OK(cudaDriverGetVersion(&driver));
    CUDA_OK(cudaRuntimeGetVersion(&rt));
    std::printf("device %d: %s, sm_%d%d, %d SMs, driver CUDA %d.%d, runtime %d.%d, TensorRT headers %d.%d.%d\n", dev,
        prop.name, prop.major, prop.minor, prop.multiProcessorCount, driver / 1000, (driver % 1000) / 10, rt / 1000,
        (rt % 1000) / 10, NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH);
    std::fflush(stdout);
    cudaStream_t stream = nullptr;
    if (!check(CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)), "create a CUDA stream"))
    {
        return;
    }
    GpuSummary sum;
    uint32_t seed = 1000;
    // The matrix of the issue: fp32/fp16/bf16 x has_z x reverse x groups 1/2.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    {
        for (int32_t hasZ : {1, 0})
        {
            for (int32_t reverse : {0, 1})
            {
                for (int64_t groups : {1, 2})
                {
                    runCase(creator, {2, 96, 517, 16, groups}, t, {1, reverse, hasZ}, seed++, stream, sum, "[matrix]",
                        hasZ == 1 && reverse == 1 && groups == 2);
                }
            }
        }
    }
    // Edges: dstate 5 (padded) and 64 (largest), no softplus, length 1 and 2, a DiM-sized layer.
    runCase(creator, {2, 64, 300, 5, 2}, DataType::kHALF, {1, 0, 1}, seed++, stream, sum, "[edge]");
    runCase(creator, {1, 64, 257, 64, 1}, DataType::kFLOAT, {1, 1, 1}, seed++, stream, sum, "[edge]");
    runCase(creator, {2, 64, 200, 32, 2}, DataType::kBF16, {0, 0, 1}, seed++, stream, sum, "[edge]");
    runCase(creator, {2, 64, 200, 16, 1}, DataType::kFLOAT, {0, 1, 0}, seed++, stream, sum, "[edge]");
    runCase(creator, {3, 32, 1, 16, 1}, DataType::kFLOAT, {1, 0, 1}, seed++, stream, sum, "[edge]");
    runCase(creator, {3, 32, 2, 16, 2}, DataType::kBF16, {1, 1, 1}, seed++, stream, sum, "[edge]");
    runCase(creator, {2, 768, 1024, 16, 1}, DataType::kHALF, {1, 0, 1}, seed++, stream, sum, "[dim-size]", true);
    // Every kernel configuration (lanes per channel), forced through the kernel's own switch.
    for (char const* split : {"1", "2", "4", "8", "16"})
    {
        setenv("DIMEX_SCAN_FORCE_SPLIT", split, 1);
        std::string const label = std::string("[split ") + split + "]";
        runCase(creator, {2, 128, 333, 16, 2}, DataType::kHALF, {1, 1, 1}, seed++, stream, sum, label.c_str());
    }
    unsetenv("DIMEX_SCAN_FORCE_SPLIT");
    // Sequence split forced to a few chunk counts (DIMEX_SCAN_FORCE_CHUNKS), both directions, graph capture too.
    for (char const* chunks : {"2", "5", "16"})
    {
        setenv("DIMEX_SCAN_FORCE_CHUNKS", chunks, 1);
        std::string const label = std::string("[chunks ") + chunks + "]";
        for (int32_t reverse : {0, 1})
        {
            runCase(creator, {1, 256, 1500, 16, 2}, DataType::kHALF, {1, reverse, 1}, seed++, stream, sum,
                label.c_str(), reverse == 1);
        }
    }
    unsetenv("DIMEX_SCAN_FORCE_CHUNKS");
    testEnqueueErrors(creator, stream);
    cudaStreamDestroy(stream);
    std::printf("GPU summary (worst over cases): fp32 %d cases rel L2 %.3e max abs %.3e | fp16 %d cases rel L2 %.3e "
                "max abs %.3e | bf16 %d cases rel L2 %.3e max abs %.3e\n",
        sum.cases[0], sum.worstRelL2[0], sum.worstMaxAbs[0], sum.cases[1], sum.worstRelL2[1], sum.worstMaxAbs[1],
        sum.cases[2], sum.worstRelL2[2], sum.worstMaxAbs[2]);
}

} // namespace

int main(int argc, char** argv)
{
    bool cpuOnly = false;
    bool probe = false;
    Library dyn{nullptr, DIMEX_PLUGIN_LIB};
    Library stat{nullptr, DIMEX_PLUGIN_STATIC_LIB};
    for (int i = 1; i < argc; ++i)
    {
        std::string const a = argv[i];
        if (a == "--cpu-only")
            cpuOnly = true;
        else if (a == "--probe-first-capture")
            probe = true;
        else if (a == "--quiet")
            gQuiet = true;
        else if (a == "--lib" && i + 1 < argc)
            dyn.path = argv[++i];
        else if (a == "--static-lib" && i + 1 < argc)
            stat.path = argv[++i];
        else
        {
            std::printf("usage: %s [--cpu-only | --probe-first-capture] [--quiet] [--lib PATH] [--static-lib PATH]\n",
                argv[0]);
            return 2;
        }
    }
    std::printf("DimSelectiveScan plugin harness, TensorRT headers %d.%d.%d\n", NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR,
        NV_TENSORRT_PATCH);

    StubLoggerFinder finder(&gLogger);
    IPluginCreatorV3One* creator = testDynamicLibrary(dyn, finder);
    if (probe)
    {
        if (creator != nullptr)
        {
            probeFirstEnqueueInCapture(creator);
        }
        std::printf("%d passed, %d failed\n", gPassed, gFailed);
        return gFailed > 0 ? 1 : 0;
    }
    if (creator != nullptr)
    {
        testCreator(creator);
        testPluginInterfaces(creator);
        check(finder.calls() > 0 && gLogger.errors() > 0,
            "plugin messages reached the logger handed over through setLoggerFinder ("
                + std::to_string(gLogger.total()) + " messages)");
    }
    testStaticLibrary(stat);

    bool gpuRan = false;
    if (!cpuOnly && creator != nullptr)
    {
        int n = 0;
        cudaError_t const e = cudaGetDeviceCount(&n);
        if (e == cudaSuccess && n > 0)
        {
            testGpu(creator);
            gpuRan = true;
        }
        else
        {
            std::printf("no CUDA device (%s): GPU checks skipped\n", cudaGetErrorString(e));
        }
    }
    // Libraries stay loaded until exit: creators and plugins live in them.
    std::printf("%d passed, %d failed\n", gPassed, gFailed);
    if (gFailed > 0)
    {
        return 1;
    }
    return (!cpuOnly && !gpuRan) ? 77 : 0;
}

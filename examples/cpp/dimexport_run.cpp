// dimexport_run: runs a TensorRT engine built by `dimexport build` on .npy inputs and writes .npy outputs.
//
// TensorRT is opened with dlopen instead of being linked: one binary picks the TensorRT installation at run
// time (--trt-lib, DIMEXPORT_TRT_LIB), and it links and reports its errors on machines without libnvinfer
// (CI builds and tests it with headers only). Only TensorRT's extern "C" entry points are resolved; everything
// else is reached through the C++ interfaces they return, which need no linking.
#include "json.hpp"
#include "npy.hpp"
#include "sha256.hpp"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace fs = std::filesystem;
using nvinfer1::DataType;

namespace
{

// dimexport's documented exit codes.
constexpr int kExitFailure = 1;
constexpr int kExitInput = 2;       // bad arguments or input files
constexpr int kExitEnvironment = 4; // TensorRT, plugin, GPU or an engine this environment cannot run

constexpr char kPluginName[] = "DimSelectiveScan";
constexpr char kPluginVersion[] = "1";
constexpr char kPluginNamespace[] = "dimexport";
constexpr char kRebuild[] = "rebuild the engine with `dimexport build`";

class Failure : public std::runtime_error
{
public:
    Failure(int code, std::string const& message)
        : std::runtime_error(message)
        , mCode(code)
    {
    }
    int code() const { return mCode; }

private:
    int mCode;
};

[[noreturn]] void fail(int code, std::string const& message)
{
    throw Failure(code, message);
}

std::string inQuotes(std::string const& s)
{
    return "'" + s + "'";
}

std::string getEnv(char const* name)
{
    char const* v = std::getenv(name);
    return v ? v : "";
}

std::string versionString(int major, int minor, int patch)
{
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::string const kCompiledTrt = versionString(NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH);

// ------------------------------------------------------------------------------------------------ command line

struct Options
{
    std::string engine;
    std::vector<std::pair<std::string, std::string>> inputs; // name, .npy path
    std::string outputDir{"."};
    std::string plugin;
    std::string trtLib;
    int device{0};
    int iterations{0};
    bool cudaGraph{false};
    bool compatCheck{true};
    bool verbose{false};
};

std::string usage()
{
    std::string const defaultLib = "libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR);
    return "usage: dimexport_run --engine PATH [--input NAME=FILE.npy]... [options]\n"
           "\n"
           "Runs a TensorRT engine built by `dimexport build` on .npy inputs and writes <output-dir>/<name>.npy\n"
           "for each output.\n"
           "\n"
           "  --engine PATH       the .engine file, or the folder `dimexport build` made for it; the build.json\n"
           "                      there is checked against the loaded TensorRT, the plugin and the GPU\n"
           "  --input NAME=FILE   .npy file for engine input NAME, one per input (dimexport: x, t, y)\n"
           "  --output-dir DIR    where the outputs go (default: the current directory; created if missing)\n"
           "  --plugin PATH       plugin library for IPluginRegistry::loadLibrary, libdimexport_trt_plugin.so\n"
           "                      (default: $DIMEXPORT_TRT_PLUGIN_LIB, else the library build.json records)\n"
           "  --trt-lib PATH      TensorRT runtime library (default: $DIMEXPORT_TRT_LIB, else "
        + defaultLib
        + ")\n"
          "  --device N          CUDA device (default 0)\n"
          "  --iterations N      after one warm-up, time N more runs with CUDA events; print the median (default 0)\n"
          "  --cuda-graph        capture enqueueV3 in a CUDA graph after the first run; replay it from then on\n"
          "  --no-compat-check   skip comparing build.json with the engine file, TensorRT, the plugin and the GPU\n"
          "  -v, --verbose       TensorRT info messages and more detail\n"
          "  -h, --help          show this text\n"
          "\n"
          "Exit codes: 0 ok, 2 bad arguments or input, 4 environment (TensorRT, plugin, GPU, incompatible engine),\n"
          "1 anything else. Compiled against TensorRT "
        + kCompiledTrt + " headers.\n";
}

// A usage error: the message, and the whole usage text only when the command line lacks the essentials.
[[noreturn]] void usageError(std::string const& message, bool showUsage = false)
{
    fail(kExitInput, message + (showUsage ? "\n" + usage() : " (see dimexport_run --help)"));
}

int parseCount(std::string const& option, std::string const& text)
{
    int value = 0;
    auto const [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value < 0)
    {
        usageError(option + " expects a non-negative integer, got " + inQuotes(text));
    }
    return value;
}

// Returns nullopt for --help.
std::optional<Options> parseArgs(int argc, char** argv)
{
    if (argc <= 1)
    {
        usageError("missing arguments", true);
    }
    Options o;
    std::set<std::string> inputNames;
    for (int i = 1; i < argc; ++i)
    {
        std::string arg = argv[i];
        std::optional<std::string> inlineValue; // --opt=value
        if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos)
        {
            inlineValue = arg.substr(arg.find('=') + 1);
            arg = arg.substr(0, arg.find('='));
        }
        auto value = [&]() -> std::string {
            if (inlineValue)
            {
                return *inlineValue;
            }
            if (i + 1 >= argc)
            {
                usageError(arg + " needs a value");
            }
            return argv[++i];
        };
        auto flag = [&]() {
            if (inlineValue)
            {
                usageError(arg + " takes no value");
            }
        };
        if (arg == "-h" || arg == "--help")
        {
            return std::nullopt;
        }
        else if (arg == "--engine")
        {
            o.engine = value();
        }
        else if (arg == "--input")
        {
            std::string const spec = value();
            std::size_t const eq = spec.find('=');
            if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
            {
                usageError("--input expects NAME=FILE.npy, got " + inQuotes(spec));
            }
            std::string const name = spec.substr(0, eq);
            if (!inputNames.insert(name).second)
            {
                usageError("--input " + inQuotes(name) + " is given twice");
            }
            o.inputs.emplace_back(name, spec.substr(eq + 1));
        }
        else if (arg == "--output-dir")
        {
            o.outputDir = value();
        }
        else if (arg == "--plugin")
        {
            o.plugin = value();
        }
        else if (arg == "--trt-lib")
        {
            o.trtLib = value();
        }
        else if (arg == "--device")
        {
            o.device = parseCount(arg, value());
        }
        else if (arg == "--iterations")
        {
            o.iterations = parseCount(arg, value());
        }
        else if (arg == "--cuda-graph")
        {
            flag();
            o.cudaGraph = true;
        }
        else if (arg == "--no-compat-check")
        {
            flag();
            o.compatCheck = false;
        }
        else if (arg == "-v" || arg == "--verbose")
        {
            flag();
            o.verbose = true;
        }
        else
        {
            usageError("unknown argument " + inQuotes(arg));
        }
    }
    if (o.engine.empty())
    {
        usageError("missing --engine PATH", true);
    }
    if (o.plugin.empty())
    {
        o.plugin = getEnv("DIMEXPORT_TRT_PLUGIN_LIB");
    }
    if (o.trtLib.empty())
    {
        o.trtLib = getEnv("DIMEXPORT_TRT_LIB");
    }
    if (o.trtLib.empty())
    {
        o.trtLib = "libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR);
    }
    return o;
}

// ------------------------------------------------------------------------------------------------ TensorRT

class Logger : public nvinfer1::ILogger
{
public:
    explicit Logger(bool verbose)
        : mVerbose(verbose)
    {
    }

    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity > Severity::kWARNING && !mVerbose)
        {
            return;
        }
        static char const* const kNames[] = {"INTERNAL ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"};
        auto const index = static_cast<std::size_t>(severity);
        std::fprintf(stderr, "[TensorRT] %s: %s\n", index < 5 ? kNames[index] : "?", msg);
    }

private:
    bool mVerbose;
};

// The loaded TensorRT runtime library. It is never dlclose'd: the global plugin registry inside it, and the plugin
// library that registry loaded, live until the process exits.
struct TrtLibrary
{
    std::string path;
    int major{0}, minor{0}, patch{0};
    void* (*createInferRuntime)(void* logger, std::int32_t version) noexcept {nullptr};
    nvinfer1::IPluginRegistry* (*getPluginRegistry)() noexcept {nullptr};

    std::string version() const { return versionString(major, minor, patch); }
};

template <typename Fn>
void resolve(void* handle, std::string const& path, char const* symbol, Fn& fn)
{
    void* address = dlsym(handle, symbol);
    if (!address)
    {
        fail(kExitEnvironment,
            inQuotes(path) + " is not a TensorRT runtime library: it does not export " + symbol
                + ". Pass --trt-lib the path of libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR) + ".");
    }
    fn = reinterpret_cast<Fn>(address);
}

TrtLibrary openTensorRT(std::string const& requested, bool verbose)
{
    TrtLibrary lib;
    // A bare file name is searched on the library path (dlopen's rules); anything else is a file.
    lib.path = requested;
    if (requested.find('/') == std::string::npos && fs::is_regular_file(requested))
    {
        lib.path = "./" + requested;
    }
    void* handle = dlopen(lib.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle)
    {
        char const* error = dlerror();
        std::string why = error ? error : "unknown dlopen error";
        if (why.rfind(lib.path + ": ", 0) == 0) // dlerror repeats the path
        {
            why = why.substr(lib.path.size() + 2);
        }
        fail(kExitEnvironment,
            "cannot load the TensorRT runtime library " + inQuotes(lib.path) + " (" + why + ")"
                + ". Install TensorRT " + std::to_string(NV_TENSORRT_MAJOR) + ".x (libnvinfer.so."
                + std::to_string(NV_TENSORRT_MAJOR)
                + " on the library path, e.g. in LD_LIBRARY_PATH) or pass --trt-lib PATH (or set DIMEXPORT_TRT_LIB).");
    }
    std::int32_t (*getInferLibVersion)() noexcept = nullptr;
    resolve(handle, lib.path, "getInferLibVersion", getInferLibVersion);
    resolve(handle, lib.path, "createInferRuntime_INTERNAL", lib.createInferRuntime);
    resolve(handle, lib.path, "getPluginRegistry", lib.getPluginRegistry);

    std::int32_t const v = getInferLibVersion(); // (major * 100 + minor) * 100 + patch
    lib.major = v / 10000;
    lib.minor = v / 100 % 100;
    lib.patch = v % 100;
    // The C++ interfaces (vtable layouts, enum values) change between major versions, so only a library of the
    // major version this program was compiled for can be used.
    if (lib.major != NV_TENSORRT_MAJOR)
    {
        fail(kExitEnvironment,
            inQuotes(lib.path) + " is TensorRT " + lib.version() + ", but dimexport_run was compiled against TensorRT "
                + kCompiledTrt + " headers. Pass --trt-lib a TensorRT " + std::to_string(NV_TENSORRT_MAJOR)
                + ".x libnvinfer, or rebuild dimexport_run against TensorRT " + std::to_string(lib.major)
                + " headers (-DTensorRT_INCLUDE_DIR=...).");
    }
    std::cout << "TensorRT " << lib.version() << " from " << lib.path;
    if (verbose)
    {
        std::cout << " (compiled against " << kCompiledTrt << " headers)";
    }
    std::cout << "\n";
    return lib;
}

std::string creatorList(nvinfer1::IPluginRegistry& registry)
{
    std::int32_t n = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = registry.getAllCreators(&n);
    std::string list;
    for (std::int32_t i = 0; creators && i < n; ++i)
    {
        if (!creators[i])
        {
            continue;
        }
        std::string const kind = creators[i]->getInterfaceInfo().kind;
        std::string entry = "(" + kind + ")";
        if (kind == "PLUGIN CREATOR_V3ONE")
        {
            auto const* c = static_cast<nvinfer1::IPluginCreatorV3One const*>(creators[i]);
            entry = std::string(c->getPluginName()) + "/" + c->getPluginVersion() + "/" + c->getPluginNamespace();
        }
        list += (list.empty() ? "" : ", ") + entry;
    }
    return list.empty() ? "nothing" : list;
}

// Why IPluginRegistry::loadLibrary refused a library, as far as the dynamic loader can tell: before a runtime
// exists, TensorRT may have no logger to say it.
std::string loaderDiagnosis(std::string const& path)
{
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle)
    {
        char const* error = dlerror();
        return error ? error : "dlopen failed";
    }
    bool const entryPoint = dlsym(handle, "getCreators") != nullptr;
    dlclose(handle);
    return entryPoint ? "it loads and exports getCreators (see TensorRT's messages, if any)"
                      : "it does not export getCreators";
}

// `origin` says where the path came from, for messages: "" (--plugin, DIMEXPORT_TRT_PLUGIN_LIB) or " (...)".
void loadPlugin(TrtLibrary const& trt, std::string const& path, std::string const& origin)
{
    std::string const fix = "Build libdimexport_trt_plugin.so (cmake with TensorRT " + std::to_string(trt.major)
        + ".x headers, see plugins_trt/README.md) and pass --plugin PATH or set DIMEXPORT_TRT_PLUGIN_LIB.";
    if (!fs::is_regular_file(path))
    {
        fail(kExitEnvironment, "the plugin library " + inQuotes(path) + origin + " does not exist. " + fix);
    }
    nvinfer1::IPluginRegistry* registry = trt.getPluginRegistry();
    if (!registry)
    {
        fail(kExitEnvironment, inQuotes(trt.path) + " returned no plugin registry");
    }
    std::string const absolute = fs::absolute(path).string();
    if (!registry->loadLibrary(absolute.c_str()))
    {
        fail(kExitEnvironment,
            "TensorRT could not load the plugin library " + inQuotes(path) + ": " + loaderDiagnosis(absolute)
                + ". It must be the dynamic library libdimexport_trt_plugin.so "
                  "(the _static one is for trtexec --staticPlugins and polygraphy). "
                + fix);
    }
    if (!registry->getCreator(kPluginName, kPluginVersion, kPluginNamespace))
    {
        fail(kExitEnvironment,
            "loading " + inQuotes(path) + " registered no " + kPluginName + "/" + kPluginVersion + "/"
                + kPluginNamespace + " creator; the registry holds: " + creatorList(*registry) + ". " + fix);
    }
    std::cout << "plugin " << kPluginName << "/" << kPluginVersion << "/" << kPluginNamespace << " from " << path
              << origin << "\n";
}

// ------------------------------------------------------------------------------------------------ build.json

// What `dimexport build` records in build.json beside the engine (dimexport/trt/build.py), as far as this program
// checks it. Absent members are empty.
struct BuildInfo
{
    std::string path;                  // of build.json
    std::string engineFile;            // engine.file: the engine's file name in the same folder
    std::optional<double> engineBytes; // engine.bytes
    std::string trtModule;             // tensorrt.module: "tensorrt" or "tensorrt_rtx"
    std::string trtVersion;            // tensorrt.version, e.g. "10.14.1.48"
    std::string sm;                    // gpu.sm, e.g. "sm_90"
    std::string pluginLibrary;         // plugin.library; plugin is null for engines without DimSelectiveScan layers
    std::string pluginSha256;          // plugin.sha256

    bool needsPlugin() const { return !pluginSha256.empty() || !pluginLibrary.empty(); }
};

std::string readFile(std::string const& path, char const* what)
{
    std::string const where = std::string(what) + " " + inQuotes(path);
    std::error_code ec;
    if (fs::is_directory(path, ec))
    {
        fail(kExitInput, where + " is a directory");
    }
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in)
    {
        fail(kExitInput, "cannot read " + where + ": " + std::strerror(errno));
    }
    std::string bytes(static_cast<std::size_t>(in.tellg()), '\0');
    if (!in.seekg(0) || !in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())))
    {
        fail(kExitInput, "cannot read " + where + ": " + std::strerror(errno));
    }
    if (bytes.empty())
    {
        fail(kExitInput, where + " is empty");
    }
    return bytes;
}

// Throws json::Error for malformed JSON or a member of the wrong type.
BuildInfo parseBuildInfo(std::string const& path)
{
    json::Value const doc = json::parse(readFile(path, "build.json"));
    if (doc.kind != json::Value::Kind::kObject)
    {
        throw json::Error("not a JSON object");
    }
    auto member = [&doc](std::string const& dotted) { // "a.b" -> doc["a"]["b"], nullptr when absent
        json::Value const* v = &doc;
        std::istringstream keys(dotted);
        std::string key;
        while (v && std::getline(keys, key, '.'))
        {
            v = v->find(key);
        }
        return v;
    };
    auto text = [&member](char const* dotted) -> std::string {
        json::Value const* v = member(dotted);
        if (v && v->kind != json::Value::Kind::kString)
        {
            throw json::Error(std::string("\"") + dotted + "\" is not a string");
        }
        return v ? v->string : "";
    };
    BuildInfo info;
    info.path = path;
    info.engineFile = text("engine.file");
    if (json::Value const* bytes = member("engine.bytes"))
    {
        if (bytes->kind != json::Value::Kind::kNumber)
        {
            throw json::Error("\"engine.bytes\" is not a number");
        }
        info.engineBytes = bytes->number;
    }
    info.trtModule = text("tensorrt.module");
    info.trtVersion = text("tensorrt.version");
    info.sm = text("gpu.sm");
    info.pluginLibrary = text("plugin.library");
    info.pluginSha256 = text("plugin.sha256");
    return info;
}

struct EngineLocation
{
    std::string engine;             // the .engine file
    std::optional<BuildInfo> build; // nullopt: no usable build.json
};

// --engine is the .engine file or the folder `dimexport build` made for it; build.json lies beside the file.
EngineLocation locateEngine(Options const& opt)
{
    fs::path const given(opt.engine);
    std::error_code ec;
    bool const folder = fs::is_directory(given, ec);
    fs::path const buildJson = (folder ? given : given.parent_path()) / "build.json";
    EngineLocation where{opt.engine, std::nullopt};
    if (!folder && !fs::exists(given, ec))
    {
        return where; // reading it reports the problem
    }
    if (!fs::exists(buildJson, ec))
    {
        if (folder)
        {
            fail(kExitInput, "the folder " + inQuotes(opt.engine) + " holds no build.json: pass the .engine file");
        }
        std::cout << "build.json: none beside the engine, compatibility not checked\n";
        return where;
    }
    try
    {
        where.build = parseBuildInfo(buildJson.string());
    }
    catch (json::Error const& e)
    {
        std::string const message = inQuotes(buildJson.string()) + ": " + e.what();
        if (folder || opt.compatCheck)
        {
            fail(kExitInput, message + ". Fix or delete it, or pass the .engine file with --no-compat-check.");
        }
        std::cerr << "warning: ignoring " << message << "\n";
        return where;
    }
    BuildInfo const& info = *where.build;
    if (folder)
    {
        if (info.engineFile.empty())
        {
            fail(kExitInput, inQuotes(info.path) + " names no engine file (engine.file): pass the .engine file");
        }
        where.engine = (given / info.engineFile).string();
    }
    else if (!info.engineFile.empty() && info.engineFile != given.filename().string())
    {
        std::cout << "build.json: it describes " << info.engineFile << ", not this engine; compatibility not "
                  << "checked\n";
        where.build.reset();
        return where;
    }
    std::cout << "build.json: " << (info.trtModule.empty() ? "TensorRT" : info.trtModule) << " "
              << (info.trtVersion.empty() ? "(no version)" : info.trtVersion) << (info.sm.empty() ? "" : ", " + info.sm)
              << (info.needsPlugin() ? ", with the plugin" : ", no plugin") << "\n";
    return where;
}

// What can be checked before TensorRT is loaded: the kind of TensorRT and the engine file's size.
void checkBuildFiles(BuildInfo const& info, std::size_t planBytes)
{
    if (!info.trtModule.empty() && info.trtModule != "tensorrt")
    {
        fail(kExitEnvironment,
            "the engine was built with " + info.trtModule + " " + info.trtVersion + " (" + info.path
                + "); dimexport_run runs TensorRT (libnvinfer) engines: rebuild the engine with `dimexport build "
                  "--trt-module tensorrt`.");
    }
    if (info.engineBytes && *info.engineBytes != static_cast<double>(planBytes))
    {
        fail(kExitInput,
            "the engine file has " + std::to_string(planBytes) + " bytes, but " + info.path + " records "
                + std::to_string(static_cast<long long>(*info.engineBytes))
                + ": it is truncated or was replaced; rebuild it with `dimexport build --force`.");
    }
}

void checkTensorRTVersion(BuildInfo const& info, TrtLibrary const& trt)
{
    if (info.trtVersion.empty())
    {
        std::cerr << "warning: " << inQuotes(info.path) << " has no tensorrt.version; not checked\n";
        return;
    }
    // Plans are tied to the TensorRT version that built them; compare major.minor.patch.
    int const loaded[3] = {trt.major, trt.minor, trt.patch};
    std::istringstream parts(info.trtVersion);
    std::string part;
    for (int i = 0; i < 3 && std::getline(parts, part, '.'); ++i)
    {
        int value = -1;
        auto const [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
        if (ec != std::errc() || end != part.data() + part.size())
        {
            fail(kExitInput,
                inQuotes(info.path) + ": tensorrt.version " + inQuotes(info.trtVersion)
                    + " is not a version. Fix or delete the file, or pass --no-compat-check.");
        }
        if (value != loaded[i])
        {
            fail(kExitEnvironment,
                "the engine was built with TensorRT " + info.trtVersion + " (" + info.path
                    + "), but the loaded library is TensorRT " + trt.version() + ": " + kRebuild
                    + " for this TensorRT, or pass --trt-lib the TensorRT it was built with (--no-compat-check "
                      "skips this check).");
        }
    }
}

void checkPluginHash(BuildInfo const& info, std::string const& plugin)
{
    std::optional<std::string> const sha = sha256::ofFile(plugin);
    if (!sha)
    {
        fail(kExitEnvironment, "cannot read the plugin library " + inQuotes(plugin) + ": " + std::strerror(errno));
    }
    if (*sha != info.pluginSha256)
    {
        fail(kExitEnvironment,
            "the engine was built with the plugin library " + info.pluginLibrary + " (sha256 "
                + info.pluginSha256.substr(0, 12) + "), but " + plugin + " has sha256 " + sha->substr(0, 12) + ": "
                + kRebuild + " with this library, or pass --plugin the library it was built with "
                + "(--no-compat-check skips this check).");
    }
}

// ------------------------------------------------------------------------------------------------ CUDA

void check(cudaError_t status, std::string const& what)
{
    if (status != cudaSuccess)
    {
        fail(kExitFailure, what + " failed: " + cudaGetErrorString(status) + " (" + cudaGetErrorName(status) + ")");
    }
}

struct CudaFree
{
    void operator()(void* p) const { cudaFree(p); }
};
struct StreamDestroy
{
    void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};
struct EventDestroy
{
    void operator()(cudaEvent_t e) const { cudaEventDestroy(e); }
};
struct GraphDestroy
{
    void operator()(cudaGraph_t g) const { cudaGraphDestroy(g); }
};
struct GraphExecDestroy
{
    void operator()(cudaGraphExec_t g) const { cudaGraphExecDestroy(g); }
};
using DeviceBuffer = std::unique_ptr<void, CudaFree>;
using Stream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, StreamDestroy>;
using Event = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDestroy>;
using Graph = std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, GraphDestroy>;
using GraphExec = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDestroy>;

Event makeEvent()
{
    cudaEvent_t e = nullptr;
    check(cudaEventCreate(&e), "cudaEventCreate");
    return Event(e);
}

// Selects the device and returns its compute capability as "sm_XY".
std::string openDevice(int device)
{
    int count = 0;
    cudaError_t const status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0)
    {
        fail(kExitEnvironment,
            std::string("no usable CUDA device (")
                + (status == cudaSuccess ? "none found" : cudaGetErrorString(status))
                + "): TensorRT engines run on an NVIDIA GPU with its driver installed.");
    }
    if (device >= count)
    {
        fail(kExitInput, "--device " + std::to_string(device) + ": there are " + std::to_string(count)
                + " CUDA device(s), numbered from 0");
    }
    check(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    std::string const sm = "sm_" + std::to_string(prop.major) + std::to_string(prop.minor);
    std::cout << "GPU " << device << ": " << prop.name << " (" << sm << ")\n";
    return sm;
}

// ------------------------------------------------------------------------------------------------ tensors

// The .npy descr that holds a TensorRT type, or "" when this program does not handle the type. bfloat16 and fp8
// have no NumPy dtype: their raw bits travel as uint16 / uint8.
std::string npyDescr(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "<f4";
    case DataType::kHALF: return "<f2";
    case DataType::kBF16: return "<u2";
    case DataType::kINT8: return "|i1";
    case DataType::kUINT8: return "|u1";
    case DataType::kFP8: return "|u1";
    case DataType::kINT32: return "<i4";
    case DataType::kINT64: return "<i8";
    case DataType::kBOOL: return "|b1";
    default: return "";
    }
}

std::string typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT8: return "int8";
    case DataType::kUINT8: return "uint8";
    case DataType::kFP8: return "fp8";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    case DataType::kBOOL: return "bool";
    default: return "DataType(" + std::to_string(static_cast<int>(t)) + ")";
    }
}

std::string rawBitsNote(DataType t, bool input)
{
    if (t != DataType::kBF16 && t != DataType::kFP8)
    {
        return "";
    }
    bool const bf16 = t == DataType::kBF16;
    std::string const note = std::string(" (") + (bf16 ? "bfloat16" : "fp8") + " has no NumPy dtype: ";
    if (!input)
    {
        return note + "written as its raw bits, "
            + (bf16 ? "uint16; torch: torch.from_numpy(a).view(torch.bfloat16))" : "uint8)");
    }
    return note + "pass its raw bits as "
        + (bf16 ? "uint16, e.g. torch: x.to(torch.bfloat16).view(torch.uint16).numpy())" : "uint8)");
}

std::vector<std::int64_t> toVector(nvinfer1::Dims const& d)
{
    return std::vector<std::int64_t>(d.d, d.d + std::max(d.nbDims, 0));
}

std::string dimsString(nvinfer1::Dims const& d)
{
    return npy::shapeString(toVector(d));
}

float halfToFloat(std::uint16_t h)
{
    std::uint32_t const sign = (h & 0x8000u) << 16;
    std::uint32_t exponent = (h >> 10) & 0x1Fu;
    std::uint32_t mantissa = h & 0x3FFu;
    std::uint32_t bits = sign;
    if (exponent == 0x1F) // inf / nan
    {
        bits |= 0x7F800000u | (mantissa << 13);
    }
    else if (exponent != 0)
    {
        bits |= ((exponent + 112) << 23) | (mantissa << 13);
    }
    else if (mantissa != 0) // subnormal: normalise
    {
        exponent = 113;
        while (!(mantissa & 0x400u))
        {
            mantissa <<= 1;
            --exponent;
        }
        bits |= (exponent << 23) | ((mantissa & 0x3FFu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// One line about the values of an output: range and mean of the finite values, and how many are not finite.
std::string valueSummary(DataType t, npy::Array const& a)
{
    std::size_t const n = npy::elementCount(a.shape);
    auto element = [&](std::size_t i) -> double {
        unsigned char const* p = a.data.data() + i * npy::itemSize(a.descr);
        auto load = [p](auto v) {
            std::memcpy(&v, p, sizeof v);
            return v;
        };
        switch (t)
        {
        case DataType::kFLOAT: return load(0.0F);
        case DataType::kHALF: return halfToFloat(load(std::uint16_t{}));
        case DataType::kBF16:
        {
            std::uint32_t const bits = static_cast<std::uint32_t>(load(std::uint16_t{})) << 16;
            float f;
            std::memcpy(&f, &bits, sizeof f);
            return f;
        }
        case DataType::kINT8: return load(std::int8_t{});
        case DataType::kUINT8: return load(std::uint8_t{});
        case DataType::kINT32: return load(std::int32_t{});
        case DataType::kINT64: return static_cast<double>(load(std::int64_t{}));
        case DataType::kBOOL: return load(std::uint8_t{}) != 0;
        default: return std::nan("");
        }
    };
    if (n == 0 || t == DataType::kFP8)
    {
        return "";
    }
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    std::size_t finite = 0;
    for (std::size_t i = 0; i < n; ++i)
    {
        double const v = element(i);
        if (std::isfinite(v))
        {
            lo = std::min(lo, v);
            hi = std::max(hi, v);
            sum += v;
            ++finite;
        }
    }
    std::ostringstream s;
    if (finite > 0)
    {
        s << "min " << lo << ", max " << hi << ", mean " << sum / static_cast<double>(finite);
    }
    if (finite < n)
    {
        s << (finite > 0 ? ", " : "") << n - finite << " of " << n << " not finite";
    }
    return s.str();
}

struct Tensor
{
    std::string name;
    bool isInput{false};
    DataType type{DataType::kFLOAT};
    std::string descr;          // .npy descr of `type`
    nvinfer1::Dims shape{};     // as run
    npy::Array host;            // input data, or the output after the run
    std::string source;         // input file
    DeviceBuffer device;
    std::size_t bytes{0};
};

// File names for outputs: tensor names may contain '/' or ':'.
std::string fileNameFor(std::string const& tensorName)
{
    std::string s = tensorName;
    for (char& c : s)
    {
        bool const keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
            || c == '_' || c == '-';
        c = keep ? c : '_';
    }
    return s + ".npy";
}

// Checks an input file against the engine and sets its shape on the context.
void bindInputShape(nvinfer1::ICudaEngine const& engine, nvinfer1::IExecutionContext& context, Tensor& t)
{
    nvinfer1::Dims const expected = engine.getTensorShape(t.name.c_str());
    std::string const what = "input " + inQuotes(t.name) + " (" + t.source + ")";
    if (t.host.descr != t.descr)
    {
        fail(kExitInput,
            what + " is " + npy::typeName(t.host.descr) + " ('" + t.host.descr + "'), but the engine expects "
                + typeName(t.type) + ": save it as '" + t.descr + "'" + rawBitsNote(t.type, true));
    }
    if (static_cast<std::int64_t>(t.host.shape.size()) != expected.nbDims)
    {
        fail(kExitInput,
            what + " has shape " + npy::shapeString(t.host.shape) + ", but the engine expects "
                + std::to_string(expected.nbDims) + " dimensions " + dimsString(expected) + " (-1: any size)");
    }
    t.shape.nbDims = expected.nbDims;
    for (int i = 0; i < expected.nbDims; ++i)
    {
        t.shape.d[i] = t.host.shape[static_cast<std::size_t>(i)];
        if (expected.d[i] >= 0 && expected.d[i] != t.shape.d[i])
        {
            fail(kExitInput,
                what + " has shape " + npy::shapeString(t.host.shape) + ", but the engine expects "
                    + dimsString(expected) + " (-1: any size)");
        }
    }
    if (!context.setInputShape(t.name.c_str(), t.shape))
    {
        nvinfer1::Dims const lo = engine.getProfileShape(t.name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
        nvinfer1::Dims const hi = engine.getProfileShape(t.name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
        fail(kExitInput,
            what + " has shape " + npy::shapeString(t.host.shape) + ", outside the engine's optimization profile: "
                + dimsString(lo) + " to " + dimsString(hi) + ". Rebuild with a wider --batch range if needed.");
    }
}

double median(std::vector<float> v)
{
    std::sort(v.begin(), v.end());
    std::size_t const m = v.size() / 2;
    return v.size() % 2 ? v[m] : (static_cast<double>(v[m - 1]) + v[m]) / 2;
}

// ------------------------------------------------------------------------------------------------ the run

int run(Options const& opt)
{
    // 1. Everything that only needs files: arguments and inputs are checked before TensorRT and the GPU.
    EngineLocation const where = locateEngine(opt);
    std::optional<BuildInfo> const& build = where.build;
    bool const compat = build && opt.compatCheck;
    std::string const plan = readFile(where.engine, "engine file");
    if (compat)
    {
        checkBuildFiles(*build, plan.size());
    }
    std::map<std::string, npy::Array> inputFiles;
    std::map<std::string, std::string> inputPaths;
    for (auto const& [name, path] : opt.inputs)
    {
        try
        {
            inputFiles[name] = npy::read(path);
        }
        catch (npy::Error const& e)
        {
            fail(kExitInput, "--input " + name + ": " + e.what());
        }
        inputPaths[name] = path;
    }

    // 2. TensorRT and its version against build.json; the plugin (by default the one build.json records) and its
    //    hash against build.json.
    Logger logger(opt.verbose);
    TrtLibrary const trt = openTensorRT(opt.trtLib, opt.verbose);
    if (compat)
    {
        checkTensorRTVersion(*build, trt);
    }
    bool const needsPlugin = build && build->needsPlugin();
    std::string plugin = opt.plugin;
    std::string origin;
    if (plugin.empty() && needsPlugin && !build->pluginLibrary.empty())
    {
        plugin = build->pluginLibrary;
        origin = " (recorded in build.json)";
    }
    if (!plugin.empty())
    {
        if (compat && needsPlugin && fs::is_regular_file(plugin))
        {
            checkPluginHash(*build, plugin);
        }
        loadPlugin(trt, plugin, origin);
    }
    else if (needsPlugin)
    {
        fail(kExitEnvironment,
            "the engine contains DimSelectiveScan layers (build.json records a plugin), but no plugin library was "
            "given: pass --plugin PATH/libdimexport_trt_plugin.so or set DIMEXPORT_TRT_PLUGIN_LIB.");
    }

    // 3. The GPU, its compute capability against build.json.
    std::string const sm = openDevice(opt.device);
    if (compat && !build->sm.empty() && build->sm != sm)
    {
        fail(kExitEnvironment,
            "the engine was built for " + build->sm + " (" + build->path + "), but GPU " + std::to_string(opt.device)
                + " is " + sm + ": " + kRebuild + " on this GPU (--no-compat-check skips this check).");
    }

    // 4. Runtime, engine, execution context.
    // createInferRuntime_INTERNAL takes the logger as void* and reads it back as ILogger*: pass exactly that pointer
    // (what the inline nvinfer1::createInferRuntime(ILogger&) does), not the derived object's address.
    nvinfer1::ILogger* const trtLogger = &logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime(
        static_cast<nvinfer1::IRuntime*>(trt.createInferRuntime(trtLogger, NV_TENSORRT_VERSION)));
    if (!runtime)
    {
        fail(kExitEnvironment,
            "TensorRT " + trt.version() + " could not create a runtime (see the TensorRT messages above)");
    }
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine)
    {
        fail(kExitEnvironment,
            "TensorRT " + trt.version() + " could not deserialise " + inQuotes(where.engine)
                + " (see the TensorRT messages above). Built for another TensorRT version or GPU? " + kRebuild + "."
                + (plugin.empty() ? " Engines with DimSelectiveScan layers also need --plugin." : ""));
    }
    std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());
    if (!context)
    {
        fail(kExitFailure, "could not create an execution context (see the TensorRT messages above)");
    }

    // 5. Match the engine's I/O tensors with the inputs and set the input shapes.
    std::vector<Tensor> tensors;
    std::int32_t const nbIO = engine->getNbIOTensors();
    std::string missing, engineInputs;
    for (std::int32_t i = 0; i < nbIO; ++i)
    {
        Tensor t;
        t.name = engine->getIOTensorName(i);
        t.isInput = engine->getTensorIOMode(t.name.c_str()) == nvinfer1::TensorIOMode::kINPUT;
        t.type = engine->getTensorDataType(t.name.c_str());
        t.descr = npyDescr(t.type);
        std::string const role = t.isInput ? "input" : "output";
        if (opt.verbose)
        {
            std::cout << "  " << role << " " << t.name << ": " << typeName(t.type) << " "
                      << dimsString(engine->getTensorShape(t.name.c_str())) << "\n";
        }
        if (t.descr.empty())
        {
            fail(kExitFailure, role + " " + inQuotes(t.name) + " is " + typeName(t.type)
                    + ", which dimexport_run does not handle");
        }
        if (engine->getTensorLocation(t.name.c_str()) != nvinfer1::TensorLocation::kDEVICE)
        {
            fail(kExitFailure, role + " " + inQuotes(t.name) + " lives in host memory (a shape tensor); "
                    "dimexport_run binds device tensors only");
        }
        if (engine->getTensorFormat(t.name.c_str()) != nvinfer1::TensorFormat::kLINEAR)
        {
            fail(kExitFailure, role + " " + inQuotes(t.name) + " has a vectorised format; dimexport_run reads and "
                    "writes linear (C-order) tensors only: build the engine with the default I/O formats");
        }
        if (t.isInput)
        {
            engineInputs += (engineInputs.empty() ? "" : ", ") + t.name;
            auto const file = inputFiles.find(t.name);
            if (file == inputFiles.end())
            {
                missing += (missing.empty() ? "" : ", ") + t.name + " (" + typeName(t.type) + " "
                    + dimsString(engine->getTensorShape(t.name.c_str())) + ")";
                continue;
            }
            t.host = std::move(file->second);
            t.source = inputPaths[t.name];
            inputFiles.erase(file);
        }
        tensors.push_back(std::move(t));
    }
    if (!inputFiles.empty())
    {
        fail(kExitInput, "the engine has no input " + inQuotes(inputFiles.begin()->first) + "; its inputs are: "
                + engineInputs);
    }
    if (!missing.empty())
    {
        fail(kExitInput, "no --input NAME=FILE.npy for " + missing + "; the engine's inputs are: " + engineInputs);
    }
    for (Tensor& t : tensors)
    {
        if (t.isInput)
        {
            bindInputShape(*engine, *context, t);
        }
    }
    // inferShapes, not allInputDimensionsSpecified, which TensorRT documents as not working with setInputShape.
    std::vector<char const*> unresolved(static_cast<std::size_t>(nbIO), nullptr);
    std::int32_t const nUnresolved = context->inferShapes(nbIO, unresolved.data());
    if (nUnresolved > 0)
    {
        std::string names;
        for (std::int32_t i = 0; i < std::min(nUnresolved, nbIO); ++i)
        {
            names += std::string(names.empty() ? "" : ", ") + unresolved[static_cast<std::size_t>(i)];
        }
        fail(kExitInput, "the shapes of these inputs are not fully specified: " + names);
    }
    if (nUnresolved < 0)
    {
        fail(kExitInput, "TensorRT cannot compute the output shapes from the input shapes (see the TensorRT messages "
                         "above)");
    }

    // 6. Device buffers and addresses; copy the inputs.
    Stream stream;
    {
        cudaStream_t s = nullptr;
        check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
        stream.reset(s);
    }
    for (Tensor& t : tensors)
    {
        if (!t.isInput)
        {
            t.shape = context->getTensorShape(t.name.c_str());
            if (std::any_of(t.shape.d, t.shape.d + std::max(t.shape.nbDims, 0), [](std::int64_t d) { return d < 0; }))
            {
                fail(kExitFailure, "output " + inQuotes(t.name) + " has a data-dependent shape " + dimsString(t.shape)
                        + "; dimexport_run does not handle those (they need an IOutputAllocator)");
            }
            t.host.descr = t.descr;
            t.host.shape = toVector(t.shape);
        }
        t.bytes = npy::elementCount(toVector(t.shape), npy::itemSize(t.descr)) * npy::itemSize(t.descr);
        void* p = nullptr;
        check(cudaMalloc(&p, std::max<std::size_t>(t.bytes, 1)), "cudaMalloc of " + std::to_string(t.bytes)
                + " bytes for " + inQuotes(t.name));
        t.device.reset(p);
        if (t.isInput)
        {
            check(cudaMemcpyAsync(p, t.host.data.data(), t.bytes, cudaMemcpyHostToDevice, stream.get()),
                "copying input " + inQuotes(t.name) + " to the GPU");
        }
        else
        {
            t.host.data.resize(t.bytes);
        }
        if (!context->setTensorAddress(t.name.c_str(), p))
        {
            fail(kExitFailure, "setTensorAddress(" + inQuotes(t.name) + ") failed (see the TensorRT messages above)");
        }
    }

    // 7. Run once, copy the outputs back, write them.
    auto enqueue = [&](char const* when) {
        if (!context->enqueueV3(stream.get()))
        {
            fail(kExitFailure, std::string("enqueueV3 failed ") + when + " (see the TensorRT messages above)");
        }
    };
    auto copyOutputs = [&](std::vector<npy::Array*> const& into) {
        std::size_t k = 0;
        for (Tensor& t : tensors)
        {
            if (!t.isInput)
            {
                check(cudaMemcpyAsync(into[k++]->data.data(), t.device.get(), t.bytes, cudaMemcpyDeviceToHost,
                          stream.get()),
                    "copying output " + inQuotes(t.name) + " from the GPU");
            }
        }
        check(cudaStreamSynchronize(stream.get()), "running the engine");
    };
    std::vector<npy::Array*> outputs;
    for (Tensor& t : tensors)
    {
        if (!t.isInput)
        {
            outputs.push_back(&t.host);
        }
    }
    enqueue("on the first run");
    copyOutputs(outputs);

    std::error_code ec;
    fs::create_directories(opt.outputDir, ec);
    if (ec)
    {
        fail(kExitInput, "cannot create --output-dir " + inQuotes(opt.outputDir) + ": " + ec.message());
    }
    std::set<std::string> written;
    for (Tensor const& t : tensors)
    {
        if (t.isInput)
        {
            continue;
        }
        std::string const path = (fs::path(opt.outputDir) / fileNameFor(t.name)).string();
        if (!written.insert(path).second)
        {
            fail(kExitFailure, "two outputs map to the same file " + inQuotes(path));
        }
        try
        {
            npy::write(path, t.host);
        }
        catch (npy::Error const& e)
        {
            fail(kExitInput, std::string(e.what()) + " (check --output-dir)");
        }
        std::string const summary = valueSummary(t.type, t.host);
        std::cout << "output " << t.name << ": " << typeName(t.type) << " " << dimsString(t.shape) << " -> " << path
                  << (summary.empty() ? "" : "  [" + summary + "]") << rawBitsNote(t.type, false) << "\n";
    }

    // 8. Optional CUDA graph: capture one enqueueV3 (after the normal run, as TensorRT advises) and check that a
    //    replay reproduces the outputs.
    GraphExec graphExec;
    if (opt.cudaGraph)
    {
        check(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
        bool const enqueued = context->enqueueV3(stream.get());
        cudaGraph_t g = nullptr;
        cudaError_t const endStatus = cudaStreamEndCapture(stream.get(), &g);
        Graph graph(g);
        if (!enqueued)
        {
            fail(kExitFailure, "enqueueV3 failed during CUDA graph capture (see the TensorRT messages above); run "
                               "without --cuda-graph");
        }
        check(endStatus, "cudaStreamEndCapture");
        cudaGraphExec_t exec = nullptr;
        check(cudaGraphInstantiate(&exec, graph.get(), 0), "cudaGraphInstantiate");
        graphExec.reset(exec);

        std::vector<npy::Array> replay;
        std::vector<npy::Array*> replayPtrs;
        for (npy::Array const* a : outputs)
        {
            replay.push_back(*a);
        }
        for (npy::Array& a : replay)
        {
            replayPtrs.push_back(&a);
        }
        for (Tensor& t : tensors) // poison the outputs so that only a working replay reproduces them
        {
            if (!t.isInput)
            {
                check(cudaMemsetAsync(t.device.get(), 0xFF, t.bytes, stream.get()), "cudaMemsetAsync");
            }
        }
        check(cudaGraphLaunch(graphExec.get(), stream.get()), "cudaGraphLaunch");
        copyOutputs(replayPtrs);
        std::size_t differing = 0, total = 0;
        for (std::size_t k = 0; k < outputs.size(); ++k)
        {
            for (std::size_t b = 0; b < replay[k].data.size(); ++b)
            {
                differing += replay[k].data[b] != outputs[k]->data[b];
            }
            total += replay[k].data.size();
        }
        std::cout << "CUDA graph: captured; a replay reproduces the outputs "
                  << (differing == 0 ? "bit for bit" : "except " + std::to_string(differing) + " of "
                              + std::to_string(total) + " bytes")
                  << "\n";
    }

    // 9. Optional timing: one warm-up, then N runs, each between two CUDA events.
    if (opt.iterations > 0)
    {
        auto launch = [&]() {
            if (graphExec)
            {
                check(cudaGraphLaunch(graphExec.get(), stream.get()), "cudaGraphLaunch");
            }
            else
            {
                enqueue("while timing");
            }
        };
        Event start = makeEvent(), stop = makeEvent();
        launch();
        check(cudaStreamSynchronize(stream.get()), "the warm-up run");
        std::vector<float> ms;
        for (int i = 0; i < opt.iterations; ++i)
        {
            check(cudaEventRecord(start.get(), stream.get()), "cudaEventRecord");
            launch();
            check(cudaEventRecord(stop.get(), stream.get()), "cudaEventRecord");
            check(cudaEventSynchronize(stop.get()), "a timed run");
            float elapsed = 0;
            check(cudaEventElapsedTime(&elapsed, start.get(), stop.get()), "cudaEventElapsedTime");
            ms.push_back(elapsed);
        }
        auto const [lo, hi] = std::minmax_element(ms.begin(), ms.end());
        std::cout << std::fixed << std::setprecision(3) << "timing (" << (graphExec ? "CUDA graph" : "enqueueV3")
                  << "): median " << median(ms) << " ms, min " << *lo << " ms, max " << *hi << " ms over "
                  << opt.iterations << " runs\n";
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    std::setvbuf(stdout, nullptr, _IOLBF, 0); // keep our lines and TensorRT's (stderr) in order when piped
    try
    {
        std::optional<Options> const options = parseArgs(argc, argv);
        if (!options)
        {
            std::cout << usage();
            return 0;
        }
        return run(*options);
    }
    catch (Failure const& f)
    {
        std::cout.flush();
        std::cerr << "dimexport_run: error: " << f.what() << "\n";
        return f.code();
    }
    catch (std::exception const& e)
    {
        std::cout.flush();
        std::cerr << "dimexport_run: error: " << e.what() << "\n";
        return kExitFailure;
    }
}

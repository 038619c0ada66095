#include "DimSelectiveScanPlugin.h"

#include "PluginLogger.h"
#include "dimexport_scan.h"

#include <cuda_runtime_api.h>

#include <array>
#include <cstring>
#include <exception>
#include <sstream>

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IPluginCapability;
using nvinfer1::IPluginV3;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace dimexport {
namespace trt {
namespace {

constexpr char const* kTensorNames[kNbInputs + kNbOutputs]
    = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "out"};
constexpr int32_t kRanks[kNbInputs + kNbOutputs] = {3, 3, 2, 4, 4, 1, 3, 1, 3};

bool isActivationType(DataType t) noexcept
{
    return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

// Positions whose dtype is fixed to fp32 (the parameters); every other position carries T.
bool isParameter(int32_t pos) noexcept
{
    return pos == kA || pos == kD || pos == kDeltaBias;
}

char const* typeName(DataType t) noexcept
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    case DataType::kBOOL: return "bool";
    case DataType::kUINT8: return "uint8";
    case DataType::kFP8: return "fp8";
    default: return "unsupported type";
    }
}

std::string dimsString(Dims const& d)
{
    std::ostringstream os;
    os << "(";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        os << (i ? ", " : "") << d.d[i];
    }
    os << ")";
    return os.str();
}

std::string tensorString(Dims const* dims, int32_t pos)
{
    std::string s = (pos == kOut ? "output 0 (" : "input " + std::to_string(pos) + " (");
    return s + kTensorNames[pos] + ") " + dimsString(dims[pos]);
}

// a and b agree, or one of them is unknown (-1).
bool agree(int64_t a, int64_t b) noexcept
{
    return a < 0 || b < 0 || a == b;
}

dimex_dtype toDimexType(DataType t) noexcept
{
    return t == DataType::kFLOAT ? DIMEX_FLOAT32 : t == DataType::kHALF ? DIMEX_FLOAT16 : DIMEX_BFLOAT16;
}

// Dims of `count` plugin tensor descriptors (inputs then outputs) as one array in inOut order.
template <typename Desc, typename Get>
std::array<Dims, kNbInputs + kNbOutputs> gatherDims(Desc const* in, Desc const* out, Get get)
{
    std::array<Dims, kNbInputs + kNbOutputs> dims{};
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        dims[i] = get(in[i]);
    }
    dims[kOut] = get(out[0]);
    return dims;
}

std::string countError(int32_t nbInputs, int32_t nbOutputs)
{
    return "expected " + std::to_string(kNbInputs) + " inputs (u, delta, A, B, C, D, z, delta_bias) and "
        + std::to_string(kNbOutputs) + " output, got " + std::to_string(nbInputs) + " and "
        + std::to_string(nbOutputs);
}

} // namespace

std::string checkShapes(Dims const* dims, int32_t count, bool allowWildcards)
{
    if (count != kNbInputs + kNbOutputs)
    {
        return "internal: checkShapes needs " + std::to_string(kNbInputs + kNbOutputs) + " tensors";
    }
    for (int32_t p = 0; p < count; ++p)
    {
        if (dims[p].nbDims != kRanks[p])
        {
            return tensorString(dims, p) + " must have rank " + std::to_string(kRanks[p]) + ", not "
                + std::to_string(dims[p].nbDims);
        }
        for (int32_t i = 0; i < dims[p].nbDims; ++i)
        {
            int64_t const v = dims[p].d[i];
            if (v < -1 || (v == -1 && !allowWildcards))
            {
                return tensorString(dims, p) + " has an invalid extent " + std::to_string(v);
            }
        }
    }
    Dims const& u = dims[kU];
    int64_t const batch = u.d[0], dim = u.d[1], seqlen = u.d[2];
    // Built only on failure: the success path allocates nothing (it runs in enqueue).
    auto expected = [&u]() { return " (u is (batch, dim, seqlen) = " + dimsString(u) + ")"; };
    for (int32_t p : {kDelta, kZ, kOut})
    {
        for (int32_t i = 0; i < 3; ++i)
        {
            if (!agree(dims[p].d[i], u.d[i]))
            {
                return tensorString(dims, p) + " must have the shape of u" + expected();
            }
        }
    }
    Dims const& a = dims[kA];
    if (!agree(a.d[0], dim))
    {
        return tensorString(dims, kA) + " must be (dim, dstate)" + expected();
    }
    for (int32_t p : {kD, kDeltaBias})
    {
        if (!agree(dims[p].d[0], dim))
        {
            return tensorString(dims, p) + " must be (dim,)" + expected();
        }
    }
    Dims const& bm = dims[kB];
    if (!agree(bm.d[0], batch) || !agree(bm.d[3], seqlen))
    {
        return tensorString(dims, kB) + " must be (batch, groups, dstate, seqlen)" + expected();
    }
    for (int32_t i = 0; i < 4; ++i)
    {
        if (!agree(dims[kC].d[i], bm.d[i]))
        {
            return tensorString(dims, kC) + " must have the shape of " + tensorString(dims, kB);
        }
    }
    int64_t const groups = bm.d[1];
    int64_t dstate = bm.d[2] >= 0 ? bm.d[2] : a.d[1];
    if (!agree(bm.d[2], a.d[1]))
    {
        return tensorString(dims, kB) + " and " + tensorString(dims, kA) + " disagree on dstate";
    }
    if (dstate == 0 || dstate > kMaxDstate)
    {
        return "dstate = " + std::to_string(dstate) + " (from " + tensorString(dims, kA)
            + ") is not supported: the kernel handles 1 <= dstate <= " + std::to_string(kMaxDstate);
    }
    if (groups == 0)
    {
        return tensorString(dims, kB) + " has 0 groups";
    }
    if (groups > 0 && dim >= 0 && dim % groups != 0)
    {
        return "groups = " + std::to_string(groups) + " (from " + tensorString(dims, kB)
            + ") must divide dim = " + std::to_string(dim);
    }
    return {};
}

std::string checkTypes(DataType const* types, int32_t count)
{
    if (count != kNbInputs + kNbOutputs)
    {
        return "internal: checkTypes needs " + std::to_string(kNbInputs + kNbOutputs) + " tensors";
    }
    if (!isActivationType(types[kU]))
    {
        return std::string("input 0 (u) has type ") + typeName(types[kU])
            + "; supported activation types are float32, float16 and bfloat16";
    }
    for (int32_t p = 1; p < count; ++p)
    {
        DataType const want = isParameter(p) ? DataType::kFLOAT : types[kU];
        if (types[p] != want)
        {
            return std::string(p == kOut ? "output 0 (" : "input " + std::to_string(p) + " (") + kTensorNames[p]
                + ") has type " + typeName(types[p]) + ", expected " + typeName(want)
                + (isParameter(p) ? " (parameters stay float32)" : " (the type of u)");
        }
    }
    return {};
}

// ------------------------------------------------------------------------------------------------------------------
// DimSelectiveScanPlugin

DimSelectiveScanPlugin::DimSelectiveScanPlugin(ScanAttributes const& attrs)
    : mAttrs(attrs)
{
    mTimingCacheId = std::string(kPluginNamespace) + "::" + kPluginName + "_v" + kPluginVersion + "_f"
        + std::to_string(kFormatVersion) + "_softplus" + std::to_string(mAttrs.deltaSoftplus) + "_reverse"
        + std::to_string(mAttrs.reverse) + "_z" + std::to_string(mAttrs.hasZ) + "_abi"
        + std::to_string(DIMEX_SCAN_ABI_VERSION);
    mMetadata = "delta_softplus=" + std::to_string(mAttrs.deltaSoftplus) + " reverse=" + std::to_string(mAttrs.reverse)
        + " has_z=" + std::to_string(mAttrs.hasZ);
}

DimSelectiveScanPlugin::DimSelectiveScanPlugin(DimSelectiveScanPlugin const& other)
    : IPluginV3()
    , IPluginV3OneCore()
    , IPluginV3OneBuild()
    , IPluginV3OneRuntime()
    , mAttrs(other.mAttrs)
    , mFormatVersion(other.mFormatVersion)
    , mTimingCacheId(other.mTimingCacheId)
    , mMetadata(other.mMetadata)
{
    // mSerialFields points into this object's members: rebuilt by getFieldsToSerialize, never copied.
}

IPluginCapability* DimSelectiveScanPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* DimSelectiveScanPlugin::clone() noexcept
{
    try
    {
        return new DimSelectiveScanPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string("clone failed: ") + e.what());
    }
    catch (...)
    {
        logError("clone failed");
    }
    return nullptr;
}

char const* DimSelectiveScanPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* DimSelectiveScanPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* DimSelectiveScanPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t DimSelectiveScanPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t DimSelectiveScanPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            logError("getOutputDataTypes: " + countError(nbInputs, nbOutputs));
            return -1;
        }
        if (!isActivationType(inputTypes[kU]))
        {
            logError(std::string("getOutputDataTypes: input 0 (u) has type ") + typeName(inputTypes[kU])
                + "; supported activation types are float32, float16 and bfloat16");
            return -1;
        }
        outputTypes[0] = inputTypes[kU];
        return 0;
    }
    catch (...)
    {
        logError("getOutputDataTypes failed");
    }
    return -1;
}

int32_t DimSelectiveScanPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
    nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            logError("getOutputShapes: " + countError(nbInputs, nbOutputs));
            return -1;
        }
        if (nbShapeInputs != 0)
        {
            logError("getOutputShapes: the plugin takes no shape inputs, got " + std::to_string(nbShapeInputs));
            return -1;
        }
        for (int32_t p = 0; p < kNbInputs; ++p)
        {
            if (inputs[p].nbDims != kRanks[p])
            {
                logError("getOutputShapes: input " + std::to_string(p) + " (" + kTensorNames[p] + ") must have rank "
                    + std::to_string(kRanks[p]) + ", not " + std::to_string(inputs[p].nbDims));
                return -1;
            }
        }
        // out = u's shape (B, D, L). The extents themselves are checked in configurePlugin, once known.
        outputs[0] = inputs[kU];
        return 0;
    }
    catch (...)
    {
        logError("getOutputShapes failed");
    }
    return -1;
}

bool DimSelectiveScanPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    // Only inOut[0..pos] may be read. All tensors linear; u's type is T; parameters fp32; the rest T.
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0
        || pos >= kNbInputs + kNbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    DataType const t0 = inOut[0].desc.type;
    if (!isActivationType(t0))
    {
        return false;
    }
    return isParameter(pos) ? desc.type == DataType::kFLOAT : desc.type == t0;
}

int32_t DimSelectiveScanPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            logError("configurePlugin: " + countError(nbInputs, nbOutputs));
            return -1;
        }
        DataType types[kNbInputs + kNbOutputs];
        for (int32_t i = 0; i < kNbInputs; ++i)
        {
            types[i] = in[i].desc.type;
        }
        types[kOut] = out[0].desc.type;
        std::string err = checkTypes(types, kNbInputs + kNbOutputs);
        if (!err.empty())
        {
            logError("configurePlugin: " + err);
            return -1;
        }
        // The build-time shapes (-1 for dynamic extents), then the profile's bounds where TensorRT gave them.
        auto const desc = gatherDims(in, out, [](DynamicPluginTensorDesc const& d) { return d.desc.dims; });
        err = checkShapes(desc.data(), kNbInputs + kNbOutputs, true);
        if (!err.empty())
        {
            logError("configurePlugin: " + err);
            return -1;
        }
        auto const lo = gatherDims(in, out, [](DynamicPluginTensorDesc const& d) { return d.min; });
        auto const hi = gatherDims(in, out, [](DynamicPluginTensorDesc const& d) { return d.max; });
        for (auto const* bounds : {&lo, &hi})
        {
            bool given = true;
            for (int32_t p = 0; p < kNbInputs + kNbOutputs; ++p)
            {
                given = given && (*bounds)[p].nbDims == kRanks[p];
            }
            if (!given)
            {
                continue;
            }
            err = checkShapes(bounds->data(), kNbInputs + kNbOutputs, true);
            if (!err.empty())
            {
                logError(std::string("configurePlugin (profile ") + (bounds == &lo ? "min" : "max") + "): " + err);
                return -1;
            }
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string("configurePlugin failed: ") + e.what());
    }
    catch (...)
    {
        logError("configurePlugin failed");
    }
    return -1;
}

size_t DimSelectiveScanPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    // Chunk states of the kernel's sequence split. The library's bound for the profile's largest shapes also
    // covers every smaller shape, so enqueue may use dimex_selective_scan_workspace_size of its own shapes.
    if (inputs == nullptr || nbInputs != kNbInputs || inputs[kU].max.nbDims != 3 || inputs[kB].max.nbDims != 4)
    {
        return 0;
    }
    dimex_scan_params p;
    std::memset(&p, 0, sizeof(p));
    p.batch = inputs[kU].max.d[0];
    p.dim = inputs[kU].max.d[1];
    p.seqlen = inputs[kU].max.d[2];
    p.dstate = inputs[kB].max.d[2];
    return dimex_selective_scan_workspace_size(&p);
}

char const* DimSelectiveScanPlugin::getTimingCacheID() noexcept
{
    return mTimingCacheId.c_str();
}

char const* DimSelectiveScanPlugin::getMetadataString() noexcept
{
    return mMetadata.c_str();
}

int32_t DimSelectiveScanPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            logError("onShapeChange: " + countError(nbInputs, nbOutputs));
            return -1;
        }
        DataType types[kNbInputs + kNbOutputs];
        for (int32_t i = 0; i < kNbInputs; ++i)
        {
            types[i] = in[i].type;
        }
        types[kOut] = out[0].type;
        std::string err = checkTypes(types, kNbInputs + kNbOutputs);
        if (err.empty())
        {
            auto const dims = gatherDims(in, out, [](PluginTensorDesc const& d) { return d.dims; });
            err = checkShapes(dims.data(), kNbInputs + kNbOutputs, false);
        }
        if (!err.empty())
        {
            logError("onShapeChange: " + err);
            return -1;
        }
        return 0;
    }
    catch (...)
    {
        logError("onShapeChange failed");
    }
    return -1;
}

int32_t DimSelectiveScanPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            logError("enqueue: null descriptor or pointer array");
            return -1;
        }
        // Cheap (no allocation beyond a few small vectors, no CUDA calls): re-checked so that a bad call
        // returns an error instead of launching a kernel on inconsistent extents.
        DataType types[kNbInputs + kNbOutputs];
        for (int32_t i = 0; i < kNbInputs; ++i)
        {
            types[i] = inputDesc[i].type;
        }
        types[kOut] = outputDesc[0].type;
        std::string err = checkTypes(types, kNbInputs + kNbOutputs);
        Dims dims[kNbInputs + kNbOutputs];
        for (int32_t i = 0; i < kNbInputs; ++i)
        {
            dims[i] = inputDesc[i].dims;
        }
        dims[kOut] = outputDesc[0].dims;
        if (err.empty())
        {
            err = checkShapes(dims, kNbInputs + kNbOutputs, false);
        }
        if (!err.empty())
        {
            logError("enqueue: " + err);
            return -1;
        }
        int64_t const batch = dims[kU].d[0], dim = dims[kU].d[1], seqlen = dims[kU].d[2];
        int64_t const groups = dims[kB].d[1], dstate = dims[kB].d[2];
        if (batch == 0 || dim == 0 || seqlen == 0)
        {
            return 0; // empty output: nothing to compute
        }
        for (int32_t i = 0; i < kNbInputs; ++i)
        {
            if (inputs[i] == nullptr && !(i == kZ && !mAttrs.hasZ))
            {
                logError("enqueue: input " + std::to_string(i) + " (" + kTensorNames[i] + ") is null");
                return -1;
            }
        }
        if (outputs[0] == nullptr)
        {
            logError("enqueue: output 0 (out) is null");
            return -1;
        }

        dimex_scan_params p;
        std::memset(&p, 0, sizeof(p));
        p.batch = batch;
        p.dim = dim;
        p.seqlen = seqlen;
        p.dstate = dstate;
        p.ngroups = groups;
        p.dtype = toDimexType(types[kU]);
        // Contiguous (B, D, L) and (B, G, N, L) tensors (kLINEAR): element strides.
        int64_t const s3[3] = {dim * seqlen, seqlen, 1};
        int64_t const s4[4] = {groups * dstate * seqlen, dstate * seqlen, seqlen, 1};
        std::memcpy(p.u_stride, s3, sizeof(s3));
        std::memcpy(p.delta_stride, s3, sizeof(s3));
        std::memcpy(p.z_stride, s3, sizeof(s3));
        std::memcpy(p.out_stride, s3, sizeof(s3));
        std::memcpy(p.B_stride, s4, sizeof(s4));
        std::memcpy(p.C_stride, s4, sizeof(s4));
        p.u = inputs[kU];
        p.delta = inputs[kDelta];
        p.A = static_cast<float const*>(inputs[kA]);
        p.B = inputs[kB];
        p.C = inputs[kC];
        p.D = static_cast<float const*>(inputs[kD]);
        p.z = mAttrs.hasZ ? inputs[kZ] : nullptr;
        p.delta_bias = static_cast<float const*>(inputs[kDeltaBias]);
        p.out = outputs[0];
        p.delta_softplus = mAttrs.deltaSoftplus;
        p.reverse = mAttrs.reverse;
        // TensorRT allocated getWorkspaceSize(profile maximum) >= this bound of the actual shapes.
        p.workspace = workspace;
        p.workspace_bytes = workspace != nullptr ? dimex_selective_scan_workspace_size(&p) : 0;

        int const status = dimex_selective_scan_fwd(&p, stream);
        if (status != DIMEX_OK)
        {
            std::string msg = std::string("enqueue: the scan kernel failed: ") + dimex_status_string(status);
            if (status == DIMEX_ERR_CUDA)
            {
                msg += std::string(" (") + cudaGetErrorString(cudaGetLastError()) + ")";
            }
            logError(msg + " for u " + dimsString(dims[kU]) + ", dstate " + std::to_string(dstate) + ", groups "
                + std::to_string(groups));
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string("enqueue failed: ") + e.what());
    }
    catch (...)
    {
        logError("enqueue failed");
    }
    return -1;
}

IPluginV3* DimSelectiveScanPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    // No per-context resources: a full copy is all an execution context needs.
    return clone();
}

PluginFieldCollection const* DimSelectiveScanPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        // Same names and types as the creator's fields, plus the format version, so that
        // createPlugin(kRUNTIME) reads them with the kBUILD parser.
        mSerialFields.clear();
        mSerialFields.emplace_back("delta_softplus", &mAttrs.deltaSoftplus, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back("reverse", &mAttrs.reverse, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back("has_z", &mAttrs.hasZ, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back("format_version", &mFormatVersion, PluginFieldType::kINT32, 1);
        mSerialFC.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialFC.fields = mSerialFields.data();
        return &mSerialFC;
    }
    catch (...)
    {
        logError("getFieldsToSerialize failed");
    }
    return nullptr;
}

// ------------------------------------------------------------------------------------------------------------------
// DimSelectiveScanPluginCreator

DimSelectiveScanPluginCreator::DimSelectiveScanPluginCreator()
{
    // The ONNX parser reads only the attributes listed here (INT attributes arrive as kINT32); the node's
    // plugin_version and plugin_namespace are consumed by the parser itself. format_version is not listed:
    // it is never an ONNX attribute, and a listed field missing from a node makes the parser warn.
    mFields.emplace_back("delta_softplus", nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back("reverse", nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back("has_z", nullptr, PluginFieldType::kINT32, 1);
    mFC.nbFields = static_cast<int32_t>(mFields.size());
    mFC.fields = mFields.data();
}

char const* DimSelectiveScanPluginCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* DimSelectiveScanPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* DimSelectiveScanPluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* DimSelectiveScanPluginCreator::getFieldNames() noexcept
{
    return &mFC;
}

namespace {

// Reads one integer field (kINT32, or the other integer widths a Python caller may use). Returns false
// with a message when the field is malformed.
bool readIntField(PluginField const& f, int64_t& value, std::string& err)
{
    if (f.data == nullptr || f.length < 1)
    {
        err = std::string("field '") + f.name + "' has no data";
        return false;
    }
    switch (f.type)
    {
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(f.data); return true;
    case PluginFieldType::kINT64: value = *static_cast<int64_t const*>(f.data); return true;
    case PluginFieldType::kINT16: value = *static_cast<int16_t const*>(f.data); return true;
    case PluginFieldType::kINT8: value = *static_cast<int8_t const*>(f.data); return true;
    default:
        err = std::string("field '") + f.name + "' must be an integer (kINT32), got PluginFieldType "
            + std::to_string(static_cast<int32_t>(f.type));
        return false;
    }
}

} // namespace

IPluginV3* DimSelectiveScanPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept
{
    try
    {
        std::string const where = std::string("createPlugin(") + (name ? name : "") + ", "
            + (phase == nvinfer1::TensorRTPhase::kRUNTIME ? "kRUNTIME" : "kBUILD") + "): ";
        ScanAttributes attrs; // defaults for absent attributes
        int64_t formatVersion = kFormatVersion;
        int32_t const n = fc ? fc->nbFields : 0;
        if (n > 0 && fc->fields == nullptr)
        {
            logError(where + "field collection has " + std::to_string(n) + " fields but no array");
            return nullptr;
        }
        for (int32_t i = 0; i < n; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr)
            {
                logError(where + "field " + std::to_string(i) + " has no name");
                return nullptr;
            }
            int32_t* target = nullptr;
            if (!std::strcmp(f.name, "delta_softplus"))
            {
                target = &attrs.deltaSoftplus;
            }
            else if (!std::strcmp(f.name, "reverse"))
            {
                target = &attrs.reverse;
            }
            else if (!std::strcmp(f.name, "has_z"))
            {
                target = &attrs.hasZ;
            }
            else if (!std::strcmp(f.name, "format_version"))
            {
                std::string err;
                if (!readIntField(f, formatVersion, err))
                {
                    logError(where + err);
                    return nullptr;
                }
                continue;
            }
            else if (!std::strcmp(f.name, "plugin_version") || !std::strcmp(f.name, "plugin_namespace"))
            {
                continue; // the node's lookup keys, when a caller passes the attributes through
            }
            else
            {
                logWarning(where + "ignoring unknown field '" + f.name + "'");
                continue;
            }
            int64_t v = 0;
            std::string err;
            if (!readIntField(f, v, err))
            {
                logError(where + err);
                return nullptr;
            }
            if (v != 0 && v != 1)
            {
                logError(where + "field '" + f.name + "' must be 0 or 1, got " + std::to_string(v));
                return nullptr;
            }
            *target = static_cast<int32_t>(v);
        }
        if (formatVersion != kFormatVersion)
        {
            logError(where + "serialized with format_version " + std::to_string(formatVersion)
                + ", this library reads format_version " + std::to_string(kFormatVersion)
                + ": rebuild the engine with this plugin library");
            return nullptr;
        }
        return new DimSelectiveScanPlugin(attrs);
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
    }
    catch (...)
    {
        logError("createPlugin failed");
    }
    return nullptr;
}

} // namespace trt
} // namespace dimexport

// TensorRT IPluginV3 plugin for dimexport's selective scan: the ONNX node trt.plugins::DimSelectiveScan
// (dimexport/export/scan_node.py) runs the shared CUDA kernel of include/dimexport_scan.h.
//
// Identity: name "DimSelectiveScan", version "1", namespace "dimexport", exactly what the exporter writes
// (op_type, plugin_version, plugin_namespace). Bump the version on any change of I/O, attributes or the
// serialized fields.
//
// I/O (always 8 inputs, 1 output; T in {kFLOAT, kHALF, kBF16}, all tensors kLINEAR):
//   0 u (B, D, L) T   1 delta (B, D, L) T   2 A (D, N) fp32   3 B (B, G, N, L) T   4 C (B, G, N, L) T
//   5 D (D) fp32      6 z (B, D, L) T       7 delta_bias (D) fp32   ->   output 0: out (B, D, L) T
// Limits: 1 <= N <= 64, G divides D. Workspace: the kernel's chunk states (dimex_selective_scan_workspace_size).
// Attributes (creator fields, kINT32, 0 or 1): delta_softplus (default 1), reverse (default 0),
// has_z (default 1). Serialized as the same fields plus "format_version" (kINT32).
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dimexport {
namespace trt {

constexpr char const* kPluginName = "DimSelectiveScan";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "dimexport";
// Version of the serialized field set (getFieldsToSerialize); createPlugin(kRUNTIME) refuses others.
constexpr int32_t kFormatVersion = 1;

constexpr int32_t kNbInputs = 8;
constexpr int32_t kNbOutputs = 1;
constexpr int64_t kMaxDstate = 64;

// Input positions, in the node's order.
enum InputIndex : int32_t
{
    kU = 0,
    kDelta = 1,
    kA = 2,
    kB = 3,
    kC = 4,
    kD = 5,
    kZ = 6,
    kDeltaBias = 7,
    kOut = 8 // position of the output in supportsFormatCombination's inOut array
};

struct ScanAttributes
{
    int32_t deltaSoftplus{1};
    int32_t reverse{0};
    int32_t hasZ{1};
};

class DimSelectiveScanPlugin final : public nvinfer1::IPluginV3,
                                     public nvinfer1::IPluginV3OneCore,
                                     public nvinfer1::IPluginV3OneBuild,
                                     public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit DimSelectiveScanPlugin(ScanAttributes const& attrs);
    DimSelectiveScanPlugin(DimSelectiveScanPlugin const& other);
    DimSelectiveScanPlugin& operator=(DimSelectiveScanPlugin const&) = delete;
    ~DimSelectiveScanPlugin() override = default;

    ScanAttributes const& attributes() const noexcept { return mAttrs; }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getTimingCacheID() noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    ScanAttributes mAttrs;
    int32_t mFormatVersion{kFormatVersion};
    std::string mTimingCacheId;
    std::string mMetadata;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialFC{};
};

class DimSelectiveScanPluginCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    DimSelectiveScanPluginCreator();
    ~DimSelectiveScanPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFC{};
};

// Shape and type checks shared by getOutputShapes, configurePlugin, onShapeChange and enqueue.
// `dims` holds kNbInputs + kNbOutputs entries in inOut order; with allowWildcards, -1 means "unknown".
// Returns an empty string when consistent, otherwise a message naming the offending tensor.
std::string checkShapes(nvinfer1::Dims const* dims, int32_t count, bool allowWildcards);
std::string checkTypes(nvinfer1::DataType const* types, int32_t count);

} // namespace trt
} // namespace dimexport

// The CPU and CUDA kernels of torch.ops.dimexport.selective_scan, causal_conv1d_silu, rms_norm_modulate,
// gated_residual and mamba_mixer as a C++ PyTorch operator library (libdimexport_torch_ops.so): an eager call goes
// dispatcher -> these checks -> the kernel of libdimexport_scan.so, with no Python, ctypes or parameter marshalling on
// the path (issue "Whole-denoiser speed" §2: the op's host cost).
//
// The ops' schemas, autograd formulas and fake (meta) functions stay in Python (dimexport/ops/selective_scan.py,
// conv.py, norm.py, residual.py, mixer.py); dimexport/ops/_native.py loads this library after defining the ops, only
// when it was built against the running torch version, and then registers no Python kernels for CPU and CUDA. The
// checks repeat the Python checks (check_scan_inputs(), check_conv_inputs(), ...) message for message; they raise
// ValueError, the base class of the Python path's InputError (the CLI validates its inputs before any model runs, so
// its exit codes do not depend on which path raised).
//
// Only generic c10 interfaces are used (DeviceGuard, the current stream's native handle), so a CPU-only torch and a
// CUDA torch build it alike, without CUDA headers or nvcc.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/library.h>

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#define DIMEX_SCAN_NO_CUDA  // the header's CUDA-free mode: cudaStream_t as an opaque pointer
#include "dimexport_scan.h"

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

constexpr int64_t kMaxDstate = 64;  // MAX_DSTATE of dimexport/ops/selective_scan.py

// Python's repr of a shape tuple: (2, 3), (5,), ().
std::string shape_str(c10::IntArrayRef shape) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << (shape.size() == 1 ? ",)" : ")");
  return s.str();
}

// str(torch.dtype): torch.float32, torch.float16, ...
std::string dtype_str(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kDouble: return "torch.float64";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexHalf: return "torch.complex32";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: {  // the rest are c10's names lower-cased: Float8_e4m3fn, UInt16, QInt8, Bits8, ...
      std::string name = c10::toString(t);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      return "torch." + name;
    }
  }
}

bool io_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kHalf || t == at::kBFloat16; }

dimex_dtype abi_dtype(at::ScalarType t) {
  return t == at::kHalf ? DIMEX_FLOAT16 : t == at::kBFloat16 ? DIMEX_BFLOAT16 : DIMEX_FLOAT32;
}

// The tensor of an optional argument, or nullptr.
const Tensor* opt(const OptTensor& t) { return t.has_value() ? &*t : nullptr; }

// The devices of the inputs in the words of Python's sorted(map(str, devices)): "['cpu', 'cuda:0']".
std::string device_list(std::initializer_list<const Tensor*> tensors) {
  std::set<std::string> devices;
  for (const Tensor* t : tensors)
    if (t != nullptr) devices.insert(t->device().str());
  if (devices.size() < 2) return "";
  std::ostringstream s;
  s << "[";
  for (auto it = devices.begin(); it != devices.end(); ++it) s << (it == devices.begin() ? "'" : ", '") << *it << "'";
  s << "]";
  return s.str();
}

// check_scan_inputs() of dimexport/ops/selective_scan.py, the same conditions in the same order and the same words.
void check_inputs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                  const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias) {
  TORCH_CHECK_VALUE(u.dim() == 3, "selective_scan: u must be (batch, dim, seqlen), got shape ", shape_str(u.sizes()));
  const int64_t batch = u.size(0), dim = u.size(1), seqlen = u.size(2);
  TORCH_CHECK_VALUE(io_dtype(u.scalar_type()), "selective_scan: u has dtype ", dtype_str(u.scalar_type()),
                    "; use float32, float16 or bfloat16");
  TORCH_CHECK_VALUE(A.dim() == 2 && A.size(0) == dim, "selective_scan: A must be (dim=", dim,
                    ", dstate), got shape ", shape_str(A.sizes()));
  const int64_t dstate = A.size(1);
  TORCH_CHECK_VALUE(dstate >= 1 && dstate <= kMaxDstate, "selective_scan: dstate=", dstate, " is outside 1..",
                    kMaxDstate);
  const std::vector<int64_t> bdl{batch, dim, seqlen};
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"delta", &delta},
                                {"z", opt(z)}}) {
    if (t == nullptr) continue;
    TORCH_CHECK_VALUE(t->sizes() == c10::IntArrayRef(bdl) && t->scalar_type() == u.scalar_type(), "selective_scan: ",
                      name, " must match u: shape ", shape_str(bdl), " dtype ", dtype_str(u.scalar_type()),
                      ", got shape ", shape_str(t->sizes()), " dtype ", dtype_str(t->scalar_type()));
  }
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"B", &B}, {"C", &C}}) {
    TORCH_CHECK_VALUE(t->dim() == 4 && t->size(0) == batch && t->size(2) == dstate && t->size(3) == seqlen,
                      "selective_scan: ", name, " must be (batch=", batch, ", groups, dstate=", dstate, ", seqlen=",
                      seqlen, "), got shape ", shape_str(t->sizes()));
    TORCH_CHECK_VALUE(t->scalar_type() == u.scalar_type(), "selective_scan: ", name, " has dtype ",
                      dtype_str(t->scalar_type()), "; it must match u (", dtype_str(u.scalar_type()), ")");
  }
  const int64_t groups = B.size(1);
  TORCH_CHECK_VALUE(C.size(1) == groups && groups >= 1 && dim % groups == 0,
                    "selective_scan: B and C need the same number of groups dividing dim=", dim, ", got ", B.size(1),
                    " and ", C.size(1));
  const std::vector<int64_t> a_shape{dim, dstate}, d_shape{dim};
  for (const auto& [name, t, shape] :
       {std::tuple<const char*, const Tensor*, const std::vector<int64_t>*>{"A", &A, &a_shape},
        {"D", opt(D), &d_shape},
        {"delta_bias", opt(delta_bias), &d_shape}}) {
    if (t == nullptr) continue;
    TORCH_CHECK_VALUE(t->sizes() == c10::IntArrayRef(*shape), "selective_scan: ", name, " must have shape ",
                      shape_str(*shape), ", got ", shape_str(t->sizes()));
    TORCH_CHECK_VALUE(t->scalar_type() == at::kFloat, "selective_scan: ", name, " must be float32 (got ",
                      dtype_str(t->scalar_type()), "); keep it in fp32");
  }
  const std::string devices = device_list({&u, &delta, &A, &B, &C, opt(D), opt(z), opt(delta_bias)});
  TORCH_CHECK_VALUE(devices.empty(), "selective_scan: all inputs must be on one device, got ", devices);
}

template <size_t N>
void copy_strides(const Tensor& t, int64_t (&dst)[N]) {
  for (size_t i = 0; i < N; ++i) dst[i] = t.stride(static_cast<int64_t>(i));
}

const float* float_ptr(const OptTensor& t) { return t.has_value() ? t->data_ptr<float>() : nullptr; }

// The ABI's description of one scan (A, D, delta_bias contiguous; every other tensor may have any strides).
dimex_scan_params make_params(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                              const OptTensor& D, const OptTensor& z, const OptTensor& delta_bias,
                              bool delta_softplus, bool reverse, const Tensor& out) {
  dimex_scan_params p{};
  p.batch = u.size(0);
  p.dim = u.size(1);
  p.seqlen = u.size(2);
  p.dstate = A.size(1);
  p.ngroups = B.size(1);
  p.dtype = abi_dtype(u.scalar_type());
  p.u = u.data_ptr();
  copy_strides(u, p.u_stride);
  p.delta = delta.data_ptr();
  copy_strides(delta, p.delta_stride);
  p.A = A.data_ptr<float>();
  p.B = B.data_ptr();
  copy_strides(B, p.B_stride);
  p.C = C.data_ptr();
  copy_strides(C, p.C_stride);
  p.D = float_ptr(D);
  if (z.has_value()) {
    p.z = z->data_ptr();
    copy_strides(*z, p.z_stride);
  }
  p.delta_bias = float_ptr(delta_bias);
  p.out = out.data_ptr();
  copy_strides(out, p.out_stride);
  p.delta_softplus = delta_softplus ? 1 : 0;
  p.reverse = reverse ? 1 : 0;
  return p;
}

// An empty output for the (batch, dim, seqlen) input x in x's layout: token-major storage when x's channels are
// contiguous (the mixer's slice of in_proj's output), else contiguous. output_like() of dimexport/ops, the same rule.
Tensor output_like(const Tensor& x) {
  if (x.size(1) > 1 && x.stride(1) == 1)
    return at::empty({x.size(0), x.size(2), x.size(1)}, x.options()).transpose(1, 2);
  return at::empty(x.sizes(), x.options());
}

OptTensor contiguous(const OptTensor& t) { return t.has_value() ? OptTensor(t->contiguous()) : std::nullopt; }

void check_status(int status, const char* entry) {
  TORCH_CHECK(status == DIMEX_OK, entry, " failed: ", dimex_status_string(status));
}

// The current stream of t's device as the CUDA handle the C ABI takes (generic c10: no CUDA headers needed).
cudaStream_t current_stream(const Tensor& t) {
  const c10::impl::VirtualGuardImpl impl(t.device().type());
  return static_cast<cudaStream_t>(impl.getStream(t.device()).native_handle());
}

// Python's repr of a float (1e-05, 0.5, -1.0), for messages that repeat the Python checks' words.
std::string py_float(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  std::string text = s.str();
  for (int digits = 1; digits <= 17; ++digits) {  // the shortest text that reads back as v, as repr() does
    std::ostringstream t;
    t.precision(digits);
    t << v;
    if (std::stod(t.str()) == v) {
      text = t.str();
      break;
    }
  }
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
}

// The library beside this one must implement the ABI it was compiled against (a stale copy would read the parameter
// struct wrongly); checked once, at the first call.
void check_library_abi() {
  static const int found = dimex_scan_abi_version();
  TORCH_CHECK(found == DIMEX_SCAN_ABI_VERSION, "libdimexport_scan.so implements scan ABI version ", found,
              ", libdimexport_torch_ops.so was built for version ", DIMEX_SCAN_ABI_VERSION,
              "; reinstall dimexport (`pip install --no-build-isolation -e .`)");
}

Tensor scan(const Tensor& u, const Tensor& delta, const Tensor& A_in, const Tensor& B, const Tensor& C,
            const OptTensor& D_in, const OptTensor& z, const OptTensor& delta_bias_in, bool delta_softplus,
            bool reverse) {
  check_library_abi();
  check_inputs(u, delta, A_in, B, C, D_in, z, delta_bias_in);
  const Tensor A = A_in.contiguous();
  const OptTensor D = contiguous(D_in), delta_bias = contiguous(delta_bias_in);
  Tensor out = output_like(u);
  dimex_scan_params p = make_params(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, out);
  if (u.device().is_cpu()) {
    check_status(dimex_selective_scan_fwd_cpu(&p, at::get_num_threads()), "dimex_selective_scan_fwd_cpu");
    return out;
  }
  const c10::DeviceGuard guard(u.device());
  // The workspace that lets the kernel split the sequence across CTAs, from the caching allocator on the current
  // stream (graph-safe); it stays alive until the launch is enqueued, the allocator's stream order after that.
  const size_t nbytes = dimex_selective_scan_workspace_size(&p);
  Tensor workspace;
  if (nbytes) {
    workspace = at::empty({static_cast<int64_t>(nbytes)}, u.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
    p.workspace_bytes = nbytes;
  }
  check_status(dimex_selective_scan_fwd(&p, current_stream(u)), "dimex_selective_scan_fwd");
  return out;
}

// Runs one fused op's kernel on t's device: the CPU entry on the intra-op threads, else the CUDA entry on the current
// stream of t's device; a failing status becomes an error naming the entry.
template <typename P>
void run_kernel(const Tensor& t, const P& p, int (*cpu)(const P*, int), const char* cpu_name,
                int (*cuda)(const P*, cudaStream_t), const char* cuda_name) {
  if (t.device().is_cpu()) {
    check_status(cpu(&p, at::get_num_threads()), cpu_name);
    return;
  }
  const c10::DeviceGuard guard(t.device());
  check_status(cuda(&p, current_stream(t)), cuda_name);
}

// An optional (batch, 1, dim) argument as the C ABI's pointer and (batch, channel) strides; nothing if absent.
void set_broadcast(const OptTensor& t, const void** ptr, int64_t (&stride)[2]) {
  if (!t.has_value()) return;
  *ptr = t->data_ptr();
  stride[0] = t->stride(0);  // the middle dimension has size 1
  stride[1] = t->stride(2);
}

// check_conv_inputs() of dimexport/ops/conv.py, the same conditions in the same order and the same words.
void check_conv_inputs(const Tensor& x, const Tensor& weight, const OptTensor& bias) {
  TORCH_CHECK_VALUE(x.dim() == 3, "causal_conv1d_silu: x must be (batch, dim, seqlen), got shape ",
                    shape_str(x.sizes()));
  TORCH_CHECK_VALUE(io_dtype(x.scalar_type()), "causal_conv1d_silu: x has dtype ", dtype_str(x.scalar_type()),
                    "; use float32, float16 or bfloat16");
  const int64_t dim = x.size(1);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == dim && weight.size(1) >= 1 &&
                        weight.size(1) <= DIMEX_CONV_MAX_WIDTH,
                    "causal_conv1d_silu: weight must be (dim=", dim, ", width) with width 1..", DIMEX_CONV_MAX_WIDTH,
                    ", got shape ", shape_str(weight.sizes()));
  if (bias.has_value())
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == dim, "causal_conv1d_silu: bias must have shape (", dim,
                      ",), got ", shape_str(bias->sizes()));
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"weight", &weight},
                                {"bias", opt(bias)}}) {
    if (t == nullptr) continue;
    TORCH_CHECK_VALUE(t->scalar_type() == x.scalar_type(), "causal_conv1d_silu: ", name, " has dtype ",
                      dtype_str(t->scalar_type()), "; it must match x (", dtype_str(x.scalar_type()), ")");
  }
  const std::string devices = device_list({&x, &weight, opt(bias)});
  TORCH_CHECK_VALUE(devices.empty(), "causal_conv1d_silu: all inputs must be on one device, got ", devices);
}

Tensor conv_silu(const Tensor& x, const Tensor& weight_in, const OptTensor& bias_in, bool reverse) {
  check_library_abi();
  check_conv_inputs(x, weight_in, bias_in);
  const Tensor weight = weight_in.contiguous();
  const OptTensor bias = contiguous(bias_in);
  Tensor out = output_like(x);
  if (out.numel() == 0) return out;
  dimex_conv_params p{};
  p.batch = x.size(0);
  p.dim = x.size(1);
  p.seqlen = x.size(2);
  p.width = weight.size(1);
  p.dtype = abi_dtype(x.scalar_type());
  p.x = x.data_ptr();
  copy_strides(x, p.x_stride);
  p.weight = weight.data_ptr();
  p.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  p.out = out.data_ptr();
  copy_strides(out, p.out_stride);
  p.reverse = reverse ? 1 : 0;
  run_kernel(x, p, dimex_causal_conv1d_silu_fwd_cpu, "dimex_causal_conv1d_silu_fwd_cpu", dimex_causal_conv1d_silu_fwd,
             "dimex_causal_conv1d_silu_fwd");
  return out;
}

// check_row_index() of dimexport/ops/selective_scan.py: rows is None or an int64 (tokens,) index.
void check_row_index(const char* op, const OptTensor& rows, int64_t tokens) {
  if (!rows.has_value()) return;
  TORCH_CHECK_VALUE(rows->scalar_type() == at::kLong && rows->dim() == 1 && rows->size(0) == tokens, op,
                    ": rows must be an int64 index of shape (", tokens, ",), got ", dtype_str(rows->scalar_type()),
                    " of shape ", shape_str(rows->sizes()));
}

// check_norm_inputs() of dimexport/ops/norm.py, the same conditions in the same order and the same words.
void check_norm_inputs(const Tensor& x, const Tensor& weight, const OptTensor& scale, const OptTensor& shift,
                       double eps, const OptTensor& rows) {
  TORCH_CHECK_VALUE(x.dim() == 3, "rms_norm_modulate: x must be (batch, tokens, dim), got shape ",
                    shape_str(x.sizes()));
  const int64_t batch = x.size(0), dim = x.size(2);
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"x", &x}, {"weight", &weight}})
    TORCH_CHECK_VALUE(io_dtype(t->scalar_type()), "rms_norm_modulate: ", name, " has dtype ",
                      dtype_str(t->scalar_type()), "; use float32, float16 or bfloat16");
  TORCH_CHECK_VALUE(weight.dim() == 1 && weight.size(0) == dim, "rms_norm_modulate: weight must have shape (", dim,
                    ",), got ", shape_str(weight.sizes()));
  const std::vector<int64_t> mod_shape{batch, 1, dim};
  for (const auto& [name, t] : {std::pair<const char*, const OptTensor*>{"scale", &scale}, {"shift", &shift}}) {
    if (!t->has_value()) continue;
    TORCH_CHECK_VALUE((*t)->sizes() == c10::IntArrayRef(mod_shape), "rms_norm_modulate: ", name,
                      " must have shape ", shape_str(mod_shape), ", got ", shape_str((*t)->sizes()));
    TORCH_CHECK_VALUE((*t)->scalar_type() == weight.scalar_type(), "rms_norm_modulate: ", name, " has dtype ",
                      dtype_str((*t)->scalar_type()), "; it must match weight (", dtype_str(weight.scalar_type()), ")");
  }
  TORCH_CHECK_VALUE(eps >= 0, "rms_norm_modulate: eps must be >= 0, got ", py_float(eps));
  check_row_index("rms_norm_modulate", rows, x.size(1));
  const std::string devices = device_list({&x, &weight, opt(scale), opt(shift), opt(rows)});
  TORCH_CHECK_VALUE(devices.empty(), "rms_norm_modulate: all inputs must be on one device, got ", devices);
}

Tensor norm_modulate(const Tensor& x, const Tensor& weight_in, const OptTensor& scale, const OptTensor& shift,
                     double eps, const OptTensor& rows_in) {
  check_library_abi();
  check_norm_inputs(x, weight_in, scale, shift, eps, rows_in);
  const Tensor weight = weight_in.contiguous();
  const OptTensor rows = contiguous(rows_in);
  Tensor out = at::empty(x.sizes(), x.options().dtype(weight.scalar_type()));
  if (out.numel() == 0) return out;
  dimex_norm_params p{};
  p.batch = x.size(0);
  p.rows = x.size(1);
  p.dim = x.size(2);
  p.x_dtype = abi_dtype(x.scalar_type());
  p.out_dtype = abi_dtype(weight.scalar_type());
  p.eps = static_cast<float>(eps);
  p.x = x.data_ptr();
  copy_strides(x, p.x_stride);
  p.weight = weight.data_ptr();
  set_broadcast(scale, &p.scale, p.scale_stride);
  set_broadcast(shift, &p.shift, p.shift_stride);
  p.out = out.data_ptr();
  copy_strides(out, p.out_stride);
  p.x_rows = rows.has_value() ? rows->data_ptr<int64_t>() : nullptr;
  run_kernel(x, p, dimex_rms_norm_modulate_fwd_cpu, "dimex_rms_norm_modulate_fwd_cpu", dimex_rms_norm_modulate_fwd,
             "dimex_rms_norm_modulate_fwd");
  return out;
}

// check_residual_inputs() of dimexport/ops/residual.py, the same conditions in the same order and the same words.
void check_residual_inputs(const Tensor& residual, const Tensor& y, const OptTensor& gate, const OptTensor& rows) {
  TORCH_CHECK_VALUE(residual.dim() == 3, "gated_residual: residual must be (batch, tokens, dim), got shape ",
                    shape_str(residual.sizes()));
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"residual", &residual}, {"y", &y}})
    TORCH_CHECK_VALUE(io_dtype(t->scalar_type()), "gated_residual: ", name, " has dtype ", dtype_str(t->scalar_type()),
                      "; use float32, float16 or bfloat16");
  TORCH_CHECK_VALUE(y.sizes() == residual.sizes(), "gated_residual: y must have the residual's shape ",
                    shape_str(residual.sizes()), ", got ", shape_str(y.sizes()));
  if (gate.has_value()) {
    const std::vector<int64_t> gate_shape{residual.size(0), 1, residual.size(2)};
    TORCH_CHECK_VALUE(gate->sizes() == c10::IntArrayRef(gate_shape), "gated_residual: gate must have shape ",
                      shape_str(gate_shape), ", got ", shape_str(gate->sizes()));
    TORCH_CHECK_VALUE(gate->scalar_type() == y.scalar_type(), "gated_residual: gate has dtype ",
                      dtype_str(gate->scalar_type()), "; it must match y (", dtype_str(y.scalar_type()), ")");
  }
  check_row_index("gated_residual", rows, residual.size(1));
  const std::string devices = device_list({&residual, &y, opt(gate), opt(rows)});
  TORCH_CHECK_VALUE(devices.empty(), "gated_residual: all inputs must be on one device, got ", devices);
}

Tensor residual_op(const Tensor& residual, const Tensor& y, const OptTensor& gate, const OptTensor& rows_in) {
  check_library_abi();
  check_residual_inputs(residual, y, gate, rows_in);
  const OptTensor rows = contiguous(rows_in);
  Tensor out = at::empty(residual.sizes(), residual.options());
  if (out.numel() == 0) return out;
  dimex_residual_params p{};
  p.batch = residual.size(0);
  p.rows = residual.size(1);
  p.dim = residual.size(2);
  p.res_dtype = abi_dtype(residual.scalar_type());
  p.y_dtype = abi_dtype(y.scalar_type());
  p.residual = residual.data_ptr();
  copy_strides(residual, p.residual_stride);
  p.y = y.data_ptr();
  copy_strides(y, p.y_stride);
  set_broadcast(gate, &p.gate, p.gate_stride);
  p.out = out.data_ptr();
  copy_strides(out, p.out_stride);
  p.residual_rows = rows.has_value() ? rows->data_ptr<int64_t>() : nullptr;
  run_kernel(residual, p, dimex_gated_residual_fwd_cpu, "dimex_gated_residual_fwd_cpu", dimex_gated_residual_fwd,
             "dimex_gated_residual_fwd");
  return out;
}

// check_mixer_inputs() of dimexport/ops/mixer.py: the shapes of one Mamba mixer (the pieces check the rest).
void check_mixer_inputs(const Tensor& hidden, const Tensor& in_w, const Tensor& xproj_w, const Tensor& dtproj_w,
                        const Tensor& A, const Tensor& out_w) {
  TORCH_CHECK_VALUE(hidden.dim() == 3, "mamba_mixer: hidden must be (batch, seqlen, d_model), got shape ",
                    shape_str(hidden.sizes()));
  const int64_t d_model = hidden.size(2);
  TORCH_CHECK_VALUE(in_w.dim() == 2 && in_w.size(1) == d_model && in_w.size(0) % 2 == 0,
                    "mamba_mixer: in_proj_weight must be (2 * d_inner, d_model=", d_model, "), got shape ",
                    shape_str(in_w.sizes()));
  const int64_t d_inner = in_w.size(0) / 2;
  TORCH_CHECK_VALUE(A.dim() == 2 && A.size(0) == d_inner, "mamba_mixer: A must be (d_inner=", d_inner,
                    ", dstate), got shape ", shape_str(A.sizes()));
  TORCH_CHECK_VALUE(dtproj_w.dim() == 2 && dtproj_w.size(0) == d_inner,
                    "mamba_mixer: dt_proj_weight must be (d_inner=", d_inner, ", dt_rank), got shape ",
                    shape_str(dtproj_w.sizes()));
  const int64_t width = dtproj_w.size(1) + 2 * A.size(1);
  TORCH_CHECK_VALUE(xproj_w.dim() == 2 && xproj_w.size(0) == width && xproj_w.size(1) == d_inner,
                    "mamba_mixer: x_proj_weight must be (dt_rank + 2 * dstate=", width, ", d_inner=", d_inner,
                    "), got shape ", shape_str(xproj_w.sizes()));
  TORCH_CHECK_VALUE(out_w.dim() == 2 && out_w.size(1) == d_inner,
                    "mamba_mixer: out_proj_weight must be (d_out, d_inner=", d_inner, "), got shape ",
                    shape_str(out_w.sizes()));
  const std::string devices = device_list({&hidden, &in_w, &xproj_w, &dtproj_w, &A, &out_w});
  TORCH_CHECK_VALUE(devices.empty(), "mamba_mixer: all inputs must be on one device, got ", devices);
}

// mamba_mixer_reference() of dimexport/ops/mixer.py step for step (the same projections, views and kernels, so the
// same bits), with the conv and the scan called directly: one call from Python instead of 18.
Tensor mamba_mixer(const Tensor& hidden, const Tensor& in_w, const Tensor& conv_w, const OptTensor& conv_b,
                   const Tensor& xproj_w, const Tensor& dtproj_w, const Tensor& dt_bias, const Tensor& A,
                   const Tensor& D, const Tensor& out_w, bool reverse) {
  check_mixer_inputs(hidden, in_w, xproj_w, dtproj_w, A, out_w);
  const std::vector<Tensor> xz = at::linear(hidden, in_w).transpose(1, 2).chunk(2, 1);  // x, z: (B, Di, L)
  const Tensor u = conv_silu(xz[0], conv_w, conv_b, reverse);
  const int64_t rank = dtproj_w.size(1), dstate = A.size(1);
  const std::vector<Tensor> dbc = at::linear(u.transpose(1, 2), xproj_w).split_with_sizes({rank, dstate, dstate}, -1);
  const Tensor delta = at::linear(dbc[0], dtproj_w).transpose(1, 2);
  const Tensor y = scan(u, delta, A, dbc[1].transpose(1, 2).unsqueeze(1), dbc[2].transpose(1, 2).unsqueeze(1),
                        D.to(at::kFloat), xz[1], dt_bias.to(at::kFloat), true, reverse);
  return at::linear(y.transpose(1, 2), out_w);
}

}  // namespace

// The schemas are defined by torch.library.custom_op in Python; these are their kernels for two dispatch keys.
TORCH_LIBRARY_IMPL(dimexport, CPU, m) {
  m.impl("selective_scan", &scan);
  m.impl("causal_conv1d_silu", &conv_silu);
  m.impl("rms_norm_modulate", &norm_modulate);
  m.impl("gated_residual", &residual_op);
  m.impl("mamba_mixer", &mamba_mixer);
}
TORCH_LIBRARY_IMPL(dimexport, CUDA, m) {
  m.impl("selective_scan", &scan);
  m.impl("causal_conv1d_silu", &conv_silu);
  m.impl("rms_norm_modulate", &norm_modulate);
  m.impl("gated_residual", &residual_op);
  m.impl("mamba_mixer", &mamba_mixer);
}

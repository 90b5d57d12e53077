#include "tensor_args.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "collectives/reduce.h"

namespace cohort::torch_ext {

bool ToDataType(at::ScalarType scalar_type, DataType* type) {
  switch (scalar_type) {
    case at::kFloat:
      *type = DataType::kFloat32;
      return true;
    case at::kDouble:
      *type = DataType::kFloat64;
      return true;
    case at::kHalf:
      *type = DataType::kFloat16;
      return true;
    case at::kBFloat16:
      *type = DataType::kBFloat16;
      return true;
    case at::kChar:
      *type = DataType::kInt8;
      return true;
    case at::kByte:
      *type = DataType::kUInt8;
      return true;
    case at::kInt:
      *type = DataType::kInt32;
      return true;
    case at::kLong:
      *type = DataType::kInt64;
      return true;
    case at::kBool:
      *type = DataType::kBool;
      return true;
    default:
      return false;
  }
}

std::string DescribeTensor(const at::Tensor& tensor) {
  std::string sizes;
  for (int64_t size : tensor.sizes()) absl::StrAppend(&sizes, sizes.empty() ? "" : ", ", size);
  return absl::StrCat(c10::toString(tensor.scalar_type()), "[", sizes, "] on ",
                      tensor.device().str());
}

Elements MovedElements(const at::Tensor& tensor) {
  Elements elements;
  if (ToDataType(tensor.scalar_type(), &elements.type)) {
    elements.count = static_cast<size_t>(tensor.numel());
  } else {
    elements.type = DataType::kUInt8;
    elements.count = static_cast<size_t>(tensor.numel()) * tensor.element_size();
  }
  return elements;
}

ReduceOp ToReduceOp(const c10d::ReduceOp& op, at::ScalarType type, const char* what) {
  const bool logical = type == at::kBool;
  switch (op.op_) {
    case c10d::ReduceOp::SUM:
      // torch (and gloo) sum bools as logical or, and multiply them as logical and.
      return logical ? ReduceOp::kBor : ReduceOp::kSum;
    case c10d::ReduceOp::AVG:
      return ReduceOp::kAvg;
    case c10d::ReduceOp::PRODUCT:
      return logical ? ReduceOp::kBand : ReduceOp::kProd;
    case c10d::ReduceOp::MIN:
      return ReduceOp::kMin;
    case c10d::ReduceOp::MAX:
      return ReduceOp::kMax;
    case c10d::ReduceOp::BAND:
      return ReduceOp::kBand;
    case c10d::ReduceOp::BOR:
      return ReduceOp::kBor;
    case c10d::ReduceOp::BXOR:
      return ReduceOp::kBxor;
    case c10d::ReduceOp::PREMUL_SUM:
      TORCH_CHECK(false, "cohort: ", what,
                  ": ReduceOp.PREMUL_SUM is not supported; multiply the tensor by the factor "
                  "and use ReduceOp.SUM");
    default:
      break;
  }
  TORCH_CHECK(false, "cohort: ", what, ": unknown reduce op ", static_cast<int>(op.op_));
}

Elements ReducedElements(const at::Tensor& tensor, const c10d::ReduceOp& op, const char* what) {
  Elements elements;
  ReduceOp reduce_op = ToReduceOp(op, tensor.scalar_type(), what);
  if (ToDataType(tensor.scalar_type(), &elements.type)) {
    elements.count = static_cast<size_t>(tensor.numel());
    // Checked here so the error is raised at the call, not later from wait().
    absl::Status supported = CheckReduceSupported(elements.type, reduce_op);
    TORCH_CHECK(supported.ok(), "cohort: ", what, ": ", supported.message());
    return elements;
  }
  if (tensor.is_complex()) {
    TORCH_CHECK(reduce_op == ReduceOp::kSum || reduce_op == ReduceOp::kAvg, "cohort: ", what,
                ": reduce op ", ReduceOpName(reduce_op), " is not defined for complex tensors (",
                DescribeTensor(tensor), "); sum and avg are");
    TORCH_CHECK(
        tensor.scalar_type() == at::kComplexFloat || tensor.scalar_type() == at::kComplexDouble,
        "cohort: ", what, ": cannot reduce ", DescribeTensor(tensor),
        "; complex64 and complex128 can be summed and averaged");
    elements.type =
        tensor.scalar_type() == at::kComplexFloat ? DataType::kFloat32 : DataType::kFloat64;
    elements.count = static_cast<size_t>(tensor.numel()) * 2;
    return elements;
  }
  TORCH_CHECK(false, "cohort: ", what, ": cannot reduce tensors of dtype ",
              c10::toString(tensor.scalar_type()),
              "; reductions take float32, float64, float16, bfloat16, int8, uint8, int32, int64, "
              "bool, and complex64/complex128 for sum and avg");
}

void CheckSingle(const std::vector<at::Tensor>& tensors, const char* what) {
  TORCH_CHECK(tensors.size() == 1, "cohort: ", what, " takes exactly one tensor per process (got ",
              tensors.size(), "); for several tensors use the coalesced variant");
}

void CheckSameDtype(const at::Tensor& expected, const at::Tensor& tensor, const char* what) {
  TORCH_CHECK(tensor.scalar_type() == expected.scalar_type(), "cohort: ", what,
              ": all tensors of one call must have the same dtype; got ",
              c10::toString(expected.scalar_type()), " and ", c10::toString(tensor.scalar_type()));
}

void CheckRoot(int64_t root, int size, const char* what) {
  TORCH_CHECK(root >= 0 && root < size, "cohort: ", what, ": root rank ", root,
              " is not in the group (size ", size, ")");
}

at::Tensor ContiguousInput(const at::Tensor& tensor) {
  return tensor.is_contiguous() ? tensor : tensor.contiguous();
}

namespace {

// `bytes` bytes at `data` on `device` (host or device memory) as a byte tensor, not owned.
at::Tensor BytesAt(const void* data, size_t bytes, const at::Device& device) {
  return at::from_blob(const_cast<void*>(data), {static_cast<int64_t>(bytes)},
                       at::TensorOptions().dtype(at::kByte).device(device));
}

// A contiguous tensor's bytes as a one-dimensional byte tensor (a view).
at::Tensor BytesOf(const at::Tensor& contiguous) {
  return contiguous.reshape({-1}).view(at::kByte);
}

}  // namespace

void CopyBytesInto(at::Tensor& destination, const void* source) {
  size_t bytes = static_cast<size_t>(destination.numel()) * destination.element_size();
  if (bytes == 0) return;
  if (!destination.is_cpu()) {
    // On the current stream (the call's: tensor_call.h), like every device copy of a call.
    at::Tensor from = BytesAt(source, bytes, destination.device());
    destination.copy_(from.view(destination.scalar_type()).view(destination.sizes()));
    return;
  }
  if (destination.is_contiguous()) {
    std::memcpy(destination.data_ptr(), source, bytes);
    return;
  }
  at::Tensor staging = at::empty(destination.sizes(), destination.options());
  std::memcpy(staging.data_ptr(), source, bytes);
  destination.copy_(staging);
}

void CopyBytesFrom(const at::Tensor& source, void* destination) {
  size_t bytes = static_cast<size_t>(source.numel()) * source.element_size();
  if (bytes == 0) return;
  at::Tensor contiguous = ContiguousInput(source);
  if (!source.is_cpu()) {
    BytesAt(destination, bytes, source.device()).copy_(BytesOf(contiguous));
    return;
  }
  std::memcpy(destination, contiguous.data_ptr(), bytes);
}

PackedTensors::PackedTensors(const std::vector<at::Tensor>& tensors, bool fill)
    : tensors_(tensors) {
  bool adjacent = true;
  const char* next = nullptr;
  for (const at::Tensor& tensor : tensors) {
    size_t bytes = static_cast<size_t>(tensor.numel()) * tensor.element_size();
    bytes_ += bytes;
    if (bytes == 0) continue;
    const char* begin = static_cast<const char*>(tensor.data_ptr());
    if (!tensor.is_contiguous() || (next != nullptr && begin != next)) adjacent = false;
    next = begin + bytes;
  }
  if (adjacent) {
    // Each byte of the range belongs to exactly the tensor it would be copied to: use it as is.
    for (const at::Tensor& tensor : tensors) {
      if (tensor.numel() == 0) continue;
      data_ = tensor.data_ptr();
      storage_ = tensor;
      break;
    }
    return;
  }
  copied_ = true;
  // Where the tensors are (a CUDA call's allocations go to its stream, tensor_call.h).
  const at::Device device = tensors.empty() ? at::Device(at::kCPU) : tensors.front().device();
  storage_ = at::empty({static_cast<int64_t>(bytes_)},
                       at::TensorOptions().dtype(at::kByte).device(device));
  data_ = storage_.data_ptr();
  if (!fill) return;
  char* cursor = static_cast<char*>(data_);
  for (const at::Tensor& tensor : tensors) {
    CopyBytesFrom(tensor, cursor);
    cursor += static_cast<size_t>(tensor.numel()) * tensor.element_size();
  }
}

void PackedTensors::Unpack() const {
  if (!copied_) return;
  const char* cursor = static_cast<const char*>(data_);
  for (const at::Tensor& tensor : tensors_) {
    at::Tensor destination = tensor;
    CopyBytesInto(destination, cursor);
    cursor += static_cast<size_t>(tensor.numel()) * tensor.element_size();
  }
}

}  // namespace cohort::torch_ext

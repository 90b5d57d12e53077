// Turning torch's arguments into libcohort's: element types and reduce ops, checks with messages
// that say what was passed and what is accepted, and the staging helpers that let collectives
// run on contiguous buffers when torch hands over non-contiguous tensors or tensor lists.
// Used by ProcessGroupCohort, for CPU and CUDA tensors (device copies run on the current stream).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "collectives/types.h"
#include "torch_compat.h"

namespace cohort::torch_ext {

// libcohort's type for a tensor dtype, when it has one.
bool ToDataType(at::ScalarType scalar_type, DataType* type);

// How a tensor is described to libcohort: its type and element count.
struct Elements {
  DataType type = DataType::kUInt8;
  size_t count = 0;
};

// For operations that move data without computing on it: the tensor's own type when libcohort
// has it (so ranks that disagree about the type get an error), else its bytes.
Elements MovedElements(const at::Tensor& tensor);
// For reductions: the tensor's type; complex tensors reduce as pairs of reals for sum and avg.
// Throws (c10::Error) naming the dtype and op when the pair cannot be reduced.
Elements ReducedElements(const at::Tensor& tensor, const c10d::ReduceOp& op, const char* what);
// libcohort's reduce op for torch's on tensors of `type` (bool sum/product are logical or/and).
ReduceOp ToReduceOp(const c10d::ReduceOp& op, at::ScalarType type, const char* what);

// Checks shared by every operation; each names the operation (`what`) in its message.
void CheckSingle(const std::vector<at::Tensor>& tensors, const char* what);
void CheckSameDtype(const at::Tensor& expected, const at::Tensor& tensor, const char* what);
void CheckRoot(int64_t root, int size, const char* what);
std::string DescribeTensor(const at::Tensor& tensor);

// A contiguous tensor with `tensor`'s contents (itself when already contiguous).
at::Tensor ContiguousInput(const at::Tensor& tensor);

// A buffer whose bytes are several tensors laid end to end (allgather lists, alltoall lists,
// gather/scatter at the root ...). It is either one of the caller's tensors (when they already
// lie back to back in one storage, so nothing is copied) or a new uint8 tensor.
class PackedTensors {
 public:
  // A buffer for `tensors`, in order. When `fill` is set, a new buffer is filled with their
  // contents (inputs); otherwise it is left uninitialised (outputs, copied out by Unpack).
  PackedTensors(const std::vector<at::Tensor>& tensors, bool fill);
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  // Copies each part of the buffer into its tensor (no-op when the buffer is the tensors).
  void Unpack() const;
  bool copied() const { return copied_; }
  const at::Tensor& storage() const { return storage_; }

 private:
  std::vector<at::Tensor> tensors_;
  at::Tensor storage_;  // keeps the memory alive
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool copied_ = false;
};

// Copies `bytes` from a contiguous source into a tensor of any layout, and back; `source` /
// `destination` are memory of the tensor's device.
void CopyBytesInto(at::Tensor& destination, const void* source);
void CopyBytesFrom(const at::Tensor& source, void* destination);

}  // namespace cohort::torch_ext

#include "tensor_call.h"

#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#if COHORT_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include "collectives/device/backend.h"
#include "tensor_args.h"

namespace cohort::torch_ext {
namespace {

std::shared_ptr<device::Stream> CohortStream(const c10::Stream& stream) {
#if COHORT_TORCH_CUDA
  c10::cuda::CUDAStream cuda(stream);
  absl::StatusOr<std::shared_ptr<device::Stream>> wrapped =
      device::WrapCudaStream(cuda.stream(), stream.device_index());
  TORCH_CHECK(wrapped.ok(), "cohort: ", wrapped.status().message());
  return *wrapped;
#else
  TORCH_CHECK(false,
              "cohort: this build of the extension has no CUDA support (torch without "
              "CUDA, or libcohort built without the CUDA toolkit); stream ",
              stream, " cannot be used");
#endif
}

}  // namespace

const CallStreams::Pair& CallStreams::For(c10::Device device) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = pairs_.find(device.index());
  if (found != pairs_.end()) return found->second;
  c10::impl::VirtualGuardImpl impl(device.type());
  c10::Stream collectives = impl.getStreamFromGlobalPool(device);
  c10::Stream receives = impl.getStreamFromGlobalPool(device);
  Pair pair{collectives, receives, CohortStream(collectives), CohortStream(receives)};
  return pairs_.emplace(device.index(), std::move(pair)).first->second;
}

TensorCall::TensorCall(CallStreams& streams, const char* what,
                       c10::ArrayRef<const at::Tensor*> tensors, bool receive) {
  const at::Tensor* first = nullptr;
  for (const at::Tensor* tensor : tensors) {
    if (!tensor->defined()) continue;
    const at::Device device = tensor->device();
    TORCH_CHECK(device.is_cpu() || device.is_cuda(), "cohort: ", what,
                ": tensors must be on the CPU or a CUDA device; got ", DescribeTensor(*tensor));
    if (first == nullptr) {
      first = tensor;
    } else {
      TORCH_CHECK(device == first->device(), "cohort: ", what,
                  ": all tensors of one call must be on the same device; got ",
                  DescribeTensor(*first), " and ", DescribeTensor(*tensor));
    }
  }
  if (first == nullptr || !first->device().is_cuda()) return;
  const c10::Device device = first->device();
  const CallStreams::Pair& pair = streams.For(device);
  stream_ = receive ? pair.receives : pair.collectives;
  cohort_stream_ = receive ? pair.cohort_receives : pair.cohort_collectives;
  // The inputs are ready once what the caller enqueued so far on its stream is done.
  c10::impl::VirtualGuardImpl impl(device.type());
  c10::Stream current = impl.getStream(device);
  if (current != *stream_) {
    c10::Event ready(device.type());
    ready.record(current);
    ready.block(*stream_);
  }
  guard_.emplace(*stream_);
}

void TensorCall::CheckDense(const at::Tensor& tensor, const char* what) const {
  TORCH_CHECK(tensor.defined(), "cohort: ", what, ": got an undefined tensor");
  TORCH_CHECK(tensor.layout() == at::kStrided, "cohort: ", what,
              ": only dense (strided) tensors are supported; got a ", tensor.layout(),
              " tensor (sparse allreduce is not implemented; use the gloo backend for it)");
  if (cuda()) {
    TORCH_CHECK(tensor.device() == stream_->device(), "cohort: ", what, ": expected a tensor on ",
                stream_->device(), " like the call's others, got ", DescribeTensor(tensor));
  } else {
    TORCH_CHECK(tensor.device().is_cpu(), "cohort: ", what, ": expected a CPU tensor, got ",
                DescribeTensor(tensor));
  }
}

void TensorCall::Use(c10::ArrayRef<at::Tensor> tensors) const {
  if (!cuda()) return;
  for (const at::Tensor& tensor : tensors) {
    if (tensor.defined() && tensor.numel() > 0) tensor.record_stream(*stream_);
  }
}

}  // namespace cohort::torch_ext

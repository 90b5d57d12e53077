#include "collectives/device/nccl_api.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_kernels.h"

namespace cohort::device {
namespace {

constexpr const char* kLibrary = "libnccl.so.2";

template <typename Function>
bool Resolve(void* library, const char* name, Function& function, std::string& missing) {
  function = reinterpret_cast<Function>(dlsym(library, name));
  if (function == nullptr) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
  return function != nullptr;
}

absl::StatusOr<NcclApi> Load() {
  void* library = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* reason = dlerror();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load NCCL (", kLibrary, "): ", reason != nullptr ? reason : "unknown reason",
        "; install NCCL (libnccl2, or the nvidia-nccl wheel torch depends on) or add its "
        "directory to LD_LIBRARY_PATH"));
  }
  // Kept loaded for the life of the process (NCCL's own threads may outlive any one group).
  NcclApi api{};
  std::string missing;
  Resolve(library, "ncclGetVersion", api.get_version, missing);
  Resolve(library, "ncclGetUniqueId", api.get_unique_id, missing);
  Resolve(library, "ncclCommInitRankConfig", api.comm_init_rank_config, missing);
  Resolve(library, "ncclCommGetAsyncError", api.comm_get_async_error, missing);
  Resolve(library, "ncclCommFinalize", api.comm_finalize, missing);
  Resolve(library, "ncclCommDestroy", api.comm_destroy, missing);
  Resolve(library, "ncclCommAbort", api.comm_abort, missing);
  Resolve(library, "ncclGetErrorString", api.get_error_string, missing);
  Resolve(library, "ncclGetLastError", api.get_last_error, missing);
  Resolve(library, "ncclAllReduce", api.all_reduce, missing);
  Resolve(library, "ncclReduceScatter", api.reduce_scatter, missing);
  Resolve(library, "ncclAllGather", api.all_gather, missing);
  Resolve(library, "ncclBroadcast", api.broadcast, missing);
  Resolve(library, "ncclReduce", api.reduce, missing);
  if (!missing.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(kLibrary, " lacks ", missing, "; cohort needs NCCL ",
                     kOldestNcclVersion / 10000, ".", kOldestNcclVersion / 100 % 100, " or newer"));
  }
  int version = 0;
  if (api.get_version(&version) != ncclSuccess || version < kOldestNcclVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        kLibrary, " is version ", version, "; cohort needs ", kOldestNcclVersion, " (",
        kOldestNcclVersion / 10000, ".", kOldestNcclVersion / 100 % 100, ") or newer"));
  }
  api.get_device = &cudaGetDevice;
  api.set_device = &cudaSetDevice;
  api.scale_for_average = &cuda::ScaleForAverage;
  api.library =
      absl::StrCat(kLibrary, " ", version / 10000, ".", version / 100 % 100, ".", version % 100);
  return api;
}

}  // namespace

absl::StatusOr<const NcclApi*> LoadNcclApi() {
  static const absl::StatusOr<NcclApi> loaded = Load();
  if (!loaded.ok()) return loaded.status();
  return &*loaded;
}

const char* NcclResultName(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "ncclSuccess";
    case ncclUnhandledCudaError:
      return "ncclUnhandledCudaError";
    case ncclSystemError:
      return "ncclSystemError";
    case ncclInternalError:
      return "ncclInternalError";
    case ncclInvalidArgument:
      return "ncclInvalidArgument";
    case ncclInvalidUsage:
      return "ncclInvalidUsage";
    case ncclRemoteError:
      return "ncclRemoteError";
    case ncclInProgress:
      return "ncclInProgress";
    default:
      return "an unknown ncclResult_t";
  }
}

}  // namespace cohort::device

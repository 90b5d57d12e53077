// The NCCL functions the NCCL device group calls (and the CUDA runtime calls it makes beside
// them), as a table of function pointers. LoadNcclApi fills it from libnccl.so.2 with dlopen,
// so libcohort neither links NCCL nor needs it to load, and shares the NCCL that torch already
// loaded; tests fill it with fakes to check the group's logic without NCCL or a GPU.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "collectives/types.h"

namespace cohort::device {

struct NcclApi {
  ncclResult_t (*get_version)(int* version);
  ncclResult_t (*get_unique_id)(ncclUniqueId* id);
  ncclResult_t (*comm_init_rank_config)(ncclComm_t* comm, int size, ncclUniqueId id, int rank,
                                        ncclConfig_t* config);
  ncclResult_t (*comm_get_async_error)(ncclComm_t comm, ncclResult_t* state);
  ncclResult_t (*comm_finalize)(ncclComm_t comm);
  ncclResult_t (*comm_destroy)(ncclComm_t comm);
  ncclResult_t (*comm_abort)(ncclComm_t comm);
  const char* (*get_error_string)(ncclResult_t result);
  const char* (*get_last_error)(ncclComm_t comm);
  ncclResult_t (*all_reduce)(const void* send, void* recv, size_t count, ncclDataType_t type,
                             ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
  ncclResult_t (*reduce_scatter)(const void* send, void* recv, size_t recv_count,
                                 ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
                                 cudaStream_t stream);
  ncclResult_t (*all_gather)(const void* send, void* recv, size_t send_count, ncclDataType_t type,
                             ncclComm_t comm, cudaStream_t stream);
  ncclResult_t (*broadcast)(const void* send, void* recv, size_t count, ncclDataType_t type,
                            int root, ncclComm_t comm, cudaStream_t stream);
  ncclResult_t (*reduce)(const void* send, void* recv, size_t count, ncclDataType_t type,
                         ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream);
  // CUDA runtime: the current device, and the kernel that finishes an integer average.
  cudaError_t (*get_device)(int* device);
  cudaError_t (*set_device)(int device);
  cudaError_t (*scale_for_average)(void* data, DataType type, size_t count, int64_t divisor,
                                   cudaStream_t stream);
  std::string library;  // what was loaded ("libnccl.so.2 2.28.9"), for messages
};

// NCCL 2.14 is the oldest with non-blocking communicators and ncclCommFinalize.
inline constexpr int kOldestNcclVersion = 21400;

// Loads libnccl.so.2 once (later calls return the same table, or the same error). Fails, saying
// what to install or set, when the library or one of its functions is missing or it is older than
// kOldestNcclVersion.
absl::StatusOr<const NcclApi*> LoadNcclApi();

// "ncclRemoteError" for ncclRemoteError, ...
const char* NcclResultName(ncclResult_t result);

}  // namespace cohort::device

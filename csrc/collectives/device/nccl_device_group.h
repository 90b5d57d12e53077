// NcclDeviceGroup: device_group.h over an NCCL communicator, one rank per GPU of a host. Created
// from cohort's Bootstrap (rank 0's ncclGetUniqueId shared as in unique_id.h), initialised
// non-blocking so set-up has a timeout (ncclCommInitRankConfig, then ncclCommGetAsyncError
// polled), aborted with ncclCommAbort, and every NCCL failure turned into an absl::Status that
// names the call, the rank and NCCL's own reason (ncclGetLastError). Built where nccl.h is found
// (COHORT_HAVE_NCCL); libnccl.so.2 is loaded at run time (nccl_api.h).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "collectives/device/device_group.h"
#include "collectives/device/nccl_api.h"
#include "common/bootstrap.h"

namespace cohort::device {

struct NcclDeviceGroupOptions {
  int device = 0;  // the CUDA device this rank's communicator runs on
  // How long set-up may take, and how long one call may stay ncclInProgress before it fails.
  absl::Duration timeout = absl::Minutes(5);
  // Prefixes errors, e.g. "communicator 'world' rank 5 (host a)"; the group adds its own rank.
  std::string label;
  // The NCCL functions; nullptr loads libnccl.so.2 (LoadNcclApi). Tests pass fakes.
  const NcclApi* api = nullptr;
};

class NcclDeviceGroup final : public DeviceGroup {
 public:
  // Collective: every rank of the group calls it with the same `key` (fresh per group) and size.
  static absl::StatusOr<std::unique_ptr<NcclDeviceGroup>> Create(
      Bootstrap& bootstrap, const std::string& key, int rank, int size,
      NcclDeviceGroupOptions options = {});
  // ncclCommFinalize + ncclCommDestroy when healthy (bounded by the timeout), else ncclCommAbort.
  ~NcclDeviceGroup() override;

  const char* backend() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  StreamKind stream_kind() const override { return StreamKind::kCuda; }
  absl::Status CheckSupported(const DeviceCall& call) const override;
  absl::StatusOr<std::unique_ptr<Event>> Enqueue(const DeviceCall& call, Stream& stream) override;
  absl::Status AsyncError() override;
  void Abort(const absl::Status& reason) override;

  int device() const { return options_.device; }
  ncclComm_t comm() const { return comm_; }

 private:
  NcclDeviceGroup(const NcclApi* api, ncclComm_t comm, int rank, int size,
                  NcclDeviceGroupOptions options, std::string who);

  // Turns a failed NCCL call into a Status naming `what` (the call's subject) and NCCL's reason.
  absl::Status NcclError(ncclResult_t result, const char* call, const std::string& what) const;
  // Polls ncclCommGetAsyncError until the communicator leaves ncclInProgress.
  absl::Status WaitWhileInProgress(const char* call, const std::string& what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status AsyncErrorLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const NcclApi* const api_;
  ncclComm_t comm_;
  const int rank_;
  const int size_;
  const NcclDeviceGroupOptions options_;
  const std::string who_;
  std::atomic<bool> aborting_{false};  // read by waits that hold mutex_, so Abort can end them

  // NCCL communicators are not thread-safe: every call on comm_ holds this.
  mutable absl::Mutex mutex_;
  absl::Status failure_ ABSL_GUARDED_BY(mutex_);
  bool aborted_ ABSL_GUARDED_BY(mutex_) = false;
  uint64_t calls_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace cohort::device

// FakeDeviceGroup: the stand-in for NCCL inside a host, so the GPU schedules run in make test
// without a GPU. The "device buffers" are host memory and the streams FakeStreams; the ranks
// (threads of one process or forked processes) exchange through one shared-memory segment whose
// name rank 0 shares through the Bootstrap, by the same steps as NCCL's unique id (unique_id.h).
// Results are reduce.cc's, reduced in rank order, so every rank gets the same bits.
//
// Like NCCL it has no host-side fingerprint check of its own to rely on, but it does notice two
// ranks calling different collectives (it would otherwise hang or mix data, as NCCL would) and
// fails them with an error that says it is the stand-in's check. By default it refuses what NCCL
// cannot do (nccl_support.h), so a schedule that passes here does not hand NCCL a bitwise op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "collectives/device/device_group.h"
#include "common/bootstrap.h"

namespace cohort::device {

struct FakeDeviceGroupOptions {
  // How long set-up and each collective wait for the other ranks before failing (the stand-in
  // for NCCL's hang turned into an error by a watchdog).
  absl::Duration timeout = absl::Seconds(60);
  // Bytes each rank stages per step; larger collectives take several steps.
  size_t slot_bytes = size_t{1} << 20;
  // Serve only what NCCL serves (nccl_support.h); false serves every pair reduce.h serves.
  bool nccl_support_only = true;
  // Prefixes errors, e.g. "communicator 'world' rank 5 (host a)"; the group adds its own rank.
  std::string label;
};

class FakeDeviceGroup final : public DeviceGroup {
 public:
  // Collective: every rank of the group calls it with the same `key` (fresh per group) and size.
  static absl::StatusOr<std::unique_ptr<FakeDeviceGroup>> Create(
      Bootstrap& bootstrap, const std::string& key, int rank, int size,
      FakeDeviceGroupOptions options = {});
  ~FakeDeviceGroup() override;  // aborts what is still pending (its tasks fail)

  const char* backend() const override { return "fake"; }
  int rank() const override;
  int size() const override;
  StreamKind stream_kind() const override { return StreamKind::kFake; }
  absl::Status CheckSupported(const DeviceCall& call) const override;
  absl::StatusOr<std::unique_ptr<Event>> Enqueue(const DeviceCall& call, Stream& stream) override;
  absl::Status AsyncError() override;
  void Abort(const absl::Status& reason) override;

  // Every call enqueued so far, in order: tests assert which steps a schedule ran.
  std::vector<DeviceCall> calls() const;

  struct Core;  // shared with the tasks on the streams

 private:
  explicit FakeDeviceGroup(std::shared_ptr<Core> core);
  std::shared_ptr<Core> core_;
};

}  // namespace cohort::device

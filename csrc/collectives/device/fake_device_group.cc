// FakeDeviceGroup's exchange. One shared-memory segment per group: a header, one control block
// per rank, and one slot of `slot_bytes` per rank. A collective is cut into steps (as many as its
// largest per-rank piece needs slots); steps are numbered 1, 2, ... across the group's calls, the
// same on every rank because every rank issues the same calls. One step on rank r:
//
//   1. wait until every rank's `departed` >= step - 1 (all finished reading the previous step,
//      so the slots may be overwritten);
//   2. copy this rank's piece into slot r (and, on a call's first step, its call record);
//      store `arrived` = step (release);
//   3. wait until every rank's `arrived` >= step (acquire); on the first step compare the call
//      records: a mismatch fails every rank (the stand-in's own check);
//   4. compute this rank's output piece from the slots (reduce.cc's ReduceMany in rank order);
//      store `departed` = step (release).
//
// Steps run on the FakeStream's thread of the stream the call was enqueued on; `steps_done`
// makes a group's calls run in enqueue order even across streams. A wait gives up at the call's
// deadline (naming the ranks it waits for), when this group is aborted, or when a peer has set
// its `aborted` flag (each rank writes only its own flag and reason, so no reason is torn).
// Rank 0 unlinks the segment as soon as every rank has mapped it: nothing is left in /dev/shm.
#include "collectives/device/fake_device_group.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "collectives/device/fake_stream.h"
#include "collectives/device/nccl_support.h"
#include "collectives/device/unique_id.h"
#include "collectives/reduce.h"

namespace cohort::device {
namespace {

constexpr uint64_t kMagic = 0x64667472686f6363ull;  // "cchortfd"
constexpr size_t kMinSlotBytes = 4096;
constexpr size_t kReasonBytes = 256;

struct CallRecord {
  uint64_t sequence;
  uint64_t count;
  int32_t op;
  int32_t type;
  int32_t reduce;
  int32_t root;
  bool operator==(const CallRecord&) const = default;
};

struct SegmentHeader {
  uint64_t magic;
  int32_t size;
  int32_t reserved;
  uint64_t slot_bytes;
  std::atomic<int32_t> attached;
};

struct alignas(64) RankControl {
  std::atomic<uint64_t> arrived;
  std::atomic<uint64_t> departed;
  std::atomic<uint32_t> aborted;
  char reason[kReasonBytes];
  CallRecord call;
};

static_assert(std::atomic<uint64_t>::is_always_lock_free &&
                  std::atomic<int32_t>::is_always_lock_free,
              "the segment's atomics must be lock-free to work across processes");

size_t AlignUp(size_t bytes) { return (bytes + 63) / 64 * 64; }
size_t ControlsOffset() { return AlignUp(sizeof(SegmentHeader)); }
size_t SlotsOffset(int size) {
  return ControlsOffset() + AlignUp(sizeof(RankControl) * static_cast<size_t>(size));
}
size_t SegmentBytes(int size, size_t slot_bytes) {
  return SlotsOffset(size) + static_cast<size_t>(size) * slot_bytes;
}

std::string ErrnoText(int error) { return std::strerror(error); }

std::string NewSegmentName() {
  static std::atomic<uint64_t> counter{0};
  std::random_device random;
  return absl::StrCat("/cohort-fakedev-", getpid(), "-", counter.fetch_add(1), "-",
                      absl::Hex(random()));
}

CallRecord RecordOf(const DeviceCall& call, uint64_t sequence) {
  return {sequence,
          call.count,
          static_cast<int32_t>(call.op),
          static_cast<int32_t>(call.type),
          static_cast<int32_t>(call.reduce),
          static_cast<int32_t>(call.root)};
}

std::string DescribeRecord(const CallRecord& record) {
  DeviceCall call;
  call.op = static_cast<OpType>(record.op);
  call.type = static_cast<DataType>(record.type);
  call.reduce = static_cast<ReduceOp>(record.reduce);
  call.root = record.root;
  call.count = record.count;
  return absl::StrCat(DescribeDeviceCall(call), " as call #", record.sequence);
}

void Backoff(int& spins) {
  ++spins;
  if (spins < 32) {
    std::this_thread::yield();
    return;
  }
  std::this_thread::sleep_for(std::chrono::microseconds(10 << std::min(spins - 32, 6)));
}

}  // namespace

struct FakeDeviceGroup::Core {
  int rank = 0;
  int size = 1;
  FakeDeviceGroupOptions options;
  std::string who;
  void* base = nullptr;
  size_t bytes = 0;
  SegmentHeader* header = nullptr;
  RankControl* controls = nullptr;
  uint8_t* slots = nullptr;

  absl::Mutex mutex;
  uint64_t calls_enqueued ABSL_GUARDED_BY(mutex) = 0;
  uint64_t steps_assigned ABSL_GUARDED_BY(mutex) = 0;
  uint64_t steps_done ABSL_GUARDED_BY(mutex) = 0;
  absl::Status failure ABSL_GUARDED_BY(mutex);
  std::vector<DeviceCall> calls ABSL_GUARDED_BY(mutex);
  std::atomic<bool> stopped{false};  // aborted, failed or destroyed: every wait gives up

  ~Core() {
    if (base != nullptr) munmap(base, bytes);
  }

  uint8_t* Slot(int r) const { return slots + static_cast<size_t>(r) * options.slot_bytes; }

  void Fail(const absl::Status& status) {
    {
      absl::MutexLock lock(&mutex);
      if (failure.ok()) failure = status;
    }
    stopped.store(true);
  }

  absl::Status Failure() {
    absl::MutexLock lock(&mutex);
    return failure.ok() ? absl::CancelledError(absl::StrCat(who, ": the group was destroyed"))
                        : failure;
  }

  size_t PerStep(const DeviceCall& call) const {
    const size_t pieces = call.op == OpType::kReduceScatter ? static_cast<size_t>(size) : 1;
    return std::max<size_t>(1, options.slot_bytes / (DataTypeSize(call.type) * pieces));
  }

  uint64_t StepsFor(const DeviceCall& call) const {
    const size_t per_step = PerStep(call);
    return std::max<uint64_t>(1, (call.count + per_step - 1) / per_step);
  }

  // Waits until ready(r) holds for every rank r.
  template <class Ready>
  absl::Status WaitAll(const Ready& ready, const char* what, absl::Time deadline,
                       const DeviceCall& call, uint64_t sequence) {
    for (int spins = 0;; Backoff(spins)) {
      bool all = true;
      for (int r = 0; r < size && all; ++r) all = ready(r);
      if (all) return absl::OkStatus();
      if (stopped.load()) return Failure();
      for (int r = 0; r < size; ++r) {
        if (r != rank && controls[r].aborted.load(std::memory_order_acquire) != 0) {
          return absl::UnavailableError(absl::StrCat(
              who, ": ", DescribeDeviceCall(call), " (call #", sequence, "): rank ", r,
              " aborted the group: ",
              std::string(controls[r].reason, strnlen(controls[r].reason, kReasonBytes))));
        }
      }
      if (absl::Now() > deadline) {
        std::vector<int> missing;
        for (int r = 0; r < size; ++r) {
          if (!ready(r)) missing.push_back(r);
        }
        return absl::DeadlineExceededError(absl::StrCat(
            who, ": ", DescribeDeviceCall(call), " (call #", sequence, ") waited ",
            absl::FormatDuration(options.timeout), " for rank(s) ", absl::StrJoin(missing, ", "),
            " to ", what, " (NCCL would hang here; every rank must issue the same collectives)"));
      }
    }
  }

  void Publish(const DeviceCall& call, size_t begin, size_t n) {
    const size_t element = DataTypeSize(call.type);
    const auto* send = static_cast<const uint8_t*>(call.send);
    uint8_t* mine = Slot(rank);
    switch (call.op) {
      case OpType::kAllreduce:
      case OpType::kReduce:
      case OpType::kAllgather:
        if (n > 0) std::memcpy(mine, send + begin * element, n * element);
        break;
      case OpType::kBroadcast:
        if (rank == call.root && n > 0) std::memcpy(mine, send + begin * element, n * element);
        break;
      case OpType::kReduceScatter:
        for (int block = 0; block < size && n > 0; ++block) {
          std::memcpy(mine + static_cast<size_t>(block) * n * element,
                      send + (static_cast<size_t>(block) * call.count + begin) * element,
                      n * element);
        }
        break;
      default:
        break;
    }
  }

  void Combine(const DeviceCall& call, size_t begin, size_t n) {
    if (n == 0) return;
    const size_t element = DataTypeSize(call.type);
    auto* recv = static_cast<uint8_t*>(call.recv);
    std::vector<const void*> inputs(static_cast<size_t>(size));
    auto reduce_into = [&](uint8_t* out, size_t offset) {
      for (int r = 0; r < size; ++r) inputs[r] = Slot(r) + offset;
      GetReduceManyFn(call.type, call.reduce)(out, inputs.data(), size, n);
      if (call.reduce == ReduceOp::kAvg) ScaleForAverage(out, call.type, n, size);
    };
    switch (call.op) {
      case OpType::kAllreduce:
        reduce_into(recv + begin * element, 0);
        break;
      case OpType::kReduce:
        if (rank == call.root) reduce_into(recv + begin * element, 0);
        break;
      case OpType::kReduceScatter:
        reduce_into(recv + begin * element, static_cast<size_t>(rank) * n * element);
        break;
      case OpType::kAllgather:
        for (int r = 0; r < size; ++r) {
          std::memcpy(recv + (static_cast<size_t>(r) * call.count + begin) * element, Slot(r),
                      n * element);
        }
        break;
      case OpType::kBroadcast:
        std::memcpy(recv + begin * element, Slot(call.root), n * element);
        break;
      default:
        break;
    }
  }

  // One call, on its stream's thread.
  absl::Status Run(const DeviceCall& call, uint64_t sequence, uint64_t first_step, uint64_t steps) {
    const absl::Time deadline = absl::Now() + options.timeout;
    {
      // Earlier calls of this group (maybe on another stream) run first.
      absl::MutexLock lock(&mutex);
      auto turn = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return steps_done == first_step || stopped.load();
      };
      if (!mutex.AwaitWithDeadline(absl::Condition(&turn), deadline)) {
        return absl::DeadlineExceededError(absl::StrCat(
            who, ": ", DescribeDeviceCall(call), " (call #", sequence, ") waited ",
            absl::FormatDuration(options.timeout),
            " for this rank's earlier collectives (enqueued on another stream) to finish"));
      }
    }
    if (stopped.load()) return Failure();
    const CallRecord record = RecordOf(call, sequence);
    const size_t per_step = PerStep(call);
    RankControl& mine = controls[rank];
    for (uint64_t s = 0; s < steps; ++s) {
      const uint64_t step = first_step + s + 1;
      const size_t begin = static_cast<size_t>(s) * per_step;
      const size_t n = std::min(per_step, call.count - std::min(call.count, begin));
      absl::Status status = WaitAll(
          [&](int r) { return controls[r].departed.load(std::memory_order_acquire) >= step - 1; },
          "finish the previous step", deadline, call, sequence);
      if (!status.ok()) return status;
      Publish(call, begin, n);
      if (s == 0) mine.call = record;
      mine.arrived.store(step, std::memory_order_release);
      status = WaitAll(
          [&](int r) { return controls[r].arrived.load(std::memory_order_acquire) >= step; },
          "join", deadline, call, sequence);
      if (!status.ok()) return status;
      if (s == 0) {
        for (int r = 0; r < size; ++r) {
          if (controls[r].call == record) continue;
          return absl::FailedPreconditionError(absl::StrCat(
              who, ": mismatched collectives: this rank called ", DescribeRecord(record), ", rank ",
              r, " called ", DescribeRecord(controls[r].call),
              " (found by the fake device group; NCCL would hang or mix data instead)"));
        }
      }
      Combine(call, begin, n);
      mine.departed.store(step, std::memory_order_release);
    }
    absl::MutexLock lock(&mutex);
    steps_done = first_step + steps;
    return absl::OkStatus();
  }
};

FakeDeviceGroup::FakeDeviceGroup(std::shared_ptr<Core> core) : core_(std::move(core)) {}

FakeDeviceGroup::~FakeDeviceGroup() {
  core_->Fail(absl::CancelledError(absl::StrCat(core_->who, ": the group was destroyed")));
}

absl::StatusOr<std::unique_ptr<FakeDeviceGroup>> FakeDeviceGroup::Create(
    Bootstrap& bootstrap, const std::string& key, int rank, int size,
    FakeDeviceGroupOptions options) {
  auto core = std::make_shared<Core>();
  core->rank = rank;
  core->size = size;
  core->who = absl::StrCat(options.label, options.label.empty() ? "" : ": ",
                           "fake device group rank ", rank, "/", size);
  if (size <= 0 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat(core->who, ": rank out of range"));
  }
  options.slot_bytes = AlignUp(std::max(options.slot_bytes, kMinSlotBytes));
  core->options = options;
  core->bytes = SegmentBytes(size, options.slot_bytes);

  // Rank 0 creates the segment and shares its name as the group's id.
  std::string created;
  struct Unlink {
    std::string* name;
    ~Unlink() {
      if (!name->empty()) shm_unlink(name->c_str());
    }
  } unlink{&created};
  auto make_segment = [&]() -> absl::StatusOr<std::string> {
    const std::string name = NewSegmentName();
    const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
      return absl::InternalError(absl::StrCat("shm_open(", name, "): ", ErrnoText(errno)));
    }
    created = name;
    const bool sized = ftruncate(fd, static_cast<off_t>(core->bytes)) == 0;
    const int error = errno;
    void* base =
        sized ? mmap(nullptr, core->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    const int map_error = errno;
    close(fd);
    if (!sized) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot size ", name, " to ", core->bytes, " bytes: ", ErrnoText(error)));
    }
    if (base == MAP_FAILED) {
      return absl::ResourceExhaustedError(absl::StrCat("mmap ", name, ": ", ErrnoText(map_error)));
    }
    core->base = base;
    auto* header = static_cast<SegmentHeader*>(base);
    header->size = size;
    header->slot_bytes = options.slot_bytes;
    header->attached.store(1);
    header->magic = kMagic;
    return name;
  };
  absl::StatusOr<std::string> name =
      ShareUniqueId(bootstrap, key, rank, size, options.timeout, 0, core->who, make_segment);
  if (!name.ok()) return name.status();

  if (rank != 0) {
    const int fd = shm_open(name->c_str(), O_RDWR, 0);
    if (fd < 0) {
      return absl::InternalError(absl::StrCat(core->who, ": cannot open rank 0's segment ", *name,
                                              ": ", ErrnoText(errno)));
    }
    struct stat info {};
    const bool sized = fstat(fd, &info) == 0 && static_cast<size_t>(info.st_size) == core->bytes;
    void* base =
        sized ? mmap(nullptr, core->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd);
    if (base == MAP_FAILED) {
      return absl::FailedPreconditionError(absl::StrCat(
          core->who, ": rank 0's segment ", *name, " is not the ", core->bytes,
          " bytes this rank expects; every rank must use the same size and slot_bytes"));
    }
    core->base = base;
    auto* header = static_cast<SegmentHeader*>(base);
    if (header->magic != kMagic || header->size != size ||
        header->slot_bytes != options.slot_bytes) {
      return absl::FailedPreconditionError(absl::StrCat(
          core->who, ": rank 0's segment ", *name, " was made for ", header->size, " ranks and ",
          header->slot_bytes, "-byte slots; this rank has ", size, " and ", options.slot_bytes));
    }
    header->attached.fetch_add(1);
  }
  core->header = static_cast<SegmentHeader*>(core->base);
  core->controls =
      reinterpret_cast<RankControl*>(static_cast<uint8_t*>(core->base) + ControlsOffset());
  core->slots = static_cast<uint8_t*>(core->base) + SlotsOffset(size);

  if (rank == 0) {
    // Unlink once everyone has it mapped (or at the deadline: a missing rank then fails).
    const absl::Time deadline = absl::Now() + options.timeout;
    for (int spins = 0; core->header->attached.load() < size; Backoff(spins)) {
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            core->who, ": only ", core->header->attached.load(), " of ", size,
            " ranks mapped the group's segment within ", absl::FormatDuration(options.timeout)));
      }
    }
  }
  return std::unique_ptr<FakeDeviceGroup>(new FakeDeviceGroup(std::move(core)));
}

int FakeDeviceGroup::rank() const { return core_->rank; }
int FakeDeviceGroup::size() const { return core_->size; }

absl::Status FakeDeviceGroup::CheckSupported(const DeviceCall& call) const {
  absl::Status shape = CheckDeviceCallShape(call, core_->rank, core_->size, core_->who);
  if (!shape.ok()) return shape;
  if (call.op == OpType::kAllgather || call.op == OpType::kBroadcast) return absl::OkStatus();
  const std::string who = absl::StrCat(core_->who, ": ", DescribeDeviceCall(call));
  if (core_->options.nccl_support_only)
    return NcclReductionFor(call.type, call.reduce, who).status();
  absl::Status supported = CheckReduceSupported(call.type, call.reduce);
  if (supported.ok()) return supported;
  return absl::InvalidArgumentError(absl::StrCat(who, ": ", supported.message()));
}

absl::StatusOr<std::unique_ptr<Event>> FakeDeviceGroup::Enqueue(const DeviceCall& call,
                                                                Stream& stream) {
  absl::Status supported = CheckSupported(call);
  if (!supported.ok()) return supported;
  auto* fake = dynamic_cast<FakeStream*>(&stream);
  if (fake == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(core_->who, ": ", DescribeDeviceCall(call),
                                                   ": the fake device group runs on fake "
                                                   "streams, not on a ",
                                                   StreamKindName(stream.kind()), " stream"));
  }
  const uint64_t steps = core_->StepsFor(call);
  uint64_t sequence = 0;
  uint64_t first_step = 0;
  {
    absl::MutexLock lock(&core_->mutex);
    if (!core_->failure.ok()) return core_->failure;
    sequence = ++core_->calls_enqueued;
    first_step = core_->steps_assigned;
    core_->steps_assigned += steps;
    core_->calls.push_back(call);
  }
  std::shared_ptr<Core> core = core_;
  absl::Status enqueued = fake->Enqueue([core, call, sequence, first_step, steps] {
    absl::Status status = core->Run(call, sequence, first_step, steps);
    if (!status.ok()) core->Fail(status);
    return status;
  });
  if (!enqueued.ok()) {
    // The stream had failed: this call's steps will never run, so the group cannot go on.
    core_->Fail(enqueued);
    return enqueued;
  }
  return fake->Record();
}

absl::Status FakeDeviceGroup::AsyncError() {
  absl::MutexLock lock(&core_->mutex);
  return core_->failure;
}

void FakeDeviceGroup::Abort(const absl::Status& reason) {
  const absl::Status status =
      reason.ok() ? absl::AbortedError(absl::StrCat(core_->who, ": aborted")) : reason;
  core_->Fail(status);
  RankControl& mine = core_->controls[core_->rank];
  if (mine.aborted.load() == 0) {
    const std::string text(status.message());
    const size_t length = std::min(text.size(), kReasonBytes - 1);
    std::memcpy(mine.reason, text.data(), length);
    mine.reason[length] = '\0';
    mine.aborted.store(1, std::memory_order_release);
  }
}

std::vector<DeviceCall> FakeDeviceGroup::calls() const {
  absl::MutexLock lock(&core_->mutex);
  return core_->calls;
}

}  // namespace cohort::device

// The engine's operations on CUDA buffers (device_runtime.h says how they run). An operation's
// life:
//
//   SubmitDevice (the caller's thread, device_submit_mutex_ held so that device steps are
//   enqueued in issue order): the communicator prepares its device side on its first CUDA
//   operation, the algorithm is chosen (memory kind included), its device steps are enqueued on
//   the caller's stream behind gates, and the operation is queued like any other.
//
//   ExecuteDeviceLocked (the executing thread, in issue order): the algorithm's host part runs
//   (fingerprints, rails, a staged host algorithm) and opens the gates; the operation then waits
//   in device_pending_. A staged point-to-point transfer moves between the staging memory and
//   its peer like a host one: a send first waits for its device-to-host copy, a receive goes to
//   device_pending_ when its data have arrived (and opens the gate before the copy to the device).
//
//   PollDeviceLocked (whoever drives the engine): a pending operation completes when its last
//   device step did. A device error, NCCL's asynchronous error or the deadline fails it and breaks
//   the communicator; BreakLocked then fails the device side (gates opened, group aborted).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "collectives/engine.h"
#include "common/status.h"

namespace cohort {
namespace {

bool IsPointToPoint(OpType op) { return op == OpType::kSend || op == OpType::kRecv; }

}  // namespace

const std::string& Engine::ForcedFor(const OpArgs& args, const std::string& per_call) const {
  if (!per_call.empty()) return per_call;
  static const std::string none;
  if (args.memory != MemoryKind::kHost && !config_.algorithm.empty()) {
    for (const Algorithm& algorithm : Algorithms()) {
      if (algorithm.name == config_.algorithm && !algorithm.ServesMemory(args.memory)) return none;
    }
  }
  return config_.algorithm;
}

std::shared_ptr<Work> Engine::SubmitDevice(OpArgs args, const std::string& algorithm_name,
                                           absl::Duration timeout) {
  auto operation = std::make_shared<Operation>();
  absl::MutexLock device_lock(&device_submit_mutex_);
  absl::Status valid = device_->Check(args);
  if (valid.ok()) valid = device_->Prepare(args.stream->device());
  if (valid.ok() && broken_flag_.load(std::memory_order_acquire)) {
    absl::MutexLock lock(&queue_mutex_);
    valid = absl::FailedPreconditionError(absl::StrCat(
        "this communicator failed earlier and cannot run ", OpTypeName(args.op),
        " on cuda memory: ", broken_.message(), ". Create a new communicator to continue"));
  }
  absl::Status prepare = Prepare(*operation, std::move(args), algorithm_name, timeout);
  if (valid.ok()) valid = prepare;
  if (valid.ok()) valid = EnqueueDevice(*operation);
  Fingerprint& fingerprint = operation->fingerprint;
  std::shared_ptr<Work> work;
  {
    absl::MutexLock lock(&queue_mutex_);
    uint64_t sequence = 0;
    if (!IsPointToPoint(operation->args.op)) sequence = next_sequence_++;
    fingerprint.sequence = sequence;
    work = std::make_shared<Work>(shared_from_this(), operation->args.op, sequence);
    operation->work = work;
    if (operation->algorithm != nullptr) work->set_algorithm(operation->algorithm->name);
    operation->trace_id = recorder_->Queued(
        fingerprint, IsPointToPoint(operation->args.op) ? operation->args.root : -1,
        operation->algorithm != nullptr ? &operation->algorithm->name : nullptr);
    if (valid.ok()) valid = RefusalLocked(fingerprint);
    if (valid.ok()) {
      work->set_device_event(operation->plan->done());
      queue_.push_back(operation);
      queued_.fetch_add(1, std::memory_order_relaxed);
      KickLocked();
    }
  }
  if (!valid.ok()) {
    // Whatever was enqueued must still drain: the plan's gates open as it goes, and the event
    // recorded now tells the runtime when the stream has passed its memory.
    if (operation->plan != nullptr) operation->plan->Finish().IgnoreError();
    operation->plan.reset();
    recorder_->Finished(operation->trace_id, valid, 0);
    work->Complete(valid);
    return work;
  }
  if (in_flight_count_.load(std::memory_order_relaxed) > 0 ||
      device_pending_count_.load(std::memory_order_relaxed) > 0) {
    transport_->Wake();
  }
  return work;
}

absl::Status Engine::EnqueueDevice(Operation& operation) {
  OpArgs& args = operation.args;
  operation.plan = std::make_unique<DevicePlan>(*device_, args, config_.tuning, config_.algorithm);
  DevicePlan& plan = *operation.plan;
  const size_t bytes = args.count * args.element_size();
  switch (args.op) {
    case OpType::kSend: {
      // Copied to pinned memory on the stream, sent from there once the copy is done.
      COHORT_ASSIGN_OR_RETURN(char* staging, plan.Staging(bytes));
      COHORT_RETURN_IF_ERROR(plan.stream().CopyAsync(staging, args.input, bytes));
      COHORT_RETURN_IF_ERROR(plan.AddEvent().status());
      COHORT_RETURN_IF_ERROR(plan.Finish());
      args.input = staging;
      return absl::OkStatus();
    }
    case OpType::kRecv: {
      // Received into pinned memory; the copy to the device waits at a gate for the data.
      COHORT_ASSIGN_OR_RETURN(char* staging, plan.Staging(bytes));
      COHORT_RETURN_IF_ERROR(plan.AddGate().status());
      COHORT_RETURN_IF_ERROR(plan.stream().CopyAsync(args.output, staging, bytes));
      COHORT_RETURN_IF_ERROR(plan.Finish());
      args.output = staging;
      return absl::OkStatus();
    }
    default:
      break;
  }
  if (operation.algorithm == nullptr || !operation.algorithm->enqueue) {
    return absl::InternalError(absl::StrCat(
        OpTypeName(args.op), " on cuda memory was given to ",
        operation.algorithm == nullptr ? std::string("no algorithm") : operation.algorithm->name,
        ", which has no device steps; report this as a bug"));
  }
  COHORT_RETURN_IF_ERROR(operation.algorithm->enqueue(plan));
  return plan.Finish();
}

void Engine::ExecuteDeviceLocked(std::shared_ptr<Operation> owner) {
  Operation& operation = *owner;
  absl::Status status = RunCollectiveLocked(operation);
  if (!status.ok()) {
    operation.work->Complete(status);  // the communicator is broken; the plan opens its gates
    return;
  }
  // The host part is done: a gate it did not open (nothing to move) opens now.
  operation.plan->OpenAll();
  AwaitDeviceLocked(std::move(owner));
}

absl::Status Engine::AwaitDeviceSendLocked(Operation& operation) {
  OpContext context(*transport_, *config_.topology, operation.fingerprint, operation.args,
                    operation.timeout, config_.settings, scratch_, aborted_);
  // A receive posted before this send may hold the stream at its gate: it opens as its data come.
  context.set_device_poll([this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    CompleteFinishedTransfersLocked();
  });
  absl::Status status = operation.plan->WaitEvent(
      context, 0, "the copy of the message from the device to host memory");
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("send of ", operation.request.length,
                                                  " bytes (tag ", operation.args.tag, ") to rank ",
                                                  operation.args.root, " on ", Where(), ": ",
                                                  status.message()));
}

void Engine::AwaitDeviceLocked(std::shared_ptr<Operation> operation) {
  if (operation->args.op == OpType::kRecv) operation->plan->OpenAll();
  operation->device_deadline = Deadline::In(operation->timeout);
  device_pending_.push_back(std::move(operation));
  device_pending_count_.fetch_add(1);
  // Not polled here: this runs inside other operations' waits too (the device poll hook), where
  // a failure must not break the communicator under them; RunLocked polls next.
}

bool Engine::PollDeviceLocked() {
  bool completed = false;
  for (auto it = device_pending_.begin(); it != device_pending_.end();) {
    Operation& operation = **it;
    absl::StatusOr<bool> done = operation.plan->QueryDone();
    absl::Status failure;
    if (!done.ok()) {
      failure = done.status();
    } else if (*done) {
      operation.plan->MarkFinished();
      operation.work->Complete(absl::OkStatus());
      it = device_pending_.erase(it);
      device_pending_count_.fetch_sub(1);
      completed = true;
      continue;
    } else if (operation.device_deadline.Expired()) {
      failure = absl::DeadlineExceededError(
          "the device steps did not finish: a rank's GPU work may be stuck or its GPU busy "
          "(NCCL_DEBUG=INFO shows where NCCL waits)");
    } else {
      ++it;
      continue;
    }
    // A failure of the device steps: the operation fails with it, the communicator breaks.
    std::shared_ptr<Operation> failed = std::move(*it);
    device_pending_.erase(it);
    device_pending_count_.fetch_sub(1);
    absl::Status described = Describe(*failed, failure);
    BreakLocked(described, failed.get());
    failed->work->Complete(described);
    return true;
  }
  if (!device_pending_.empty()) {
    absl::Status async = device_->AsyncError();
    if (!async.ok()) {
      std::shared_ptr<Operation> failed = std::move(device_pending_.front());
      device_pending_.pop_front();
      device_pending_count_.fetch_sub(1);
      absl::Status described = Describe(*failed, async);
      BreakLocked(described, failed.get());
      failed->work->Complete(described);
      return true;
    }
  }
  return completed;
}

void Engine::FailDeviceLocked(const absl::Status& status) {
  device_->Fail(status);
  std::deque<std::shared_ptr<Operation>> pending;
  pending.swap(device_pending_);
  device_pending_count_.store(0);
  for (auto& operation : pending) {
    recorder_->Finished(operation->trace_id, status, 0);
    operation->work->Complete(status);
  }
}

}  // namespace cohort

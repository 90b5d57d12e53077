#include "collectives/transport/wire.h"

#include "absl/strings/str_cat.h"

namespace cohort {

std::string Fingerprint::Describe() const {
  std::string text = absl::StrCat(OpTypeName(op), "(", DataTypeName(dtype), " x ", count);
  switch (op) {
    case OpType::kAllreduce:
    case OpType::kReduceScatter:
      absl::StrAppend(&text, ", ", ReduceOpName(reduce_op));
      break;
    case OpType::kReduce:
      absl::StrAppend(&text, ", ", ReduceOpName(reduce_op), ", root ", root);
      break;
    case OpType::kBroadcast:
    case OpType::kGather:
    case OpType::kScatter:
      absl::StrAppend(&text, ", root ", root);
      break;
    default:
      break;
  }
  absl::StrAppend(&text, ")");
  return text;
}

const char* BlameName(Blame blame) {
  switch (blame) {
    case Blame::kNone:
      return "none";
    case Blame::kLost:
      return "lost";
    case Blame::kStopped:
      return "stopped";
    case Blame::kTimeout:
      return "timeout";
    case Blame::kRemoved:
      return "removed";
  }
  return "?";
}

}  // namespace cohort

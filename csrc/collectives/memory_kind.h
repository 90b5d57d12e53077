// Where an operation's buffers live: host memory, or CUDA device memory (ordered on a stream).
// Operations carry it (OpArgs::memory), algorithms declare the kinds they serve, and channels'
// windows register by it. MemoryKindName is defined in transport/window.cc.
#pragma once

#include <cstdint>

namespace cohort {

enum class MemoryKind : uint8_t { kHost = 0, kCuda = 1 };
const char* MemoryKindName(MemoryKind kind);  // "host", "cuda"

}  // namespace cohort

// What differs between the torch versions the extension builds against, in one place: torch 1.x
// registers a c10d::ProcessGroup subclass as a backend, torch 2.x a c10d::Backend subclass (which
// torch wraps in a ProcessGroup itself). Everything else in python/csrc is version-neutral.
#pragma once

#include <optional>
#include <vector>

#include <torch/version.h>

#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#define COHORT_TORCH_BACKEND_CLASS 1
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#define COHORT_TORCH_BACKEND_CLASS 0
#endif
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace cohort::torch_ext {

#if COHORT_TORCH_BACKEND_CLASS
using BackendBase = c10d::Backend;
// torch 2.x takes std::optional where 1.x took c10::optional (its own class then).
using OptionalTensors = std::optional<std::vector<at::Tensor>>;
#else
using BackendBase = c10d::ProcessGroup;
using OptionalTensors = c10::optional<std::vector<at::Tensor>>;
#endif

}  // namespace cohort::torch_ext

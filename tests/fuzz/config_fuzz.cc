// The COHORT_* value parsers: sizes (8, 64K, 1M), durations (300, 5m, 250ms), booleans, enums
// and integers with bounds, through the registry exactly as the environment reaches them. The
// first byte picks the variable; the rest is its value. Invariants: a parsed size or duration
// prints back to a value that parses to the same thing, and nothing accepted is negative.
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "fuzz_input.h"

using namespace cohort;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string value = fuzz::Text(data + 1, size - 1);
  if (value.find('\0') != std::string::npos) return 0;  // the environment cannot hold one

  auto bytes = config::ParseBytes(value);
  if (bytes.ok()) {
    if (*bytes < 0) __builtin_trap();
    auto again = config::ParseBytes(absl::StrCat(*bytes));
    if (!again.ok() || *again != *bytes) __builtin_trap();
  }
  auto duration = config::ParseDuration(value);
  if (duration.ok()) {
    if (*duration < absl::ZeroDuration()) __builtin_trap();
  }

  const auto& registry = config::Registry();
  const config::Variable& variable = registry[data[0] % registry.size()];
  setenv(variable.name, value.c_str(), 1);
  switch (variable.type) {
    case config::Type::kString:
    case config::Type::kChoice: {
      auto read = config::GetString(variable.name);
      if (read.ok() && variable.type == config::Type::kChoice && !read->empty()) {
        bool listed = false;
        for (const std::string& choice : variable.choices) listed |= choice == *read;
        if (!listed) __builtin_trap();
      }
      break;
    }
    case config::Type::kInt:
    case config::Type::kBytes: {
      auto read = variable.type == config::Type::kInt ? config::GetInt(variable.name)
                                                      : config::GetBytes(variable.name);
      if (read.ok() && (*read < variable.min || *read > variable.max)) __builtin_trap();
      break;
    }
    case config::Type::kBool:
      (void)config::GetBool(variable.name);
      break;
    case config::Type::kDuration:
      (void)config::GetDuration(variable.name);
      break;
  }
  (void)config::ValidateEnvironment();
  unsetenv(variable.name);
  return 0;
}

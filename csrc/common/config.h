// The one registry of every COHORT_* environment variable: name, type, default, one-line doc.
// Parsing, validation, --help text and docs/config.md all come from this table (config.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cohort::config {

enum class Type { kString, kInt, kBool, kDuration, kBytes, kChoice };

struct Variable {
  const char* name;
  Type type;
  const char* default_value;  // as the user would write it; "" means unset
  const char* doc;            // one line
  std::vector<std::string> choices = {};  // kChoice: the accepted values
  int64_t min = INT64_MIN;                // kInt / kBytes: inclusive bounds
  int64_t max = INT64_MAX;
};

// Every variable cohort reads, in documentation order.
const std::vector<Variable>& Registry();

// The registry entry for `name`, or nullptr.
const Variable* Find(const std::string& name);

// Checks every COHORT_* variable set in the environment. A bad value gives an error naming the
// variable, the value and what is accepted. Unknown COHORT_* names are reported as warnings.
absl::Status ValidateEnvironment();

// Typed reads of a registered variable: the environment's value, else the default.
// A value that does not parse is an InvalidArgument error naming variable, value and accepted.
absl::StatusOr<std::string> GetString(const std::string& name);
absl::StatusOr<int64_t> GetInt(const std::string& name);
absl::StatusOr<bool> GetBool(const std::string& name);
absl::StatusOr<absl::Duration> GetDuration(const std::string& name);
absl::StatusOr<int64_t> GetBytes(const std::string& name);

// Parsers shared with command-line flags.
absl::StatusOr<int64_t> ParseBytes(const std::string& text);      // 8, 64K, 1M, 2G (powers of 2)
absl::StatusOr<absl::Duration> ParseDuration(const std::string& text);  // 300, 300s, 5m, 250ms

// What a variable accepts, in words ("an integer from 1 to 64", "one of ERROR, WARN, ...").
std::string Accepted(const Variable& variable);

// docs/config.md, generated from the registry.
std::string Markdown();

}  // namespace cohort::config

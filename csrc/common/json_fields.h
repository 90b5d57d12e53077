// Checked numbers from JSON that another process wrote (a peer's topology record, the
// rendezvous store, etcd): nlohmann's get<int>() of a float such as 1e300, or of an integer out
// of the target's range, is undefined behaviour (tests/fuzz/rendezvous_fuzz found it). These
// throw std::invalid_argument / std::out_of_range naming the field instead; the callers' parsers
// already turn exceptions into errors naming the record.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace cohort {

// object[key] as an integer within [min, max].
inline int64_t JsonInteger(const nlohmann::json& object, const char* key, int64_t min,
                           int64_t max) {
  const nlohmann::json& value = object.at(key);
  int64_t result = 0;
  bool fits = false;
  if (value.is_number_unsigned()) {
    const uint64_t unsigned_value = value.get<uint64_t>();
    fits = unsigned_value <= static_cast<uint64_t>(INT64_MAX);
    result = fits ? static_cast<int64_t>(unsigned_value) : 0;
  } else if (value.is_number_integer()) {
    result = value.get<int64_t>();
    fits = true;
  } else {
    throw std::invalid_argument(absl::StrCat("\"", key, "\" is not an integer"));
  }
  if (!fits || result < min || result > max) {
    throw std::out_of_range(
        absl::StrCat("\"", key, "\" is ", value.dump(), ", outside ", min, " to ", max));
  }
  return result;
}

// The same for an int field (the default range: all of int).
inline int JsonInt(const nlohmann::json& object, const char* key, int64_t min = INT32_MIN,
                   int64_t max = INT32_MAX) {
  return static_cast<int>(JsonInteger(object, key, min, max));
}

// object[key] as a finite number (integers included).
inline double JsonNumber(const nlohmann::json& object, const char* key) {
  const nlohmann::json& value = object.at(key);
  if (!value.is_number()) throw std::invalid_argument(absl::StrCat("\"", key, "\" is not a number"));
  return value.get<double>();
}

}  // namespace cohort

// Helpers shared by the fuzz targets: the fuzzer's bytes as text, split into the argv lines and
// NAME=VALUE environment entries the option parsers take.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cohort::fuzz {

inline std::string Text(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// One argument per line; a line "NAME=VALUE" whose NAME is upper case goes to the environment
// instead (the schedulers' variables, PET_*, COHORT_*).
struct ArgsAndEnvironment {
  std::vector<std::string> args;
  std::map<std::string, std::string> environment;
};

inline ArgsAndEnvironment SplitLines(const std::string& text) {
  ArgsAndEnvironment result;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    size_t equals = line.find('=');
    bool upper_name = equals != std::string::npos && equals > 0;
    for (size_t i = 0; upper_name && i < equals; ++i) {
      char c = line[i];
      upper_name = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    }
    if (upper_name) {
      result.environment[line.substr(0, equals)] = line.substr(equals + 1);
    } else if (!line.empty() || end < text.size()) {
      result.args.push_back(line);
    }
    start = end + 1;
  }
  return result;
}

}  // namespace cohort::fuzz

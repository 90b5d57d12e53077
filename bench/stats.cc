#include "bench/stats.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace cohort::bench {

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

Stats Summarize(std::vector<double> samples) {
  Stats stats;
  if (samples.empty()) return stats;
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  stats.samples = static_cast<int>(n);
  stats.min = samples.front();
  stats.max = samples.back();
  stats.p50 = Median(samples);
  // Nearest rank: the smallest sample with at least 99% of the samples at or below it.
  size_t rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(n)));
  stats.p99 = samples[std::clamp<size_t>(rank, 1, n) - 1];
  double sum = 0;
  for (double sample : samples) sum += sample;
  stats.mean = sum / static_cast<double>(n);
  double squares = 0;
  for (double sample : samples) squares += (sample - stats.mean) * (sample - stats.mean);
  double deviation = std::sqrt(squares / static_cast<double>(n));
  stats.cv = stats.mean != 0 ? deviation / stats.mean : 0;
  return stats;
}

nlohmann::json StatsJson(const Stats& stats, const char* unit) {
  std::string suffix = unit != nullptr && *unit != '\0' ? std::string("_") + unit : "";
  return {{"samples", stats.samples},
          {"min" + suffix, stats.min},
          {"max" + suffix, stats.max},
          {"p50" + suffix, stats.p50},
          {"p99" + suffix, stats.p99},
          {"mean" + suffix, stats.mean},
          {"cv", stats.cv}};
}

}  // namespace cohort::bench

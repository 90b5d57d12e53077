// Summary statistics of a series of timings (per-iteration times of a sweep column, link
// measurements of validate): min, max, median, 99th percentile, mean and coefficient of
// variation. Used by the sweep's JSON report and by validate's analysis.
#pragma once

#include <vector>

#include "nlohmann/json.hpp"

namespace cohort::bench {

struct Stats {
  int samples = 0;
  double min = 0;
  double max = 0;
  double p50 = 0;  // median (the mean of the two middle samples for an even count)
  double p99 = 0;  // nearest-rank 99th percentile
  double mean = 0;
  double cv = 0;  // population standard deviation / mean (0 when the mean is 0)
};

Stats Summarize(std::vector<double> samples);

// The median of `values` (0 when empty).
double Median(std::vector<double> values);

// {"samples", "min", "max", "p50", "p99", "mean", "cv"} with `unit` appended to the timing keys
// ("min_us", ...) when not empty.
nlohmann::json StatsJson(const Stats& stats, const char* unit);

}  // namespace cohort::bench

// What a cohort-bench JSON report (-J) says about where and how it was made, beside its figures:
// the format's version, the machine (host, CPU model, cores, memory, kernel, OS), the commit the
// binary was built from, when it ran, and the COHORT_* variables that were set. The report page
// (python/cohort/report.py) reads these and refuses a format version it does not know.
#pragma once

#include "nlohmann/json.hpp"

namespace cohort::bench {

// Raised when a field changes meaning or goes away (adding a field keeps the version).
inline constexpr int kReportFormatVersion = 1;

// {"format_version", "machine": {...}, "commit", "date" (UTC, ISO 8601), "environment"}.
// "environment" leaves out secrets (COHORT_*TOKEN*, *SECRET*, *PASSWORD*, *KEY*) and the job's
// identity that cohortrun sets (COHORT_STORE_ADDR, COHORT_JOB_ID, COHORT_GENERATION,
// COHORT_HOST_ID).
nlohmann::json RunInfo();

// The commit of this build ("unknown" outside a git checkout; "+dirty" when it had changes).
const char* BuildCommit();

}  // namespace cohort::bench

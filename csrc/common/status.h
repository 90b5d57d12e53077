// Error helpers over absl::Status: the macros every layer uses to pass errors up as values.
// Used by all of cohort; exceptions appear only at the Python boundary.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define COHORT_CONCAT_INNER(a, b) a##b
#define COHORT_CONCAT(a, b) COHORT_CONCAT_INNER(a, b)

#define COHORT_RETURN_IF_ERROR(expr)             \
  do {                                           \
    ::absl::Status cohort_status_ = (expr);      \
    if (!cohort_status_.ok()) return cohort_status_; \
  } while (0)

#define COHORT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(*tmp)

#define COHORT_ASSIGN_OR_RETURN(lhs, expr) \
  COHORT_ASSIGN_OR_RETURN_IMPL(COHORT_CONCAT(cohort_statusor_, __LINE__), lhs, expr)

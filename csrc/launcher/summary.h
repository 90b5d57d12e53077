// Failure reports: reads the error files workers write (torch's @record JSON format) and prints
// torchrun's end-of-job summary, whose root cause is the first failure by time.
#pragma once

#include <string>
#include <vector>

#include "elastic/rendezvous.h"

namespace cohort::launcher {

// Fills message, traceback and (when the file has one) time from a worker's error file:
// {"message": {"message": "...", "extraInfo": {"py_callstack": "...", "timestamp": "..."}}}
// or {"message": "...", "timestamp": ...}. Without a file, the message says what happened
// (the signal and pid, or the exit code) and error_file is "<N/A>".
void FillFromErrorFile(const std::string& path, elastic::WorkerFailure* failure);

// torchrun's summary: title, the other failures, then "Root Cause (first observed failure)".
// `reason` is used when no worker failure was reported (e.g. a lost node).
std::string FormatSummary(const std::string& title, std::vector<elastic::WorkerFailure> failures,
                          const std::string& reason);

// "SIGKILL" for 9.
std::string SignalName(int signal);

}  // namespace cohort::launcher

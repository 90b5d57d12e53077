// Typed test data: deterministic small-integer inputs per (rank, index) whose reductions are
// exact in every type (bf16 included), and references computed in double / modular integers.
#pragma once

#include <cstdint>
#include <vector>

#include "collectives/types.h"

namespace cohort::testing {

// Reads / writes element `index` of a typed buffer as a double.
double Load(const void* buffer, DataType type, size_t index);
void Store(void* buffer, DataType type, size_t index, double value);

// The input value of `rank` at `index` for an op (values suited to it: no zeros for prod,
// 0/1 for bool, non-negative for uint8).
double InputValue(DataType type, ReduceOp op, int rank, size_t index);

// op applied across ranks 0..size-1 of InputValue, wrapped to the type like the kernels do.
double Reference(DataType type, ReduceOp op, int size, size_t index);

// Allowed difference between a result and its reference.
double Tolerance(DataType type, ReduceOp op, double reference);

// A buffer of `count` elements of `type` filled with InputValue.
std::vector<char> MakeInput(DataType type, ReduceOp op, int rank, size_t count);

// The reduce ops a type supports (the ones to test).
std::vector<ReduceOp> ReduceOpsFor(DataType type);
std::vector<DataType> AllDataTypes();

}  // namespace cohort::testing

/* MPI_Allreduce sweep (float32 sum) printed in cohort-bench's table format, so bench/compare
 * can put Open MPI beside cohort in the same run. Run with mpirun -np N. Time of a size: the
 * slowest rank's mean over the timed iterations; busbw = algbw * 2(n-1)/n. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t parse_bytes(const char* text) {
  char* end = NULL;
  double value = strtod(text, &end);
  if (*end == 'K' || *end == 'k') value *= 1 << 10;
  if (*end == 'M' || *end == 'm') value *= 1 << 20;
  if (*end == 'G' || *end == 'g') value *= 1 << 30;
  return (size_t)value;
}

static double time_allreduce(float* send, float* recv, size_t count, int in_place, int iters,
                             int warmup) {
  for (int i = 0; i < warmup; ++i) {
    MPI_Allreduce(in_place ? MPI_IN_PLACE : send, recv, (int)count, MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  double start = MPI_Wtime();
  for (int i = 0; i < iters; ++i) {
    MPI_Allreduce(in_place ? MPI_IN_PLACE : send, recv, (int)count, MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  }
  double seconds = (MPI_Wtime() - start) / iters;
  double slowest = 0;
  MPI_Allreduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return slowest;
}

static long count_wrong(float* send, float* recv, size_t count, int rank, int size) {
  for (size_t i = 0; i < count; ++i) send[i] = (float)((rank * 3 + i) % 7 + 1);
  MPI_Allreduce(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  long wrong = 0;
  for (size_t i = 0; i < count; ++i) {
    float expected = 0;
    for (int r = 0; r < size; ++r) expected += (float)((r * 3 + i) % 7 + 1);
    if (recv[i] != expected) ++wrong;
  }
  long total = 0;
  MPI_Allreduce(&wrong, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  size_t min_bytes = 8, max_bytes = 64 << 20;
  double factor = 2;
  int iters = 20, warmup = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "-b")) min_bytes = parse_bytes(argv[i + 1]);
    else if (!strcmp(argv[i], "-e")) max_bytes = parse_bytes(argv[i + 1]);
    else if (!strcmp(argv[i], "-f")) factor = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "-n")) iters = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-w")) warmup = atoi(argv[i + 1]);
  }
  float* send = malloc(max_bytes + 64);
  float* recv = malloc(max_bytes + 64);
  memset(send, 0, max_bytes + 64);
  memset(recv, 0, max_bytes + 64);
  if (rank == 0) {
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int length;
    MPI_Get_library_version(version, &length);
    char* newline = strchr(version, '\n');
    if (newline) *newline = 0;
    printf("# MPI_Allreduce: %d ranks, float32 sum, %zu to %zu bytes, %d iterations, %d warm-up (%s)\n",
           size, min_bytes, max_bytes, iters, warmup, version);
    printf("#\n# %10s  %12s  %8s  %6s  %6s  %8s %7s %7s %6s  %8s %7s %7s %6s\n", "size", "count",
           "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw",
           "#wrong");
  }
  double factor_bus = 2.0 * (size - 1) / size;
  long wrong_total = 0;
  for (size_t bytes = min_bytes; bytes <= max_bytes;
       bytes = factor > 1 ? (size_t)(bytes * factor) : bytes + (1 << 20)) {
    size_t count = bytes / 4;
    double out_time = time_allreduce(send, recv, count, 0, iters, warmup);
    double in_time = time_allreduce(send, recv, count, 1, iters, warmup);
    long wrong = count_wrong(send, recv, count, rank, size);
    wrong_total += wrong;
    if (rank == 0) {
      printf("  %10zu  %12zu  %8s  %6s  %6d  %8.2f %7.3f %7.3f %6ld  %8.2f %7.3f %7.3f %6ld\n",
             count * 4, count, "float32", "sum", -1, out_time * 1e6, bytes / out_time / 1e9,
             bytes / out_time / 1e9 * factor_bus, wrong, in_time * 1e6, bytes / in_time / 1e9,
             bytes / in_time / 1e9 * factor_bus, wrong);
      fflush(stdout);
    }
  }
  if (rank == 0) printf("# Out of bounds values : %ld %s\n#\n", wrong_total, wrong_total ? "ERROR" : "OK");
  free(send);
  free(recv);
  MPI_Finalize();
  return wrong_total ? 7 : 0;
}

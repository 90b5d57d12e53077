/* MPI_Allreduce sweep (float32 sum) printed in cohort-bench's table format, so bench/compare
 * can put Open MPI beside cohort in the same run. Run with mpirun -np N. Time of a size: the
 * slowest rank's mean over the timed iterations; busbw = algbw * 2(n-1)/n. -J FILE also writes
 * the sweep in cohort-bench's -J format (format_version 1), for the report page. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The report's "machine": host and CPU model (bench/run_info.cc writes more for cohort). */
static void write_machine(FILE* out) {
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  char model[256] = "";
  FILE* cpuinfo = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (cpuinfo && fgets(line, sizeof(line), cpuinfo)) {
    char* colon = strchr(line, ':');
    if (strncmp(line, "model name", 10) == 0 && colon) {
      snprintf(model, sizeof(model), "%s", colon + 2);
      model[strcspn(model, "\n\"\\")] = 0;
      break;
    }
  }
  if (cpuinfo) fclose(cpuinfo);
  host[strcspn(host, "\"\\")] = 0;
  fprintf(out, "\"machine\": {\"host\": \"%s\", \"cpu_model\": \"%s\", \"cores\": %ld},\n",
          host, model, sysconf(_SC_NPROCESSORS_ONLN));
}

static void write_column(FILE* out, double seconds, size_t bytes, double factor, long wrong) {
  fprintf(out, "{\"time_us\": %.6g, \"algbw_gbps\": %.6g, \"busbw_gbps\": %.6g, \"wrong\": %ld}",
          seconds * 1e6, bytes / seconds / 1e9, bytes / seconds / 1e9 * factor, wrong);
}

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
  const char* json_path = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "-b")) min_bytes = parse_bytes(argv[i + 1]);
    else if (!strcmp(argv[i], "-e")) max_bytes = parse_bytes(argv[i + 1]);
    else if (!strcmp(argv[i], "-f")) factor = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "-n")) iters = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-w")) warmup = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-J")) json_path = argv[i + 1];
  }
  FILE* json = NULL;
  if (rank == 0 && json_path) {
    json = fopen(json_path, "w");
    if (!json) {
      fprintf(stderr, "cohort-mpi-allreduce: cannot write %s\n", json_path);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(json, "{\"tool\": \"openmpi\", \"kind\": \"sweep\", \"format_version\": 1,\n");
    fprintf(json, "\"collective\": \"allreduce\", \"nranks\": %d, \"date\": \"%s\", \"commit\": null,\n",
            size, date);
    fprintf(json, "\"command\": [\"mpirun\", \"-np\", \"%d\"", size);
    for (int i = 0; i < argc; ++i) {
      if (!strpbrk(argv[i], "\"\\")) fprintf(json, ", \"%s\"", argv[i]);
    }
    fprintf(json, "],\n");
    write_machine(json);
    fprintf(json, "\"results\": [");
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
  double busbw_sum = 0;
  int columns = 0;
  for (size_t bytes = min_bytes; bytes <= max_bytes;
       bytes = factor > 1 ? (size_t)(bytes * factor) : bytes + (1 << 20)) {
    size_t count = bytes / 4;
    double out_time = time_allreduce(send, recv, count, 0, iters, warmup);
    double in_time = time_allreduce(send, recv, count, 1, iters, warmup);
    long wrong = count_wrong(send, recv, count, rank, size);
    wrong_total += wrong;
    busbw_sum += (bytes / out_time + bytes / in_time) / 1e9 * factor_bus;
    columns += 2;
    if (rank == 0) {
      printf("  %10zu  %12zu  %8s  %6s  %6d  %8.2f %7.3f %7.3f %6ld  %8.2f %7.3f %7.3f %6ld\n",
             count * 4, count, "float32", "sum", -1, out_time * 1e6, bytes / out_time / 1e9,
             bytes / out_time / 1e9 * factor_bus, wrong, in_time * 1e6, bytes / in_time / 1e9,
             bytes / in_time / 1e9 * factor_bus, wrong);
      fflush(stdout);
    }
    if (json) {
      fprintf(json, "%s\n {\"size\": %zu, \"count\": %zu, \"type\": \"float\", \"redop\": \"sum\", "
              "\"root\": -1,\n  \"out_of_place\": ", bytes == min_bytes ? "" : ",", count * 4,
              count);
      write_column(json, out_time, count * 4, factor_bus, wrong);
      fprintf(json, ",\n  \"in_place\": ");
      write_column(json, in_time, count * 4, factor_bus, wrong);
      fprintf(json, "}");
    }
  }
  if (rank == 0) printf("# Out of bounds values : %ld %s\n#\n", wrong_total, wrong_total ? "ERROR" : "OK");
  if (json) {
    fprintf(json, "],\n\"out_of_bounds\": %ld, \"avg_bus_bandwidth_gbps\": %.6g, \"exit_code\": %d}\n",
            wrong_total, columns ? busbw_sum / columns : 0.0, wrong_total ? 7 : 0);
    fclose(json);
  }
  free(send);
  free(recv);
  MPI_Finalize();
  return wrong_total ? 7 : 0;
}

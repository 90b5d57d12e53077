#!/usr/bin/env bash
# Benchmark (not a test): 64 MiB float32 allreduce on 2 namespace hosts x 2 ranks, host links
# shaped to RATE (default 2 Gbit/s each direction) with tc tbf, the flat host-contiguous ring
# against the hierarchical allreduce, in the same run. Prints each algbw, the fraction of the
# link rate reached (the bound for two hosts: each host must send S bytes out) and the ratio.
# algbw is 64 MiB over the in-place time cohort-bench reports (it prints algbw to two digits
# only). Needs root; makes and removes its namespaces. Prints the load average before and after:
# the 4 ranks share this machine's cores with whatever else runs.
# With UCX=1 it also runs the hierarchical allreduce with UCX between the hosts
# (COHORT_TRANSPORTS=shm,ucx, UCX_TLS=tcp: UCX over the same links) and Open MPI's MPI_Allreduce
# over UCX (mpirun --mca pml ucx, its orteds started in the namespaces by netns_rsh.sh), all in
# the same runs.
# Usage: [UCX=1] bench/compare/hierarchical.sh [RATE_GBIT [RUNS]]
RATE_GBIT=${1:-2}
RUNS=${2:-5}
UCX=${UCX:-0}
source "$(dirname "$0")/../../tests/cluster/lib/common.sh"
source "$(dirname "$0")/../../tests/cluster/lib/netns.sh"
source "$(dirname "$0")/../../tests/cluster/lib/shape.sh"
BENCH=$BUILD/bench/cohort-bench

make_cluster 2
shape_links "${RATE_GBIT}gbit"
port=29600
algbw() {  # algbw ALGO: the in-place algbw (GB/s) of a 64 MiB allreduce with ALGO forced
  port=$((port + 1))
  local run=$1
  if [[ $1 == ucx ]]; then
    set -- hierarchical
    export COHORT_TRANSPORTS=shm,ucx UCX_TLS=tcp
  fi
  for i in 0 1; do
    start_node $i "$SCRATCH/$1.$port.node$i.log" --nnodes 2 --nproc-per-node 2 \
      --rdzv-endpoint "$(address 0):$port" --rdzv-id "bench$port" --no-python "$BENCH" allreduce \
      -b 64M -e 64M -n 5 -w 1 -c 1 -z 1 --algo "$1" --tag "$TAG"
  done
  unset COHORT_TRANSPORTS UCX_TLS
  for i in 0 1; do
    wait_node $i
    [[ $STATUS == 0 ]] || { cat "$SCRATCH/$1.$port.node$i.log"; fail "$run failed on node$i"; }
  done
  if [[ $run == ucx ]]; then
    grep -q "across hosts ucx" "$SCRATCH/$1.$port.node0.log" || {
      cat "$SCRATCH/$1.$port.node0.log"; fail "UCX did not carry the links across hosts"; }
  fi
  grep -E '^\[node0:0\] +67108864' "$SCRATCH/$1.$port.node0.log" |
    awk '{printf "%.4f\n", 67108864 / ($11 * 1e3)}'
}
mpi_runs=0
mpi_algbw() {  # Open MPI over UCX: the same 64 MiB allreduce, in place (its time, column 10)
  mpi_runs=$((mpi_runs + 1))
  local log=$SCRATCH/mpi.$mpi_runs.log
  COHORT_NETNS_PREFIX=$PREFIX ip netns exec "${PREFIX}n0" mpirun --allow-run-as-root \
    --host 10.77.0.10:2,10.77.0.11:2 -np 4 --bind-to none \
    --mca plm_rsh_agent "$SOURCE/tests/cluster/lib/netns_rsh.sh" --mca oob_tcp_if_include eth0 \
    --mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any --mca btl ^openib \
    -x UCX_TLS=tcp,sm,self "$BUILD/bench/cohort-mpi-allreduce" -b 64M -e 64M -n 5 -w 1 \
    > "$log" 2>&1 || { cat "$log"; fail "mpirun failed"; }
  grep -E '^ +67108864' "$log" | awk '{printf "%.4f\n", 67108864 / ($10 * 1e3)}'
}
link=$(awk -v g="$RATE_GBIT" 'BEGIN { printf "%.4f", g / 8 }')
echo "# 64 MiB allreduce, 2 hosts x 2 ranks, host links ${RATE_GBIT} Gbit/s = $link GB/s each way"
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
if [[ $UCX == 1 ]]; then
  echo "# run  ring algbw  hierarchical algbw  hier/link  hier/ring  | hier over UCX  ucx/link  | Open MPI/UCX  ucx/mpi"
else
  echo "# run  ring algbw  hierarchical algbw  hier/link  hier/ring"
fi
for ((run = 1; run <= RUNS; run++)); do
  ring=$(algbw ring)
  hier=$(algbw hierarchical)
  line=$(awk -v r="$run" -v a="$ring" -v b="$hier" -v l="$link" \
    'BEGIN { printf "  %3d  %10.4f  %18.4f  %8.1f%%  %8.2fx", r, a, b, 100 * b / l, b / a }')
  if [[ $UCX == 1 ]]; then
    ucx=$(algbw ucx)
    mpi=$(mpi_algbw)
    line+=$(awk -v u="$ucx" -v m="$mpi" -v l="$link" \
      'BEGIN { printf "  | %13.4f  %7.1f%%  | %12.4f  %6.2fx", u, 100 * u / l, m, u / m }')
  fi
  echo "$line"
done
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# Benchmark (not a test): 64 MiB float32 allreduce on 2 namespace hosts x 2 ranks, host links
# shaped to RATE (default 2 Gbit/s each direction) with tc tbf, the flat host-contiguous ring
# against the hierarchical allreduce, in the same run. Prints each algbw, the fraction of the
# link rate reached (the bound for two hosts: each host must send S bytes out) and the ratio.
# algbw is 64 MiB over the in-place time cohort-bench reports (it prints algbw to two digits
# only). Needs root; makes and removes its namespaces. Prints the load average before and after:
# the 4 ranks share this machine's cores with whatever else runs.
# Usage: bench/compare/hierarchical.sh [RATE_GBIT [RUNS]]
RATE_GBIT=${1:-2}
RUNS=${2:-5}
source "$(dirname "$0")/../../tests/cluster/lib/common.sh"
source "$(dirname "$0")/../../tests/cluster/lib/netns.sh"
source "$(dirname "$0")/../../tests/cluster/lib/shape.sh"
BENCH=$BUILD/bench/cohort-bench

make_cluster 2
shape_links "${RATE_GBIT}gbit"
port=29600
algbw() {  # algbw ALGO: the in-place algbw (GB/s) of a 64 MiB allreduce with ALGO forced
  port=$((port + 1))
  for i in 0 1; do
    start_node $i "$SCRATCH/$1.$port.node$i.log" --nnodes 2 --nproc-per-node 2 \
      --rdzv-endpoint "$(address 0):$port" --rdzv-id "bench$port" --no-python "$BENCH" allreduce \
      -b 64M -e 64M -n 5 -w 1 -c 1 -z 1 --algo "$1" --tag "$TAG"
  done
  for i in 0 1; do
    wait_node $i
    [[ $STATUS == 0 ]] || { cat "$SCRATCH/$1.$port.node$i.log"; fail "$1 failed on node$i"; }
  done
  grep -E '^\[node0:0\] +67108864' "$SCRATCH/$1.$port.node0.log" |
    awk '{printf "%.4f\n", 67108864 / ($11 * 1e3)}'
}
link=$(awk -v g="$RATE_GBIT" 'BEGIN { printf "%.4f", g / 8 }')
echo "# 64 MiB allreduce, 2 hosts x 2 ranks, host links ${RATE_GBIT} Gbit/s = $link GB/s each way"
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
echo "# run  ring algbw  hierarchical algbw  hier/link  hier/ring"
for ((run = 1; run <= RUNS; run++)); do
  ring=$(algbw ring)
  hier=$(algbw hierarchical)
  awk -v r="$run" -v a="$ring" -v b="$hier" -v l="$link" \
    'BEGIN { printf "  %3d  %10.4f  %18.4f  %8.1f%%  %8.2fx\n", r, a, b, 100 * b / l, b / a }'
done
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"

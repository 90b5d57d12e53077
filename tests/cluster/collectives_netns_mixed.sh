#!/usr/bin/env bash
# The collectives across hosts: 2 namespace hosts x 2 ranks (shared memory inside a host, TCP
# over a 2 Gbit/s shaped link between them), started by cohortrun. Every collective's results
# are checked exactly by cohort-bench (-c 1), with the tuner's choice and with the flat ring and
# the hierarchical allreduce forced; `topo` shows each host's own NIC and every rank on it.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
source "$(dirname "$0")/lib/shape.sh"
BENCH=$BUILD/bench/cohort-bench
[[ -x $BENCH ]] || fail "$BENCH is not built"

make_cluster 2
shape_links 2gbit
port=29500
run_both() {  # run_both NAME cohort-bench-args...: one job on both hosts; checks its results
  local name=$1
  shift
  port=$((port + 1))
  for i in 0 1; do
    start_node $i "$SCRATCH/$name.node$i.log" --nnodes 2 --nproc-per-node 2 \
      --rdzv-endpoint "$(address 0):$port" --rdzv-id "$name" --no-python "$BENCH" "$@" "$TAG"
  done
  for i in 0 1; do
    wait_node $i
    [[ $STATUS == 0 ]] || { cat "$SCRATCH/$name.node$i.log"; fail "$name: node$i exited $STATUS"; }
  done
  [[ $name == topo ]] || contains "$SCRATCH/$name.node0.log" "Out of bounds values : 0 OK"
  echo "$name: OK"
}
sweep=(-b 8 -e 2M -f 8 -n 2 -w 1 -c 1)
run_both allreduce allreduce "${sweep[@]}" --tag
run_both allreduce_ring allreduce "${sweep[@]}" --algo ring --tag
run_both allreduce_hier allreduce "${sweep[@]}" --algo hierarchical --tag
run_both allgather allgather "${sweep[@]}" --tag
run_both reduce_scatter reduce_scatter "${sweep[@]}" -o max --tag
run_both broadcast broadcast "${sweep[@]}" -r 3 --tag
run_both alltoall alltoall "${sweep[@]}" --tag
# The topology every rank agreed on: two hosts, shared memory inside, network between.
run_both topo topo --tag
contains "$SCRATCH/topo.node0.log" "4 ranks on 2 hosts"
# The tuner's links are the channels in use: shared memory inside, TCP between.
contains "$SCRATCH/topo.node0.log" "links the tuner assumes: inside hosts shm (2 us, 4 GB/s), across hosts tcp (50 us, 1.25 GB/s)"
# Each host's NIC as that host sees it (its own eth0, in its own namespace), and every rank on it.
contains "$SCRATCH/topo.node0.log" "  nic  eth0       up   10.77.0.10"
contains "$SCRATCH/topo.node0.log" "  nic  eth0       up   10.77.0.11"
for rank in 0 1; do contains "$SCRATCH/topo.node0.log" "  rank $rank  local $rank  "; done
[[ $(grep -c "nic eth0 10.77.0.10  rdma" "$SCRATCH/topo.node0.log") == 2 ]] || { cat "$SCRATCH/topo.node0.log"; fail "node0's ranks do not both use its eth0"; }
[[ $(grep -c "nic eth0 10.77.0.11  rdma" "$SCRATCH/topo.node0.log") == 2 ]] || { cat "$SCRATCH/topo.node0.log"; fail "node1's ranks do not both use its eth0"; }
no_leftovers
no_namespace_leftovers

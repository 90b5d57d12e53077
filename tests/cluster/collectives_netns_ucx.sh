#!/usr/bin/env bash
# The collectives across hosts over UCX: 2 namespace hosts x 2 ranks, shared memory inside a
# host and the UCX channel between them (COHORT_TRANSPORTS=shm,ucx) over a 2 Gbit/s shaped
# link, started by cohortrun. Every collective's results are checked exactly by cohort-bench
# (-c 1); the header and UCX's own endpoint report must show that UCX over the network served
# the pairs across hosts. Namespaces share one kernel, so UCX would otherwise take its shared
# memory between them: UCX_TLS=tcp keeps it on the link, as on a cluster without RDMA.
source "$(dirname "$0")/lib/common.sh"
BENCH=$BUILD/bench/cohort-bench
[[ -x $BENCH ]] || fail "$BENCH is not built"
probe=$(COHORT_TRANSPORTS=ucx "$BENCH" sendrecv --nranks 2 -b 8 -e 8 -n 1 -w 0 2>&1 || true)
if grep -qE "this build has no UCX|UCX is not available on that rank" <<< "$probe"; then
  echo "SKIP: UCX is not available to this build: $(grep -m1 -E "UCX" <<< "$probe")"
  exit 0
fi
grep -q "inside hosts ucx" <<< "$probe" || fail "UCX does not run here: $probe"
source "$(dirname "$0")/lib/netns.sh"
source "$(dirname "$0")/lib/shape.sh"

make_cluster 2
shape_links 2gbit
export COHORT_TRANSPORTS=shm,ucx UCX_TLS=tcp
port=29700
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
  contains "$SCRATCH/$name.node0.log" "Out of bounds values : 0 OK"
  contains "$SCRATCH/$name.node0.log" "links the tuner assumes: inside hosts shm"
  contains "$SCRATCH/$name.node0.log" ", across hosts ucx"
  echo "$name: OK"
}
sweep=(-b 8 -e 2M -f 8 -n 2 -w 1 -c 1)
COHORT_LOG_LEVEL=DEBUG run_both allreduce allreduce "${sweep[@]}" --tag
contains "$SCRATCH/allreduce.node0.log" "UCX endpoint to rank 2 (node1): tcp/eth0"
run_both allreduce_ring allreduce "${sweep[@]}" --algo ring --tag
run_both allreduce_hier allreduce "${sweep[@]}" --algo hierarchical --tag
run_both allgather allgather "${sweep[@]}" --tag
run_both reduce_scatter reduce_scatter "${sweep[@]}" -o max --tag
run_both broadcast broadcast "${sweep[@]}" -r 3 --tag
run_both alltoall alltoall "${sweep[@]}" --tag
run_both sendrecv sendrecv "${sweep[@]}" -e 16M --tag
no_leftovers
no_namespace_leftovers

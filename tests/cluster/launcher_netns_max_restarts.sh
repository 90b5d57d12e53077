#!/usr/bin/env bash
# A 3-node job whose rank 3 (on node1) always fails: after --max-restarts 1 the job fails on
# every node with the summary naming the root cause (host, rank, exit code).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

make_cluster 3
d=$SCRATCH/run && mkdir -p "$d"
for i in 0 1 2; do
  FAIL_RANK=3 start_node $i "$SCRATCH/node$i.log" --nnodes 3 --nproc-per-node 2 --max-restarts 1 \
    --rdzv-endpoint "$(address 0):29400" --no-python "$WORKER" alwaysfail "$TAG" "$d"
done
for i in 0 1 2; do
  wait_node $i
  [[ $STATUS == 1 ]] || { cat "$SCRATCH/node$i.log"; fail "node$i exited $STATUS, expected 1"; }
  contains "$SCRATCH/node$i.log" "no restarts left (--max-restarts 1)"
  contains "$SCRATCH/node$i.log" "Root Cause (first observed failure):"
  contains "$SCRATCH/node$i.log" "host      : node1"
  contains "$SCRATCH/node$i.log" "rank      : 3 (local_rank: 1)"
  contains "$SCRATCH/node$i.log" "exitcode  : 7"
done
[[ $(tr '\n' ' ' < "$d/attempts.0") == "0 1 " ]] || fail "attempts: $(cat "$d/attempts.0")"
no_leftovers
no_namespace_leftovers

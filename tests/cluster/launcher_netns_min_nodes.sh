#!/usr/bin/env bash
# --nnodes 3 with only 2 nodes up: the round cannot reach its minimum, and both agents stop
# after the join timeout with an error that says how many joined and what to do.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

make_cluster 2
d=$SCRATCH/run && mkdir -p "$d"
for i in 0 1; do
  start_node $i "$SCRATCH/node$i.log" --nnodes 3 --nproc-per-node 1 \
    --rdzv-endpoint "$(address 0):29400" --rdzv-conf join_timeout=2 --no-python "$WORKER" gen "$TAG" "$d"
done
began=$(now)
for i in 0 1; do
  wait_node $i
  [[ $STATUS == 1 ]] || { cat "$SCRATCH/node$i.log"; fail "node$i exited $STATUS, expected 1"; }
  contains "$SCRATCH/node$i.log" "rendezvous timed out: 2 of at least 3 nodes joined generation 1 within the join timeout of 2s"
  contains "$SCRATCH/node$i.log" "raise --rdzv-conf join_timeout"
done
took=$(elapsed "$began" "$(now)")
less_than "$took" 8 || fail "the timeout took $took s"
[[ -z $(ls "$d") ]] || fail "no worker may start: $(ls "$d")"
no_leftovers
no_namespace_leftovers

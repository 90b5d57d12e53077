#!/usr/bin/env bash
# --nnodes 2:3: the job starts on 2 nodes after the last call; a third node that arrives later
# waits, triggers a new generation (a scale-up, not counted as a restart) and the job runs on 3.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

make_cluster 3
d=$SCRATCH/run && mkdir -p "$d"
args=(--nnodes 2:3 --nproc-per-node 2 --max-restarts 0 --rdzv-endpoint "$(address 0):29400"
      --rdzv-conf last_call_timeout=0.5 --no-python "$WORKER" gen "$TAG" "$d")
start_node 0 "$SCRATCH/node0.log" "${args[@]}"
start_node 1 "$SCRATCH/node1.log" "${args[@]}"
started() { local n; n=$(ls "$d"/start.$1.* 2>/dev/null | wc -l); [[ $n -ge $2 ]]; }
wait_for 20 started 1 4 || { tail "$SCRATCH"/node*.log; fail "generation 1 did not start on 2 nodes"; }
grep -q " 4 node" "$d/start.1.0" || fail "generation 1: $(cat "$d/start.1.0")"
start_node 2 "$SCRATCH/node2.log" "${args[@]}"
wait_for 20 started 2 6 || { tail "$SCRATCH"/node*.log; fail "generation 2 did not start on 3 nodes"; }
for f in "$d"/start.2.*; do
  read -r _ _ size _ < "$f"
  [[ $size == 6 ]] || fail "generation 2 worker: $(cat "$f")"
done
for i in 0 1 2; do
  wait_node $i
  [[ $STATUS == 0 ]] || { cat "$SCRATCH/node$i.log"; fail "node$i exited $STATUS"; }
done
contains "$SCRATCH/node0.log" "scale-up: node2 waiting; restarting"
not_contains "$SCRATCH/node0.log" "(restart 1 of"
no_leftovers
no_namespace_leftovers

#!/usr/bin/env bash
# A 3-node job in network namespaces loses a node (its cohortrun and workers SIGKILLed): the
# survivors' agents stop their workers and the job restarts on 2 nodes, running again within
# 7 s of the kill (default heartbeats: 1 s interval, lost after 5 s), then completes.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

make_cluster 3
d=$SCRATCH/run && mkdir -p "$d"
for i in 0 1 2; do
  start_node $i "$SCRATCH/node$i.log" --nnodes 2:3 --nproc-per-node 2 --max-restarts 2 \
    --rdzv-endpoint "$(address 0):29400" --rdzv-id lost --no-python "$WORKER" gen "$TAG" "$d"
done
started() { local n; n=$(ls "$d"/start.$1.* 2>/dev/null | wc -l); [[ $n -ge $2 ]]; }
wait_for 20 started 1 6 || { tail "$SCRATCH"/node*.log; fail "generation 1 did not start on 3 nodes"; }
grep -q " 6 node" "$d/start.1.0" || fail "generation 1 should have world size 6: $(cat "$d/start.1.0")"

# The node that is not the rendezvous host: launcher and workers SIGKILLed at once.
victims=(${NODE_PIDS[2]})
for f in "$d"/start.1.*; do
  read -r _ pid _ host < "$f"
  [[ $host == node2 ]] && victims+=("$pid")
done
[[ ${#victims[@]} == 3 ]] || fail "expected node2's launcher and 2 workers, got ${victims[*]}"
killed_at=$(now)
kill -KILL "${victims[@]}"
wait_for 15 started 2 4 || { tail "$SCRATCH"/node*.log; fail "survivors did not restart"; }
latest=$(cat "$d"/start.2.* | awk '{print $1}' | sort -n | tail -1)
took=$(elapsed "$killed_at" "$latest")
echo "node lost: survivors' generation 2 (4 workers on 2 nodes) running $took s after the kill"
less_than "$took" 7 || fail "survivors took $took s (limit 7 s)"
for f in "$d"/start.2.*; do
  read -r _ _ size host < "$f"
  [[ $size == 4 && $host != node2 ]] || fail "generation 2 worker: $(cat "$f")"
done
for i in 0 1; do
  wait_node $i
  [[ $STATUS == 0 ]] || { cat "$SCRATCH/node$i.log"; fail "node$i exited $STATUS"; }
  contains "$SCRATCH/node$i.log" "node node2 lost: no heartbeat"
done
no_leftovers
no_namespace_leftovers

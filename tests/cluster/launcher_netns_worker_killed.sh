#!/usr/bin/env bash
# A 3-node job in network namespaces: one worker on node1 is killed with SIGKILL; the
# coordinator ends the generation on every node, all 6 workers restart in generation 2, and
# the job completes with exit code 0 everywhere.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

make_cluster 3
d=$SCRATCH/run && mkdir -p "$d"
for i in 0 1 2; do
  start_node $i "$SCRATCH/node$i.log" --nnodes 3 --nproc-per-node 2 --max-restarts 1 \
    --rdzv-endpoint "$(address 0):29400" --rdzv-id killed --no-python "$WORKER" gen "$TAG" "$d"
done
started() { local n; n=$(ls "$d"/start.$1.* 2>/dev/null | wc -l); [[ $n -ge $2 ]]; }
wait_for 20 started 1 6 || { tail "$SCRATCH"/node*.log; fail "generation 1 did not start"; }
# Ranks are contiguous per node, nodes in host name order.
for rank in 0 1 2 3 4 5; do
  read -r _ _ size host < "$d/start.1.$rank"
  [[ $size == 6 && $host == node$((rank / 2)) ]] || fail "rank $rank: $(cat "$d/start.1.$rank")"
done
victim=$(awk '{print $2}' "$d/start.1.3")
killed_at=$(now)
kill -KILL "$victim"
wait_for 10 started 2 6 || { tail "$SCRATCH"/node*.log; fail "generation 2 did not start on every node"; }
latest=$(cat "$d"/start.2.* | awk '{print $1}' | sort -n | tail -1)
echo "worker killed: all 6 workers of generation 2 running $(elapsed "$killed_at" "$latest") s after the kill"
for i in 0 1 2; do
  wait_node $i
  [[ $STATUS == 0 ]] || { cat "$SCRATCH/node$i.log"; fail "node$i exited $STATUS"; }
  contains "$SCRATCH/node$i.log" "worker rank 3 on node1 was killed by signal 9; restarting (restart 1 of 1)"
done
no_leftovers
no_namespace_leftovers

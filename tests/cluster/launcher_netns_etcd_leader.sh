#!/usr/bin/env bash
# A 3-node job on a 3-member etcd cluster (three more namespace hosts): the etcd leader, which
# the agents are connected to (it is first in --rdzv-endpoint), is killed while the workers
# run. The agents move to the other members (their leases survive the election), nothing ends
# the generation, and the job finishes in generation 1.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
source "$(dirname "$0")/lib/etcd.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

make_cluster 6
start_etcd_in 3 4 5
d=$SCRATCH/run && mkdir -p "$d"
export STEADY_SECONDS=8
leader=$(etcd_leader 3)
[[ -n $leader ]] || fail "no etcd leader found"
IFS=, read -r -a urls <<< "$ETCD_ENDPOINTS"
endpoints=${urls[$leader]}
for j in 0 1 2; do [[ $j == "$leader" ]] || endpoints+=",${urls[$j]}"; done
for i in 0 1 2; do
  start_node $i "$SCRATCH/node$i.log" --rdzv-backend etcd --rdzv-endpoint "$endpoints" \
    --rdzv-id steady --nnodes 3 --nproc-per-node 1 --no-python "$WORKER" steady "$TAG" "$d"
done
started() { local n; n=$(ls "$d"/start.1.* 2>/dev/null | wc -l); [[ $n -ge 3 ]]; }
wait_for 20 started || { tail "$SCRATCH"/node*.log; fail "generation 1 did not start on 3 nodes"; }
[[ $(etcd_leader 3) == "$leader" ]] || fail "the etcd leader changed before the kill"
echo "killing etcd member e${ETCD_HOSTS[$leader]} (the leader)"
kill -KILL "${ETCD_PIDS[$leader]}"
killed_at=$(now)
for i in 0 1 2; do
  wait_node $i
  [[ $STATUS == 0 ]] || { cat "$SCRATCH/node$i.log"; fail "node$i exited $STATUS"; }
  not_contains "$SCRATCH/node$i.log" "generation 1 ended"
done
echo "job finished $(elapsed "$killed_at" "$(now)") s after the kill (its workers run ${STEADY_SECONDS} s)"
[[ -z $(ls "$d"/start.2.* 2>/dev/null) ]] || fail "the job restarted: $(ls "$d")"
[[ $(ls "$d"/start.1.* | wc -l) == 3 ]] || fail "expected 3 workers in generation 1"
stop_etcd
no_leftovers
no_namespace_leftovers

#!/usr/bin/env bash
# A 3-node job on etcd (one member on a fourth namespace host): it forms, then the node holding
# the coordinator role dies with everything on it (its link cut, its processes SIGKILLed). Its
# lease expires (5 s), another agent takes the role, ends the generation, and the two survivors
# run generation 2 - within 10 s of the kill, with no manual step - and finish. The job's keys
# are gone from etcd at the end.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
source "$(dirname "$0")/lib/etcd.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

make_cluster 4
start_etcd_in 3
d=$SCRATCH/run && mkdir -p "$d"
args=(--rdzv-backend etcd --rdzv-endpoint "$ETCD_ENDPOINTS" --rdzv-id failover --nnodes 2:3
      --nproc-per-node 2 --max-restarts 1 --no-python "$WORKER" gen "$TAG" "$d")
leader_host() { etcdctl_in 3 get --print-value-only /cohort/failover/pub/leader 2> /dev/null | cut -d- -f1; }
holds_role() { [[ $(leader_host) == "$1" ]]; }
# node0 first, so that it holds the coordinator role.
start_node 0 "$SCRATCH/node0.log" "${args[@]}"
wait_for 10 holds_role node0 || { cat "$SCRATCH/node0.log"; fail "node0 did not take the coordinator role"; }
for i in 1 2; do start_node $i "$SCRATCH/node$i.log" "${args[@]}"; done
started() { local n; n=$(ls "$d"/start.$1.* 2>/dev/null | wc -l); [[ $n -ge $2 ]]; }
wait_for 20 started 1 6 || { tail "$SCRATCH"/node*.log; fail "generation 1 did not start on 3 nodes"; }
grep -q " 6 node" "$d/start.1.0" || fail "generation 1 should have world size 6: $(cat "$d/start.1.0")"

# node0 dies: no goodbye, no more packets.
ip -n "${PREFIX}n0" link set eth0 down
killed_at=$(now)
for pid in $(ip netns pids "${PREFIX}n0"); do kill -KILL "$pid" 2>/dev/null || true; done
wait_for 15 started 2 4 || { tail -20 "$SCRATCH"/node*.log; fail "survivors did not restart"; }
latest=$(cat "$d"/start.2.* | awk '{print $1}' | sort -n | tail -1)
took=$(elapsed "$killed_at" "$latest")
echo "coordinator's node lost: survivors' generation 2 (4 workers on 2 nodes) running $took s after the kill"
less_than "$took" 10 || fail "survivors took $took s (limit 10 s)"
for f in "$d"/start.2.*; do
  read -r _ _ size host < "$f"
  [[ $size == 4 && $host != node0 ]] || fail "generation 2 worker: $(cat "$f")"
done
for i in 1 2; do
  wait_node $i
  [[ $STATUS == 0 ]] || { cat "$SCRATCH/node$i.log"; fail "node$i exited $STATUS"; }
  contains "$SCRATCH/node$i.log" "node node0 lost: its etcd lease expired"
done
holds_role node1 || holds_role node2 || [[ -z $(leader_host) ]] || fail "role held by $(leader_host)"
left=$(etcdctl_in 3 get --prefix --keys-only /cohort/failover/ | grep -c . || true)
[[ $left == 0 ]] || fail "the job's keys are still in etcd: $(etcdctl_in 3 get --prefix --keys-only /cohort/failover/)"
stop_etcd
no_leftovers
no_namespace_leftovers

#!/usr/bin/env bash
# A 3-node job in network namespaces (2 workers per node, cohort-shrink-worker: verified
# allreduce steps over libcohort) loses node2's traffic (iptables DROP both ways: no FIN, no
# RST), once with --on-failure restart and once with --on-failure shrink, in the same run:
#   restart: the coordinator ends the generation, the survivors' workers stop and 4 new ones
#            start generation 2 from the last step;
#   shrink:  the coordinator removes node2's ranks (a removal record in the worker store), the 4
#            surviving workers shrink their communicator and go on, no process restarted, within
#            the heartbeat timeout + 1 s of the drop; node2's agent, cut off, stops its workers.
# Both jobs finish with exit code 0 on the survivors. Prints the time from the drop to the
# survivors' next completed step on each path. ROUNDS=N alternates the two N times and prints
# the medians (bench/RESULTS.md); ctest runs one round. WORKER_KIND=torch runs the same job with
# torch workers on the cohort backend (tests/cluster/lib/torch_shrink_worker.py: a restart there
# also pays for starting python, importing torch and forming the process group).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
WORKER=$BUILD/tests/cohort-shrink-worker
[[ -x $WORKER ]] || fail "$WORKER is not built"
kind=${WORKER_KIND:-cpp}
if [[ $kind == torch ]]; then
  ls "$BUILD"/python/cohort/_C*.so > /dev/null 2>&1 || fail "the torch extension is not built in $BUILD"
  export PYTHONPATH=$BUILD/python COHORT_PYTHON=/usr/bin/python3 STEP_SECONDS=0.1
  worker=("$SOURCE/tests/cluster/lib/torch_shrink_worker.py")
  worker_args() { echo "$1 $steps"; }
  start_limit=120
else
  worker=(--no-python "$WORKER")
  worker_args() { echo "--dir $1 --steps $steps --step-ms 100 --timeout 30s"; }
  start_limit=30
fi
command -v iptables > /dev/null || fail "iptables is not installed (scripts/bootstrap installs it)"
rounds=${ROUNDS:-1}
heartbeat_timeout=2
conf="heartbeat_interval=0.5s,heartbeat_timeout=${heartbeat_timeout}s,last_call_timeout=1s,join_timeout=30s"
steps=40

make_cluster 3
port=29400
cut_off() { ip netns exec "${PREFIX}n2" iptables -I "$1" -j DROP; }
reconnect() { ip netns exec "${PREFIX}n2" iptables -F; }
kill_node2() {
  local pid
  for pid in $(ip netns pids "${PREFIX}n2"); do kill -KILL "$pid" 2> /dev/null; done
  wait "${NODE_PIDS[2]}" 2> /dev/null || true
}

# run MODE ROUND: one job; its time from the drop to the survivors' next step goes to $TOOK.
run() {
  local mode=$1 round=$2 name=$1$2 i rank
  local d=$SCRATCH/$name
  mkdir -p "$d"
  port=$((port + 1))
  for i in 0 1 2; do
    start_node $i "$SCRATCH/$name.node$i.log" --nnodes 2:3 --nproc-per-node 2 --max-restarts 1 \
      --on-failure "$mode" --rdzv-endpoint "$(address 0):$port" --rdzv-id "$name" \
      --rdzv-conf "$conf" "${worker[@]}" $(worker_args "$d") "$TAG"
  done
  stepped() { [[ -f $d/steps.1.5 ]] && (($(wc -l < "$d/steps.1.5") >= 8)); }
  wait_for $start_limit stepped || { tail "$SCRATCH/$name".node*.log; fail "$name: 6 workers on 3 nodes did not step"; }
  for rank in 0 1 2 3 4 5; do
    read -r _ _ size host < "$d/start.1.$rank"
    [[ $size == 6 && $host == node$((rank / 2)) ]] || fail "$name: rank $rank: $(cat "$d/start.1.$rank")"
  done
  cut_off INPUT
  cut_off OUTPUT
  local dropped_at
  dropped_at=$(now)
  for i in 0 1; do
    wait_node $i
    [[ $STATUS == 0 ]] || { cat "$SCRATCH/$name.node$i.log"; fail "$name: node$i exited $STATUS"; }
  done
  contains "$SCRATCH/$name.node0.log" "node node2 lost: no heartbeat for"
  local next=0 first
  if [[ $mode == restart ]]; then
    contains "$SCRATCH/$name.node0.log" "restarting (restart 1 of 1)"
    for rank in 0 1 2 3; do
      read -r _ _ size host < "$d/start.2.$rank" || fail "$name: rank $rank did not restart"
      [[ $size == 4 && $host != node2 ]] || fail "$name: generation 2 rank $rank: $(cat "$d/start.2.$rank")"
      first=$(head -1 "$d/steps.2.$rank" | awk '{print $1}')
      less_than "$next" "$first" && next=$first
    done
    kill_node2  # cut off, its agent waits for the store's read timeout
  else
    not_contains "$SCRATCH/$name.node0.log" "restarting"
    contains "$SCRATCH/$name.node0.log" "generation 1 goes on without ranks 4, 5 (--on-failure shrink): node node2 lost: no heartbeat for"
    # The survivors left node2's ranks out as removed by the launcher (not timed out).
    contains "$SCRATCH/$name.node0.log" "without ranks 4 (node2, removed), 5 (node2, removed)"
    ls "$d"/start.2.* > /dev/null 2>&1 && fail "$name: a second generation started"
    for rank in 0 1 2 3; do
      (($(wc -l < "$d/start.1.$rank") == 1)) || fail "$name: rank $rank started more than once"
      [[ $kind == torch ]] || contains "$d/removal.$rank" "1|4,5|node node2 lost: no heartbeat for"
      read -r _ from to < "$d/shrunk.$rank"
      [[ $from == 6 && $to == 4 ]] || fail "$name: rank $rank shrank from $from to $to ranks"
      [[ $(tail -1 "$d/steps.1.$rank" | awk '{print $2, $3}') == "$((steps - 1)) 4" ]] ||
        fail "$name: rank $rank's last step: $(tail -1 "$d/steps.1.$rank")"
      first=$(awk '$3 == 4 {print $1; exit}' "$d/steps.1.$rank")
      less_than "$next" "$first" && next=$first
    done
    # node2, cut off, learns that it is out of the job and stops its workers by itself.
    node2_gone() { ! kill -0 "${NODE_PIDS[2]}" 2> /dev/null; }
    wait_for 10 node2_gone || { tail "$SCRATCH/$name.node2.log"; fail "$name: node2's agent went on"; }
    wait_node 2
    [[ $STATUS == 1 ]] || { cat "$SCRATCH/$name.node2.log"; fail "$name: node2 exited $STATUS, expected 1"; }
    contains "$SCRATCH/$name.node2.log" "node2 has had no heartbeat through to the rendezvous store at"
    contains "$SCRATCH/$name.node2.log" "the coordinator has removed this node from the job"
    wait_for 5 no_processes_in_node2 || fail "$name: processes left on node2: $(ip netns pids "${PREFIX}n2")"
  fi
  reconnect
  TOOK=$(elapsed "$dropped_at" "$next")
  echo "$mode: node2's traffic dropped; survivors' next completed step $TOOK s later"
}
no_processes_in_node2() { [[ -z $(ip netns pids "${PREFIX}n2") ]]; }

restart_times=() shrink_times=()
for ((round = 0; round < rounds; round++)); do
  run restart $round
  restart_times+=("$TOOK")
  run shrink $round
  shrink_times+=("$TOOK")
  less_than "$TOOK" $((heartbeat_timeout + 1)) ||
    fail "the survivors went on $TOOK s after the drop (limit: heartbeat timeout ${heartbeat_timeout} s + 1 s)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
restart_median=$(median "${restart_times[@]}")
shrink_median=$(median "${shrink_times[@]}")
echo "$kind workers: drop to the survivors' next step over $rounds round(s), heartbeat timeout ${heartbeat_timeout} s: restart median $restart_median s (${restart_times[*]}), shrink median $shrink_median s (${shrink_times[*]}), restart/shrink $(awk -v r="$restart_median" -v s="$shrink_median" 'BEGIN {printf "%.2f", r / s}')"
[[ -z ${KEEP_LOGS:-} ]] || cp -r "$SCRATCH" "$KEEP_LOGS"
no_leftovers
no_namespace_leftovers

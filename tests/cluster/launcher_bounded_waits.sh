#!/usr/bin/env bash
# cohortrun's waits end at the timeouts they were given, plus at most a second: a rendezvous
# that never fills (join_timeout), a rendezvous endpoint nobody listens on (the connect
# timeout, join_timeout too), and workers that ignore SIGTERM when the launcher is told to stop
# (COHORT_STOP_GRACE, then SIGKILL).
source "$(dirname "$0")/lib/common.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

timed() {  # timed NAME cohortrun-args...: runs it; sets STATUS and SECONDS_TAKEN
  local name=$1
  shift
  local start
  start=$(now)
  STATUS=0
  "$COHORTRUN" "$@" > "$SCRATCH/$name.log" 2>&1 || STATUS=$?
  SECONDS_TAKEN=$(elapsed "$start" "$(now)")
}

echo "== a rendezvous that never fills ends at join_timeout"
port=$(free_port)
timed lonely --nnodes 2 --nproc-per-node 1 --rdzv-endpoint "127.0.0.1:$port" --rdzv-id lonely \
  --rdzv-conf join_timeout=2,last_call_timeout=1 --no-python "$WORKER" exit "$TAG" "$SCRATCH"
[[ $STATUS != 0 ]] || fail "a rendezvous of 1 of 2 nodes succeeded"
contains "$SCRATCH/lonely.log" "join_timeout"
less_than "$SECONDS_TAKEN" 3.0 || fail "it took ${SECONDS_TAKEN}s for a join_timeout of 2s"
less_than 1.8 "$SECONDS_TAKEN" || fail "it gave up after ${SECONDS_TAKEN}s, before join_timeout"

echo "== a rendezvous endpoint nobody listens on ends at the connect timeout"
port=$(free_port)
timed unreachable --nnodes 2 --nproc-per-node 1 --rdzv-endpoint "127.0.0.1:$port" \
  --rdzv-id unreachable --rdzv-conf is_host=false,join_timeout=2 --no-python "$WORKER" exit \
  "$TAG" "$SCRATCH"
[[ $STATUS != 0 ]] || fail "an unreachable endpoint succeeded"
contains "$SCRATCH/unreachable.log" "127.0.0.1:$port"
less_than "$SECONDS_TAKEN" 3.0 || fail "it took ${SECONDS_TAKEN}s for a timeout of 2s"

echo "== workers that ignore SIGTERM are killed after COHORT_STOP_GRACE"
d=$SCRATCH/stubborn && mkdir -p "$d"
COHORT_STOP_GRACE=1s "$COHORTRUN" --standalone --nproc-per-node 2 --no-python "$WORKER" \
  ignoreterm "$TAG" "$d" > "$SCRATCH/stubborn.log" 2>&1 &
LAUNCHER=$!
STARTED_PIDS+=("$LAUNCHER")
wait_for 10 test -e "$d/ready.0" -a -e "$d/ready.1" || fail "the workers did not start"
start=$(now)
kill -TERM "$LAUNCHER"
status=0
wait "$LAUNCHER" || status=$?
taken=$(elapsed "$start" "$(now)")
[[ $status != 0 ]] || fail "cohortrun exited 0 after SIGTERM"
less_than "$taken" 2.0 || fail "stopping took ${taken}s for a grace of 1s"
less_than 0.9 "$taken" || fail "the workers were killed after ${taken}s, before the grace of 1s"
no_leftovers

#!/usr/bin/env bash
# cohortrun --on-failure shrink on one node: 4 workers (cohort-shrink-worker: verified allreduce
# steps over libcohort) and one of them SIGKILLed half way. The survivors are not restarted (one
# process each, one generation), each sees the launcher's removal record naming the rank, host
# and signal, shrinks to 3 ranks and finishes every step with correct sums, and the job exits 0.
# The survivors' flight recorders dump into the log folder (<log dir>/attempt_0/traces, which
# cohortrun names), and cohort-trace there names the killed rank. Nothing is left behind
# (processes, /dev/shm segments of the workers).
source "$(dirname "$0")/lib/common.sh"
WORKER=$BUILD/tests/cohort-shrink-worker
[[ -x $WORKER ]] || fail "$WORKER is not built"
d=$SCRATCH/run && mkdir -p "$d"
log=$SCRATCH/cohortrun.log
worker_pids=()
remove_segments() {
  local pid
  for pid in "${worker_pids[@]}"; do rm -f /dev/shm/cohort-"$pid"-*; done
}
CLEANUPS+=(remove_segments)

steps=30
unset COHORT_TRACE_DIR
"$COHORTRUN" --standalone --nproc-per-node 4 --on-failure shrink --log-dir "$SCRATCH/logs" \
  --no-python "$WORKER" \
  --dir "$d" --steps $steps --step-ms 100 --timeout 30s "$TAG" > "$log" 2>&1 &
launcher=$!
STARTED_PIDS+=("$launcher")

stepped() { [[ -f $d/steps.1.0 ]] && (($(wc -l < "$d/steps.1.0") >= $1)); }
wait_for 20 stepped 5 || { cat "$log"; fail "the 4 workers did not complete 5 steps"; }
for rank in 0 1 2 3; do
  read -r _ pid size _ < "$d/start.1.$rank"
  [[ $size == 4 ]] || fail "rank $rank started with world size $size"
  worker_pids+=("$pid")
done
victim=${worker_pids[1]}
killed_at=$(now)
kill -KILL "$victim"

STATUS=0
wait "$launcher" || STATUS=$?
[[ $STATUS == 0 ]] || { cat "$log"; fail "cohortrun exited $STATUS, expected 0"; }
host=$(hostname)
contains "$log" "worker rank 1 (local rank 1, pid $victim) on $host was killed by SIGKILL; --on-failure shrink: the job goes on without it"
contains "$log" "the job succeeded: all 3 surviving workers exited with code 0; 1 rank (1) removed"
not_contains "$log" "restarting"

# No process restarted: one generation, one start per rank.
ls "$d"/start.2.* > /dev/null 2>&1 && fail "a second generation started: $(ls "$d")"
for rank in 0 2 3; do
  (($(wc -l < "$d/start.1.$rank") == 1)) || fail "rank $rank started more than once"
  contains "$d/removal.$rank" "1|1|worker rank 1 on $host was killed by signal 9"
  read -r _ from to < "$d/shrunk.$rank"
  [[ $from == 4 && $to == 3 ]] || fail "rank $rank shrank from $from to $to ranks"
  last=$(tail -1 "$d/steps.1.$rank")
  [[ $(echo "$last" | awk '{print $2, $3}') == "$((steps - 1)) 3" ]] || fail "rank $rank's last step: $last"
done
traces=$(echo "$SCRATCH"/logs/*/attempt_0/traces)
contains "$log" "the flight recorders of $host's workers dumped into $traces; \`cohort-trace $traces\`"
for rank in 0 2 3; do
  ls "$traces"/trace-rank$rank-*.json > /dev/null 2>&1 || fail "rank $rank wrote no dump into $traces: $(ls "$traces")"
done
if [[ -x $BUILD/tools/cohort-trace ]]; then
  "$BUILD/tools/cohort-trace" "$traces" > "$SCRATCH/trace.txt" 2>&1 || true
  grep -qE "rank 1\b" "$SCRATCH/trace.txt" || { cat "$SCRATCH/trace.txt"; fail "cohort-trace does not name rank 1"; }
fi
first=$(awk '$3 == 3 {print $1; exit}' "$d/steps.1.0")
took=$(elapsed "$killed_at" "$first")
echo "worker killed: survivors' first step on 3 ranks $took s after the kill, no process restarted"
less_than "$took" 3 || fail "the survivors took $took s to go on (limit 3 s)"
no_leftovers
for pid in "${worker_pids[@]}"; do
  ls /dev/shm/cohort-"$pid"-* > /dev/null 2>&1 && fail "/dev/shm segments of worker $pid left behind"
done
true

#!/usr/bin/env bash
# cohortrun restarts: a worker killed with SIGKILL in a running 4-worker job restarts every
# worker in a new generation within 2 s, and the job then completes; a job whose worker keeps
# failing stops when --max-restarts is spent, with the failure summary.
source "$(dirname "$0")/lib/common.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

echo "== kill -9 of one worker: all 4 restarted in generation 2 within 2 s"
d=$SCRATCH/gen && mkdir -p "$d"
"$COHORTRUN" --standalone --nproc-per-node 4 --max-restarts 1 --no-python "$WORKER" gen "$TAG" "$d" \
  > "$SCRATCH/gen.log" 2>&1 &
launcher=$!
STARTED_PIDS+=("$launcher")
all_started() { for r in 0 1 2 3; do [[ -e $d/start.$1.$r ]] || return 1; done; }
wait_for 15 all_started 1 || fail "generation 1 did not start"
victim=$(awk '{print $2}' "$d/start.1.2")
killed_at=$(now)
kill -KILL "$victim"
wait_for 10 all_started 2 || { cat "$SCRATCH/gen.log"; fail "generation 2 did not start"; }
latest=$(cat "$d"/start.2.* | awk '{print $1}' | sort -n | tail -1)
took=$(elapsed "$killed_at" "$latest")
echo "restart: all 4 workers of generation 2 running $took s after the kill"
less_than "$took" 2 || fail "restart took $took s (limit 2 s)"
status=0
wait "$launcher" || status=$?
[[ $status == 0 ]] || { cat "$SCRATCH/gen.log"; fail "the restarted job exited $status"; }
contains "$SCRATCH/gen.log" "worker rank 2 on $(hostname) was killed by signal 9; restarting (restart 1 of 1)"
# Generation 1's other workers were stopped, not left running.
for r in 0 1 3; do
  pid=$(awk '{print $2}' "$d/start.1.$r")
  ! kill -0 "$pid" 2>/dev/null || fail "generation 1 worker $pid still runs"
done
no_leftovers

echo "== max-restarts exhausted: the summary names the failing rank"
d=$SCRATCH/fail && mkdir -p "$d"
status=0
"$COHORTRUN" --standalone --nproc-per-node 2 --max-restarts 2 --no-python "$WORKER" alwaysfail "$TAG" "$d" \
  > "$SCRATCH/fail.log" 2>&1 || status=$?
[[ $status == 1 ]] || { cat "$SCRATCH/fail.log"; fail "exhausted job exited $status"; }
[[ $(tr '\n' ' ' < "$d/attempts.0") == "0 1 2 " ]] || fail "attempts: $(cat "$d/attempts.0")"
contains "$SCRATCH/fail.log" "restarting (restart 2 of 2)"
contains "$SCRATCH/fail.log" "no restarts left (--max-restarts 2)"
contains "$SCRATCH/fail.log" "Root Cause (first observed failure):"
contains "$SCRATCH/fail.log" "rank      : 1 (local_rank: 1)"
contains "$SCRATCH/fail.log" "exitcode  : 7"
[[ $(grep -c "Root Cause" "$SCRATCH/fail.log") == 1 ]] || fail "one summary expected"
no_leftovers

#!/usr/bin/env bash
# cohortrun --on-failure shrink with torch workers on the "cohort" backend (the package built
# into <build>/python): 3 workers, one SIGKILLed after a few steps. The torch backend's removal
# watch fails the step, the survivors call cohort.shrink() and finish with correct sums, no
# process restarts, and every survivor exits 0 (the watch thread parked in the worker store at
# interpreter exit once aborted them all), so the job exits 0.
source "$(dirname "$0")/lib/common.sh"
if ! ls "$BUILD"/python/cohort/_C*.so > /dev/null 2>&1; then
  echo "SKIP: the torch extension is not built in $BUILD"
  exit 0
fi
d=$SCRATCH/run && mkdir -p "$d"
log=$SCRATCH/cohortrun.log
PYTHONPATH=$BUILD/python COHORT_PYTHON=/usr/bin/python3 "$COHORTRUN" --standalone \
  --nproc-per-node 3 --on-failure shrink "$SOURCE/tests/cluster/lib/torch_shrink_worker.py" \
  "$d" 30 "$TAG" > "$log" 2>&1 &
launcher=$!
STARTED_PIDS+=("$launcher")
stepped() { grep -q "step 3 world size 3" "$log"; }
wait_for 60 stepped || { cat "$log"; fail "the 3 torch workers did not step"; }
contains "$log" "backend cohort, world size 3, COHORT_ON_FAILURE=shrink"
victim=$(cat "$d/pid.1")
kill -KILL "$victim"
STATUS=0
wait "$launcher" || STATUS=$?
[[ $STATUS == 0 ]] || { cat "$log"; fail "cohortrun exited $STATUS, expected 0"; }
contains "$log" "cohortrun removed rank(s) 1 from the job: worker rank 1 on $(hostname) was killed by signal 9"
contains "$log" "rank 0: shrank to world size 2"
contains "$log" "rank 2: shrank to world size 2"
contains "$log" "step 29 world size 2"
contains "$log" "rank 0 finished 30 steps"
contains "$log" "rank 2 finished 30 steps"
contains "$log" "the job succeeded: all 2 surviving workers exited with code 0; 1 rank (1) removed"
not_contains "$log" "restarting"
not_contains "$log" "terminate called"
no_leftovers

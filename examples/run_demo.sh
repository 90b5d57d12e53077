#!/usr/bin/env bash
# The main job (`make run`), twice on 4 local workers, on the "cohort" backend (the package
# built into <build>/python goes on the workers' PYTHONPATH, and the job says which backend
# it runs):
#   1. --on-failure restart (the default, as torchrun): examples/train.py; this script kills
#      worker rank 1 with SIGKILL half way, cohortrun restarts the job in a new generation,
#      which resumes from the last checkpoint and finishes.
#   2. --on-failure shrink: examples/train_shrink.py; worker rank 1 kills itself with SIGKILL
#      half way (--kill-rank 1), cohortrun removes it from the job, and the 3 survivors shrink
#      their process group (cohort.shrink()) and finish without any process restarting.
# Usage: examples/run_demo.sh [build dir]
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cohortrun=$build/csrc/launcher/cohortrun
steps=${STEPS:-40}
half=$((steps / 2))
work=$(mktemp -d /tmp/cohort-demo.XXXXXX)
launcher=
cleanup() {
  if [[ -n "$launcher" ]] && kill -0 "$launcher" 2>/dev/null; then kill -TERM "$launcher"; wait "$launcher" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# torch is importable from Debian's interpreter, which may not be the first python3 on PATH;
# the cohort package is the one this build made.
export COHORT_PYTHON=${COHORT_PYTHON:-/usr/bin/python3}
export PYTHONPATH=$build/python${PYTHONPATH:+:$PYTHONPATH}
ls "$build"/python/cohort/_C*.so > /dev/null 2>&1 ||
  { echo "== $build/python has no cohort extension: build with torch (make build)" >&2; exit 1; }

# wait_for_line FILE REGEX: until the job's output has a matching line (2 minutes at most).
wait_for_line() {
  for _ in $(seq 1 1200); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
  done
  echo "== the job never printed a line matching \"$2\"" >&2
  return 1
}

echo "== 1. restart: cohortrun --standalone --nproc-per-node 4 --max-restarts 3 examples/train.py --steps $steps"
"$cohortrun" --standalone --nproc-per-node 4 --max-restarts 3 \
  "$here/train.py" --steps "$steps" --checkpoint-dir "$work/ckpt" --step-seconds 0.1 \
  > >(tee "$work/restart.log") 2>&1 &
launcher=$!
wait_for_line "$work/restart.log" "step $half/$steps"
victim=$(cat "$work/ckpt/pid.1")
echo "== killing worker rank 1 (pid $victim) with SIGKILL at step $half of $steps"
kill -KILL "$victim"
status=0
wait "$launcher" || status=$?
launcher=
echo "== cohortrun exited with code $status"
grep -q "backend cohort," "$work/restart.log" || { echo "== the job did not run on the cohort backend" >&2; exit 1; }
grep -q "restart 1, starting at step" "$work/restart.log" || { echo "== the job did not restart" >&2; exit 1; }
grep -q "finished $steps steps" "$work/restart.log" || { echo "== the job did not finish" >&2; exit 1; }
((status == 0)) || exit "$status"
echo "== backend cohort; the job recovered in generation 2 from its last checkpoint and finished all $steps steps"

if [[ ! -f $here/train_shrink.py ]]; then
  echo "== 2. shrink: examples/train_shrink.py is not in this tree yet; skipping the shrink-and-continue part"
  exit 0
fi
echo
echo "== 2. shrink: cohortrun --standalone --nproc-per-node 4 --on-failure shrink" \
  "examples/train_shrink.py --steps $steps --kill-rank 1 --kill-step $half"
"$cohortrun" --standalone --nproc-per-node 4 --on-failure shrink \
  "$here/train_shrink.py" --steps "$steps" --step-seconds 0.1 --kill-rank 1 --kill-step "$half" \
  > >(tee "$work/shrink.log") 2>&1 &
launcher=$!
status=0
wait "$launcher" || status=$?
launcher=
echo "== cohortrun exited with code $status"
grep -q "killing myself (SIGKILL) at step $half" "$work/shrink.log" ||
  { echo "== worker rank 1 was not killed" >&2; exit 1; }
grep -q "backend cohort" "$work/shrink.log" || { echo "== the job did not run on the cohort backend" >&2; exit 1; }
grep -q "finished $steps steps on 3 workers" "$work/shrink.log" ||
  { echo "== the survivors did not finish all $steps steps" >&2; exit 1; }
grep -q "the job succeeded: all 3 surviving workers exited with code 0; 1 rank (1) removed" "$work/shrink.log" ||
  { echo "== cohortrun did not report the survivors' success" >&2; exit 1; }
if grep -q "restarting" "$work/shrink.log"; then echo "== the job restarted" >&2; exit 1; fi
((status == 0)) || exit "$status"
echo "== backend cohort; the 3 survivors shrank their group and finished all $steps steps, no process restarted"

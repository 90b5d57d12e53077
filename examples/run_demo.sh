#!/usr/bin/env bash
# The main job (`make run`): cohortrun starts 4 workers of examples/train.py, this script kills
# one worker with SIGKILL half way, and cohortrun restarts the job in a new generation, which
# resumes from the last checkpoint and finishes. Usage: examples/run_demo.sh [build dir]
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
cohortrun=$build/csrc/launcher/cohortrun
steps=${STEPS:-40}
work=$(mktemp -d /tmp/cohort-demo.XXXXXX)
launcher=
cleanup() {
  if [[ -n "$launcher" ]] && kill -0 "$launcher" 2>/dev/null; then kill -TERM "$launcher"; wait "$launcher" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# torch is importable from Debian's interpreter, which may not be the first python3 on PATH.
export COHORT_PYTHON=${COHORT_PYTHON:-/usr/bin/python3}
echo "== cohortrun --standalone --nproc-per-node 4 --max-restarts 3 examples/train.py --steps $steps"
"$cohortrun" --standalone --nproc-per-node 4 --max-restarts 3 \
  "$here/train.py" --steps "$steps" --checkpoint-dir "$work/ckpt" --step-seconds 0.1 \
  > >(tee "$work/log") 2>&1 &
launcher=$!

# Half way: the checkpoint line for steps/2 appears.
half=$((steps / 2))
for _ in $(seq 1 1200); do
  grep -q "step $half/$steps" "$work/log" 2>/dev/null && break
  sleep 0.1
done
victim=$(cat "$work/ckpt/pid.1")
echo "== killing worker rank 1 (pid $victim) with SIGKILL at step $half of $steps"
kill -KILL "$victim"

status=0
wait "$launcher" || status=$?
launcher=
echo "== cohortrun exited with code $status"
grep -q "restart 1, starting at step" "$work/log" || { echo "== the job did not restart" >&2; exit 1; }
grep -q "finished $steps steps" "$work/log" || { echo "== the job did not finish" >&2; exit 1; }
echo "== the job recovered in generation 2 from its last checkpoint and finished all $steps steps"
exit "$status"

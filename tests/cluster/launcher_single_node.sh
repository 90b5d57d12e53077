#!/usr/bin/env bash
# cohortrun on one node: the worker environment contract, prefixed output, exit codes and the
# failure summary, error files, signals, log files, no orphans after SIGKILL of the launcher,
# no zombies, dry run, bad flags, and the cohort backend's store through cohort-bench.
source "$(dirname "$0")/lib/common.sh"
WORKER=$SOURCE/tests/cluster/lib/worker.sh

run() {  # run NAME cohortrun-args...: runs to completion, output in $SCRATCH/NAME.log
  local name=$1
  shift
  local status=0
  "$COHORTRUN" "$@" > "$SCRATCH/$name.log" 2>&1 || status=$?
  echo "$status"
}

start() {  # start NAME cohortrun-args...: in the background; sets LAUNCHER
  local name=$1
  shift
  "$COHORTRUN" "$@" > "$SCRATCH/$name.log" 2>&1 &
  LAUNCHER=$!
  STARTED_PIDS+=("$LAUNCHER")
}

finish() {  # finish: waits for $LAUNCHER; its exit code in $STATUS
  STATUS=0
  wait "$LAUNCHER" || STATUS=$?
}

echo "== environment contract"
d=$SCRATCH/env && mkdir -p "$d"
unset OMP_NUM_THREADS
export BIND_MASTER_PORT=1  # rank 0 binds and listens on the reserved MASTER_PORT, as TCPStore does
status=$(run env --standalone --nproc-per-node 3 --max-restarts 2 --no-python "$WORKER" env "$TAG" "$d")
[[ $status == 0 ]] || { cat "$SCRATCH/env.log"; fail "env job exited $status"; }
for rank in 0 1 2; do
  f=$d/env.$rank
  contains "$f" "RANK=$rank"
  contains "$f" "LOCAL_RANK=$rank"
  contains "$f" "GROUP_RANK=0"
  contains "$f" "ROLE_RANK=$rank"
  contains "$f" "ROLE_NAME=default"
  contains "$f" "LOCAL_WORLD_SIZE=3"
  contains "$f" "WORLD_SIZE=3"
  contains "$f" "GROUP_WORLD_SIZE=1"
  contains "$f" "ROLE_WORLD_SIZE=3"
  contains "$f" "MASTER_ADDR=127.0.0.1"
  grep -qE '^MASTER_PORT=[0-9]+$' "$f" || fail "MASTER_PORT missing in $f"
  contains "$f" "TORCHELASTIC_RESTART_COUNT=0"
  contains "$f" "TORCHELASTIC_MAX_RESTARTS=2"
  grep -qE '^TORCHELASTIC_RUN_ID=.+' "$f" || fail "TORCHELASTIC_RUN_ID missing"
  grep -qE "^TORCHELASTIC_ERROR_FILE=.*/attempt_0/$rank/error.json$" "$f" || fail "error file path in $f"
  contains "$f" "TORCHELASTIC_USE_AGENT_STORE=False"
  contains "$f" "OMP_NUM_THREADS=1"
  grep -qE '^COHORT_STORE_ADDR=127.0.0.1:[0-9]+$' "$f" || fail "COHORT_STORE_ADDR in $f"
  grep -qE '^COHORT_JOB_TOKEN=[0-9a-f]{32}$' "$f" || fail "COHORT_JOB_TOKEN in $f"
  contains "$f" "COHORT_GENERATION=1"
  contains "$f" "COHORT_HOST_ID=$(hostname)"
  contains "$SCRATCH/env.log" "[$(hostname):$rank] rank $rank of 3 local $rank"
done
# Every rank sees the same master port and run id; a user's OMP_NUM_THREADS is kept.
[[ $(grep -h '^MASTER_PORT=' "$d"/env.* | sort -u | wc -l) == 1 ]] || fail "ranks disagree on MASTER_PORT"
contains "$d/bind.0" "bound $(sed -n 's/^MASTER_PORT=//p' "$d/env.0")"
unset BIND_MASTER_PORT
status=$(OMP_NUM_THREADS=6 run env2 --standalone --nproc-per-node 2 --no-python "$WORKER" env "$TAG" "$d")
[[ $status == 0 ]] || fail "env2 exited $status"
contains "$d/env.1" "OMP_NUM_THREADS=6"

echo "== output: prefixes, template, partial lines, local-ranks-filter"
status=$(run print --standalone --nproc-per-node 2 --no-python "$WORKER" print "$TAG" "$SCRATCH")
[[ $status == 0 ]] || fail "print exited $status"
contains "$SCRATCH/print.log" "[$(hostname):1] out line from 1"
contains "$SCRATCH/print.log" "[$(hostname):0] err line from 0"
contains "$SCRATCH/print.log" "[$(hostname):1] no newline from 1"
status=$(run template --standalone --nproc-per-node 2 --log-line-prefix-template '<${role_name}${local_rank}> ' \
  --local-ranks-filter 1 --no-python "$WORKER" print "$TAG" "$SCRATCH")
[[ $status == 0 ]] || fail "template exited $status"
contains "$SCRATCH/template.log" "<default1> out line from 1"
not_contains "$SCRATCH/template.log" "from 0"

echo "== exit code and failure summary"
status=$(FAIL_RANK=2 FAIL_CODE=3 run exit --standalone --nproc-per-node 3 --no-python "$WORKER" exit "$TAG" "$SCRATCH")
[[ $status == 1 ]] || { cat "$SCRATCH/exit.log"; fail "a failed job should exit 1, not $status"; }
contains "$SCRATCH/exit.log" "FAILED"
contains "$SCRATCH/exit.log" "Root Cause (first observed failure):"
contains "$SCRATCH/exit.log" "rank      : 2 (local_rank: 2)"
contains "$SCRATCH/exit.log" "exitcode  : 3"
contains "$SCRATCH/exit.log" "host      : $(hostname)"
no_leftovers

echo "== error file (torch's @record format) in the summary"
status=$(run record --standalone --nproc-per-node 2 --no-python "$WORKER" record "$TAG" "$SCRATCH")
[[ $status == 1 ]] || fail "record job exited $status"
contains "$SCRATCH/record.log" "ValueError: loss is nan at step 7"
contains "$SCRATCH/record.log" 'File "train.py", line 42, in step'
contains "$SCRATCH/record.log" "error_file: /"

echo "== a killed worker is named with its signal"
d=$SCRATCH/kill && mkdir -p "$d"
start killed --standalone --nproc-per-node 2 --no-python "$WORKER" trap "$TAG" "$d"
wait_for 10 test -e "$d/ready.1" || fail "workers did not start"
victim=$(pgrep -f -- "trap $TAG $d" | while read -r p; do grep -qz '^RANK=1$' /proc/$p/environ 2>/dev/null && echo $p; done | head -1)
[[ -n $victim ]] || fail "no rank 1 worker"
kill -KILL "$victim"
finish; status=$STATUS
[[ $status == 1 ]] || fail "killed job exited $status"
contains "$SCRATCH/killed.log" "Signal 9 (SIGKILL) received by PID $victim"
contains "$SCRATCH/killed.log" "exitcode  : -9 (pid: $victim)"
no_leftovers

echo "== signals are forwarded: SIGTERM, SIGINT, and --signals-to-handle SIGUSR1"
for sig in TERM INT USR1; do
  d=$SCRATCH/sig$sig && mkdir -p "$d"
  extra=()
  [[ $sig == USR1 ]] && extra=(--signals-to-handle SIGTERM,SIGUSR1)
  start sig$sig --standalone --nproc-per-node 2 "${extra[@]}" --no-python "$WORKER" trap "$TAG" "$d"
  wait_for 10 test -e "$d/ready.0" -a -e "$d/ready.1" || fail "workers did not start"
  kill -$sig "$LAUNCHER"
  finish; status=$STATUS
  number=$(kill -l $sig)
  [[ $status == $((128 + number)) ]] || { cat "$SCRATCH/sig$sig.log"; fail "SIG$sig: cohortrun exited $status, expected $((128 + number))"; }
  lower=$(echo $sig | tr A-Z a-z)
  for rank in 0 1; do contains "$d/$lower.$rank" "$rank got $sig"; done
done
no_leftovers

echo "== no orphans after SIGKILL of the launcher (workers and their children)"
d=$SCRATCH/orphan && mkdir -p "$d"
start orphan --standalone --nproc-per-node 3 --no-python "$WORKER" orphan "$TAG" "$d"
wait_for 10 test -e "$d/ready.0" -a -e "$d/ready.1" -a -e "$d/ready.2" || fail "workers did not start"
[[ $(tagged_pids | wc -l) -ge 7 ]] || fail "expected launcher, 3 workers and 3 children"
kill -KILL "$LAUNCHER"
finish
no_leftovers

echo "== no zombies: an orphaned grandchild is reaped while the job runs"
d=$SCRATCH/zombie && mkdir -p "$d"
start zombie --standalone --nproc-per-node 2 --no-python "$WORKER" zombie "$TAG" "$d"
wait_for 10 test -e "$d/ready.0" -a -e "$d/ready.1" || fail "workers did not start"
sleep 0.6
zombies=$(ps -o stat= --ppid "$LAUNCHER" | grep -c Z || true)
[[ $zombies == 0 ]] || { ps -o pid,stat,args --ppid "$LAUNCHER"; fail "$zombies zombie children of cohortrun"; }
finish; status=$STATUS
[[ $status == 0 ]] || fail "zombie job exited $status"

echo "== log dir: torchrun's layout, redirects and tee"
d=$SCRATCH/logs
status=$(run logs --nproc-per-node 2 --rdzv-id myjob --log-dir "$d" -r 1 -t 2 --no-python "$WORKER" print "$TAG" "$SCRATCH")
[[ $status == 0 ]] || fail "logs job exited $status"
out=$(ls "$d"/myjob_*/attempt_0/1/stdout.log) || fail "no stdout.log in torchrun's layout under $d"
contains "$out" "out line from 1"
contains "$(dirname "$out")/stderr.log" "err line from 1"
not_contains "$SCRATCH/logs.log" "out line from"   # redirected: not on the console
contains "$SCRATCH/logs.log" "err line from 1"     # tee'd: on the console too

echo "== dry run shows what was detected"
SLURM_JOB_ID=77 SLURM_NNODES=2 SLURM_NODEID=1 SLURM_JOB_NODELIST='n[3-4]' \
  "$COHORTRUN" --dry-run --nproc-per-node 2 train.py > "$SCRATCH/dry.log"
contains "$SCRATCH/dry.log" "scheduler environment: Slurm"
contains "$SCRATCH/dry.log" "rdzv-endpoint             n3:29400  <- Slurm"
contains "$SCRATCH/dry.log" "WORLD_SIZE=4"
contains "$SCRATCH/dry.log" "RANK=3"

echo "== bad flags stop with what is accepted"
status=0
"$COHORTRUN" --nproc-per-node two x > "$SCRATCH/bad.log" 2>&1 || status=$?
[[ $status == 2 ]] || fail "bad flag exit $status"
contains "$SCRATCH/bad.log" "--nproc-per-node \"two\" is not valid: it accepts a positive integer, auto, cpu or gpu"
status=0
COHORT_STOP_GRACE=soon "$COHORTRUN" --standalone --no-python true > "$SCRATCH/badenv.log" 2>&1 || status=$?
[[ $status == 2 ]] || fail "bad COHORT_STOP_GRACE exit $status"
contains "$SCRATCH/badenv.log" "COHORT_STOP_GRACE=\"soon\" is not valid"

echo "== the cohort backend's store: cohort-bench ranks bootstrap through COHORT_STORE_ADDR"
if [[ -x $BUILD/bench/cohort-bench ]]; then
  status=$(run bench --standalone --nproc-per-node 2 --no-python "$BUILD/bench/cohort-bench" allreduce -b 8 -e 1K -f 4)
  [[ $status == 0 ]] || { cat "$SCRATCH/bench.log"; fail "cohort-bench under cohortrun exited $status"; }
  contains "$SCRATCH/bench.log" "[$(hostname):0]"
else
  echo "(cohort-bench not built; skipped)"
fi
no_leftovers

#!/usr/bin/env bash
# cohortrun against Debian's torchrun (torch 1.13): the same worker variables with the same
# values, and a torch training script (gloo, env:// init on the reserved MASTER_PORT) that runs
# under torchrun runs unchanged under cohortrun, including a restart from its checkpoint.
source "$(dirname "$0")/lib/common.sh"
PYTHON=/usr/bin/python3
$PYTHON -c "import torch.distributed.run" 2>/dev/null || fail "$PYTHON cannot import torch (scripts/bootstrap installs python3-torch)"

echo "== the worker environment matches torchrun's"
cd "$SCRATCH"
env | sort > "$SCRATCH/base"
# torchrun 1.13 spells its flags with underscores only; --redirects 1 --tee 1 avoids its
# Python 3.11 bug.
($PYTHON -m torch.distributed.run --standalone --nproc_per_node 2 --max_restarts 1 \
  --no_python --redirects 1 --tee 1 sh -c "env | sort > $SCRATCH/torchrun.\$RANK; : $TAG" > "$SCRATCH/torchrun.log" 2>&1) \
  || { cat "$SCRATCH/torchrun.log"; fail "torchrun failed"; }
"$COHORTRUN" --standalone --nproc-per-node 2 --max-restarts 1 --no-python \
  sh -c "env | sort > $SCRATCH/cohortrun.\$RANK; : $TAG" > "$SCRATCH/cohortrun.log" 2>&1 || fail "cohortrun failed"
for rank in 0 1; do
  # Shell bookkeeping (SHLVL, _) is not the launcher's; COHORT_* are ours on top of torchrun's.
  ignore='^(COHORT_.*|SHLVL|_|PWD|OLDPWD)$'
  comm -13 "$SCRATCH/base" "$SCRATCH/torchrun.$rank" | cut -d= -f1 | grep -vE "$ignore" > "$SCRATCH/torchrun.keys"
  comm -13 "$SCRATCH/base" "$SCRATCH/cohortrun.$rank" | cut -d= -f1 | grep -vE "$ignore" > "$SCRATCH/cohortrun.keys"
  diff "$SCRATCH/torchrun.keys" "$SCRATCH/cohortrun.keys" || fail "variables differ from torchrun's (< torchrun, > cohortrun)"
  for name in RANK LOCAL_RANK GROUP_RANK ROLE_RANK ROLE_NAME LOCAL_WORLD_SIZE WORLD_SIZE GROUP_WORLD_SIZE \
              ROLE_WORLD_SIZE TORCHELASTIC_RESTART_COUNT TORCHELASTIC_MAX_RESTARTS \
              TORCHELASTIC_USE_AGENT_STORE OMP_NUM_THREADS NCCL_ASYNC_ERROR_HANDLING; do
    expected=$(grep "^$name=" "$SCRATCH/torchrun.$rank" || true)
    actual=$(grep "^$name=" "$SCRATCH/cohortrun.$rank" || true)
    [[ $expected == "$actual" ]] || fail "rank $rank: torchrun sets \"$expected\", cohortrun \"$actual\""
  done
done

echo "== a torch training script runs unchanged, and resumes after a restart"
export COHORT_PYTHON=$PYTHON
ckpt=$SCRATCH/ckpt
status=0
"$COHORTRUN" --standalone --nproc-per-node 2 "$SOURCE/examples/train.py" --steps 4 \
  --checkpoint-every 2 --step-seconds 0 --checkpoint-dir "$ckpt" > "$SCRATCH/train.log" 2>&1 || status=$?
[[ $status == 0 ]] || { cat "$SCRATCH/train.log"; fail "train.py under cohortrun exited $status"; }
contains "$SCRATCH/train.log" "world size 2, restart 0, starting at step 0"
contains "$SCRATCH/train.log" "finished 4 steps"
# Run again: it resumes from the checkpoint at step 4 and has nothing left to do.
status=0
"$COHORTRUN" --standalone --nproc-per-node 2 "$SOURCE/examples/train.py" --steps 6 \
  --checkpoint-every 2 --step-seconds 0 --checkpoint-dir "$ckpt" > "$SCRATCH/resume.log" 2>&1 || status=$?
[[ $status == 0 ]] || { cat "$SCRATCH/resume.log"; fail "resumed train.py exited $status"; }
contains "$SCRATCH/resume.log" "starting at step 4"
contains "$SCRATCH/resume.log" "finished 6 steps"
no_leftovers

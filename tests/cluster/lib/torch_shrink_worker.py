"""A torch worker for the launcher's --on-failure tests: verified all_reduce steps on the
"cohort" backend. Under cohortrun --on-failure shrink a failed step is followed by
cohort.shrink() and the steps go on with the survivors; otherwise the worker exits 1 and the
restarted job resumes at the last step rank 0 completed.

    torch_shrink_worker.py DIR STEPS [tag]     (STEP_SECONDS: pause per step, default 0.05)

Writes what it saw to DIR, as cohort-shrink-worker does (tests/cluster/lib/shrink_worker.cc):
pid.<rank>, start.<generation>.<rank> "<time> <pid> <world size> <host>", steps.<generation>.<rank>
"<time> <step> <size>" per step, shrunk.<rank> "<time> <old size> <new size>", progress; and
prints one line per step from the lowest surviving rank."""
import os
import sys
import time

import torch
import torch.distributed as dist

import cohort


def append(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


directory, steps = sys.argv[1], int(sys.argv[2])
pause = float(os.environ.get("STEP_SECONDS", "0.05"))
job_rank = int(os.environ["RANK"])
generation = os.environ.get("COHORT_GENERATION", "1")
shrink = os.environ.get("COHORT_ON_FAILURE") == "shrink"
dist.init_process_group("cohort")
print(f"backend {dist.get_backend()}, world size {dist.get_world_size()}, "
      f"COHORT_ON_FAILURE={os.environ.get('COHORT_ON_FAILURE')}", flush=True)
with open(os.path.join(directory, f"pid.{job_rank}"), "w") as f:
    f.write(str(os.getpid()))
append(os.path.join(directory, f"start.{generation}.{job_rank}"),
       f"{time.time():.6f} {os.getpid()} {dist.get_world_size()} {os.environ.get('COHORT_HOST_ID', '')}")
step = 0
if generation != "1" and os.path.exists(os.path.join(directory, "progress")):
    step = int(open(os.path.join(directory, "progress")).read()) + 1
steps_file = os.path.join(directory, f"steps.{generation}.{job_rank}")
while step < steps:
    values = torch.full((256,), float(job_rank + 1))
    try:
        dist.all_reduce(values)
    except RuntimeError as error:
        print(f"rank {job_rank}: step {step} failed: {error}", flush=True)
        if not shrink:
            sys.exit(1)
        size = dist.get_world_size()
        cohort.shrink()
        append(os.path.join(directory, f"shrunk.{job_rank}"),
               f"{time.time():.6f} {size} {dist.get_world_size()}")
        print(f"rank {job_rank}: shrank to world size {dist.get_world_size()}", flush=True)
        continue
    expected = float(sum(r + 1 for r in cohort.root_ranks()))
    if values[0].item() != expected:
        sys.exit(f"rank {job_rank}: step {step} summed to {values[0].item()}, not {expected}")
    append(steps_file, f"{time.time():.6f} {step} {dist.get_world_size()}")
    if dist.get_rank() == 0:
        print(f"step {step} world size {dist.get_world_size()}", flush=True)
        with open(os.path.join(directory, "progress.tmp"), "w") as f:
            f.write(str(step))
        os.replace(os.path.join(directory, "progress.tmp"), os.path.join(directory, "progress"))
    step += 1
    time.sleep(pause)
print(f"rank {job_rank} finished {steps} steps", flush=True)
dist.destroy_process_group()

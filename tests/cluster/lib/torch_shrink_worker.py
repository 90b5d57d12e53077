"""A torch worker for launcher_shrink_torch.sh: verified all_reduce steps on the "cohort"
backend that go on with cohort.shrink() after a peer is lost (under cohortrun --on-failure
shrink). torch_shrink_worker.py DIR STEPS [tag]: writes DIR/pid.<RANK> at start, prints one line
per step from the lowest surviving rank, and a final line per rank."""
import os
import sys
import time

import torch
import torch.distributed as dist

import cohort

directory, steps = sys.argv[1], int(sys.argv[2])
job_rank = int(os.environ["RANK"])
dist.init_process_group("cohort")
print(f"backend {dist.get_backend()}, world size {dist.get_world_size()}, "
      f"COHORT_ON_FAILURE={os.environ.get('COHORT_ON_FAILURE')}", flush=True)
with open(os.path.join(directory, f"pid.{job_rank}"), "w") as f:
    f.write(str(os.getpid()))
step = 0
while step < steps:
    values = torch.full((256,), float(job_rank + 1))
    try:
        dist.all_reduce(values)
    except RuntimeError as error:
        print(f"rank {job_rank}: step {step} failed: {error}", flush=True)
        cohort.shrink()
        print(f"rank {job_rank}: shrank to world size {dist.get_world_size()}", flush=True)
        continue
    expected = float(sum(r + 1 for r in cohort.root_ranks()))
    if values[0].item() != expected:
        sys.exit(f"rank {job_rank}: step {step} summed to {values[0].item()}, not {expected}")
    if dist.get_rank() == 0:
        print(f"step {step} world size {dist.get_world_size()} at {time.time():.3f}", flush=True)
    step += 1
    time.sleep(0.05)
print(f"rank {job_rank} finished {steps} steps", flush=True)
dist.destroy_process_group()

"""A small data-parallel training job for cohortrun (or torchrun): an MLP on synthetic data.

Every rank checkpoints nothing; rank 0 saves the model and optimizer every --checkpoint-every
steps, and every rank resumes from the last checkpoint when the launcher restarts the job, so a
killed worker costs at most a few steps. Uses the "cohort" process-group backend when the cohort
package imports, else gloo.

    cohortrun --standalone --nproc-per-node 4 examples/train.py --steps 60
"""
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--checkpoint-dir", default=os.environ.get("CHECKPOINT_DIR", "/tmp/cohort-example"))
    parser.add_argument("--step-seconds", type=float, default=0.1,
                        help="extra time per step, so a demo can kill a worker half way")
    return parser.parse_args()


def pick_backend():
    try:
        import cohort  # noqa: F401  (registers the "cohort" backend)
        return "cohort"
    except Exception as error:  # say why, so a gloo run is never mistaken for a cohort one
        if os.environ.get("RANK", "0") == "0":
            print(f"the cohort package does not import ({error}); using gloo", flush=True)
        return "gloo"


def batch_for(step, rank, batch, generator_seed=1234):
    # Synthetic regression data, different per rank and step, reproducible after a restart.
    generator = torch.Generator().manual_seed(generator_seed + 1000 * step + rank)
    inputs = torch.randn(batch, 16, generator=generator)
    targets = inputs.sum(dim=1, keepdim=True) * 0.5
    return inputs, targets


@record
def main():
    args = parse_args()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    backend = pick_backend()
    dist.init_process_group(backend=backend)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
    os.makedirs(args.checkpoint_dir, exist_ok=True)
    path = os.path.join(args.checkpoint_dir, "checkpoint.pt")
    start = 0
    if os.path.exists(path):
        state = torch.load(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    with open(os.path.join(args.checkpoint_dir, f"pid.{rank}"), "w") as f:
        f.write(str(os.getpid()))
    if rank == 0:
        print(f"backend {backend}, world size {world_size}, restart {restart}, "
              f"starting at step {start}", flush=True)
    loss = torch.tensor(0.0)
    for step in range(start, args.steps):
        inputs, targets = batch_for(step, rank, args.batch)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(inputs), targets)
        loss.backward()
        optimizer.step()
        time.sleep(args.step_seconds)
        done = step + 1
        if done % args.checkpoint_every == 0 or done == args.steps:
            if rank == 0:
                temporary = path + ".tmp"
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "step": done}, temporary)
                os.replace(temporary, path)  # a reader never sees half a checkpoint
                print(f"step {done}/{args.steps} loss {loss.item():.4f} (checkpoint)", flush=True)
            dist.barrier()
    if rank == 0:
        print(f"finished {args.steps} steps, final loss {loss.item():.4f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

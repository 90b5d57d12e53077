"""Data-parallel training that loses a worker and goes on with the survivors, restarting nothing.

A small DDP job on CPU with the "cohort" backend. At --kill-step the worker whose rank is
--kill-rank kills itself with SIGKILL (or kill one from outside: --kill-rank -1). The survivors'
next collective fails with cohort.CollectiveError; each survivor then

  1. calls cohort.shrink(): the default process group becomes the survivors (dense new ranks in
     the old order, the same connections, no new rendezvous);
  2. wraps the same model in a new DistributedDataParallel (its constructor broadcasts the
     parameters from the new rank 0, so survivors that got one step apart agree again) and keeps
     the optimizer, whose state and the step number it also takes from the new rank 0;
  3. reshards the data: every step's global batch is the same, split by the new rank and world
     size, so the loss goes on where it was;

and the job finishes its steps on fewer workers. Started directly (one process per rank, with
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, as torchrun would), the store lives in rank
0's process: lose any other rank. Under `cohortrun --on-failure shrink` the launcher's store
outlives every worker, so any rank may go, and cohortrun tells the survivors whom it removed.

    for r in 0 1 2 3; do RANK=$r WORLD_SIZE=4 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 \\
        python3 examples/train_shrink.py --kill-rank 2 --kill-step 10 & done; wait
    cohortrun --standalone --nproc-per-node 4 --on-failure shrink examples/train_shrink.py

Output (rank 0; the lost worker's error names it and its host; lines cut here):

    [rank 0] backend cohort, world size 4, 40 steps of 64 samples
    [rank 0] step 10 loss 2.5548 (world size 4)
    [rank 0] step 11 failed: allreduce(float32 x 577, sum) #26 on rank 0 (vm) failed: lost
             connection to rank 2 (vm): the peer closed the connection. ...
    [rank 0] shrank in 3.7 ms: world size 4 -> 3, this worker rank 0 -> 0 (ranks 0, 1, 3 go
             on), resuming at step 10
    [rank 0] step 15 loss 1.7034 (world size 3)
    [rank 0] finished 40 steps on 3 workers (started on 4), final loss 0.2255
"""
import argparse
import datetime
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import cohort

FEATURES = 16


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64, help="global batch (every step)")
    parser.add_argument("--samples", type=int, default=4096, help="size of the synthetic set")
    parser.add_argument("--kill-rank", type=int, default=2,
                        help="the worker (its RANK at the start) that kills itself; -1: none")
    parser.add_argument("--kill-step", type=int, default=10)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--step-seconds", type=float, default=0.0,
                        help="extra time per step, so a worker can be killed from outside")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds any collective may take (the process group's timeout)")
    return parser.parse_args(argv)


def dataset(samples, seed=1234):
    """The same synthetic regression set on every worker: y = x . w + noise."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, FEATURES, generator=generator)
    weights = torch.linspace(-1.0, 1.0, FEATURES).unsqueeze(1)
    targets = inputs @ weights + 0.05 * torch.randn(samples, 1, generator=generator)
    return inputs, targets


def shard(data, step, batch, rank, world_size, seed=99):
    """This worker's part of step `step`'s global batch. The global batch depends on the step
    only, so a new world size changes who gets which samples, not which samples a step sees."""
    inputs, targets = data
    per_epoch = len(inputs) // batch
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed + epoch))
    chosen = order[index * batch:(index + 1) * batch][rank::world_size]
    return inputs[chosen], targets[chosen]


def agree_with_rank0(optimizer, step):
    """Takes the optimizer's state and the step number from rank 0 (a survivor may have finished
    one step more than another when the failure came between its allreduce and theirs)."""
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                dist.broadcast(value, src=0)
    step_tensor = torch.tensor([step], dtype=torch.int64)
    dist.broadcast(step_tensor, src=0)
    return int(step_tensor.item())


def main(argv=None):
    args = parse_args(argv)
    start_rank = int(os.environ["RANK"])
    start_world = int(os.environ["WORLD_SIZE"])
    dist.init_process_group("cohort", timeout=datetime.timedelta(seconds=args.timeout))
    rank, world_size = dist.get_rank(), dist.get_world_size()

    def say(text):
        if dist.get_rank() == 0:
            print(f"[rank {dist.get_rank()}] {text}", flush=True)

    torch.manual_seed(0)  # the same initial model everywhere (DDP broadcasts it anyway)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 1))
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = dataset(args.samples)
    say(f"backend {dist.get_backend()}, world size {world_size}, {args.steps} steps of "
        f"{args.batch} samples")
    step, loss_value = 0, float("nan")
    while step < args.steps:
        try:
            if step == args.kill_step and start_rank == args.kill_rank:
                print(f"[worker {start_rank}] killing myself (SIGKILL) at step {step}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            inputs, targets = shard(data, step, args.batch, rank, world_size)
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(ddp(inputs), targets)
            loss.backward()  # DDP's allreduces of the gradients: where a lost peer shows
            optimizer.step()
            # The global batch's loss: this worker's share, summed over the workers.
            total = torch.tensor([loss.item() * len(inputs), float(len(inputs))])
            dist.all_reduce(total)
            loss_value = (total[0] / total[1]).item()
            step += 1
            if step % args.log_every == 0 or step == args.steps:
                say(f"step {step} loss {loss_value:.4f} (world size {world_size})")
            time.sleep(args.step_seconds)
        except RuntimeError as error:
            # A peer's failure (cohort.CollectiveError; inside DDP's backward it can reach us as
            # a plain RuntimeError naming it) rather than a bug: the group knows a failed rank.
            if not isinstance(error, cohort.CollectiveError) and not cohort.failed_ranks():
                raise
            first_line = str(error).strip().splitlines()[0]
            if rank == 0:
                print(f"[rank {rank}] step {step + 1} failed: {first_line}", flush=True)
            began = time.monotonic()
            del error
            cohort.shrink()  # the default group is now the survivors
            old_rank, old_world = rank, world_size
            rank, world_size = dist.get_rank(), dist.get_world_size()
            ddp = DistributedDataParallel(model)  # same parameters, new group
            step = agree_with_rank0(optimizer, step)
            survivors = ", ".join(str(r) for r in cohort.root_ranks())
            say(f"shrank in {(time.monotonic() - began) * 1e3:.1f} ms: world size {old_world} -> "
                f"{world_size}, this worker rank {old_rank} -> {rank} (ranks {survivors} go on), "
                f"resuming at step {step}")
    say(f"finished {args.steps} steps on {world_size} workers (started on {start_world}), "
        f"final loss {loss_value:.4f}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

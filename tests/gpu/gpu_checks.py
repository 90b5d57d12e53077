"""GPU checks of the torch backend "cohort" (run by tests/gpu/run.sh on a machine with a GPU).

Each check forks its ranks (tests/python/harness.py) and compares results with values computed
locally. CUDA tensors run through libcohort: NCCL device groups inside the host where each rank
has its own GPU, staged through pinned host memory where ranks share one (COHORT_CUDA_PATH).
Checks that need something this machine lacks (NCCL in the build, a second GPU) say SKIP. Exits 1 if any check failed. The parent process never touches CUDA (forked children could
not use it otherwise); the device count comes from GPU_CHECK_DEVICES (set by run.sh).
"""
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import cohort  # noqa: E402
import harness  # noqa: E402

DEVICES = int(os.environ.get("GPU_CHECK_DEVICES", "1"))


def device_for(rank):
    return torch.device("cuda", rank % DEVICES)


def collectives_body(rank, world):
    """Every op on CUDA tensors; returns a list of what went wrong."""
    device = device_for(rank)
    torch.cuda.set_device(device)
    failures = []

    def check(name, got, want):
        if not torch.equal(got.cpu(), want.cpu()):
            failures.append(f"{name}: got {got.cpu().tolist()[:8]} want {want.cpu().tolist()[:8]}")

    ranks = torch.arange(world, dtype=torch.float32)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int64):
        tensor = torch.full((1000,), rank + 1, dtype=dtype, device=device)
        dist.all_reduce(tensor)
        check(f"allreduce sum {dtype}", tensor, torch.full((1000,), world * (world + 1) // 2,
                                                           dtype=dtype))
    tensor = torch.full((7,), float(rank), device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    check("allreduce max", tensor, torch.full((7,), float(world - 1)))
    tensor = torch.full((7,), float(rank * 2), device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.AVG)
    check("allreduce avg", tensor, torch.full((7,), float(world - 1)))
    view = torch.arange(12., device=device).reshape(3, 4).t()
    dist.all_reduce(view)
    check("allreduce non-contiguous", view, torch.arange(12.).reshape(3, 4).t() * world)
    tensor = torch.full((5,), float(rank), device=device)
    dist.broadcast(tensor, src=world - 1)
    check("broadcast", tensor, torch.full((5,), float(world - 1)))
    outputs = [torch.zeros(3, device=device) for _ in range(world)]
    dist.all_gather(outputs, torch.full((3,), float(rank), device=device))
    check("all_gather", torch.stack(outputs), ranks.repeat_interleave(3).reshape(world, 3))
    flat = torch.zeros(3 * world, device=device)
    dist.all_gather_into_tensor(flat, torch.full((3,), float(rank), device=device))
    check("all_gather_into_tensor", flat, ranks.repeat_interleave(3))
    output = torch.zeros(2, device=device)
    dist.reduce_scatter_tensor(output, torch.arange(2. * world, device=device))
    check("reduce_scatter_tensor", output, torch.arange(2. * rank, 2. * rank + 2) * world)
    output = torch.zeros(world, device=device)
    dist.all_to_all_single(output, torch.arange(world, dtype=torch.float32, device=device) + 10 * rank)
    check("all_to_all_single", output, torch.arange(world, dtype=torch.float32) * 10 + rank)
    gathered = [torch.zeros(2, device=device) for _ in range(world)] if rank == 0 else None
    dist.gather(torch.full((2,), float(rank), device=device), gathered, dst=0)
    if rank == 0:
        check("gather", torch.stack(gathered), ranks.repeat_interleave(2).reshape(world, 2))
    output = torch.zeros(2, device=device)
    pieces = [torch.full((2,), float(r), device=device) for r in range(world)] if rank == 0 else None
    dist.scatter(output, pieces, src=0)
    check("scatter", output, torch.full((2,), float(rank)))
    if world > 1:
        if rank == 0:
            dist.send(torch.arange(4., device=device), dst=1)
        elif rank == 1:
            received = torch.zeros(4, device=device)
            dist.recv(received, src=0)
            check("send/recv", received, torch.arange(4.))
    # Async with a Future: then() runs after the data is there.
    tensor = torch.ones(4, device=device)
    future = dist.all_reduce(tensor, async_op=True).get_future()
    doubled = future.then(lambda done: done.value()[0] * 2).wait()
    check("future then", doubled, torch.full((4,), 2. * world))
    dist.barrier()
    torch.cuda.synchronize()
    return failures


def ddp_body(rank, world):
    """DDP on CUDA with "cohort" and with "gloo" (same seed) must end with the same parameters."""
    device = device_for(rank)
    torch.cuda.set_device(device)
    gloo = dist.new_group(backend="gloo")

    def train(group):
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
        ddp = DistributedDataParallel(model, device_ids=[device.index], process_group=group)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(rank)
        for _ in range(20):
            inputs = torch.randn(4, 8, generator=generator).to(device)
            optimizer.zero_grad()
            ddp(inputs).square().mean().backward()
            optimizer.step()
        return [p.detach().cpu() for p in model.parameters()]

    ours, theirs = train(dist.group.WORLD), train(gloo)
    return all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(ours, theirs))


def killed_body(rank, world):
    device = device_for(rank)
    torch.cuda.set_device(device)
    tensor = torch.ones(1 << 20, device=device)
    dist.all_reduce(tensor)
    torch.cuda.synchronize()
    if rank == 1:
        os.kill(os.getpid(), 9)
    start = time.monotonic()
    try:
        for _ in range(1000):
            dist.all_reduce(tensor)
        torch.cuda.synchronize()
    except RuntimeError as error:
        return time.monotonic() - start, str(error).splitlines()[0]
    return "no error"


def main():
    print(f"cohort extension: torch {cohort._C.torch_version_built}, NCCL={cohort._C.with_nccl}, "
          f"{DEVICES} GPU(s)")
    checks = []
    if cohort._C.with_nccl:
        checks.append(("nccl, 1 rank: every op", collectives_body, 1, {}))
        if DEVICES >= 2:
            checks.append(("nccl, 2 ranks: every op", collectives_body, 2, {}))
            checks.append(("nccl, 2 ranks: DDP matches gloo", ddp_body, 2, {}))
            checks.append(("nccl, 3 ranks: a killed rank raises within seconds", killed_body,
                           3 if DEVICES >= 3 else 2, {}))
        else:
            print("SKIP  nccl with 2 ranks: NCCL needs one GPU per rank and there is one")
    else:
        print("SKIP  nccl: the extension was built without NCCL")
    staged = {"COHORT_CUDA_PATH": "staged"}
    checks.append(("staged, 2 ranks on one GPU: every op", collectives_body, 2, staged))
    checks.append(("staged, 2 ranks on one GPU: DDP matches gloo", ddp_body, 2, staged))
    if DEVICES == 1:
        # auto: libcohort finds the two ranks on one device and stages (no NCCL group).
        checks.append(("auto, 2 ranks on one GPU: every op", collectives_body, 2, {}))
    checks.append(("staged, 2 ranks: a killed rank raises within seconds", killed_body, 2,
                   staged))
    failed = 0
    for name, body, world, env in checks:
        start = time.monotonic()
        try:
            expect = {1} if body is killed_body else ()
            results = harness.run(body, world, timeout=180, pg_timeout=60, env=env,
                                  expect_killed=expect)
            if body is collectives_body:
                problems = [p for result in results for p in result]
            elif body is ddp_body:
                problems = [] if all(results) else ["parameters differ from gloo's"]
            else:
                survivors = [r for r in results if r != harness.KILLED]
                problems = [f"rank did not raise in time: {r}" for r in survivors
                            if r == "no error" or r[0] > 30]
        except Exception:  # noqa: BLE001 - report and go on with the next check
            problems = [traceback.format_exc()]
        status = "PASS" if not problems else "FAIL"
        failed += bool(problems)
        print(f"{status}  {name} ({time.monotonic() - start:.1f}s)")
        for problem in problems:
            print(f"      {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""DistributedDataParallel trains the same model to the same parameters on "cohort" as on
"gloo": 20 steps from one seed, each rank with its own data, compared rank by rank."""
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

import harness

STEPS = 20


def train(group, rank, hook=None):
    torch.manual_seed(1234)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 4))
    ddp = DistributedDataParallel(model, process_group=group, bucket_cap_mb=0.001)
    if hook is not None:
        ddp.register_comm_hook(group, hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(99 + rank)
    for _ in range(STEPS):
        inputs = torch.randn(8, 16, generator=generator)
        targets = torch.randn(8, 4, generator=generator)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ddp(inputs), targets)
        loss.backward()
        optimizer.step()
    return [parameter.detach().clone() for parameter in model.parameters()]


def allreduce_hook(group, bucket):
    """A communication hook in Python: all_reduce(async_op) + get_future().then()."""
    tensor = bucket.buffer() if hasattr(bucket, "buffer") else bucket.get_tensor()
    tensor.div_(dist.get_world_size(group))
    future = dist.all_reduce(tensor, group=group, async_op=True).get_future()
    return future.then(lambda done: done.value()[0])


def ddp_body(rank, world):
    gloo = dist.new_group(backend="gloo")
    ours = train(dist.group.WORLD, rank)
    theirs = train(gloo, rank)
    hooked = train(dist.group.WORLD, rank, hook=allreduce_hook)
    gathered = [None] * world
    dist.all_gather_object(gathered, [p.sum().item() for p in ours])
    return {
        "same_as_gloo": all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(ours, theirs)),
        "hook_same_as_gloo": all(torch.allclose(a, b, rtol=1e-5, atol=1e-6)
                                 for a, b in zip(hooked, theirs)),
        "moved": any(not torch.equal(a, b) for a, b in zip(ours, _initial())),
        "ranks_agree": all(g == gathered[0] for g in gathered),
    }


def _initial():
    torch.manual_seed(1234)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 4))
    return [parameter.detach().clone() for parameter in model.parameters()]


def test_ddp_matches_gloo():
    results = harness.run(ddp_body, 2, timeout=120)
    for result in results:
        assert result == {"same_as_gloo": True, "hook_same_as_gloo": True, "moved": True,
                          "ranks_agree": True}, result

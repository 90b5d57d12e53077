"""cohort.shrink (python/cohort/failures.py): after a rank is SIGKILLed the survivors get a group
of themselves (world size, dense ranks in the old order, the ranks they had before) whose
collectives give the right results; DDP re-wrapped on it averages over the survivors; a rank the
others leave out gets an error that says so; a subgroup shrinks without touching the rest; and
examples/train_shrink.py trains on 4 workers, loses one and finishes on 3.

Ranks are forked (tests/python/harness.py); the store lives in rank 0's process, so the rank
lost is another one.
"""
import os
import re
import signal
import subprocess
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import cohort
import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "train_shrink.py")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _fails(call):
    """The CollectiveError `call` raises (it must raise one)."""
    try:
        call()
    except cohort.CollectiveError as error:
        return error
    raise AssertionError("the collective after the kill did not fail")


def _shrink_after_kill(rank, world_size, victim):
    values = torch.ones(1000)
    dist.all_reduce(values)
    if rank == victim:
        _die()
    error = _fails(lambda: dist.all_reduce(values))
    old_group = dist.distributed_c10d._get_default_group()
    failed = cohort.failed_ranks()
    group = cohort.shrink()
    result = {"error_ranks": list(error.ranks), "error": str(error), "failed": failed,
              "rank": dist.get_rank(), "world_size": dist.get_world_size(),
              "group_is_default": group is dist.distributed_c10d._get_default_group(),
              "roots": cohort.root_ranks(), "new_failed": cohort.failed_ranks()}
    # Results on the survivors: each contributes its old rank + 1, in two sizes (the lane and the
    # pipelined path), then a broadcast from the new last rank and an allgather of the new ranks.
    for count in (8, 1 << 18):
        values = torch.full((count,), float(rank + 1))
        dist.all_reduce(values)
        result.setdefault("sums", []).append(sorted(set(values.tolist())))
    value = torch.tensor([float(rank)])
    dist.broadcast(value, src=dist.get_world_size() - 1)
    result["broadcast"] = value.item()
    gathered = [torch.zeros(1) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, torch.tensor([float(rank)]))
    result["gathered"] = [g.item() for g in gathered]
    # The old group stays failed: it fails at once rather than waiting for the lost rank.
    revoked = _fails(lambda: dist.all_reduce(torch.ones(4), group=old_group))
    result["revoked"] = str(revoked)
    return result


def test_shrink_after_a_killed_rank():
    results = harness.run(_shrink_after_kill, world_size=4, expect_killed=(2,), args=(2,),
                          pg_timeout=20)
    assert results[2] == harness.KILLED
    for old_rank, result in ((0, results[0]), (1, results[1]), (3, results[3])):
        assert 2 in result["error_ranks"] and "rank 2 (" in result["error"]
        assert result["world_size"] == 3 and result["group_is_default"]
        assert result["rank"] == {0: 0, 1: 1, 3: 2}[old_rank]  # dense, in the old order
        assert result["roots"] == [0, 1, 3]
        assert result["new_failed"] == []
        assert result["sums"] == [[1.0 + 2.0 + 4.0]] * 2
        assert result["broadcast"] == 3.0  # the new rank 2 is old rank 3
        assert result["gathered"] == [0.0, 1.0, 3.0]
        assert "this communicator failed earlier" in result["revoked"], result["revoked"]
    # The rank that saw the connection close knows how rank 2 failed.
    assert any((2, "lost") in [tuple(f) for f in r["failed"]] for r in (results[0], results[1],
                                                                       results[3]))


def _ddp_after_shrink(rank, world_size, victim):
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step():
        optimizer.zero_grad()
        # d(w * x)/dw = x: DDP's average gradient is the mean of the workers' x.
        ddp(torch.tensor([[float(dist.get_rank() + 1)]])).sum().backward()
        grad = model.weight.grad.item()
        optimizer.step()
        return grad

    grads = [step()]
    if rank == victim:
        _die()
    try:
        step()
        raise AssertionError("the step after the kill did not fail")
    except RuntimeError:  # DDP's allreduce inside backward
        pass
    cohort.shrink()
    ddp = DistributedDataParallel(model)  # re-wrapped: same parameters and optimizer
    grads.append(step())
    momentum = optimizer.state[model.weight]["momentum_buffer"].item()
    return grads, momentum, model.weight.item()


def test_ddp_rewrapped_after_shrink_averages_over_the_survivors():
    results = harness.run(_ddp_after_shrink, world_size=4, expect_killed=(1,), args=(1,),
                          pg_timeout=20)
    first = (1 + 2 + 3 + 4) / 4
    after = (1 + 2 + 3) / 3  # new ranks 0, 1, 2 (old 0, 2, 3)
    weights = set()
    for r in (0, 2, 3):
        grads, momentum, weight = results[r]
        assert grads[0] == first and abs(grads[1] - after) < 1e-6, grads
        # The optimizer's state went on: momentum 0.9 * first + after.
        assert abs(momentum - (0.9 * first + after)) < 1e-5
        weights.add(round(weight, 6))
    assert len(weights) == 1  # every survivor holds the same model


def _left_out(rank, world_size):
    values = torch.ones(4)
    dist.all_reduce(values)
    # The store lives in rank 0's process (env:// without cohortrun): rank 0 stays until rank 1
    # has read the agreement's decision, or rank 1's read could find the store gone.
    store = dist.distributed_c10d._get_default_store()
    if rank == 1:
        try:
            cohort.shrink(exclude=(1,))
        except RuntimeError as error:
            store.set("left_out/answered", "1")
            return str(error)
        store.set("left_out/answered", "1")
        raise AssertionError("the rank left out got a group")
    cohort.shrink(exclude=(1,))
    values = torch.full((4,), float(rank))
    dist.all_reduce(values)
    store.wait(["left_out/answered"])
    return dist.get_world_size(), values[0].item()


def test_the_rank_left_out_gets_an_error():
    results = harness.run(_left_out, world_size=3, pg_timeout=20)
    assert results[0] == (2, 0.0 + 2.0) and results[2] == (2, 0.0 + 2.0)
    message = results[1]
    assert "rank 1" in message and re.search(r"left out|excluded|not among", message), message


def _subgroup(rank, world_size):
    # A subgroup of ranks 1, 2, 3; rank 2 dies; 1 and 3 shrink the subgroup alone, and rank 0,
    # outside it, goes on in a subgroup of its own.
    sub = dist.new_group([1, 2, 3], backend="cohort")
    solo = dist.new_group([0], backend="cohort")
    store = dist.distributed_c10d._get_default_store()
    if rank == 0:
        values = torch.ones(4)
        dist.all_reduce(values, group=solo)
        store.wait(["subgroup/done/1", "subgroup/done/3"])  # the store lives in this process
        return values[0].item()
    values = torch.ones(4)
    dist.all_reduce(values, group=sub)
    if rank == 2:
        _die()
    _fails(lambda: dist.all_reduce(values, group=sub))
    shrunk = cohort.shrink(sub)
    result = {"size": dist.get_world_size(shrunk), "rank": dist.get_rank(shrunk),
              "default_size": dist.get_world_size(), "roots": cohort.root_ranks(shrunk)}
    values = torch.full((4,), float(rank))
    dist.all_reduce(values, group=shrunk)
    result["sum"] = values[0].item()
    # Global ranks still address the shrunk subgroup's members.
    value = torch.tensor([float(rank)])
    dist.broadcast(value, src=3, group=shrunk)
    result["broadcast"] = value.item()
    store.set(f"subgroup/done/{rank}", "1")
    return result


def test_a_subgroup_shrinks_alone():
    results = harness.run(_subgroup, world_size=4, expect_killed=(2,), pg_timeout=20)
    assert results[0] == 1.0
    for r, rank_in_group in ((1, 0), (3, 1)):
        result = results[r]
        assert result["size"] == 2 and result["rank"] == rank_in_group
        assert result["default_size"] == 4  # the default group is not shrunk
        assert result["roots"] == [0, 2]  # ranks of the subgroup before the shrink
        assert result["sum"] == 1.0 + 3.0
        assert result["broadcast"] == 3.0


def test_the_example_trains_loses_a_worker_and_finishes_on_the_survivors(tmp_path):
    port = harness.free_port()
    env = dict(os.environ, WORLD_SIZE="4", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               COHORT_LOG_LEVEL="ERROR", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    workers = []
    for rank in range(4):
        log = open(tmp_path / f"rank{rank}.log", "w")
        workers.append((subprocess.Popen(
            [sys.executable, EXAMPLE, "--steps", "24", "--kill-rank", "2", "--kill-step", "8",
             "--timeout", "20"], env=dict(env, RANK=str(rank)), stdout=log,
            stderr=subprocess.STDOUT), log))
    try:
        codes = [worker.wait(timeout=120) for worker, _ in workers]
    finally:
        for worker, log in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            log.close()
    logs = [(tmp_path / f"rank{rank}.log").read_text() for rank in range(4)]
    assert codes == [0, 0, -signal.SIGKILL, 0], "\n".join(logs)
    out = logs[0]
    assert "backend cohort, world size 4" in out
    assert re.search(r"step 9 failed: .*rank 2 \(", out), out
    assert "world size 4 -> 3, this worker rank 0 -> 0 (ranks 0, 1, 3 go on), resuming at " \
           "step 8" in out
    losses = [(int(s), float(l), int(w)) for s, l, w in
              re.findall(r"step (\d+) loss ([\d.]+) \(world size (\d)\)", out)]
    assert [w for s, _, w in losses if s <= 8] and all(w == 4 for s, _, w in losses if s <= 8)
    assert all(w == 3 for s, _, w in losses if s > 8) and losses[-1][0] == 24
    assert losses[-1][1] < losses[0][1]  # it went on learning
    assert "finished 24 steps on 3 workers (started on 4)" in out
    assert "killing myself (SIGKILL) at step 8" in logs[2]


def _rank0_lost(rank, world_size):
    values = torch.ones(8)
    dist.all_reduce(values)
    if rank == 0:
        _die()  # and with it the store, which lives in its process
    _fails(lambda: dist.all_reduce(values))
    try:
        cohort.shrink()
    except RuntimeError as error:
        return str(error)
    raise AssertionError("shrink without the store succeeded")


def test_losing_rank_0_without_a_launcher_says_why_shrink_cannot_go_on():
    results = harness.run(_rank0_lost, world_size=3, expect_killed=(0,), pg_timeout=20)
    for message in results[1:]:
        assert "lives in rank 0's process" in message and "run it under cohortrun" in message

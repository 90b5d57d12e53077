"""Subgroups through new_group, communicators that share one store, the object collectives, and
every init_method torch supports."""
import datetime
import os

import torch
import torch.distributed as dist

import cohort
import harness


def subgroups_body(rank, world):
    failures = []
    evens = dist.new_group([0, 2])
    odds = dist.new_group([1, 3])
    upper = dist.new_group([1, 2, 3])
    mine = evens if rank % 2 == 0 else odds
    tensor = torch.tensor([float(rank)])
    dist.all_reduce(tensor, group=mine)
    want = 2.0 if rank % 2 == 0 else 4.0
    if tensor.item() != want:
        failures.append(f"pair allreduce: {tensor.item()} != {want}")
    if rank in (1, 2, 3):
        tensor = torch.tensor([float(rank)])
        dist.all_reduce(tensor, group=upper)
        if tensor.item() != 6.0:
            failures.append(f"upper allreduce: {tensor.item()}")
        # Ranks in calls are global ranks; torch maps them to the group's.
        tensor = torch.tensor([float(rank)])
        dist.broadcast(tensor, src=3, group=upper)
        if tensor.item() != 3.0:
            failures.append(f"upper broadcast: {tensor.item()}")
        if rank == 1:
            dist.send(torch.tensor([42]), dst=3, group=upper)
        if rank == 3:
            received = torch.zeros(1, dtype=torch.int64)
            dist.recv(received, src=1, group=upper)
            if received.item() != 42:
                failures.append(f"subgroup recv: {received}")
    tensor = torch.ones(3)
    dist.all_reduce(tensor)  # the default group still works alongside
    if not torch.equal(tensor, torch.full((3,), 4.0)):
        failures.append("world allreduce after subgroups")
    names = {cohort.communicator_name(group) for group in (None, mine)}
    if rank in (1, 2, 3):
        names.add(cohort.communicator_name(upper))
    if len(names) != (3 if rank in (1, 2, 3) else 2):
        failures.append(f"communicator names are not distinct: {names}")
    for group in (evens, odds, upper):
        if dist.get_rank(group) >= 0:
            dist.destroy_process_group(group)
    return failures


def test_subgroups():
    assert harness.run(subgroups_body, 4) == [[]] * 4


def mixed_backends_body(rank, world):
    # A gloo group beside the cohort default group, used alternately.
    gloo = dist.new_group(backend="gloo")
    totals = []
    for step in range(3):
        ours = torch.tensor([float(rank + step)])
        theirs = torch.tensor([float(rank + step)])
        dist.all_reduce(ours)
        dist.all_reduce(theirs, group=gloo)
        totals.append((ours.item(), theirs.item()))
    return dist.get_backend(), totals


def test_cohort_and_gloo_groups_side_by_side():
    results = harness.run(mixed_backends_body, 2)
    for backend, totals in results:
        assert backend == "cohort"
        assert totals == [(1.0, 1.0), (3.0, 3.0), (5.0, 5.0)]


def objects_body(rank, world):
    failures = []
    gathered = [None] * world
    dist.all_gather_object(gathered, {"rank": rank, "payload": "x" * (rank * 1000)})
    if gathered != [{"rank": r, "payload": "x" * (r * 1000)} for r in range(world)]:
        failures.append("all_gather_object")
    objects = [("root", [1, 2, 3]), None] if rank == 1 else [None, None]
    dist.broadcast_object_list(objects, src=1)
    if objects != [("root", [1, 2, 3]), None]:
        failures.append(f"broadcast_object_list: {objects}")
    result = [None] * world if rank == 0 else None
    dist.gather_object({"from": rank}, result, dst=0)
    if rank == 0 and result != [{"from": r} for r in range(world)]:
        failures.append(f"gather_object: {result}")
    received = [None]
    dist.scatter_object_list(received, [f"for {r}" for r in range(world)] if rank == 2 else None,
                             src=2)
    if received != [f"for {rank}"]:
        failures.append(f"scatter_object_list: {received}")
    return failures


def test_object_collectives():
    assert harness.run(objects_body, 3) == [[]] * 3


def allreduce_once(rank, world):
    tensor = torch.tensor([rank + 1.0])
    dist.all_reduce(tensor)
    return tensor.item()


def test_init_env():
    assert harness.run(allreduce_once, 2, init_method="env://") == [3.0, 3.0]


def test_init_file(tmp_path):
    path = tmp_path / "store"
    assert harness.run(allreduce_once, 2, init_method=f"file://{path}") == [3.0, 3.0]


def explicit_store_body(rank, world, port):
    store = dist.TCPStore("127.0.0.1", port, world, rank == 0,
                          timeout=datetime.timedelta(seconds=30))
    dist.init_process_group("cohort", store=store, rank=rank, world_size=world)
    tensor = torch.tensor([rank + 1.0])
    dist.all_reduce(tensor)
    # Two more backends straight on the same store and group name: their communicators must
    # get names of their own, or their connections would collide.
    first = cohort.create_backend(store, rank, world, 30)
    second = cohort.create_backend(store, rank, world, 30)
    names = (cohort._C.communicator_name(first), cohort._C.communicator_name(second))
    values = []
    for backend in (first, second):
        other = torch.tensor([float(rank)])
        backend.allreduce([other]).wait()
        values.append(other.item())
    return tensor.item(), values, names


def test_explicit_store_and_communicators_sharing_it():
    results = harness.run(explicit_store_body, 2, args=(harness.free_port(),), init=False)
    assert [r[:2] for r in results] == [(3.0, [1.0, 1.0])] * 2
    assert results[0][2] == results[1][2]
    assert results[0][2][0] != results[0][2][1]


def test_registered_and_importable_twice():
    import importlib

    assert cohort.is_available()
    assert "cohort" in [name.lower() for name in dist.Backend._plugins]
    importlib.reload(cohort)  # a second registration attempt must be harmless
    assert cohort.is_available()
    assert os.path.basename(cohort._C.__file__).startswith("_C")

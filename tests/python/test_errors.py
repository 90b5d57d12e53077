"""Failures become RuntimeErrors quickly and say what happened: a killed rank, a timeout,
ranks that disagree about a collective, and arguments cohort cannot take."""
import os
import signal
import time

import pytest
import torch
import torch.distributed as dist

import harness


def killed_peer_body(rank, world):
    dist.all_reduce(torch.ones(4))  # everyone is connected and working
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    start = time.monotonic()
    try:
        for _ in range(100):
            dist.all_reduce(torch.ones(1 << 16))
    except RuntimeError as error:
        elapsed = time.monotonic() - start
        # Later calls fail at once with the first error.
        try:
            dist.all_reduce(torch.ones(1))
            later = "no error"
        except RuntimeError as again:
            later = str(again)
        return elapsed, str(error), later
    return None


def test_killed_rank_makes_the_others_raise_within_seconds():
    results = harness.run(killed_peer_body, 3, pg_timeout=60, expect_killed={1})
    assert results[1] == harness.KILLED
    for rank in (0, 2):
        assert results[rank] is not None, "the survivors did not notice"
        elapsed, message, later = results[rank]
        assert elapsed < 10, (elapsed, message)
        assert "allreduce" in message and "#" in message, message
        assert "rank 1" in message, message  # names the lost rank
        assert f"rank {rank}" in message, message
        assert "failed" in later, later


def timeout_body(rank, world):
    if rank == 1:
        time.sleep(7)  # never joins the allreduce in time
        return None
    start = time.monotonic()
    try:
        dist.all_reduce(torch.ones(3))
    except RuntimeError as error:
        return time.monotonic() - start, str(error)
    return "no error"


def test_timeout_of_init_process_group_is_honoured():
    results = harness.run(timeout_body, 2, pg_timeout=3)
    elapsed, message = results[0]
    assert 2.5 < elapsed < 6.5, (elapsed, message)
    assert "timed out" in message and "allreduce" in message and "#" in message, message


def mismatch_body(rank, world, what):
    try:
        if what == "count":
            dist.all_reduce(torch.ones(4 if rank == 0 else 8))
        elif what == "dtype":
            dist.all_reduce(torch.ones(4, dtype=torch.float32 if rank == 0 else torch.float64))
        elif what == "op":
            dist.all_reduce(torch.ones(4), op=dist.ReduceOp.SUM if rank == 0 else dist.ReduceOp.MAX)
        elif what == "collective":
            if rank == 0:
                dist.all_reduce(torch.ones(4))
            else:
                dist.broadcast(torch.ones(4), src=0)
    except RuntimeError as error:
        return str(error)
    return "no error"


@pytest.mark.parametrize("what", ["count", "dtype", "op", "collective"])
def test_ranks_that_disagree_raise_instead_of_hanging(what):
    results = harness.run(mismatch_body, 2, timeout=30, pg_timeout=20, args=(what,))
    # At least one side sees the mismatch itself; the other may see the peer's abort.
    assert any("mismatch" in message or "disagree" in message or "differ" in message
               for message in results), results
    assert all(message != "no error" for message in results), results


def bad_arguments_body(rank, world):
    messages = {}

    def attempt(name, call):
        try:
            call()
            messages[name] = "no error"
        except (RuntimeError, ValueError) as error:
            messages[name] = str(error).splitlines()[0]

    attempt("meta tensor", lambda: dist.all_reduce(torch.empty(4, device="meta")))
    attempt("mixed dtypes",
            lambda: dist.all_reduce_coalesced([torch.ones(2), torch.ones(2, dtype=torch.float64)]))
    attempt("band on float", lambda: dist.all_reduce(torch.ones(2), op=dist.ReduceOp.BAND))
    attempt("avg on bool", lambda: dist.all_reduce(torch.ones(2, dtype=torch.bool),
                                                   op=dist.ReduceOp.AVG))
    attempt("int16 sum", lambda: dist.all_reduce(torch.ones(2, dtype=torch.int16)))
    attempt("sparse", lambda: dist.all_reduce(torch.ones(2).to_sparse()))
    attempt("wrong output count",
            lambda: dist.all_gather([torch.zeros(2)] * (world + 1), torch.ones(2)))
    attempt("bad split sizes", lambda: dist.all_to_all_single(
        torch.zeros(4), torch.zeros(4), output_split_sizes=[1, 3], input_split_sizes=[3, 3]))
    attempt("allgather base size",
            lambda: dist.all_gather_into_tensor(torch.zeros(3), torch.zeros(2)))
    # The group is still usable after every one of these.
    tensor = torch.ones(2)
    dist.all_reduce(tensor)
    messages["still works"] = tensor.tolist()
    return messages


def test_wrong_input_is_rejected_with_a_clear_message():
    results = harness.run(bad_arguments_body, 2)
    for messages in results:
        assert messages["still works"] == [2.0, 2.0]
        assert "no error" not in messages.values(), messages
        assert "meta" in messages["meta tensor"].lower(), messages
        assert "same dtype" in messages["mixed dtypes"] or "dtypes" in messages["mixed dtypes"]
        assert "band" in messages["band on float"].lower(), messages
        assert "float32" in messages["band on float"], messages
        assert "avg" in messages["avg on bool"].lower(), messages
        assert "int16" in messages["int16 sum"] or "Short" in messages["int16 sum"], messages
        assert "sparse" in messages["sparse"].lower(), messages
        assert "3 output tensors" in messages["wrong output count"] or "2 output" in messages[
            "wrong output count"], messages
        assert "split" in messages["bad split sizes"], messages
        assert "times" in messages["allgather base size"] or "size" in messages[
            "allgather base size"], messages


def silent_peer_body(rank, world):
    if rank == 1:
        time.sleep(6)  # alive, connected, but never sends
        return None
    start = time.monotonic()
    try:
        dist.recv(torch.zeros(2), src=1)
    except RuntimeError as error:
        return time.monotonic() - start, str(error)
    return "no error"


def test_recv_from_a_silent_peer_times_out():
    elapsed, message = harness.run(silent_peer_body, 2, pg_timeout=3)[0]
    assert 2.5 < elapsed < 5.5, (elapsed, message)
    assert "timed out" in message and "recv" in message.lower(), message


def init_error_body(rank, world, port):
    try:
        dist.init_process_group("cohort", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    except RuntimeError as error:
        return str(error)
    return "no error"


def test_bad_configuration_fails_at_init_naming_the_variable():
    results = harness.run(init_error_body, 2, init=False, args=(harness.free_port(),),
                          env={"COHORT_CUDA_PATH": "sometimes"})
    for message in results:
        assert "COHORT_CUDA_PATH" in message and "sometimes" in message, message
        assert "auto" in message and "staged" in message, message


def monitored_barrier_body(rank, world):
    import datetime

    import cohort

    cohort.monitored_barrier(timeout=datetime.timedelta(seconds=10))  # everyone arrives
    if rank == 2:
        time.sleep(2.5)  # late for the second one
        return "late"
    start = time.monotonic()
    try:
        cohort.monitored_barrier(timeout=datetime.timedelta(seconds=1), wait_all_ranks=True)
    except RuntimeError as error:
        return time.monotonic() - start, str(error).splitlines()[0]
    return "no error"


def test_monitored_barrier_names_the_missing_rank():
    results = harness.run(monitored_barrier_body, 3, pg_timeout=20)
    elapsed, message = results[0]
    assert elapsed < 2.0, results
    assert "rank(s) 2 (" in message and "did not reach the barrier" in message, message
    assert "rank 1" in results[1][1] and "not released" in results[1][1], results


def collective_error_body(rank, world, what):
    import cohort

    dist.all_reduce(torch.ones(4))  # everyone is connected
    if what == "killed" and rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "silent" and rank == 1:
        time.sleep(6)  # alive but never joins
        return None
    if what == "arguments":
        try:
            dist.all_reduce(torch.ones(2), op=dist.ReduceOp.BAND)
        except cohort.CollectiveError:
            return "a CollectiveError for a programming error"
        except (RuntimeError, ValueError):
            return "not a CollectiveError"
        return "no error"
    time.sleep(0.2)
    try:
        for _ in range(100):
            dist.all_reduce(torch.ones(1 << 10))
    except cohort.CollectiveError as error:
        return {"type": type(error).__name__, "runtime": isinstance(error, RuntimeError),
                "op": error.op, "sequence": error.sequence, "rank": error.rank,
                "ranks": list(error.ranks), "hosts": list(error.hosts), "message": str(error)}
    except RuntimeError as error:
        return "a plain RuntimeError: " + str(error)
    return "no error"


@pytest.mark.parametrize("what", ["killed", "silent"])
def test_peer_failures_raise_collective_error_with_op_sequence_ranks_hosts(what):
    import socket

    results = harness.run(collective_error_body, 3, pg_timeout=3, args=(what,),
                          expect_killed={1} if what == "killed" else ())
    for rank in (0, 2):
        error = results[rank]
        assert isinstance(error, dict), error
        assert error["runtime"], error  # old `except RuntimeError` handlers still catch it
        assert error["op"] == "allreduce", error
        assert isinstance(error["sequence"], int) and error["sequence"] >= 2, error
        assert error["rank"] == rank and error["ranks"][0] == rank, error
        assert len(error["hosts"]) == len(error["ranks"]), error
        assert error["hosts"][0] == socket.gethostname(), error
        assert f"#{error['sequence']}" in error["message"], error
    if what == "silent":
        # The silent rank is named by whoever waited for it. (A lost connection is the
        # transport's to name: collectives/failure.h AddFailedPeer.)
        assert any(1 in results[rank]["ranks"] for rank in (0, 2)), results


def test_programming_errors_are_not_collective_errors():
    results = harness.run(collective_error_body, 2, args=("arguments",))
    assert results == ["not a CollectiveError"] * 2, results


def test_collective_error_is_exported_with_the_base_torch_has():
    import cohort

    assert issubclass(cohort.CollectiveError, RuntimeError)
    if hasattr(dist, "DistBackendError"):
        assert issubclass(cohort.CollectiveError, dist.DistBackendError)
    assert cohort._C.collective_error_base in ("RuntimeError", "DistBackendError")

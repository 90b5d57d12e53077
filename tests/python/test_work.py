"""Work and Future semantics as torch defines them: wait (with and without a timeout),
is_completed, is_success, the exception of a failed Work, get_future (then-chains, errors),
source ranks of receives, and async operations whose Work is dropped without waiting."""
import datetime
import time

import torch
import torch.distributed as dist

import cohort
import harness


def success_body(rank, world):
    tensor = torch.full((5,), float(rank + 1))
    work = dist.all_reduce(tensor, async_op=True)
    waited = work.wait()
    facts = {
        "wait": waited,
        "completed": work.is_completed(),
        "success": work.is_success(),
        "exception": cohort.work_exception(work),
        "value": tensor.tolist(),
        "result": [t.tolist() for t in work.result()],
    }
    # Futures: the value is the list of output tensors; then() chains run after completion.
    tensor = torch.full((2,), float(rank))
    future = dist.all_reduce(tensor, async_op=True).get_future()
    chained = future.then(lambda done: done.value()[0] * 10)
    facts["future"] = [t.tolist() for t in future.wait()]
    facts["chained"] = chained.wait().tolist()
    # Many operations in flight at once complete in order, each with its own result.
    tensors = [torch.full((3,), float(i + rank)) for i in range(40)]
    works = [dist.all_reduce(t, async_op=True) for t in tensors]
    for work in works:
        work.wait()
    facts["many"] = all(torch.equal(t, torch.full((3,), float(2 * i + 1)))
                        for i, t in enumerate(tensors))
    # A dropped Work keeps its buffers alive until the operation is done.
    dist.all_reduce(torch.ones(1 << 18), async_op=True)
    dist.broadcast(torch.ones(1 << 16), src=0, async_op=True)
    check = torch.ones(1)
    dist.all_reduce(check)
    facts["after dropped"] = check.item()
    return facts


def test_successful_work_and_future():
    for facts in harness.run(success_body, 2):
        assert facts == {
            "wait": True, "completed": True, "success": True, "exception": None,
            "value": [3.0] * 5, "result": [[3.0] * 5], "future": [[1.0, 1.0]],
            "chained": [10.0, 10.0], "many": True, "after dropped": 2.0,
        }, facts


def wait_timeout_body(rank, world):
    if rank == 1:
        time.sleep(1.5)
        dist.all_reduce(torch.ones(2))
        return None
    tensor = torch.ones(2)
    work = dist.all_reduce(tensor, async_op=True)
    start = time.monotonic()
    try:
        work.wait(timeout=datetime.timedelta(milliseconds=200))
        outcome = "no timeout"
    except RuntimeError as error:
        outcome = str(error)
    waited = time.monotonic() - start
    completed_early = work.is_completed()
    work.wait()  # an untimed wait gets the result once rank 1 arrives
    return outcome, waited, completed_early, work.is_completed(), tensor.tolist()


def test_wait_with_a_timeout():
    outcome, waited, completed_early, completed, value = harness.run(wait_timeout_body, 2)[0]
    assert "did not finish within the wait timeout of 200 ms" in outcome, outcome
    assert 0.15 < waited < 1.2, waited
    assert not completed_early
    assert completed and value == [2.0, 2.0]


def failed_work_body(rank, world):
    work = dist.all_reduce(torch.ones(3 if rank == 0 else 5), async_op=True)
    try:
        work.wait()
        raised = None
    except RuntimeError as error:
        raised = str(error)
    future_error = None
    try:
        dist.all_reduce(torch.ones(1), async_op=True).get_future().wait()
    except RuntimeError as error:
        future_error = str(error)
    except Exception as error:  # noqa: BLE001 - the failed call may raise at the call site
        future_error = repr(error)
    exception = cohort.work_exception(work)
    try:
        native = work.exception()  # torch 2.x; 1.13 cannot convert it for any backend
    except TypeError:
        native = exception
    return {
        "raised": raised,
        "completed": work.is_completed(),
        "success": work.is_success(),
        "exception": str(exception),
        "native": str(native),
        "future_error": future_error,
    }


def test_failed_work():
    for facts in harness.run(failed_work_body, 2):
        assert facts["raised"] and "mismatch" in facts["raised"], facts
        assert facts["completed"] is True and facts["success"] is False, facts
        assert facts["exception"] == facts["raised"], facts
        assert "mismatch" in facts["native"], facts
        assert facts["future_error"] and "failed" in facts["future_error"], facts


def recv_work_body(rank, world):
    if rank == 0:
        buffer = torch.zeros(3)
        work = dist.irecv(buffer)  # any source
        work.wait()
        source = work.source_rank() if hasattr(work, "source_rank") else work._source_rank()
        dist.barrier()
        return source, buffer.tolist()
    if rank == 2:
        dist.send(torch.full((3,), 7.0), dst=0)
    # Nobody closes the group while rank 0 still receives from any source.
    dist.barrier()
    return None


def test_recv_from_any_source_reports_the_sender():
    assert harness.run(recv_work_body, 3)[0] == (2, [7.0, 7.0, 7.0])


def unwaited_body(rank, world):
    """Works nobody waits for still finish: polled with is_completed(), queried after failing,
    asked for a Future once done, and dropped with an epilogue still to run."""
    def poll(work):
        deadline = time.monotonic() + 10
        while not work.is_completed():
            assert time.monotonic() < deadline, "never completed"
            time.sleep(0.001)

    facts = {}
    tensor = torch.full((4,), float(rank + 1))
    work = dist.all_reduce(tensor, async_op=True)
    poll(work)
    facts["polled"] = (work.is_success(), cohort.work_exception(work), tensor.tolist())
    future = work.get_future()  # asked for only after the operation finished
    facts["late future"] = [t.tolist() for t in future.wait()]
    # A non-contiguous output is copied back when the operation completes, even when the
    # Work is dropped at once: the blocking call after it runs later (issue order).
    base = torch.zeros(4, 3)
    view = base.t()
    view.copy_(torch.full((3, 4), float(rank + 1)))
    dist.all_reduce(view, async_op=True)
    dist.all_reduce(torch.ones(1))
    facts["dropped noncontiguous"] = base.sum().item()
    # Several Works completed out of sight, then waited in reverse order.
    tensors = [torch.full((2,), float(i)) for i in range(5)]
    works = [dist.all_reduce(t, async_op=True) for t in tensors]
    dist.all_reduce(torch.ones(1))
    facts["done before wait"] = all(w.is_completed() for w in works)
    for work in reversed(works):
        work.wait()
    facts["reverse"] = [t.tolist() for t in tensors]
    # A failed Work nobody waited for: is_completed, is_success and the exception all see it.
    failed = dist.all_reduce(torch.ones(3 if rank == 0 else 5), async_op=True)
    poll(failed)
    facts["failed"] = (failed.is_success(), "mismatch" in str(cohort.work_exception(failed)))
    return facts


def test_works_that_nobody_waits_for():
    for rank, facts in enumerate(harness.run(unwaited_body, 2)):
        assert facts == {
            "polled": (True, None, [3.0] * 4), "late future": [[3.0] * 4],
            "dropped noncontiguous": 36.0, "done before wait": True,
            "reverse": [[2.0 * i] * 2 for i in range(5)], "failed": (False, True),
        }, (rank, facts)

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

"""Runs a test body on N ranks: forked processes that each join a process group, run the body
and report its result (or its traceback) back to the test.

Forking from the pytest process, which has imported torch but run nothing with it, starts ranks
in milliseconds. Every rank is killed when the test ends, also when it hangs or fails, and the
test fails with each rank's traceback or the list of ranks that did not finish.

COHORT_TEST_DEVICE=cuda (tests/gpu/run.sh, torch 2.x on a GPU machine) runs the same bodies on
CUDA tensors: each rank makes GPU rank % GPUs its device and torch's default device, so the
tensors the tests make are CUDA tensors (ranks sharing a GPU take cohort's staged path, one GPU
per rank NCCL's). The parent never touches CUDA (a forked child could not use it then).
"""
import datetime
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
import traceback

import torch
import torch.distributed as dist

import cohort  # noqa: F401  (registers the backend in the parent, so every fork has it)

KILLED = "killed"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(body, world_size=2, backend="cohort", timeout=60, pg_timeout=30, init=True,
        init_method=None, expect_killed=(), args=(), env=None):
    """Runs body(rank, world_size, *args) on `world_size` forked ranks; returns their results.

    With init, each rank first joins a process group of `backend` (init_method: tcp:// on a free
    port unless given; pg_timeout: init_process_group's timeout in seconds). Ranks listed in
    expect_killed may die of a signal; their result is KILLED. `env` is set in every rank
    before it joins.
    """
    port = free_port()
    if init_method is None:
        init_method = f"tcp://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="cohort-test-") as directory:
        children = {}
        for rank in range(world_size):
            pid = os.fork()
            if pid == 0:
                _child(rank, world_size, body, args, backend, init, init_method, pg_timeout,
                       directory, port, env or {})
            children[rank] = pid
        statuses = _wait_all(children, timeout)
        results, failures = [], []
        for rank in range(world_size):
            status = statuses.get(rank)
            path = os.path.join(directory, f"rank{rank}.pickle")
            if status is None:
                failures.append(f"rank {rank} did not finish within {timeout}s (killed)")
                results.append(None)
            elif os.WIFSIGNALED(status):
                if rank in expect_killed:
                    results.append(KILLED)
                else:
                    failures.append(f"rank {rank} died of signal {os.WTERMSIG(status)}")
                    results.append(None)
            elif os.path.exists(path):
                with open(path, "rb") as file:
                    ok, value = pickle.load(file)
                if ok:
                    results.append(value)
                else:
                    failures.append(f"rank {rank} failed:\n{value}")
                    results.append(None)
            else:
                failures.append(f"rank {rank} exited with status {status} without a result")
                results.append(None)
        if failures:
            raise AssertionError("\n".join(failures))
        return results


def _child(rank, world_size, body, args, backend, init, init_method, pg_timeout, directory,
           port, env):
    code = 0
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world_size))
        os.environ.update(env)
        torch.set_num_threads(1)
        if os.environ.get("COHORT_TEST_DEVICE", "cpu") == "cuda":
            torch.cuda.set_device(rank % torch.cuda.device_count())
            torch.set_default_device("cuda")
        if init:
            dist.init_process_group(backend, init_method=init_method, rank=rank,
                                    world_size=world_size,
                                    timeout=datetime.timedelta(seconds=pg_timeout))
        value = body(rank, world_size, *args)
        outcome = (True, value)
        if dist.is_initialized():
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - everything goes back to the test
        outcome = (False, traceback.format_exc())
        code = 1
    try:
        with open(os.path.join(directory, f"rank{rank}.pickle"), "wb") as file:
            pickle.dump(outcome, file)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait_all(children, timeout):
    deadline = time.monotonic() + timeout
    pending = dict(children)
    statuses = {}
    while pending and time.monotonic() < deadline:
        for rank, pid in list(pending.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[rank] = status
                del pending[rank]
        if pending:
            time.sleep(0.01)
    for rank, pid in pending.items():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return statuses

#!/usr/bin/python3
"""Shrink and go on vs restart, one host, torch backend "cohort": from the SIGKILL of a worker
to the survivors' next completed allreduce.

    PYTHONPATH=build/python /usr/bin/python3 bench/compare/shrink_recovery.py [--trials 20]

Each trial starts --ranks worker processes (this file, started afresh with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT as torchrun would) that run allreduces of --count floats in a
loop. When every worker has finished one, the driver waits a random 0-100 ms and SIGKILLs a
random worker other than rank 0 (started directly, the store lives in rank 0's process). Then:

  shrink:  the survivors catch the error, call cohort.shrink() and run one allreduce on the new
           group (checked: the sum of their old ranks + 1); the time is the last survivor's.
  restart: what a launcher's restart does at best: the driver sees the worker die, stops the
           others (SIGTERM), and starts --ranks new workers that join a new process group and
           run one allreduce (no checkpoint to load, no rendezvous of nodes: a lower bound).

The two kinds alternate, so both see the same load. Prints one line per trial and the median
and maximum of each, and their ratio (bench/RESULTS.md).
"""
import argparse
import datetime
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# A worker.

def worker(mode, folder, count):
    import torch
    import torch.distributed as dist
    import cohort

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    dist.init_process_group("cohort", timeout=datetime.timedelta(seconds=30))
    values = torch.ones(count)

    def record(name, payload):
        partial = os.path.join(folder, f".{name}.{rank}")
        with open(partial, "w") as file:
            json.dump(payload, file)
        os.replace(partial, os.path.join(folder, f"{name}.{rank}"))

    dist.all_reduce(values)
    if mode == "first":  # a restarted worker: its first allreduce is the one measured
        record("done", {"at_ns": time.time_ns(), "ok": values[0].item() == dist.get_world_size()})
        dist.destroy_process_group()
        return 0
    record("ready", {})
    try:
        while True:
            dist.all_reduce(values)
    except RuntimeError:
        if mode != "shrink":
            return 0  # the driver stops it, as a launcher would
    cohort.shrink()
    values = torch.full((count,), float(rank + 1))
    dist.all_reduce(values)
    done = time.time_ns()
    expected = sum(r + 1 for r in cohort.root_ranks())
    record("done", {"at_ns": done, "ok": values[0].item() == expected and
                    values[-1].item() == expected, "world_size": dist.get_world_size()})
    dist.destroy_process_group()
    return 0


# ---------------------------------------------------------------------------------------------
# The driver.

def start(mode, ranks, folder, count):
    port = free_port()
    env = dict(os.environ, WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               COHORT_LOG_LEVEL="ERROR", OMP_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", mode,
                              "--folder", folder, "--count", str(count)],
                             env=dict(env, RANK=str(rank)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for rank in range(ranks)]


def wait_files(folder, name, ranks, deadline):
    paths = [os.path.join(folder, f"{name}.{rank}") for rank in ranks]
    while time.monotonic() < deadline:
        if all(os.path.exists(p) for p in paths):
            results = []
            for path in paths:
                with open(path) as file:
                    results.append(json.load(file))
            return results
        time.sleep(0.002)
    raise TimeoutError(f"no {name} from ranks {ranks} in time")


def stop_all(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()


def trial(kind, ranks, count, rng):
    with tempfile.TemporaryDirectory(prefix="cohort-shrink-bench-") as folder:
        processes = start("shrink" if kind == "shrink" else "loop", ranks, folder, count)
        try:
            wait_files(folder, "ready", range(ranks), time.monotonic() + 60)
            time.sleep(rng.uniform(0, 0.1))
            victim = rng.randrange(1, ranks)
            killed_at = time.time_ns()
            processes[victim].send_signal(signal.SIGKILL)
            survivors = [r for r in range(ranks) if r != victim]
            if kind == "shrink":
                done = wait_files(folder, "done", survivors, time.monotonic() + 30)
            else:
                processes[victim].wait()  # the launcher learns of it from waitpid
                for r in survivors:
                    processes[r].send_signal(signal.SIGTERM)
                for r in survivors:
                    processes[r].wait()
                processes = start("first", ranks, folder, count)
                done = wait_files(folder, "done", range(ranks), time.monotonic() + 60)
            for process in processes:
                process.wait(timeout=30)
        finally:
            stop_all(processes)
        if not all(d["ok"] for d in done):
            raise AssertionError(f"{kind} trial: wrong allreduce results: {done}")
        return victim, (max(d["at_ns"] for d in done) - killed_at) / 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="of each kind")
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--count", type=int, default=1 << 18, help="floats per allreduce")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker", choices=["shrink", "loop", "first"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.folder, args.count)
    rng = random.Random(args.seed)
    times = {"shrink": [], "restart": []}
    print(f"# {args.ranks} ranks, allreduce of {args.count} floats in a loop, SIGKILL a random "
          f"rank > 0; {args.trials} trials of each kind, alternating", flush=True)
    for index in range(args.trials):
        for kind in ("shrink", "restart"):
            victim, ms = trial(kind, args.ranks, args.count, rng)
            times[kind].append(ms)
            print(f"trial {index:3d} {kind:<8} victim {victim}: next allreduce done "
                  f"{ms:8.1f} ms after the kill", flush=True)
    shrink, restart = times["shrink"], times["restart"]
    print(f"# shrink:  median {statistics.median(shrink):.1f} ms, max {max(shrink):.1f} ms")
    print(f"# restart: median {statistics.median(restart):.1f} ms, max {max(restart):.1f} ms")
    ratio = statistics.median(restart) / statistics.median(shrink)
    print(f"# restart / shrink (medians): {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

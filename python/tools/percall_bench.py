#!/usr/bin/python3
"""Per-call cost of small torch.distributed calls: cohort against gloo, same script, same run.

Forks --nranks ranks (1 or 2 on one host) per backend and times blocking calls on a 2-float
tensor: dist.all_reduce (what users call), the process group's allreduce().wait() (no Python
wrapper), and dist.all_reduce(async_op=True).wait(). Each figure is --rounds rounds of --iters
calls; the table prints the best round and the median round in microseconds per call (the best
round is the least disturbed by other work on a shared machine). Lines marked [cpu] count the
calling thread's CPU time instead of wall-clock time: on one rank every call runs entirely on
that thread, so this is the per-call cost even while other processes take the cores.

    PYTHONPATH=build/python /usr/bin/python3 python/tools/percall_bench.py --nranks 2
"""
import argparse
import os
import socket
import statistics
import sys
import time


def run_rank(rank, args, port, backend, pipe):
    import torch
    import torch.distributed as dist

    if backend == "cohort":
        import cohort  # noqa: F401  (registers the backend)
    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.nranks)
    group = dist.distributed_c10d._get_default_group()
    tensor = torch.ones(2, dtype=torch.float32)
    options = dist.AllreduceOptions()

    def plain():
        dist.all_reduce(tensor)

    def direct():
        group.allreduce([tensor], options).wait()

    def async_wait():
        dist.all_reduce(tensor, async_op=True).wait()

    results = {}
    for name, call in (("dist.all_reduce", plain), ("pg.allreduce().wait()", direct),
                       ("all_reduce(async_op).wait()", async_wait)):
        for _ in range(args.warmup):
            call()
        rounds, cpu_rounds = [], []
        for _ in range(args.rounds):
            dist.barrier()
            start, cpu_start = time.perf_counter(), time.thread_time()
            for _ in range(args.iters):
                call()
            cpu_rounds.append((time.thread_time() - cpu_start) / args.iters * 1e6)
            rounds.append((time.perf_counter() - start) / args.iters * 1e6)
        results[name] = rounds
        results[name + " [cpu]"] = cpu_rounds
    check = torch.ones(2) * (rank + 1)
    dist.all_reduce(check)
    ok = bool((check == sum(r + 1 for r in range(args.nranks))).all())
    dist.destroy_process_group()
    if rank == 0:
        os.write(pipe, repr((results, ok)).encode())
    return 0 if ok else 7


def measure(args, backend):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    read_end, write_end = os.pipe()
    children = []
    for rank in range(args.nranks):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_end)
                code = run_rank(rank, args, port, backend, write_end)
            finally:
                os._exit(code)
        children.append(pid)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    worst = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    if worst != 0 or not chunks:
        raise SystemExit(f"{backend}: a rank failed (exit {worst})")
    results, ok = eval(b"".join(chunks).decode())  # our own repr of floats and names
    if not ok:
        raise SystemExit(f"{backend}: wrong allreduce result")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nranks", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--backends", default="cohort,gloo")
    args = parser.parse_args()
    backends = args.backends.split(",")
    table = {backend: measure(args, backend) for backend in backends}
    print(f"# {args.nranks} rank(s), float32[2] sum, {args.rounds} rounds of {args.iters} calls;"
          " us per call: best round / median round")
    header = f"{'call':<30}" + "".join(f"{backend:>22}" for backend in backends)
    if len(backends) == 2:
        header += f"{'ratio (best)':>14}"
    print(header)
    for name in table[backends[0]]:
        line = f"{name:<30}"
        bests = []
        for backend in backends:
            rounds = table[backend][name]
            bests.append(min(rounds))
            line += f"{min(rounds):>11.2f} / {statistics.median(rounds):>7.2f}"
        if len(backends) == 2:
            line += f"{bests[1] / bests[0]:>13.1f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

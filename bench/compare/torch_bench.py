#!/usr/bin/python3
"""Allreduce sweep through torch.distributed (gloo, or any backend torch knows), printed in
cohort-bench's table format so bench/compare can put the two side by side.

Each rank runs blocking dist.all_reduce calls (torch's in-place op); the time of a size is the
slowest rank's mean over the timed iterations; busbw = algbw * 2(n-1)/n as in nccl-tests.
--device cuda puts the tensors on GPU (rank modulo the GPUs there are) and synchronizes the
device around the timed loop, as nccl-tests does (e.g. --backend nccl next to --backend cohort).
-J FILE writes the sweep in cohort-bench's -J format (the in-place column), for the report page.
"""
import argparse
import datetime
import json
import os
import platform
import socket
import sys
import time


def machine():
    """The machine fields of cohort-bench's -J report (bench/run_info.cc)."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                          if line.startswith("model name")), "")
    except OSError:
        pass
    pretty = ""
    try:
        with open("/etc/os-release") as release:
            pretty = next((line.split("=", 1)[1].strip().strip('"') for line in release
                           if line.startswith("PRETTY_NAME=")), "")
    except OSError:
        pass
    return {"host": socket.gethostname(), "cpu_model": model, "cores": os.cpu_count(),
            "kernel": f"{platform.system()} {platform.release()}", "os": pretty}


def write_json(path, args, rows, torch_version):
    """The sweep as cohort-bench writes it (format_version 1); only the in-place column."""
    document = {
        "tool": "torch.distributed", "backend": args.backend, "torch": torch_version,
        "kind": "sweep", "format_version": 1, "command": sys.argv, "collective": "allreduce",
        "nranks": args.nranks, "hosts": [{"name": socket.gethostname(),
                                          "ranks": list(range(args.nranks))}],
        "machine": machine(), "commit": None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": {"minbytes": args.minbytes, "maxbytes": args.maxbytes,
                    "stepfactor": args.stepfactor, "iters": args.iters,
                    "warmup_iters": args.warmup, "blocking": True},
        "results": rows,
        "out_of_bounds": sum(row["in_place"]["wrong"] for row in rows),
        "avg_bus_bandwidth_gbps": (sum(row["in_place"]["busbw_gbps"] for row in rows)
                                   / max(len(rows), 1)),
        "exit_code": 7 if any(row["in_place"]["wrong"] for row in rows) else 0,
    }
    with open(path, "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")


def parse_bytes(text):
    text = text.strip().upper()
    for suffix, shift in (("K", 10), ("M", 20), ("G", 30)):
        if text.endswith(suffix):
            return int(text[:-1]) << shift
    return int(text)


def sizes(args):
    size = args.minbytes
    while size <= args.maxbytes:
        yield size
        size = int(size * args.stepfactor) if args.stepfactor > 1 else size + args.stepbytes


def run_rank(rank, args, port):
    import torch
    import torch.distributed as dist

    if args.backend == "cohort":
        import cohort  # noqa: F401  (registers the backend)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    if args.device == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend, init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=args.nranks)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    n = args.nranks
    if rank == 0:
        print(f"# torch.distributed {args.backend} allreduce on {args.device}: {n} ranks, float32 sum, "
              f"{args.minbytes} to {args.maxbytes} bytes, {args.iters} iterations, "
              f"{args.warmup} warm-up, blocking, torch {torch.__version__}")
        print("#")
        print(f"# {'':>10}  {'':>12}  {'':>8}  {'':>6}  {'':>6}  {'':>31}  {'in-place':^29}")
        print(f"# {'size':>10}  {'count':>12}  {'type':>8}  {'redop':>6}  {'root':>6}  "
              f"{'time':>8} {'algbw':>7} {'busbw':>7} {'#wrong':>6}  "
              f"{'time':>8} {'algbw':>7} {'busbw':>7} {'#wrong':>6}")
        sys.stdout.flush()
    total_busbw = 0.0
    rows = 0
    wrong_total = 0
    json_rows = []
    for size in sizes(args):
        count = size // 4
        tensor = torch.ones(count, dtype=torch.float32, device=device)
        for _ in range(args.warmup):
            dist.all_reduce(tensor)
        synchronize()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(tensor)
        synchronize()
        seconds = (time.perf_counter() - start) / args.iters
        slowest = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        seconds = slowest.item()
        # Exact check: small integers sum exactly in float32.
        tensor = ((torch.arange(count, dtype=torch.float32) + rank * 3) % 7 + 1).to(device)
        dist.all_reduce(tensor)
        expected = sum(((torch.arange(count, dtype=torch.float32) + r * 3) % 7 + 1)
                       for r in range(n)) if count else torch.zeros(0)
        wrong = torch.tensor([int((tensor.cpu() != expected).sum().item()) if count else 0],
                             device=device)
        dist.all_reduce(wrong)
        wrong_total += int(wrong.item())
        algbw = size / seconds / 1e9 if seconds > 0 else 0.0
        busbw = algbw * 2 * (n - 1) / n
        total_busbw += busbw
        rows += 1
        json_rows.append({"size": size, "count": count, "type": "float", "redop": "sum",
                          "root": -1, "out_of_place": None,
                          "in_place": {"time_us": seconds * 1e6, "algbw_gbps": algbw,
                                       "busbw_gbps": busbw, "wrong": int(wrong.item())}})
        if rank == 0:
            print(f"  {size:>10}  {count:>12}  {'float32':>8}  {'sum':>6}  {-1:>6}  "
                  f"{'-':>8} {'-':>7} {'-':>7} {'-':>6}  "
                  f"{seconds * 1e6:>8.2f} {algbw:>7.3f} {busbw:>7.3f} {int(wrong.item()):>6}")
            sys.stdout.flush()
    if rank == 0 and args.json:
        write_json(args.json, args, json_rows, torch.__version__)
    if rank == 0:
        print(f"# Out of bounds values : {wrong_total} {'OK' if wrong_total == 0 else 'ERROR'}")
        print(f"# Avg bus bandwidth    : {total_busbw / max(rows, 1):.4f}")
        print("#")
    dist.destroy_process_group()
    return 7 if wrong_total else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--nranks", type=int, default=2)
    parser.add_argument("-b", "--minbytes", type=parse_bytes, default=parse_bytes("8"))
    parser.add_argument("-e", "--maxbytes", type=parse_bytes, default=parse_bytes("64M"))
    parser.add_argument("-f", "--stepfactor", type=float, default=2)
    parser.add_argument("-i", "--stepbytes", type=parse_bytes, default=parse_bytes("1M"))
    parser.add_argument("-n", "--iters", type=int, default=20)
    parser.add_argument("-w", "--warmup", type=int, default=5)
    parser.add_argument("-J", "--json", help="write the sweep as cohort-bench's -J JSON here")
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    children = []
    for rank in range(args.nranks):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_rank(rank, args, port)
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)
    worst = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    return worst


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""N agents of torch's c10d rendezvous (DynamicRendezvousHandler over a TCPStore, as torchrun
uses it) join one round; prints one JSON line with the time from the first join until every
agent held its rank, in the shape cohort-rdzv-scale prints.

Run with the interpreter that has torch (/usr/bin/python3). The TCPStore's server runs in this
process; the agents are threads in --processes worker processes (each handler with its own
store connection), released together once all are connected. Used by rdzv_scale.py.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta


def worker(args):
    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        DynamicRendezvousHandler, RendezvousTimeout)

    timeout = timedelta(seconds=args.timeout)
    handlers = []
    for _ in range(args.threads):
        store = TCPStore("127.0.0.1", args.port, is_master=False, timeout=timeout)
        backend = C10dRendezvousBackend(store, args.run_id)
        handlers.append(DynamicRendezvousHandler.from_backend(
            args.run_id, store, backend, min_nodes=args.agents, max_nodes=args.agents,
            timeout=RendezvousTimeout(join=timeout, last_call=timedelta(seconds=30),
                                      close=timedelta(seconds=30))))
    control = TCPStore("127.0.0.1", args.port, is_master=False, timeout=timeout)
    control.add("ready", len(handlers))
    start_at = float(control.get("go").decode())
    finished = []
    errors = []

    def join(handler):
        while time.time() < start_at:
            time.sleep(0.0005)
        try:
            _, rank, world_size = handler.next_rendezvous()
            if world_size != args.agents:
                raise RuntimeError(f"world size {world_size}")
            finished.append(time.time())
        except Exception as error:  # reported to the parent
            errors.append(repr(error))

    threads = [threading.Thread(target=join, args=(h,)) for h in handlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"last": max(finished) if finished else 0, "errors": errors[:3],
                      "held": len(finished)}), flush=True)
    # The handlers' keep-alive threads would run on; the measurement is over.
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", default="scale", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from torch.distributed import TCPStore
    master = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                      timeout=timedelta(seconds=args.timeout))
    processes = max(1, min(args.processes, args.agents))
    shares = [args.agents // processes + (1 if i < args.agents % processes else 0)
              for i in range(processes)]
    connect_start = time.time()
    children = [subprocess.Popen(
        [sys.executable, __file__, "--worker", "--port", str(master.port), "--threads", str(n),
         "--agents", str(args.agents), "--timeout", str(args.timeout),
         "--run-id", f"scale-{os.getpid()}"], stdout=subprocess.PIPE, text=True)
        for n in shares]
    while int(master.add("ready", 0)) < args.agents:
        if any(child.poll() is not None for child in children):
            sys.exit("rdzv_scale_torch: a worker process died while connecting")
        time.sleep(0.01)
    connect_seconds = time.time() - connect_start
    start_at = time.time() + 0.5
    master.set("go", str(start_at))
    last, held, errors = 0.0, 0, []
    for child in children:
        out, _ = child.communicate(timeout=args.timeout + 60)
        report = json.loads(out.strip().splitlines()[-1])
        last = max(last, report["last"])
        held += report["held"]
        errors += report["errors"]
    if errors or held != args.agents:
        sys.exit(f"rdzv_scale_torch: {held} of {args.agents} agents held a rank: {errors}")
    print(json.dumps({"backend": "torch-c10d", "agents": args.agents,
                      "connect_s": round(connect_seconds, 3),
                      "rendezvous_s": round(last - start_at, 3)}), flush=True)


if __name__ == "__main__":
    main()

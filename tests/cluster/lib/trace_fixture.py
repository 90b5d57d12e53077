#!/usr/bin/python3
"""Writes made-up flight-recorder dumps in the format of docs/bench.md (format_version 1), one
file per rank, for the tests of the failure page. NOT from a real run: scenarios a test can
name exactly (tests/python/test_trace.py also reads a chaos trial's and a torch job's dumps).

    trace_fixture.py DIR [--scenario killed|mismatch|hang] [--ranks 4] [--operations 40]

killed:   rank 2 (node1) is SIGKILLed during sequence N: it writes no dump; the others entered
          sequence N and failed when its connection closed (one more queued behind on rank 0).
mismatch: every rank dumps; at sequence N rank 3 ran a broadcast where the others ran an
          allreduce, and all of them timed out.
hang:     every rank entered sequence N and none finished (rank 1 entered last, 40 ms late);
          the dumps were asked for by a signal.
"""
import argparse
import json
import os
import random

START_NS = 1_767_000_000_000_000_000  # some wall-clock time, ns since the epoch
OPS = [("allreduce", "float32", 262144, -1), ("allreduce", "float32", 8, -1),
       ("broadcast", "float32", 65536, 0), ("allgather", "bfloat16", 131072, -1)]


def entry(sequence, op, start_ns, duration_ns, state, error=None):
    name, dtype, count, root = op
    record = {"sequence": sequence, "op": name, "dtype": dtype, "count": count, "root": root,
              "peer": -1, "algorithm": "ring" if count > 1000 else "lane_one_shot",
              "channels": ["shm", "tcp"], "state": state,
              "queued_ns": start_ns - 20_000, "started_ns": None, "finished_ns": None,
              "error": error}
    if state != "queued":
        record["started_ns"] = start_ns
    if state in ("done", "failed"):
        record["finished_ns"] = start_ns + duration_ns
    return record


def dumps(scenario, ranks, operations, seed=7):
    rng = random.Random(seed)
    hosts = {r: f"node{r // 2}" for r in range(ranks)}
    killed = 2 if scenario == "killed" else None
    failing = operations  # the sequence number where the job stops
    records = {r: [] for r in range(ranks) if r != killed}
    clock = START_NS
    for sequence in range(failing):
        op = OPS[sequence % len(OPS)]
        duration = 400_000 + op[2] // 4 + rng.randint(0, 200_000)
        for rank in records:
            skew = rng.randint(0, 30_000)
            records[rank].append(entry(sequence, op, clock + skew, duration, "done"))
        clock += duration + 150_000
    op = OPS[0]
    dumped = {}
    for rank in records:
        start = clock + rng.randint(0, 30_000)
        this_op = op
        if scenario == "killed":
            error = (f"allreduce seq {failing} (float32 x {op[2]}): rank 2 on node1 closed its "
                     f"connection (the process died); every pending operation fails")
            records[rank].append(entry(failing, op, start, 1_500_000, "failed", error))
            dumped[rank] = start + 1_600_000
            if rank == 0:
                records[rank].append(entry(failing + 1, OPS[1], start + 1_550_000, 0, "queued"))
        elif scenario == "mismatch":
            if rank == 3:
                this_op = ("broadcast", "float32", op[2], 0)
            error = (f"{this_op[0]} seq {failing}: timed out after 30 s; ranks disagree on "
                     f"sequence {failing}")
            records[rank].append(entry(failing, this_op, start, 30_000_000_000, "failed", error))
            dumped[rank] = start + 30_000_100_000
        else:  # hang
            if rank == 1:
                start += 40_000_000
            records[rank].append(entry(failing, op, start, 0, "started"))
            dumped[rank] = clock + 5_000_000_000
    result = {}
    for rank, entries in records.items():
        result[rank] = {
            "kind": "trace", "format_version": 1, "tool": "tests/cluster/lib/trace_fixture.py (made up, not a real run)",
            "rank": rank, "world_size": ranks, "host": hosts[rank], "pid": 4000 + rank,
            "communicator": "default", "generation": 1,
            "reason": {"killed": "error", "mismatch": "timeout", "hang": "signal"}[scenario],
            "error": next((e["error"] for e in reversed(entries) if e.get("error")), None),
            "clock": "realtime", "dumped_at_ns": dumped[rank], "buffer_size": 2000,
            "dropped": 0, "entries": entries, "machine": {"host": hosts[rank]},
            "commit": None, "date": None}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--scenario", choices=["killed", "mismatch", "hang"], default="killed")
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--operations", type=int, default=40)
    args = parser.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    for rank, dump in dumps(args.scenario, args.ranks, args.operations).items():
        with open(os.path.join(args.folder, f"trace-rank{rank}.json"), "w") as file:
            json.dump(dump, file, indent=1)


if __name__ == "__main__":
    main()

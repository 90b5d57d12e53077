#!/usr/bin/python3
"""cohort's sendrecv over UCX against UCX's own ucx_perftest, both sides in the same run.

For each UCX_TLS (default: tcp and sm), alternately --repeat times:
  - cohort-bench sendrecv, 2 local ranks, COHORT_TRANSPORTS=ucx, blocking (-z 1), 8 B and
    64 MiB (out-of-place column: each rank sends to the other and receives at once);
  - ucx_perftest -t tag_lat (8 B; one-way latency, half the round trip) and -t tag_bw
    (64 MiB), server and client on loopback, each pinned to a CPU as cohort-bench's ranks are;
    tag_bw again with -e (endpoints with peer error handling, as cohort's are; for shared memory
    UCX then needs UCX_MM_ERROR_HANDLING=y, which cohort sets on its own context), and tag_bw in
    both directions at once (two pairs: cohort's sendrecv moves 64 MiB each way at once).
Then the TCP channel's 8 B sendrecv (COHORT_TRANSPORTS=tcp) against tag_lat over UCX_TLS=tcp.

Prints every raw figure, then the medians and the ratios the issue sets goals for: 64 MiB
cohort busbw >= 90% of tag_bw, 8 B cohort time <= 1.5x tag_lat, TCP channel 8 B <= 2x tag_lat.
Averages on both sides (cohort-bench's time is the mean per operation; perftest's "overall"
latency likewise).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIG = 64 << 20


def run(command, env, timeout=300):
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        sys.exit(f"ucx_sendrecv: {' '.join(command)} failed with exit code "
                 f"{completed.returncode}")
    return completed.stdout


def cohort(bench, kinds, tls, size, iters, warmup):
    """(time us, busbw GB/s) of the out-of-place column."""
    env = dict(os.environ, COHORT_TRANSPORTS=kinds)
    if tls:
        env["UCX_TLS"] = tls
    out = run([bench, "sendrecv", "--nranks", "2", "-z", "1", "-b", str(size), "-e", str(size),
               "-n", str(iters), "-w", str(warmup)], env)
    header = [line for line in out.splitlines() if "links the tuner assumes" in line]
    expected = f"inside hosts {kinds}"
    if not header or expected not in header[0]:
        sys.exit(f"ucx_sendrecv: cohort-bench did not run on {kinds}: {header}")
    for line in out.splitlines():
        fields = line.split()
        if fields and not line.startswith("#") and fields[0] == str(size):
            return float(fields[5]), float(fields[7])
    sys.exit(f"ucx_sendrecv: no row for {size} in\n{out}")


def perftest(test, tls, size, iters, warmup, port, extra=()):
    """The final line of ucx_perftest: (overall latency us, overall bandwidth GB/s)."""
    env = dict(os.environ, UCX_TLS=tls)
    if "-e" in extra:
        env.setdefault("UCX_MM_ERROR_HANDLING", "y")
    common = ["-t", test, "-s", str(size), "-n", str(iters), "-w", str(warmup), "-p", str(port),
              "-f"] + list(extra)
    server = subprocess.Popen(["ucx_perftest", "-c", "0"] + common, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                       text=True).stdout
            if listening.strip():
                break
            time.sleep(0.05)
        out = run(["ucx_perftest", "localhost", "-c", "1"] + common, env)
    finally:
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    fields = out.strip().splitlines()[-1].split()
    # iterations, latency 50%ile / average / overall (us), bandwidth average / overall (MB/s =
    # MiB/s), message rate average / overall.
    return float(fields[3]), float(fields[5]) * (1 << 20) / 1e9


def perftest_both_ways(tls, size, iters, warmup, port):
    """tag_bw in both directions at once (two server/client pairs, each process on its own CPU
    of the two, as cohort's two ranks send to each other at once): the mean of the two
    directions' overall bandwidths, GB/s."""
    env = dict(os.environ, UCX_TLS=tls)
    common = ["-t", "tag_bw", "-s", str(size), "-n", str(iters), "-w", str(warmup), "-f"]
    servers = [subprocess.Popen(["ucx_perftest", "-c", str(cpu), "-p", str(port + cpu)] + common,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for cpu in (0, 1)]
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
            if all(f":{port + cpu} " in listening for cpu in (0, 1)):
                break
            time.sleep(0.05)
        clients = [subprocess.Popen(["ucx_perftest", "localhost", "-c", str(1 - cpu), "-p",
                                     str(port + cpu)] + common, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
                   for cpu in (0, 1)]
        outputs = [client.communicate(timeout=300)[0] for client in clients]
    finally:
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    rates = []
    for out in outputs:
        fields = out.strip().splitlines()[-1].split()
        rates.append(float(fields[5]) * (1 << 20) / 1e9)
    return statistics.mean(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--tls", default="tcp,sm", help="UCX_TLS values, comma separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small-iters", type=int, default=10000)
    parser.add_argument("--big-iters", type=int, default=20)
    parser.add_argument("--port", type=int, default=13337 + os.getpid() % 1000)
    args = parser.parse_args()
    bench = os.path.join(args.build, "bench", "cohort-bench")
    small_warmup = max(1, args.small_iters // 10)
    big_warmup = max(1, args.big_iters // 4)
    results = {}  # name -> list of figures

    def add(name, value):
        results.setdefault(name, []).append(value)
        print(f"  {name}: {value:.3f}", flush=True)

    for round_index in range(args.repeat):
        print(f"round {round_index + 1}/{args.repeat}", flush=True)
        for tls in args.tls.split(","):
            add(f"{tls} cohort-ucx 8 B us",
                cohort(bench, "ucx", tls, 8, args.small_iters, small_warmup)[0])
            add(f"{tls} tag_lat 8 B us",
                perftest("tag_lat", tls, 8, args.small_iters, small_warmup, args.port)[0])
            add(f"{tls} cohort-ucx 64 MiB GB/s",
                cohort(bench, "ucx", tls, BIG, args.big_iters, big_warmup)[1])
            add(f"{tls} tag_bw 64 MiB GB/s",
                perftest("tag_bw", tls, BIG, args.big_iters, big_warmup, args.port)[1])
            add(f"{tls} tag_bw -e 64 MiB GB/s",
                perftest("tag_bw", tls, BIG, args.big_iters, big_warmup, args.port, ["-e"])[1])
            add(f"{tls} tag_bw both ways 64 MiB GB/s",
                perftest_both_ways(tls, BIG, args.big_iters, big_warmup, args.port + 10))
        add("cohort-tcp 8 B us", cohort(bench, "tcp", None, 8, args.small_iters, small_warmup)[0])
        add("tcp tag_lat 8 B us (for the TCP channel)",
            perftest("tag_lat", "tcp", 8, args.small_iters, small_warmup, args.port)[0])

    median = {name: statistics.median(values) for name, values in results.items()}
    print("\nmedians of", args.repeat, "rounds:")
    for name, value in median.items():
        print(f"  {name}: {value:.3f}  (runs: {' '.join(f'{v:.3f}' for v in results[name])})")
    print("\nratios (goal):")
    for tls in args.tls.split(","):
        lat = median[f"{tls} cohort-ucx 8 B us"] / median[f"{tls} tag_lat 8 B us"]
        bw = median[f"{tls} cohort-ucx 64 MiB GB/s"] / median[f"{tls} tag_bw 64 MiB GB/s"]
        bw_e = median[f"{tls} cohort-ucx 64 MiB GB/s"] / median[f"{tls} tag_bw -e 64 MiB GB/s"]
        bw_both = (median[f"{tls} cohort-ucx 64 MiB GB/s"] /
                   median[f"{tls} tag_bw both ways 64 MiB GB/s"])
        print(f"  UCX_TLS={tls}: 8 B {lat:.2f}x tag_lat (<= 1.5x); 64 MiB {100 * bw:.0f}% of "
              f"tag_bw (>= 90%), {100 * bw_e:.0f}% of tag_bw -e, {100 * bw_both:.0f}% of tag_bw "
              f"both ways at once")
    tcp = median["cohort-tcp 8 B us"] / median["tcp tag_lat 8 B us (for the TCP channel)"]
    print(f"  TCP channel: 8 B {tcp:.2f}x tag_lat over UCX_TLS=tcp (<= 2x)")


if __name__ == "__main__":
    main()

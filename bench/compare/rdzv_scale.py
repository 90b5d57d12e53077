#!/usr/bin/env python3
"""The rendezvous at scale, side by side in one run: N simulated agents join one round on
cohort's embedded coordinator, on cohort over etcd (a fresh single-member etcd per run, from
Debian's etcd-server), and on torch's c10d rendezvous (DynamicRendezvousHandler over a
TCPStore); the three alternate, each size --repeat times, and the medians are compared. Then
1,024 agents heartbeat for --heartbeat-seconds on each cohort backend and the coordinator's CPU
(and etcd's) is reported.

  /usr/bin/python3 bench/compare/rdzv_scale.py --build build --repeat 3

Prints a Markdown table (for bench/RESULTS.md) and, with --json, every run's figures.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """One etcd member on loopback ports picked here; killed and removed on exit."""

    def __init__(self, parent):
        self.directory = tempfile.mkdtemp(prefix="cohort-rdzv-etcd-", dir=parent)
        client, peer = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{client}"
        self.log = open(os.path.join(self.directory, "etcd.log"), "w")
        self.process = subprocess.Popen(
            ["etcd", "--name", "bench", "--data-dir", os.path.join(self.directory, "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
             "--logger", "zap", "--log-level", "error"], stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as reply:
                    if b"true" in reply.read():
                        break
            except OSError:
                pass
            if time.time() > deadline or self.process.poll() is not None:
                self.close()
                sys.exit("rdzv_scale: etcd did not start")
            time.sleep(0.05)

    def close(self):
        self.process.kill()
        self.process.wait()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_json(command, timeout):
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"rdzv_scale: {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cohort(args, backend, agents, heartbeat_seconds=0):
    command = [os.path.join(args.build, "bench", "cohort-rdzv-scale"), "--backend", backend,
               "--agents", str(agents), "--heartbeat-seconds", str(heartbeat_seconds),
               "--timeout", str(args.timeout)]
    if backend != "etcd":
        return run_json(command, args.timeout + heartbeat_seconds + 60)
    with Etcd(args.etcd_data) as etcd:
        command += ["--endpoints", etcd.endpoint, "--etcd-pid", str(etcd.process.pid)]
        return run_json(command, args.timeout + heartbeat_seconds + 60)


def torch(args, agents):
    return run_json([args.torch_python, os.path.join(HERE, "rdzv_scale_torch.py"),
                     "--agents", str(agents), "--timeout", str(args.timeout)], args.timeout + 120)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build")
    parser.add_argument("--sizes", default="64,256,1024")
    parser.add_argument("--torch-sizes", default="64,256")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--heartbeat-seconds", type=float, default=60)
    parser.add_argument("--heartbeat-agents", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--etcd-data", default=tempfile.gettempdir(),
                        help="where each run's etcd keeps its data (default: the temp folder)")
    parser.add_argument("--torch-python", default="/usr/bin/python3")
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",") if n]
    torch_sizes = {int(n) for n in args.torch_sizes.split(",") if n}

    runs = []
    for repeat in range(args.repeat):
        for agents in sizes:
            order = ["embedded", "etcd"] + (["torch"] if agents in torch_sizes else [])
            shift = repeat % len(order)  # alternate which goes first
            for what in order[shift:] + order[:shift]:
                result = torch(args, agents) if what == "torch" else cohort(args, what, agents)
                result["what"] = what
                runs.append(result)
                print(f"# {what:8} {agents:5} agents: {result['rendezvous_s']:.3f} s", flush=True)
    heartbeats = []
    if args.heartbeat_seconds > 0:
        for backend in ("embedded", "etcd"):
            result = cohort(args, backend, args.heartbeat_agents, args.heartbeat_seconds)
            result["what"] = backend
            heartbeats.append(result)
            print(f"# {backend:8} {args.heartbeat_agents} agents heartbeating "
                  f"{result['heartbeat_s']:.0f} s: coordinator {result['coordinator_cpu_percent']:.2f}% "
                  f"of a core, etcd {result['etcd_cpu_percent']:.2f}%", flush=True)

    def median(what, agents):
        values = [r["rendezvous_s"] for r in runs if r["what"] == what and r["agents"] == agents]
        return (statistics.median(values), values) if values else (None, [])

    print("\n| agents | cohort embedded (s) | cohort on etcd (s) | torch c10d (s) | "
          "torch / embedded | torch / etcd |")
    print("|---|---|---|---|---|---|")
    for agents in sizes:
        cells = []
        medians = {}
        for what in ("embedded", "etcd", "torch"):
            value, values = median(what, agents)
            medians[what] = value
            cells.append("-" if value is None else
                         f"{value:.3f} ({' '.join(f'{v:.3f}' for v in values)})")
        ratios = []
        for ours in ("embedded", "etcd"):
            if medians["torch"] and medians[ours]:
                ratios.append(f"{medians['torch'] / medians[ours]:.1f}x")
            else:
                ratios.append("-")
        print(f"| {agents} | " + " | ".join(cells + ratios) + " |")
    if heartbeats:
        print("\n| backend | agents | heartbeating (s) | coordinator CPU (% of a core) | etcd CPU (%) |")
        print("|---|---|---|---|---|")
        for result in heartbeats:
            etcd = f"{result['etcd_cpu_percent']:.2f}" if result["what"] == "etcd" else "-"
            print(f"| {result['what']} | {result['agents']} | {result['heartbeat_s']:.0f} | "
                  f"{result['coordinator_cpu_percent']:.2f} | {etcd} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"runs": runs, "heartbeats": heartbeats}, out, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Side-by-side allreduce, measured in the same run: cohort-bench against torch.distributed's gloo
(or another torch backend) and, with --mpi, Open MPI's MPI_Allreduce.

Runs every sweep alternately, --repeat times, prints every table, then one line per size with
the median time of each and the ratios: latency reference/cohort (above 1: cohort is faster)
and busbw cohort/reference (the same number for equal sizes). cohort runs blocking (-z 1), as
torch's dist.all_reduce and MPI_Allreduce are. Both columns are compared: in place (the only one
torch's dist.all_reduce has) and out of place (cohort-bench and MPI_Allreduce run both; --place
picks one). --baseline BUILD adds another build's cohort-bench (before a change) to the runs.
--shm 0 makes cohort use TCP loopback between local ranks (the issue's TCP comparison).
--ours bench (the default) measures libcohort through cohort-bench; --ours torch measures the
torch backend "cohort" through torch.distributed.all_reduce, exactly like the gloo side (the
package is taken from --python-path, default <build>/python).
The memcpy bandwidth of this machine, measured by cohort-bench, is printed for reference with
the fraction cohort's busbw reaches.
--report DIR writes each side's last sweep there as -J JSON (cohort.json, torch-gloo.json,
openmpi.json) and the page of charts that overlays them (DIR/report.html, python/cohort/report.py).
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


PLACES = {"out": 5, "in": 9}  # first field (time us) of each column in a cohort-bench row


def rows(text):
    """size -> {"out": (time us, busbw) or None, "in": (time us, busbw)} from a cohort-bench
    style table ("-" where a side has no out-of-place column)."""
    result = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.startswith("#") or not fields[0].isdigit() or len(fields) < 13:
            continue
        row = {}
        for place, first in PLACES.items():
            time, busbw = fields[first], fields[first + 2]
            row[place] = None if time == "-" else (float(time), float(busbw))
        result[int(fields[0])] = row
    return result


def run(command, env=None):
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        sys.exit(f"compare: {' '.join(command)} failed with exit code {completed.returncode}")
    return completed.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--backend", default="gloo", help="torch backend to compare with")
    parser.add_argument("--no-torch", action="store_true", help="skip torch")
    parser.add_argument("--mpi", action="store_true", help="also Open MPI's MPI_Allreduce")
    parser.add_argument("--baseline", default=None, metavar="BUILD",
                        help="also another build's cohort-bench (e.g. before a change), as a "
                             "reference named cohort-baseline")
    parser.add_argument("--shm", default="1", choices=["0", "1"], help="COHORT_SHM for cohort")
    parser.add_argument("--nranks", default="2")
    parser.add_argument("-b", default="8")
    parser.add_argument("-e", default="64M")
    parser.add_argument("-f", default="2")
    parser.add_argument("-n", default="20")
    parser.add_argument("-w", default="5")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--place", choices=["both", "in", "out"], default="both",
                        help="which columns to compare: in place, out of place, or both")
    parser.add_argument("--ours", choices=["bench", "torch"], default="bench",
                        help="cohort side: cohort-bench, or torch.distributed with \"cohort\"")
    parser.add_argument("--python-path", default=None,
                        help="where the cohort package is built (default: <build>/python)")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="write each side's last sweep as JSON and the report page here")
    args = parser.parse_args()
    bench = os.path.join(args.build, "bench", "cohort-bench")
    sweep = ["-b", args.b, "-e", args.e, "-f", args.f, "-n", args.n, "-w", args.w]
    env = dict(os.environ, COHORT_SHM=args.shm)
    if args.ours == "torch":
        python_path = args.python_path or os.path.join(args.build, "python")
        env["PYTHONPATH"] = os.pathsep.join(
            [python_path] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        ours = ["/usr/bin/python3", os.path.join(HERE, "torch_bench.py"), "--backend", "cohort",
                "--nranks", args.nranks] + sweep
    else:
        # -a 3: the slowest rank's time, as the torch and MPI sides report.
        ours = [bench, "allreduce", "--nranks", args.nranks, "-z", "1", "-a", "3"] + sweep
    commands = {"cohort": (ours, env)}
    if args.baseline:
        if args.ours == "torch":
            sys.exit("compare: --baseline compares cohort-bench builds; use it with --ours bench")
        baseline = [os.path.join(args.baseline, "bench", "cohort-bench")] + ours[1:]
        commands["cohort-baseline"] = (baseline, env)
    if not args.no_torch:
        commands[f"torch-{args.backend}"] = (
            ["/usr/bin/python3", os.path.join(HERE, "torch_bench.py"), "--backend", args.backend,
             "--nranks", args.nranks] + sweep, None)
    if args.mpi:
        commands["openmpi"] = (
            ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", args.nranks,
             os.path.join(args.build, "bench", "cohort-mpi-allreduce")] + sweep, None)
    results = {name: [] for name in commands}
    if args.report:
        os.makedirs(args.report, exist_ok=True)
    for repeat in range(args.repeat):
        for name, (command, command_env) in commands.items():
            if args.report and repeat == args.repeat - 1:
                command = command + ["-J", os.path.join(args.report, f"{name}.json")]
            text = run(command, command_env)
            print(text, end="")
            results[name].append(rows(text))
    memcpy = run([bench, "memcpy", "-e", "64M", "-n", "10"])
    print(memcpy, end="")
    memcpy_gbs = float(memcpy.split(":")[1].split()[0])
    references = [name for name in commands if name != "cohort"]
    places = ["out", "in"] if args.place == "both" else [args.place]
    words = {"out": "out of place", "in": "in place"}
    print(f"# cohort (COHORT_SHM={args.shm}) vs {', '.join(references)}: allreduce, "
          f"{args.nranks} ranks, float32 sum, {' and '.join(words[p] for p in places)}, "
          f"blocking; median of {args.repeat} run(s) each, measured alternately; memcpy "
          f"{memcpy_gbs:.2f} GB/s")
    header = f"# {'size (B)':>10}  {'place':>5}  {'cohort us':>10} {'busbw':>7} {'%memcpy':>7}"
    for name in references:
        header += f"  {name + ' us':>14} {'lat ratio':>9}"
    print(header)

    def median(name, size, place):
        """(time, busbw) medians over the runs, or None where this side has no such column."""
        runs = [r[size][place] for r in results[name] if r.get(size, {}).get(place) is not None]
        if not runs:
            return None
        return (statistics.median(t for t, _ in runs), statistics.median(b for _, b in runs))

    for size in sorted(results["cohort"][0]):
        for place in places:
            ours = median("cohort", size, place)
            if ours is None:
                continue
            our_time, our_bw = ours
            line = (f"  {size:>10}  {place:>5}  {our_time:>10.2f} {our_bw:>7.3f} "
                    f"{100 * our_bw / memcpy_gbs:>6.1f}%")
            for name in references:
                theirs = median(name, size, place)
                if theirs is None:
                    line += f"  {'-':>14} {'-':>9}"
                else:
                    line += f"  {theirs[0]:>14.2f} {theirs[0] / our_time:>8.2f}x"
            print(line)
    if args.report:
        print(run(["/usr/bin/python3", os.path.join(ROOT, "python", "cohort", "report.py")]
                  + [os.path.join(args.report, f"{name}.json") for name in commands]
                  + ["-o", args.report]), end="")


if __name__ == "__main__":
    main()

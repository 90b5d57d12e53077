#!/usr/bin/python3
"""Side-by-side allreduce: cohort and torch.distributed's gloo, measured in the same run.

Runs both sweeps (alternating, --repeat times), prints every table, then one line per size with
the median time and busbw of each and the ratios: latency gloo/cohort (above 1: cohort is faster)
and busbw cohort/gloo (above 1: cohort moves more). cohort runs blocking (-z 1) and in place,
like torch's dist.all_reduce.

--ours bench (the default) measures libcohort through cohort-bench; --ours torch measures the
torch backend "cohort" through torch.distributed.all_reduce, exactly like the gloo side (the
package is taken from --python-path, default <build>/python next to --bench).
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def rows(text):
    """size -> (in-place time us, in-place busbw) from a cohort-bench style table."""
    result = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.startswith("#") or not fields[0].isdigit() or len(fields) < 13:
            continue
        result[int(fields[0])] = (float(fields[9]), float(fields[11]))
    return result


def run(command, env=None):
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        sys.exit(f"compare: {' '.join(command)} failed with exit code {completed.returncode}")
    return completed.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "cohort-bench"))
    parser.add_argument("--backend", default="gloo", help="torch backend to compare with")
    parser.add_argument("--nranks", default="2")
    parser.add_argument("-b", default="8")
    parser.add_argument("-e", default="64M")
    parser.add_argument("-f", default="2")
    parser.add_argument("-n", default="20")
    parser.add_argument("-w", default="5")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--ours", choices=["bench", "torch"], default="bench",
                        help="cohort side: cohort-bench, or torch.distributed with \"cohort\"")
    parser.add_argument("--python-path", default=None,
                        help="where the cohort package is built (default: <build>/python)")
    args = parser.parse_args()
    sweep = ["-b", args.b, "-e", args.e, "-f", args.f, "-n", args.n, "-w", args.w]
    torch_command = ["/usr/bin/python3", os.path.join(HERE, "torch_bench.py"), "--backend",
                     args.backend, "--nranks", args.nranks] + sweep
    ours_env = None
    if args.ours == "torch":
        python_path = args.python_path or os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(args.bench))), "python")
        ours_env = dict(os.environ)
        ours_env["PYTHONPATH"] = os.pathsep.join(
            [python_path] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        cohort_command = ["/usr/bin/python3", os.path.join(HERE, "torch_bench.py"), "--backend",
                          "cohort", "--nranks", args.nranks] + sweep
    else:
        cohort_command = [args.bench, "allreduce", "--nranks", args.nranks, "-z", "1"] + sweep
    ours, theirs = [], []
    for _ in range(args.repeat):
        text = run(cohort_command, ours_env)
        print(text, end="")
        ours.append(rows(text))
        text = run(torch_command)
        print(text, end="")
        theirs.append(rows(text))
    ours_name = "torch \"cohort\"" if args.ours == "torch" else "cohort-bench"
    print(f"# {ours_name} vs torch {args.backend}: allreduce, {args.nranks} ranks, float32 sum, "
          f"in place, blocking; median of {args.repeat} run(s) each, measured alternately")
    print(f"# {'size (B)':>10}  {'cohort us':>10} {'gloo us':>10} {'lat ratio':>9}  "
          f"{'cohort busbw':>12} {'gloo busbw':>10} {'bw ratio':>8}".replace("gloo", args.backend))
    for size in sorted(ours[0]):
        our_time = statistics.median(r[size][0] for r in ours)
        our_bw = statistics.median(r[size][1] for r in ours)
        their_time = statistics.median(r[size][0] for r in theirs)
        their_bw = statistics.median(r[size][1] for r in theirs)
        latency_ratio = their_time / our_time if our_time > 0 else float("inf")
        # Same size and world on both sides: the busbw ratio is the time ratio (computed from
        # times, since printed busbw rounds small sizes to 0).
        bandwidth_ratio = latency_ratio
        print(f"  {size:>10}  {our_time:>10.2f} {their_time:>10.2f} {latency_ratio:>8.2f}x  "
              f"{our_bw:>12.3f} {their_bw:>10.3f} {bandwidth_ratio:>7.2f}x")


if __name__ == "__main__":
    main()

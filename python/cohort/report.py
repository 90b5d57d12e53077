"""cohort's report page: pictures of cohort-bench sweeps, validate runs and failures.

    python3 -m cohort.report FILE.json... -o DIR          # DIR/report.html, charts beside it
    python3 python/cohort/report.py FILE.json... --text   # the same, as text for a terminal
    cohort-bench report FILE.json... -o DIR               # runs this file

Inputs: cohort-bench -J reports (sweeps, validate), the references bench/compare writes in the
sweep format (torch.distributed's gloo, Open MPI: bench/compare/compare.py --report DIR), and
flight-recorder dumps (files or a folder of them). Sweeps go on one chart together; a validate
report and the dumps get their own sections of the same page. Every chart is drawn by matplotlib
(Debian's python3-matplotlib). Bad input - a truncated file, a report of another format version,
an empty sweep - is an error naming the file, and no page is written. Exit codes: 0 done, 2 bad
input or usage. See docs/bench.md.
"""
import argparse
import os
import sys

try:
    from . import report_load
except ImportError:  # run as a script (cohort-bench report): the package's __init__ (torch) is
    # not needed here, so its directory is on sys.path instead and the modules load by name
    import report_load


def _sections():
    """The drawing modules, imported after the inputs loaded: bad input fails before matplotlib
    starts (a second or more)."""
    try:
        from . import report_failure, report_page, report_sweep, report_validate
    except ImportError:
        import report_failure
        import report_page
        import report_sweep
        import report_validate
    return report_failure, report_page, report_sweep, report_validate


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="cohort-bench report",
        description="A page (or text) of charts from cohort-bench -J reports, bench/compare "
                    "references and flight-recorder dumps.")
    parser.add_argument("inputs", nargs="+", metavar="FILE",
                        help="-J reports, references, dumps (or folders of dumps)")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="folder for report.html and the charts (made when missing)")
    parser.add_argument("--text", action="store_true",
                        help="print the charts as text (busbw by size, the link matrix, who "
                             "stopped where) instead of, or with -o as well as, the page")
    parser.add_argument("--labels", metavar="A,B,...",
                        help="names of the sweeps on the charts, in the order given")
    parser.add_argument("--last", type=int, default=30, metavar="N",
                        help="operations per rank on the failure timeline (default 30)")
    parser.add_argument("--title", default="cohort report")
    args = parser.parse_args(argv)
    if not args.output and not args.text:
        parser.error("give -o DIR for the page, or --text")
    if args.last < 1:
        parser.error("--last must be at least 1")
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        inputs = report_load.load_all(args.inputs)
        labels = args.labels.split(",") if args.labels else None
        sweeps = [i for i in inputs if i.kind == "sweep"]
        if labels and len(labels) != len(sweeps):
            raise report_load.ReportError(
                f"--labels names {len(labels)} sweeps, but {len(sweeps)} were given")
    except report_load.ReportError as error:
        print(f"cohort report: {error}; no page written", file=sys.stderr)
        return 2
    failure, page_lib, sweep, validate = _sections()
    validates = [i for i in inputs if i.kind == "validate"]
    traces = [i for i in inputs if i.kind == "trace"]
    if args.text:
        parts = []
        if validates:
            parts.append(validate.text(validates[0]))
        if sweeps:
            parts.append(sweep.text(sweeps, labels))
        if traces:
            parts.append(failure.text(traces))
        try:
            print("\n#\n".join(parts), flush=True)
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            sys.stderr.close()
            return 0
    if not args.output:
        return 0
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as error:
        print(f"cohort report: -o {args.output}: cannot make the folder: {error.strerror}",
              file=sys.stderr)
        return 2
    page = page_lib.Page(args.output, args.title)
    if validates:
        validate.add_to_page(page, validates[0])
    if sweeps:
        sweep.add_to_page(page, sweeps, labels)
    if traces:
        failure.add_to_page(page, traces, args.last)
    path = page.write()
    print(f"cohort report: {path} ({len(page.files) // 2} charts, also as .svg and .png "
          f"beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

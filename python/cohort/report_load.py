"""Reading the inputs of the report page: cohort-bench's -J reports (sweeps and validate), the
references bench/compare writes in the sweep format (torch.distributed's gloo, Open MPI), and
flight-recorder dumps (one per rank; the schema is in docs/bench.md).

Every problem is a ReportError that names the file and says what to do; nothing is drawn from an
input that failed to load.
"""
import json
import os

try:
    from . import flight_trace
except ImportError:  # run as a script (cohort-bench report): no package
    import flight_trace

# The versions of the -J format this reader knows (bench/run_info.h: kReportFormatVersion).
FORMAT_VERSIONS = (1,)
# The flight recorder's dump format (docs/bench.md, "Flight-recorder dumps").
TRACE_VERSIONS = (1,)
TRACE_STATES = ("queued", "started", "done", "failed")


class ReportError(Exception):
    """An input the page cannot be made from: the message names the file and the problem."""


class Input:
    """One loaded file: `kind` is "sweep", "validate" or "trace"; `data` its JSON."""

    def __init__(self, path, kind, data):
        self.path = path
        self.kind = kind
        self.data = data
        self.label = None  # sweeps: the name of the run on the charts (report_sweep.label_runs)

    @property
    def name(self):
        return os.path.basename(self.path)


def _fail(path, message):
    raise ReportError(f"{path}: {message}")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        _fail(path, f"cannot read it: {error.strerror}")
    if not text.strip():
        _fail(path, "the file is empty (did the run that writes it fail or is it still running?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        truncated = flight_trace.cut_short(text) or error.pos >= len(text.rstrip()) - 1
        what = "it ends before the JSON does (truncated: was the run cut off?)" if truncated \
            else f"not valid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        _fail(path, what)


def _check_version(path, data, versions, what):
    version = data.get("format_version")
    if version is None:
        _fail(path, f"no format_version: a {what} written before the report page existed, or by "
                    f"another tool; run it again with this build")
    if version not in versions:
        known = ", ".join(str(v) for v in versions)
        _fail(path, f"format_version {version!r} is not one this report knows ({known}): it was "
                    f"written by another version of cohort; make the page with that version's "
                    f"report, or run the measurement again with this one")


def _require(path, data, keys, where=""):
    for key in keys:
        if key not in data:
            _fail(path, f"{where}no \"{key}\" field: not a complete report")


def _check_sweep(path, data):
    _check_version(path, data, FORMAT_VERSIONS, "sweep report")
    _require(path, data, ("collective", "nranks", "results"))
    results = data["results"]
    if not isinstance(results, list):
        _fail(path, "\"results\" is not a list")
    if not results:
        _fail(path, "the sweep has no results (no size was measured: check -b/-e, -d and -o of "
                    "the command that wrote it)")
    for index, row in enumerate(results):
        where = f"results[{index}]: "
        if not isinstance(row, dict):
            _fail(path, f"{where}not an object")
        _require(path, row, ("size",), where)
        columns = [row.get(c) for c in ("out_of_place", "in_place")]
        if all(c is None for c in columns):
            _fail(path, f"{where}neither an out_of_place nor an in_place column")
        for column in columns:
            if column is not None:
                _require(path, column, ("time_us", "busbw_gbps"), where)


def _check_validate(path, data):
    _check_version(path, data, FORMAT_VERSIONS, "validate report")
    _require(path, data, ("verdict", "culprits", "nodes", "links", "ranks", "thresholds"))
    if not data["nodes"]:
        _fail(path, "the validate report has no nodes")


def _check_trace(path, data):
    _check_version(path, data, TRACE_VERSIONS, "flight-recorder dump")
    _require(path, data, ("rank", "world_size", "host", "entries"))
    for index, entry in enumerate(data["entries"]):
        where = f"entries[{index}]: "
        _require(path, entry, ("sequence", "op", "state"), where)
        if entry["state"] not in TRACE_STATES:
            _fail(path, f"{where}state {entry['state']!r} is not one of "
                        f"{', '.join(TRACE_STATES)}")


def kind_of(path, data):
    if not isinstance(data, dict):
        _fail(path, "not a JSON object: not a cohort-bench report or flight-recorder dump")
    kind = data.get("kind")
    if kind is None:  # reports written before "kind" existed: tell which, for the message
        tool = str(data.get("tool", ""))
        if tool == "cohort-bench validate":
            kind = "validate"
        elif "results" in data:
            kind = "sweep"
        elif "entries" in data:
            kind = "trace"
    if kind not in ("sweep", "validate", "trace"):
        _fail(path, f"kind {kind!r}: not a cohort-bench sweep or validate report, nor a "
                    f"flight-recorder dump")
    return kind


def load(path):
    data = _read_json(path)
    kind = kind_of(path, data)
    {"sweep": _check_sweep, "validate": _check_validate, "trace": _check_trace}[kind](path, data)
    return Input(path, kind, data)


def load_all(paths):
    """Files, or folders (their *.json, e.g. a folder of flight-recorder dumps)."""
    inputs = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith(".json"))
            if not names:
                _fail(path, "a folder with no .json file in it")
            inputs.extend(load(os.path.join(path, name)) for name in names)
        else:
            inputs.append(load(path))
    if not inputs:
        raise ReportError("no input: give one or more JSON reports or dump folders")
    validates = [i for i in inputs if i.kind == "validate"]
    if len(validates) > 1:
        _fail(validates[1].path, f"a second validate report (the first is {validates[0].path}): "
                                 f"make one page per validate run")
    traces = [i for i in inputs if i.kind == "trace"]
    seen = {}
    for trace in traces:
        key = (trace.data.get("communicator", ""), trace.data["rank"])
        if key in seen:
            _fail(trace.path, f"rank {trace.data['rank']} again (also in {seen[key]}): give "
                              f"the dumps of one job")
        seen[key] = trace.path
    return inputs

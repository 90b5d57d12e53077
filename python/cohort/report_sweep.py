"""The sweep part of the report: busbw and time against size (log axes), one line per run, data
type and reduce op, and column (out-of-place solid, in-place dashed), references (gloo, Open MPI
from bench/compare) named like the runs; the table under the charts; the runs' machine, commit
and command at the top. Also the terminal version (--text): busbw by size as bars.
"""
import math

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

try:
    from . import report_page as page_lib
except ImportError:  # run as a script (cohort-bench report): no package, no torch needed
    import report_page as page_lib

COLUMNS = (("out_of_place", "out-of-place", "-"), ("in_place", "in-place", "--"))


def _tool_label(data):
    tool = str(data.get("tool", ""))
    if tool == "torch.distributed":
        return f"torch {data.get('backend', '?')}"
    if tool == "openmpi":
        return "Open MPI"
    if tool == "cohort-bench":
        return "cohort"
    return tool or "?"


def channels_text(data):
    """Rank 0's channel kinds to the other ranks, e.g. "shm x3, tcp x4"; "" when not recorded."""
    kinds = data.get("channels") or []
    counts = {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}
    return ", ".join(f"{kind} x{count}" for kind, count in counts.items())


def label_runs(runs, labels=None):
    """Names each run for the legend: the tool, the collective when they differ, the channel
    kinds when they differ between the cohort runs, a forced algorithm, the COHORT_* variables
    whose values differ between the cohort runs; the file name when two would still be alike.
    `labels` (one per run) override."""
    if labels:
        for run, label in zip(runs, labels):
            run.label = label
    environments = [r.data.get("environment") or {} for r in runs
                    if r.data.get("tool") == "cohort-bench"]
    names = sorted({k for e in environments for k in e})
    differing = [k for k in names if len({e.get(k) for e in environments}) > 1]
    collectives = {r.data.get("collective") for r in runs}
    channels = {channels_text(r.data) for r in runs if r.data.get("tool") == "cohort-bench"}
    for run in runs:
        if run.label:
            continue
        data = run.data
        parts = [_tool_label(data)]
        if len(collectives) > 1:
            parts.append(str(data.get("collective")))
        if len(channels) > 1 and data.get("tool") == "cohort-bench":
            parts.append("+".join(dict.fromkeys(data.get("channels") or ["?"])))
        algorithm = (data.get("options") or {}).get("algorithm")
        if algorithm:
            parts.append(f"--algo {algorithm}")
        environment = data.get("environment") or {}
        if data.get("tool") == "cohort-bench":
            parts += [f"{k}={environment[k]}" for k in differing if k in environment]
        run.label = " ".join(parts)
    seen = {}
    for run in runs:
        seen.setdefault(run.label, []).append(run)
    for label, alike in seen.items():
        if len(alike) > 1:
            for run in alike:
                run.label = f"{label} ({run.name})"


class Series:
    def __init__(self, run, combo, column, label, style):
        self.run = run
        self.combo = combo  # (type, redop)
        self.column = column
        self.label = label
        self.style = style
        self.points = []  # (size, time_us, busbw_gbps, algorithm)


def series_of(runs):
    """Every line of the charts, in the runs' order."""
    result = []
    for run in runs:
        combos = []
        for row in run.data["results"]:
            combo = (row.get("type", "?"), row.get("redop", "?"))
            if combo not in combos:
                combos.append(combo)
        columns = [c for c in COLUMNS if any(row.get(c[0]) for row in run.data["results"])]
        for combo in combos:
            for key, name, style in columns:
                label = run.label
                if len(combos) > 1:
                    label += f" {combo[0]} {combo[1]}"
                label += f" {name}"
                series = Series(run, combo, key, label, style)
                for row in run.data["results"]:
                    column = row.get(key)
                    if (row.get("type", "?"), row.get("redop", "?")) != combo or not column:
                        continue
                    series.points.append((row["size"], column["time_us"], column["busbw_gbps"],
                                          row.get("algorithm") or ""))
                if series.points:
                    result.append(series)
    return result


def _size_axis(axes, sizes):
    axes.set_xscale("log", base=2)
    if len(sizes) <= 14:  # a tick at every measured size
        axes.set_xticks(sizes)
    else:
        axes.xaxis.set_major_locator(LogLocator(base=4 if len(sizes) <= 28 else 16))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: page_lib.size_text(x)))
    axes.set_xlabel("size (bytes of the larger buffer, nccl-tests' convention)")
    axes.grid(True, which="major", alpha=0.35)
    for label in axes.get_xticklabels():
        label.set_rotation(30)


def _chart(series, name, value_index, ylabel, title):
    figure, axes = plt.subplots(figsize=(9, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {}
    for index, line in enumerate(series):
        key = (id(line.run), line.combo)
        color = color_of.setdefault(key, colors[len(color_of) % len(colors)])
        sizes = [p[0] for p in line.points]
        values = [max(p[value_index], 1e-9) for p in line.points]
        (artist,) = axes.plot(sizes, values, line.style, marker="o", markersize=3, color=color,
                              label=line.label)
        artist.set_gid(f"{name}-series-{index}")
        # One curve per run and combination names the algorithms (both columns run the same).
        has_out_of_place = any(s.column == "out_of_place" for s in series if s.run is line.run)
        if line.column == "out_of_place" or not has_out_of_place:
            _mark_algorithms(axes, line, value_index, color, f"{name}-series-{index}")
    _size_axis(axes, sorted({p[0] for line in series for p in line.points}))
    axes.set_yscale("log")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8, loc="best")
    return figure


def _mark_algorithms(axes, line, value_index, color, gid):
    """Names the algorithm where a run's tuner switches to another (where a curve often bends)."""
    previous = None
    for point in line.points:
        size, algorithm = point[0], point[3]
        if algorithm and algorithm != previous:
            text = axes.annotate(algorithm, (size, max(point[value_index], 1e-9)),
                                 textcoords="offset points", xytext=(2, 6), fontsize=7,
                                 color=color, rotation=30)
            text.set_gid(f"{gid}-algorithm-{size}")
        previous = algorithm


def add_to_page(page, runs, labels=None):
    label_runs(runs, labels)
    series = series_of(runs)
    collectives = sorted({str(r.data.get("collective")) for r in runs})
    page.add(f'<section id="sweep" data-series="{len(series)}"><h2>Sweep: '
             f'{page_lib.escape(", ".join(collectives))}</h2>')
    # One column per run, so that two builds or machines read side by side.
    fields, columns = [], []
    for run in runs:
        data = run.data
        hosts = ", ".join(h.get("name", "?") for h in data.get("hosts", []))
        rows = [("file", run.path),
                ("collective", f"{data.get('collective')}"
                               + (f", torch {data['torch']}" if data.get("torch") else "")),
                ("ranks", f"{data.get('nranks')}" + (f" on {hosts}" if hosts else ""))]
        if data.get("channels"):
            rows.append(("channels (rank 0)", channels_text(data)))
        rows += page_lib.run_meta(data)
        if "avg_bus_bandwidth_gbps" in data:
            footer = (f"average busbw {page_lib.number(data['avg_bus_bandwidth_gbps'])} GB/s, "
                      f"wrong values {data.get('out_of_bounds')}")
            if data.get("exit_code") is not None:
                footer += f", exit code {data['exit_code']}"
            rows.append(("footer", footer))
        for field, _ in rows:
            if field not in fields:
                fields.append(field)
        columns.append(dict(rows))
    meta = [[(field, "text")] + [(column.get(field, ""), "text") for column in columns]
            for field in fields]
    page.add(page_lib.table(["run"] + [run.label for run in runs], meta, css="meta",
                            table_id="runs"))
    what = ", ".join(collectives)
    page.chart(_chart(series, "sweep-busbw", 2, "busbw (GB/s)", f"{what}: bus bandwidth"),
               "sweep-busbw", "busbw = algbw x the collective's factor (allreduce 2(n-1)/n): "
                              "comparable to a link's speed. Solid: out-of-place, dashed: in-place;"
                              " algorithm names mark where the tuner switches.")
    page.chart(_chart(series, "sweep-time", 1, "time (us)", f"{what}: time per operation"),
               "sweep-time")
    page.add(_table(series) + "</section>")


def _table(series):
    sizes = sorted({p[0] for s in series for p in s.points})
    header = ["size"]
    for line in series:
        header += [f"{line.label} time (us)", "busbw (GB/s)"]
        if any(p[3] for p in line.points):
            header.append("algorithm")
    rows = []
    for size in sizes:
        row = [page_lib.size_text(size)]
        for line in series:
            point = next((p for p in line.points if p[0] == size), None)
            row += [page_lib.number(point[1]) if point else "-",
                    page_lib.number(point[2]) if point else "-"]
            if any(p[3] for p in line.points):
                row.append((point[3] if point else "-", "text"))
        rows.append(row)
    return page_lib.table(header, rows, table_id="sweep-table")


def text(runs, labels=None, width=24):
    """busbw by size, one bar per series on a log scale (as the page's chart), for a terminal."""
    label_runs(runs, labels)
    series = series_of(runs)
    values = [p[2] for s in series for p in s.points if p[2] > 0]
    top = max(values, default=1)
    bottom = min(values, default=1)
    span = math.log(top / bottom) if top > bottom else 1.0

    def bar(value):
        if value <= 0:
            return ""
        return "#" * (1 + round((width - 1) * math.log(value / bottom) / span))

    lines = [f"# busbw (GB/s) by size; bars on a log scale from {bottom:.3g} to {top:.3g} GB/s"]
    for index, line in enumerate(series):
        lines.append(f"#  {chr(ord('a') + index % 26)}: {line.label}")
    for size in sorted({p[0] for s in series for p in s.points}):
        first = True
        for index, line in enumerate(series):
            point = next((p for p in line.points if p[0] == size), None)
            if point is None:
                continue
            head = f"{page_lib.size_text(size):>9}" if first else " " * 9
            algorithm = f"  {point[3]}" if point[3] else ""
            lines.append(f"{head}  {chr(ord('a') + index % 26)}  {bar(point[2]):<{width}} "
                         f"{point[2]:10.4g}{algorithm}")
            first = False
    return "\n".join(lines)

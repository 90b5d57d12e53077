"""The failure part of the report, from the flight recorder's per-rank dumps (schema in
docs/bench.md): who stopped where first, in words; then one row per rank with its last operations
as bars in time (done, failed, started and never finished, queued) and where each rank stopped
marked; then a table per rank. Also the terminal version (--text).

The analysis is cohort-trace's (flight_trace.py, after PyTorch's flight-recorder analyzer): the
first sequence number that not every rank finished is where the job stopped; a rank that never
entered it (or wrote no dump) stopped first; ranks that disagree on what that sequence number is
(op, type, count, root) are named too.
"""
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

try:
    from . import flight_trace
    from . import report_page as page_lib
except ImportError:  # run as a script (cohort-bench report): no package, no torch needed
    import flight_trace
    import report_page as page_lib

STATE_COLORS = {"done": "#4c72b0", "failed": "#c62828", "started": "#f0a030", "queued": "#bdbdbd"}
analyze = flight_trace.analyze
_describe = flight_trace.describe


def _times(entry, end):
    start = entry.get("started_ns") or entry.get("queued_ns")
    finish = entry.get("finished_ns") or end
    return start, finish


def _timeline(analysis, last):
    ranks = analysis["ranks"]
    world = analysis["world_size"]
    shown = {r: rank.entries[-last:] for r, rank in ranks.items()}
    stamps = [t for r, entries in shown.items() for e in entries
              for t in (e.get("queued_ns"), e.get("started_ns"), e.get("finished_ns")) if t]
    stamps += [ranks[r].dump.get("dumped_at_ns") for r in ranks if ranks[r].dump.get(
        "dumped_at_ns")]
    origin = min(stamps) if stamps else 0
    end_of = {r: ranks[r].dump.get("dumped_at_ns") or (max(stamps) if stamps else 0)
              for r in ranks}

    span = (max(stamps) - origin) / 1e9 if stamps else 0
    scale, unit = (1e3, "ms") if span < 2 else (1, "s")

    def seconds(ns):  # in `unit`
        return (ns - origin) / 1e9 * scale

    figure, axes = plt.subplots(figsize=(10, 1.2 + 0.55 * world))
    for row in range(world):
        band = axes.axhspan(row - 0.45, row + 0.45, color="#f5f5f5" if row % 2 else "#ffffff",
                            zorder=0)
        band.set_gid(f"rank-row-{row}")
        if row not in ranks:
            note = axes.text(0, row, "  no dump", va="center", fontsize=8, color="#c62828")
            note.set_gid(f"missing-rank-{row}")
            continue
        for entry in shown[row]:
            start, finish = _times(entry, end_of[row])
            if start is None:
                continue
            color = STATE_COLORS[entry["state"]]
            height = 0.25 if entry["state"] == "queued" else 0.6
            bar = axes.barh(row, max(seconds(finish) - seconds(start), 0), left=seconds(start),
                            height=height, color=color, edgecolor="white", linewidth=0.3,
                            zorder=2)
            bar.patches[0].set_gid(f"op-{row}-{entry['sequence']}")
        stop = ranks[row].stop
        if stop is not None:
            start, finish = _times(stop, end_of[row])
            at = seconds(start if stop["state"] != "done" else finish)
            (marker,) = axes.plot([at], [row], marker="X", markersize=10, color="black",
                                  zorder=3)
            marker.set_gid(f"stop-rank-{row}")
            axes.annotate(f"seq {stop['sequence']} {stop.get('op', '?')} ({stop['state']})",
                          (at, row), textcoords="offset points", xytext=(6, 6), fontsize=7)
    axes.set_yticks(range(world))
    axes.set_yticklabels([f"rank {r} ({ranks[r].host})" if r in ranks else f"rank {r}"
                          for r in range(world)])
    for label in axes.get_yticklabels():
        rank = int(label.get_text().split()[1])
        if rank in analysis["culprits"]:
            label.set_color("#c62828")
            label.set_fontweight("bold")
    axes.set_ylim(world - 0.5, -0.5)
    axes.set_xlabel(f"{unit} since the first operation shown")
    axes.grid(True, axis="x", alpha=0.3)
    handles = [Patch(color=c, label=s) for s, c in STATE_COLORS.items()]
    handles.append(Line2D([], [], marker="X", color="black", linestyle="", label="stopped here"))
    axes.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                ncol=len(handles), frameon=False)
    left, right = axes.get_xlim()
    axes.set_xlim(left, right + 0.12 * (right - left))  # room for the stop labels
    axes.set_title(f"the last {last} operations of each rank")
    return figure


def _groups(traces):
    groups = {}
    for trace in traces:
        groups.setdefault(trace.data.get("communicator", ""), []).append(trace)
    return groups


def add_to_page(page, traces, last=30):
    for index, (name, members) in enumerate(sorted(_groups(traces).items())):
        analysis = analyze([t.data for t in members])
        culprits = ", ".join(f"rank {r}" for r in analysis["culprits"]) or "none"
        page.add(f'<section id="failure-{index}" class="failure" '
                 f'data-ranks="{analysis["world_size"]}">'
                 f'<h2>Failure: communicator {page_lib.escape(name or "?")}, '
                 f'{analysis["world_size"]} ranks</h2>'
                 f'<div class="verdict FAIL">Stopped first: <span class="culprit" '
                 f'id="failure-culprits-{index}">{page_lib.escape(culprits)}</span></div>'
                 f'<p id="failure-summary-{index}">{page_lib.escape(analysis["summary"])}</p>')
        first = members[0].data
        page.add(page_lib.table(None, [("dumps", ", ".join(t.path for t in members))]
                                + page_lib.run_meta(first), ["text", "text"], css="meta"))
        page.chart(_timeline(analysis, last), f"failure-timeline-{index}",
                   "Bars: from start to finish (started and never finished: to the dump); thin "
                   "grey: queued. X: where each rank stopped (its first operation that did not "
                   "finish). Timestamps are each host's wall clock.")
        rows = []
        for r in range(analysis["world_size"]):
            rank = analysis["ranks"].get(r)
            if rank is None:
                rows.append([r, ("-", "text"), "-", ("no dump", "text"), "-", "-", ("", "text")])
                continue
            stop = rank.stop
            rows.append([r, (rank.host, "text"), rank.dump.get("pid", "-"),
                         (rank.dump.get("reason", "-"), "text"),
                         "-" if rank.last_done is None else rank.last_done,
                         (f"{stop['sequence']} {_describe(stop)} ({stop['state']})"
                          if stop else "-", "text"),
                         ((stop or {}).get("error") or rank.dump.get("error") or "", "text")])
        page.add(page_lib.table(("rank", "host", "pid", "dumped on", "last done", "stopped at",
                                 "error"), rows, table_id=f"failure-ranks-{index}")
                 + "</section>")


def text(traces):
    lines = []
    for name, members in sorted(_groups(traces).items()):
        analysis = analyze([t.data for t in members])
        lines.append(f"# failure: communicator {name or '?'}, {analysis['world_size']} ranks; "
                     f"stopped first: {', '.join(f'rank {r}' for r in analysis['culprits']) or 'none'}")
        lines.append(f"# {analysis['summary']}")
        for r in range(analysis["world_size"]):
            rank = analysis["ranks"].get(r)
            if rank is None:
                lines.append(f"  rank {r:<4} no dump")
                continue
            stop = rank.stop
            where = f"{stop['sequence']} {_describe(stop)} ({stop['state']})" if stop else "-"
            lines.append(f"  rank {r:<4} {rank.host:<16} last done {rank.last_done!s:<8} "
                         f"stopped at {where}")
    return "\n".join(lines)

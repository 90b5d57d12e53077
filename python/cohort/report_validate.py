"""The validate part of the report: the verdict and culprits first; the host x host point-to-point
bandwidth matrix as a heat map in GB/s (row sends to column, best sample) with the links that are
not PASS outlined and the culprit hosts' names marked; per-host bars (best link, intra-node
allreduce, memcpy) and per-rank straggler bars with the thresholds drawn; then the tables. Also
the terminal version (--text): the verdict and the matrix with the slow cells marked.
"""
import statistics

import matplotlib.pyplot as plt
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

try:
    from . import report_page as page_lib
except ImportError:  # run as a script (cohort-bench report): no package, no torch needed
    import report_page as page_lib

RED = "#c62828"


def matrix(data):
    """(names, bandwidth[a][b] GB/s or None, level[a][b] "PASS"/"SLOW"/"FAIL" or None)."""
    names = [node["name"] for node in data["nodes"]]
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    bandwidth = [[None] * n for _ in range(n)]
    level = [[None] * n for _ in range(n)]
    for link in data["links"]:
        a, b = index.get(link["a"]), index.get(link["b"])
        if a is None or b is None:
            continue
        bandwidth[a][b] = link.get("bandwidth_ab_gbps")
        bandwidth[b][a] = link.get("bandwidth_ba_gbps")
        level[a][b] = level[b][a] = link.get("verdict", "PASS")
    return names, bandwidth, level


def culprit_nodes(data):
    return {node["name"] for node in data["nodes"] if node.get("verdict") != "PASS"}


def _heat_map(data):
    names, bandwidth, level = matrix(data)
    n = len(names)
    values = [v for row in bandwidth for v in row if v is not None]
    norm = Normalize(vmin=0, vmax=max(values) if values else 1)
    colormap = plt.get_cmap("RdYlGn")
    side = max(4.0, 1.1 + 0.75 * n)
    figure, axes = plt.subplots(figsize=(side + 1.4, side))
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            value = bandwidth[a][b]
            color = colormap(norm(value)) if value is not None else "#bdbdbd"
            cell = Rectangle((b - 0.5, a - 0.5), 1, 1, facecolor=color, edgecolor="white",
                             linewidth=1)
            cell.set_gid(f"cell-{names[a]}-{names[b]}")
            axes.add_patch(cell)
            label = page_lib.number(value) if value is not None else "failed"
            if n <= 16:
                axes.text(b, a, label, ha="center", va="center", fontsize=8 if n <= 8 else 6)
    for a in range(n):
        for b in range(n):
            if a != b and level[a][b] not in (None, "PASS"):
                outline = Rectangle((b - 0.46, a - 0.46), 0.92, 0.92, fill=False,
                                    edgecolor="black" if level[a][b] == "SLOW" else RED,
                                    linewidth=2.5)
                outline.set_gid(f"culprit-{names[a]}-{names[b]}")
                axes.add_patch(outline)
    axes.set_xlim(-0.5, n - 0.5)
    axes.set_ylim(n - 0.5, -0.5)
    axes.set_xticks(range(n))
    axes.set_yticks(range(n))
    axes.set_xticklabels(names, rotation=45 if n > 6 else 0)
    axes.set_yticklabels(names)
    axes.set_xlabel("receiving host")
    axes.set_ylabel("sending host")
    axes.set_aspect("equal")
    bad = culprit_nodes(data)
    for label in list(axes.get_xticklabels()) + list(axes.get_yticklabels()):
        if label.get_text() in bad:
            label.set_color(RED)
            label.set_fontweight("bold")
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_title("point-to-point bandwidth, GB/s (best sample); outlined: links not PASS")
    colorbar = figure.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=axes, shrink=0.8)
    colorbar.set_label("GB/s")
    return figure


def _median(values):
    values = [v for v in values if v is not None and v >= 0]
    return statistics.median(values) if values else None


def _bars(axes, names, values, threshold, title, unit, gid):
    colors = ["#9e9e9e" if v is None else RED if threshold is not None and v < threshold
              else "#4c72b0" for v in values]
    bars = axes.bar(range(len(names)), [v or 0 for v in values], color=colors)
    for name, bar in zip(names, bars):
        bar.set_gid(f"bar-{gid}-{name}")
    if threshold is not None:
        line = axes.axhline(threshold, color=RED, linestyle="--", linewidth=1.2,
                            label=f"threshold {page_lib.number(threshold)} {unit}")
        line.set_gid(f"threshold-{gid}")
        axes.legend(fontsize=7, loc="lower right")
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels(names, rotation=45 if len(names) > 6 else 0, fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(unit)


def _node_bars(data):
    nodes = data["nodes"]
    names = [node["name"] for node in nodes]
    fraction = data["thresholds"].get("relative", 0.8)
    panels = [("p2p_best_link_gbps", "best point-to-point link", "p2p"),
              ("intra_allreduce_busbw_gbps", "allreduce inside the host (busbw)", "intra"),
              ("memcpy_gbps", "memcpy", "memcpy")]
    panels = [p for p in panels if any(node.get(p[0]) is not None for node in nodes)]
    figure, axes_list = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.6, 3.6),
                                     squeeze=False)
    for axes, (key, title, gid) in zip(axes_list[0], panels):
        values = [node.get(key) for node in nodes]
        median = _median(values)
        threshold = fraction * median if median is not None else None
        _bars(axes, names, values, threshold, title, "GB/s", gid)
    figure.suptitle(f"per host; red below the threshold ({page_lib.number(fraction)} x the "
                    f"hosts' median)", fontsize=10)
    figure.tight_layout()
    return figure


def _straggler_bars(data):
    ranks = [r for r in data["ranks"] if r.get("compute_best_us")]
    fraction = data["thresholds"].get("relative", 0.8)
    median = _median([r["compute_best_us"] for r in ranks])
    labels = [f"{r['rank']}\n{r.get('node') or '?'}" for r in ranks]
    speeds = [median / r["compute_best_us"] if median else None for r in ranks]
    waits = [r.get("wait_median_us") for r in ranks]
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(7.5, 0.6 * len(ranks) + 3), 3.6))
    _bars(left, labels, speeds, fraction, "compute speed / the median rank's", "ratio",
          "straggler")
    _bars(right, labels, waits, None, "median wait in the step's allreduce (not judged)", "us",
          "wait")
    figure.suptitle("straggler check, per rank (rank, host): red below the threshold",
                    fontsize=10)
    figure.tight_layout()
    return figure


def add_to_page(page, run):
    data = run.data
    verdict = data["verdict"]
    culprits = data.get("culprits") or []
    names = [node["name"] for node in data["nodes"]]
    culprit_text = ", ".join(culprits) if culprits else "none"
    page.add(f'<section id="validate" data-verdict="{page_lib.escape(verdict)}">'
             f'<h2>Validate: {len(names)} hosts, {len(data["ranks"])} ranks</h2>'
             f'<div class="verdict {page_lib.escape(verdict)}" id="verdict">Verdict: '
             f'{page_lib.escape(verdict)}. Culprits: <span id="culprits" class="culprit">'
             f'{page_lib.escape(culprit_text)}</span></div>'
             f'<p id="summary">{page_lib.escape(data.get("summary", ""))}</p>')
    thresholds = data["thresholds"]
    rule = (f"below {page_lib.number(thresholds.get('relative'))} x the cluster median"
            + (f"; minima from {thresholds['expect_file']} where it names them"
               if thresholds.get("expect_file") else ""))
    meta = [("file", run.path), ("thresholds", rule),
            ("took", f"{page_lib.number(data.get('seconds'))} s, seed {data.get('seed')}")]
    meta += page_lib.run_meta(data)
    page.add(page_lib.table(None, meta, ["text", "text"], css="meta"))
    if len(names) > 1:
        page.chart(_heat_map(data), "validate-links",
                   "Each cell: the bandwidth from the row's host to the column's, the best of its "
                   "samples. A link is judged by its slower direction; culprit hosts in red.")
    page.chart(_node_bars(data), "validate-hosts")
    if data["ranks"]:
        page.chart(_straggler_bars(data), "validate-stragglers")
    cluster = data.get("cluster_allreduce") or {}
    if cluster.get("busbw_gbps") is not None:
        reasons = "; ".join(cluster.get("reasons") or [])
        page.add(f'<p id="cluster">Cluster allreduce ({page_lib.escape(cluster.get("algorithm"))},'
                 f' {page_lib.size_text(cluster.get("bytes", 0))}): '
                 f'{page_lib.number(cluster.get("time_us"))} us, busbw '
                 f'{page_lib.number(cluster["busbw_gbps"])} GB/s: '
                 f'<b>{page_lib.escape(cluster.get("verdict"))}</b> {page_lib.escape(reasons)}</p>')
    node_rows = []
    for node in data["nodes"]:
        inventory = node.get("inventory") or {}
        node_rows.append([(node["name"], "text"), (node["verdict"], node["verdict"]),
                          node.get("ranks", ""), page_lib.number(node.get("p2p_best_link_gbps")),
                          page_lib.number(node.get("latency_us")),
                          page_lib.number(node.get("memcpy_gbps")),
                          page_lib.number(node.get("intra_allreduce_busbw_gbps")),
                          page_lib.number(node.get("compute_ratio")),
                          (inventory.get("cpu_model", ""), "text"),
                          ("; ".join(node.get("reasons") or []), "text")])
    page.add("<h3>Hosts</h3>" + page_lib.table(
        ("host", "verdict", "ranks", "best link (GB/s)", "latency (us)", "memcpy (GB/s)",
         "intra allreduce (GB/s)", "compute", "CPU", "findings"), node_rows, table_id="hosts"))
    link_rows = [[(f"{l['a']}-{l['b']}", "text"), (l["verdict"], l["verdict"]),
                  page_lib.number(l.get("bandwidth_ab_gbps")),
                  page_lib.number(l.get("bandwidth_ba_gbps")), page_lib.number(l.get("latency_us")),
                  l.get("samples", ""), (l.get("explained_by") or "", "text"),
                  ("; ".join(l.get("reasons") or []), "text")] for l in data["links"]]
    page.add("<h3>Links</h3>" + page_lib.table(
        ("link a-b", "verdict", "a to b (GB/s)", "b to a (GB/s)", "latency (us)", "samples",
         "explained by", "findings"), link_rows, table_id="links") + "</section>")


def text(run):
    """The verdict and the bandwidth matrix, slow cells marked, for a terminal."""
    data = run.data
    names, bandwidth, level = matrix(data)
    bad = culprit_nodes(data)
    lines = [f"# validate: {len(names)} hosts; verdict {data['verdict']}; culprits: "
             f"{', '.join(data.get('culprits') or []) or 'none'}",
             f"# {data.get('summary', '')}",
             "# point-to-point bandwidth, GB/s (row sends to column); * link not PASS, "
             "! host not PASS"]
    width = max([9] + [len(n) + 2 for n in names])
    lines.append(" " * width + "".join(f"{(n + ('!' if n in bad else '')):>{width}}"
                                       for n in names))
    for a, name in enumerate(names):
        cells = []
        for b in range(len(names)):
            if a == b:
                cells.append(f"{'-':>{width}}")
                continue
            value = bandwidth[a][b]
            mark = "*" if level[a][b] not in (None, "PASS") else " "
            shown = page_lib.number(value) if value is not None else "failed"
            cells.append(f"{shown + mark:>{width}}")
        lines.append(f"{(name + ('!' if name in bad else '')):<{width}}" + "".join(cells))
    return "\n".join(lines)

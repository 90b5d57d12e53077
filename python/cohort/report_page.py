"""The report page: one self-contained HTML file (styles inline, every chart an inline SVG drawn by
matplotlib, no script and nothing fetched), with each chart also written beside it as NAME.svg
and NAME.png.

Charts carry ids on what a reader counts (a series, a matrix cell, a rank's row, an outlined
culprit) - matplotlib writes an artist's gid as the id of its SVG group - so a browser test can
check what the page shows, not only that it loads.
"""
import html
import io
import os

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #1d1d1f; line-height: 1.35; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px;
  border-bottom: 1px solid #ccc; padding-bottom: 4px; } h3 { font-size: 15px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0 16px; }
th, td { border: 1px solid #d0d0d0; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
table.meta td, table.meta th { text-align: left; vertical-align: top; }
table.meta td:first-child { color: #555; white-space: nowrap; } td { white-space: nowrap; } td.text { white-space: normal; }
code, .command { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
.verdict { font-size: 20px; font-weight: bold; padding: 10px 14px; border-radius: 4px;
           margin: 12px 0; }
.PASS { background: #dff3e0; color: #1b5e20; } .SLOW { background: #fff1d6; color: #8a4b00; }
.FAIL { background: #fde0df; color: #a4000f; }
td.PASS, td.SLOW, td.FAIL { text-align: center; font-weight: bold; }
.culprit { font-weight: bold; color: #a4000f; }
.chart svg { max-width: 100%; height: auto; } .note { color: #555; font-size: 12px; }
.files { font-size: 12px; color: #555; }
"""


def escape(text):
    return html.escape(str(text), quote=True)


class Page:
    """Collects sections and charts; write() puts report.html and the chart files in `folder`."""

    def __init__(self, folder, title):
        self.folder = folder
        self.title = title
        self.parts = []
        self.files = []

    def add(self, markup):
        self.parts.append(markup)

    def chart(self, figure, name, caption=""):
        """Adds `figure` inline (SVG) and writes NAME.svg and NAME.png beside the page."""
        # Distinct ids inside each SVG (clip paths, markers), so that charts inline on one page
        # cannot refer to each other's definitions.
        with matplotlib.rc_context({"svg.hashsalt": name, "svg.fonttype": "none"}):
            buffer = io.StringIO()
            # No date in the SVG: the same input makes the same file.
            figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
            svg = buffer.getvalue()
            with open(os.path.join(self.folder, name + ".svg"), "w", encoding="utf-8") as file:
                file.write(svg)
            figure.savefig(os.path.join(self.folder, name + ".png"), format="png", dpi=110,
                           bbox_inches="tight")
        plt.close(figure)
        self.files += [name + ".svg", name + ".png"]
        start = svg.find("<svg")
        caption_markup = f'<p class="note">{escape(caption)}</p>' if caption else ""
        self.add(f'<div class="chart" id="chart-{escape(name)}">{svg[start:]}</div>'
                 f'{caption_markup}')

    def write(self):
        files = " ".join(f'<a href="{escape(f)}">{escape(f)}</a>' for f in self.files)
        body = "\n".join(self.parts)
        text = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<title>{escape(self.title)}</title><style>{STYLE}</style></head>\n<body>\n'
                f'<h1>{escape(self.title)}</h1>\n{body}\n'
                f'<p class="files">The charts as files beside this page: {files}</p>\n'
                f'</body></html>\n')
        path = os.path.join(self.folder, "report.html")
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        return path


def table(header, rows, classes=None, table_id=None, css=""):
    """An HTML table (no header row when `header` is None); `classes[i]` is the class of column i
    ("text" aligns left); a cell given as (text, class) adds that class (a verdict's colour)."""
    classes = classes or []

    def cell(tag, index, value):
        cls = classes[index] if index < len(classes) else ""
        if isinstance(value, tuple):  # (text, extra class)
            value, extra = value
            cls = f"{cls} {extra}".strip()
        attribute = f' class="{cls}"' if cls else ""
        return f"<{tag}{attribute}>{escape(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header)) if header else ""
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    identity = f' id="{escape(table_id)}"' if table_id else ""
    css_class = f' class="{css}"' if css else ""
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table{identity}{css_class}>{head}<tbody>{body}</tbody></table>"


def size_text(size):
    size = int(size)
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def number(value, digits=3):
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.{digits - 1}f}"
    return f"{value:.{digits}g}"


def run_meta(data):
    """Rows of (what, value) for a report's machine, commit, date and command."""
    machine = data.get("machine") or {}
    cpu = machine.get("cpu_model") or "?"
    cores = machine.get("cores")
    where = f"{machine.get('host', '?')}: {cpu}" + (f", {cores} cores" if cores else "")
    if machine.get("os"):
        where += f", {machine['os']}"
    rows = [("tool", data["tool"])] if data.get("tool") else []
    rows += [("machine", where), ("commit", data.get("commit") or "?"),
            ("date", data.get("date") or "?")]
    command = data.get("command")
    if command:
        rows.append(("command", " ".join(command) if isinstance(command, list) else command))
    environment = data.get("environment") or {}
    if environment:
        rows.append(("COHORT_* set", " ".join(f"{k}={v}" for k, v in sorted(environment.items()))))
    return rows

"""The report page's reading and judging (python/cohort/report*.py), without a browser: bad input
is an error naming the file and writes no page; run labels; who stopped where in flight-recorder
dumps (made up by tests/cluster/lib/trace_fixture.py; test_trace.py reads real ones); the text
versions. The pages themselves are opened in Chromium by tests/cluster/bench_report.sh and
bench_netns_validate.sh, from real runs.

The modules are imported from the source tree by name, as `cohort-bench report` runs them, so
these tests need neither torch nor the extension.
"""
import copy
import importlib.util
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python", "cohort"))
import report  # noqa: E402
import report_failure  # noqa: E402
import report_load  # noqa: E402
import report_sweep  # noqa: E402
import report_validate  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "trace_fixture", os.path.join(ROOT, "tests", "cluster", "lib", "trace_fixture.py"))
trace_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trace_fixture)


def sweep(tool="cohort-bench", environment=None, algorithm="", sizes=(8, 1024, 1 << 20)):
    rows = []
    for index, size in enumerate(sizes):
        column = {"time_us": 10.0 * (index + 1), "algbw_gbps": 0.1 * (index + 1),
                  "busbw_gbps": 0.1 * (index + 1), "wrong": 0}
        rows.append({"size": size, "count": size // 4, "type": "float", "redop": "sum",
                     "root": -1, "algorithm": "ring" if index else "lane_one_shot",
                     "out_of_place": column, "in_place": dict(column)})
    return {"tool": tool, "kind": "sweep", "format_version": 1, "collective": "allreduce",
            "nranks": 2, "command": ["cohort-bench", "allreduce"], "results": rows,
            "machine": {"host": "vm", "cpu_model": "AMD EPYC", "cores": 2}, "commit": "abc",
            "date": "2026-01-01T00:00:00Z", "environment": environment or {},
            "options": {"algorithm": algorithm}}


def validate_report():
    names = ["node0", "node1", "node2"]
    links = []
    for a in range(3):
        for b in range(a + 1, 3):
            slow = 2 in (a, b)
            links.append({"a": names[a], "b": names[b], "verdict": "SLOW" if slow else "PASS",
                          "bandwidth_ab_gbps": 0.01 if slow else 0.05,
                          "bandwidth_ba_gbps": 0.01 if slow else 0.05, "latency_us": 20,
                          "samples": 2, "explained_by": "node2" if slow else None,
                          "reasons": []})
    nodes = [{"name": n, "verdict": "SLOW" if n == "node2" else "PASS", "ranks": 1,
              "p2p_best_link_gbps": 0.01 if n == "node2" else 0.05, "memcpy_gbps": 20.0,
              "intra_allreduce_busbw_gbps": None, "reasons": []} for n in names]
    ranks = [{"rank": r, "node": names[r], "compute_best_us": 100.0, "wait_median_us": 50.0}
             for r in range(3)]
    return {"tool": "cohort-bench validate", "kind": "validate", "format_version": 1,
            "verdict": "SLOW", "culprits": ["node2"], "summary": "SLOW: node2 SLOW",
            "thresholds": {"relative": 0.8}, "nodes": nodes, "links": links, "ranks": ranks}


def write(folder, name, data):
    path = os.path.join(str(folder), name)
    with open(path, "w") as file:
        file.write(data if isinstance(data, str) else json.dumps(data))
    return path


def refused(tmp_path, capsys, *paths):
    """report.main on `paths` must fail with exit code 2 and write no page; returns stderr."""
    out = tmp_path / "page"
    assert report.main(list(paths) + ["-o", str(out)]) == 2
    assert not (out / "report.html").exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("cut", [0.5, 0.25, 0.9, -2])
def test_truncated_json_names_the_file(tmp_path, capsys, cut):
    text = json.dumps(sweep(), indent=1)
    # Cut anywhere: inside a string, after a comma, one brace short.
    end = int(len(text) * cut) if cut > 0 else len(text) + cut
    path = write(tmp_path, "cut.json", text[:end])
    err = refused(tmp_path, capsys, path)
    assert f"{path}: it ends before the JSON does (truncated" in err and "no page written" in err


def test_broken_json_says_where(tmp_path, capsys):
    path = write(tmp_path, "broken.json", '{"kind": "sweep",, "results": []}')
    assert f"{path}: not valid JSON at line 1 column 18" in refused(tmp_path, capsys, path)


def test_other_format_version_and_missing_version(tmp_path, capsys):
    newer = sweep()
    newer["format_version"] = 2
    path = write(tmp_path, "newer.json", newer)
    assert f"{path}: format_version 2 is not one this report knows (1)" in refused(
        tmp_path, capsys, path)
    older = sweep()
    del older["format_version"]
    path = write(tmp_path, "older.json", older)
    assert f"{path}: no format_version" in refused(tmp_path, capsys, path)


def test_empty_sweep_and_a_bad_file_among_good_ones(tmp_path, capsys):
    empty = sweep()
    empty["results"] = []
    good = write(tmp_path, "good.json", sweep())
    path = write(tmp_path, "empty.json", empty)
    assert f"{path}: the sweep has no results" in refused(tmp_path, capsys, good, path)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["results"][1].pop("size"), "results[1]: no \"size\" field"),
    (lambda d: d["results"][0].update(out_of_place=None, in_place=None),
     "results[0]: neither an out_of_place nor an in_place column"),
    (lambda d: d.update(kind="histogram"), "kind 'histogram': not a cohort-bench"),
])
def test_incomplete_sweeps(tmp_path, capsys, change, message):
    data = sweep()
    change(data)
    path = write(tmp_path, "bad.json", data)
    assert f"{path}: {message}" in refused(tmp_path, capsys, path)


def test_empty_file_and_empty_folder(tmp_path, capsys):
    path = write(tmp_path, "nothing.json", "")
    assert f"{path}: the file is empty" in refused(tmp_path, capsys, path)
    folder = tmp_path / "dumps"
    folder.mkdir()
    assert f"{folder}: a folder with no .json file" in refused(tmp_path, capsys, str(folder))


def test_bad_dumps(tmp_path, capsys):
    dumps = trace_fixture.dumps("killed", 4, 10)
    broken = copy.deepcopy(dumps[0])
    broken["entries"][3]["state"] = "running"
    path = write(tmp_path, "trace-rank0.json", broken)
    assert f"{path}: entries[3]: state 'running' is not one of queued" in refused(
        tmp_path, capsys, path)
    first = write(tmp_path, "a.json", dumps[1])
    again = write(tmp_path, "b.json", dumps[1])
    assert f"{again}: rank 1 again (also in {first})" in refused(tmp_path, capsys, first, again)


def test_a_good_sweep_makes_a_page(tmp_path, capsys):
    path = write(tmp_path, "run.json", sweep())
    out = tmp_path / "page"
    assert report.main([path, "-o", str(out)]) == 0
    page = (out / "report.html").read_text()
    # Self-contained: nothing to fetch (the SVG's namespace URIs are names, not requests).
    assert "<script" not in page and "src=" not in page and 'href="http' not in page
    assert "url(http" not in page and "@import" not in page
    assert len(re.findall(r'id="sweep-busbw-series-\d+"', page)) == 2
    for name in ("sweep-busbw", "sweep-time"):
        assert (out / f"{name}.svg").stat().st_size > 1000
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "report.html" in capsys.readouterr().out


def test_labels_name_what_differs(tmp_path):
    runs = [report_load.Input("a.json", "sweep", sweep(environment={"COHORT_SHM": "0"})),
            report_load.Input("b.json", "sweep", sweep(environment={"COHORT_SHM": "1"})),
            report_load.Input("c.json", "sweep", sweep(algorithm="ring")),
            report_load.Input("g.json", "sweep", dict(sweep(tool="torch.distributed"),
                                                      backend="gloo"))]
    report_sweep.label_runs(runs)
    assert [r.label for r in runs] == ["cohort COHORT_SHM=0", "cohort COHORT_SHM=1",
                                       "cohort --algo ring", "torch gloo"]
    lines = report_sweep.series_of(runs)
    assert len(lines) == 8 and lines[-1].label == "torch gloo in-place"
    over = [report_load.Input("s.json", "sweep", dict(sweep(), channels=["shm", "shm", "shm"])),
            report_load.Input("t.json", "sweep", dict(sweep(), channels=["tcp", "tcp", "tcp"]))]
    report_sweep.label_runs(over)
    assert [r.label for r in over] == ["cohort shm", "cohort tcp"]
    assert report_sweep.channels_text(over[0].data) == "shm x3"
    same = [report_load.Input("x/1.json", "sweep", sweep()),
            report_load.Input("y/2.json", "sweep", sweep())]
    report_sweep.label_runs(same)
    assert [r.label for r in same] == ["cohort (1.json)", "cohort (2.json)"]


def test_killed_rank_is_named():
    analysis = report_failure.analyze(list(trace_fixture.dumps("killed", 4, 40).values()))
    assert analysis["missing"] == [2]
    assert analysis["culprits"] == [2]
    assert analysis["sequence"] == 40
    assert analysis["summary"].startswith("Rank 2 wrote no dump")
    assert "which ranks 0, 1, 3 entered and waited in" in analysis["summary"]
    assert analysis["ranks"][0].stop["sequence"] == 40  # the failed one, not the queued 41


def test_rank_that_disagrees_is_named():
    analysis = report_failure.analyze(list(trace_fixture.dumps("mismatch", 4, 12).values()))
    assert analysis["mismatch"] == 12
    assert analysis["culprits"] == [3]
    assert "rank 3 ran broadcast float32 x 262144 root 0" in analysis["summary"]


def test_hang_names_the_last_to_enter():
    analysis = report_failure.analyze(list(trace_fixture.dumps("hang", 4, 5).values()))
    assert analysis["culprits"] == [1] and analysis["missing"] == []
    assert "the last to enter was rank 1 (node0)" in analysis["summary"]


def test_rank_behind_is_named():
    dumps = trace_fixture.dumps("hang", 4, 6)
    dumps[3]["entries"] = dumps[3]["entries"][:-2]  # rank 3 stopped after sequence 4
    analysis = report_failure.analyze(list(dumps.values()))
    assert analysis["sequence"] == 6 and analysis["culprits"] == [3]
    assert "Rank 3 (node1) never entered sequence 6" in analysis["summary"]
    assert "it stopped after sequence 4" in analysis["summary"]


def test_validate_text_marks_the_slow_host():
    text = report_validate.text(report_load.Input("v.json", "validate", validate_report()))
    lines = text.splitlines()
    assert "verdict SLOW; culprits: node2" in lines[0]
    row = next(line for line in lines if line.startswith("node2!"))
    assert row.count("*") == 2
    row = next(line for line in lines if line.startswith("node0 "))
    assert row.count("*") == 1 and row.split()[3] == "0.01*"  # only node0 -> node2

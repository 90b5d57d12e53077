#!/usr/bin/env bash
# The report page from real sweeps, opened in headless Chromium: bench/compare's cohort and Open
# MPI sweeps (compare.py --report) overlaid - 3 series in each chart, named, one table row per
# size, every cell filled - and a cohort-bench sweep with --report (2 series, its algorithms
# named); the terminal version (--text); bad input (a truncated file, another format version,
# an empty sweep, a file that is no report) is an error naming the file, exit code 2 and no page;
# and the failure page from made-up flight-recorder dumps (tests/cluster/lib/trace_fixture.py:
# tests/python/test_trace.py reads real ones) names the killed rank and marks where each rank stopped.
# (The validate page is checked in bench_netns_validate.sh, on the namespace test bed.)
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/report.sh"
BENCH=$BUILD/bench/cohort-bench
MPI_BENCH=$BUILD/bench/cohort-mpi-allreduce
[[ -x $BENCH ]] || fail "$BENCH is not built"
[[ -x $MPI_BENCH ]] || fail "$MPI_BENCH is not built (Open MPI: scripts/bootstrap installs it)"
SIZES=(-b 8 -e 256K -f 8 -n 5 -w 2)  # 8 B, 64 B, 512 B, 4 KiB, 32 KiB, 256 KiB

echo "== bench/compare --report: cohort and Open MPI on one page"
/usr/bin/python3 "$SOURCE/bench/compare/compare.py" --build "$BUILD" --no-torch --mpi \
  "${SIZES[@]}" --report "$SCRATCH/compare" > "$SCRATCH/compare.log" 2>&1 ||
  { cat "$SCRATCH/compare.log"; fail "compare.py --report failed"; }
contains "$SCRATCH/compare.log" "cohort report: $SCRATCH/compare/report.html"
for file in cohort.json openmpi.json sweep-busbw.svg sweep-busbw.png sweep-time.svg sweep-time.png; do
  [[ -s $SCRATCH/compare/$file ]] || fail "compare.py --report wrote no $file"
done
open_page "$SCRATCH/compare/report.html" "$SCRATCH/compare-page.json" sweep
/usr/bin/python3 - "$SCRATCH/compare-page.json" "$SCRATCH/compare/cohort.json" << 'PY' || fail "the sweep page does not show the two sweeps"
import json, sys
shown = json.load(open(sys.argv[1]))
cohort = json.load(open(sys.argv[2]))
sizes = [row["size"] for row in cohort["results"]]
assert len(sizes) == 6, sizes
expected = ["cohort out-of-place", "cohort in-place", "Open MPI out-of-place", "Open MPI in-place"]
for chart in ("sweep-busbw", "sweep-time"):
    series = [i for i in shown["charts"][chart]["ids"] if "-series-" in i and "-algorithm-" not in i]
    assert len(series) == 4, (chart, series)
    assert shown["charts"][chart]["legend"] == expected, shown["charts"][chart]["legend"]
    # The tuner's algorithm is named on the cohort curve where it changes, with its first size.
    named = [i for i in shown["charts"][chart]["ids"] if "-algorithm-" in i]
    first = cohort["results"][0]
    assert f"{chart}-series-0-algorithm-{first['size']}" in named, named
    assert first["algorithm"] in shown["charts"][chart]["texts"], first["algorithm"]
table = shown["tables"]["sweep-table"]
assert table["rows"] == len(sizes), table["rows"]
assert table["header"][0] == "size" and "Open MPI in-place time (us)" in table["header"], table["header"]
for row in table["cells"]:
    assert len(row) == len(table["header"]) and "-" not in row, row
assert shown["sections"] == [{"id": "sweep", "data": {"series": "4"}}], shown["sections"]
print("sweep page: 4 series in each chart, named;", table["rows"], "rows of",
      len(table["header"]), "cells")
PY

echo "== cohort-bench --report: the page of one sweep"
"$BENCH" allgather --nranks 2 -b 1K -e 64K -f 4 -n 5 -w 2 --report "$SCRATCH/allgather" \
  --tag "$TAG" > "$SCRATCH/allgather.log" 2>&1 || { cat "$SCRATCH/allgather.log"; fail "the sweep with --report failed"; }
contains "$SCRATCH/allgather.log" "cohort report: $SCRATCH/allgather/report.html"
[[ -s $SCRATCH/allgather/allgather.json ]] || fail "--report without -J wrote no allgather.json"
open_page "$SCRATCH/allgather/report.html" "$SCRATCH/allgather-page.json"
/usr/bin/python3 - "$SCRATCH/allgather-page.json" "$SCRATCH/allgather/allgather.json" << 'PY' || fail "the allgather page is wrong"
import json, sys
shown = json.load(open(sys.argv[1]))
report = json.load(open(sys.argv[2]))
assert report["kind"] == "sweep" and report["format_version"] == 1, report
assert report["machine"]["cpu_model"] and report["commit"] and report["date"], report["machine"]
series = [i for i in shown["charts"]["sweep-busbw"]["ids"] if "-series-" in i and "-algorithm-" not in i]
assert len(series) == 2, series
assert shown["tables"]["sweep-table"]["rows"] == len(report["results"]) == 4
PY

echo "== --text: busbw by size"
"$BENCH" report --text "$SCRATCH/compare/cohort.json" "$SCRATCH/compare/openmpi.json" > "$SCRATCH/text.log" ||
  fail "cohort-bench report --text failed"
cat "$SCRATCH/text.log"
contains "$SCRATCH/text.log" "#  c: Open MPI out-of-place"
[[ $(grep -cE '^ +(8 B|64 B|512 B|4 KiB|32 KiB|256 KiB)  a ' "$SCRATCH/text.log") == 6 ]] ||
  fail "the text chart has not one line per size for series a"

echo "== bad input: an error naming the file, exit code 2, no page"
bad() {  # bad NAME EXPECTED-TEXT FILES...: report.py refuses them
  local name=$1 expected=$2 code=0
  shift 2
  "$BENCH" report "$@" -o "$SCRATCH/bad-$name" > "$SCRATCH/bad-$name.log" 2>&1 || code=$?
  [[ $code == 2 ]] || { cat "$SCRATCH/bad-$name.log"; fail "$name: exit code $code, expected 2"; }
  contains "$SCRATCH/bad-$name.log" "$expected"
  contains "$SCRATCH/bad-$name.log" "no page written"
  [[ ! -e $SCRATCH/bad-$name/report.html ]] || fail "$name: a page was written"
}
good=$SCRATCH/compare/cohort.json
head -c 700 "$good" > "$SCRATCH/truncated.json"
bad truncated "$SCRATCH/truncated.json: it ends before the JSON does (truncated" "$good" "$SCRATCH/truncated.json"
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["format_version"] = 99; json.dump(d, open(sys.argv[2], "w"))' \
  "$good" "$SCRATCH/version.json"
bad version "$SCRATCH/version.json: format_version 99 is not one this report knows (1)" "$SCRATCH/version.json"
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["results"] = []; json.dump(d, open(sys.argv[2], "w"))' \
  "$good" "$SCRATCH/empty.json"
bad empty "$SCRATCH/empty.json: the sweep has no results" "$SCRATCH/empty.json"
echo '{"hello": 1}' > "$SCRATCH/other.json"
bad other "$SCRATCH/other.json: kind None: not a cohort-bench sweep or validate report" "$SCRATCH/other.json"
bad missing "$SCRATCH/missing.json: cannot read it" "$SCRATCH/missing.json"

echo "== the failure page (made-up dumps: rank 2 killed in sequence 40)"
/usr/bin/python3 "$SOURCE/tests/cluster/lib/trace_fixture.py" "$SCRATCH/dumps" --scenario killed
"$BENCH" report "$SCRATCH/dumps" -o "$SCRATCH/failure" > "$SCRATCH/failure.log" 2>&1 || { cat "$SCRATCH/failure.log"; fail "the failure page failed"; }
open_page "$SCRATCH/failure/report.html" "$SCRATCH/failure-page.json" failure
/usr/bin/python3 - "$SCRATCH/failure-page.json" << 'PY' || fail "the failure page does not name rank 2"
import json, sys
shown = json.load(open(sys.argv[1]))
assert shown["failure_culprits"] == ["rank 2"], shown["failure_culprits"]
assert "Rank 2 wrote no dump" in shown["failure_summaries"][0], shown["failure_summaries"]
assert "sequence 40" in shown["failure_summaries"][0], shown["failure_summaries"]
ids = shown["charts"]["failure-timeline-0"]["ids"]
assert sorted(i for i in ids if i.startswith("rank-row-")) == [f"rank-row-{r}" for r in range(4)], ids
assert sorted(i for i in ids if i.startswith("stop-rank-")) == ["stop-rank-0", "stop-rank-1", "stop-rank-3"], ids
assert [i for i in ids if i.startswith("missing-rank-")] == ["missing-rank-2"], ids
assert len([i for i in ids if i.startswith("op-0-")]) == 30, "rank 0: the last 30 operations"
assert shown["tables"]["failure-ranks-0"]["rows"] == 4
print("failure page: culprit rank 2, 4 rows, 3 stop marks, rank 2 without a dump")
PY
"$BENCH" report --text "$SCRATCH/dumps" > "$SCRATCH/failure.txt" || fail "--text on dumps failed"
contains "$SCRATCH/failure.txt" "stopped first: rank 2"
no_leftovers
echo PASS

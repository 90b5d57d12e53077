#!/usr/bin/env bash
# cohort-bench validate on 4 namespace hosts (one rank each, started by cohortrun): with equal
# 400 Mbit/s links it passes (exit 0, verdict PASS, nobody named); with host 2's link limited to
# a quarter of that it names node2 - and only node2 - as SLOW in its summary and its JSON
# report, and exits non-zero. Each run must finish within 60 s. The slow run also writes its
# report page (--report): headless Chromium opens it and the test checks what it shows - the
# verdict, node2 as the culprit, 12 cells in the link heat map with exactly the links that are
# not PASS outlined, node2's bars below the threshold - and the terminal version (--text).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
source "$(dirname "$0")/lib/shape_host.sh"
source "$(dirname "$0")/lib/report.sh"
BENCH=$BUILD/bench/cohort-bench
[[ -x $BENCH ]] || fail "$BENCH is not built"
command -v python3 > /dev/null || fail "python3 is needed to read the JSON report"

NODES=4
make_cluster $NODES
for ((i = 0; i < NODES; i++)); do shape_host $i 400mbit; done

port=29600
validate() {  # validate NAME [FLAGS]: a validate job on every host; exit codes in CODES[], seconds in TOOK
  local name=$1 i started
  shift
  port=$((port + 1))
  started=$(now)
  for ((i = 0; i < NODES; i++)); do
    start_node $i "$SCRATCH/$name.node$i.log" --nnodes $NODES --nproc-per-node 1 \
      --rdzv-endpoint "$(address 0):$port" --rdzv-id "$name" --no-python \
      "$BENCH" validate -J "$SCRATCH/$name.json" "$@" --tag "$TAG"
  done
  CODES=()
  for ((i = 0; i < NODES; i++)); do
    wait_node $i
    CODES[$i]=$STATUS
  done
  TOOK=$(elapsed "$started" "$(now)")
  echo "$name: exit codes ${CODES[*]} in $TOOK s"
  grep -F "# " "$SCRATCH/$name.node0.log" || true
  less_than "$TOOK" 60 || fail "$name took $TOOK s (at most 60)"
  [[ -s $SCRATCH/$name.json ]] || { cat "$SCRATCH/$name.node0.log"; fail "$name: no JSON report"; }
}

# The nodes (and links) that are not PASS in a JSON report, comma-separated.
not_passing() {  # not_passing FILE nodes|links
  python3 - "$1" "$2" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
if sys.argv[2] == "nodes":
    names = [n["name"] for n in report["nodes"] if n["verdict"] != "PASS"]
else:
    names = [l["a"] + "-" + l["b"] for l in report["links"] if l["verdict"] != "PASS"]
print(",".join(names))
PY
}

echo "== equal links: PASS"
validate equal
for ((i = 0; i < NODES; i++)); do
  [[ ${CODES[$i]} == 0 ]] || { cat "$SCRATCH/equal.node$i.log"; fail "equal links: node$i exited ${CODES[$i]}"; }
done
contains "$SCRATCH/equal.node0.log" "# Verdict: PASS"
contains "$SCRATCH/equal.node0.log" "# Culprits: none"
[[ $(not_passing "$SCRATCH/equal.json" nodes) == "" ]] || fail "equal links: nodes not passing: $(not_passing "$SCRATCH/equal.json" nodes)"
[[ $(not_passing "$SCRATCH/equal.json" links) == "" ]] || fail "equal links: links not passing: $(not_passing "$SCRATCH/equal.json" links)"

echo "== node2's link at a quarter of the others: node2 (only) is SLOW"
shape_host 2 100mbit
validate slow --report "$SCRATCH/slow-report"
for ((i = 0; i < NODES; i++)); do
  [[ ${CODES[$i]} != 0 ]] || fail "slow link: node$i exited 0"
done
contains "$SCRATCH/slow.node0.log" "# Verdict: SLOW"
grep -qE '# Culprits: node2$' "$SCRATCH/slow.node0.log" || { cat "$SCRATCH/slow.node0.log"; fail "the summary does not name node2 (alone)"; }
contains "$SCRATCH/slow.node0.log" "# Summary: SLOW: node2 SLOW (p2p bandwidth (best link)"
[[ $(not_passing "$SCRATCH/slow.json" nodes) == "node2" ]] || fail "slow link: nodes not passing: $(not_passing "$SCRATCH/slow.json" nodes), expected node2"
python3 - "$SCRATCH/slow.json" <<'PY' || fail "slow link: the JSON report's links are not explained by node2"
import json, sys
report = json.load(open(sys.argv[1]))
for link in report["links"]:
    if link["verdict"] != "PASS":
        assert "node2" in (link["a"], link["b"]) and link["explained_by"] == "node2", link
assert report["culprits"] == ["node2"], report["culprits"]
assert report["exit_code"] != 0
PY

echo "== the slow run's report page, in headless Chromium"
page=$SCRATCH/slow-report/report.html
[[ -s $page ]] || { cat "$SCRATCH/slow.node0.log"; fail "validate --report wrote no page"; }
contains "$SCRATCH/slow.node0.log" "cohort report: $page"
open_page "$page" "$SCRATCH/slow-page.json" validate
/usr/bin/python3 - "$SCRATCH/slow-page.json" "$SCRATCH/slow.json" << 'PY' || fail "the validate page does not show the slow run"
import json, sys
shown = json.load(open(sys.argv[1]))
report = json.load(open(sys.argv[2]))
assert shown["verdict"].startswith("Verdict: SLOW"), shown["verdict"]
assert shown["culprits"] == "node2", shown["culprits"]
links = shown["charts"]["validate-links"]
cells = [i for i in links["ids"] if i.startswith("cell-")]
assert len(cells) == 4 * 3, cells
outlined = {i for i in links["ids"] if i.startswith("culprit-")}
expected = set()
for link in report["links"]:
    if link["verdict"] != "PASS":
        expected |= {f"culprit-{link['a']}-{link['b']}", f"culprit-{link['b']}-{link['a']}"}
assert outlined == expected and outlined, (outlined, expected)
assert all("node2" in i for i in outlined), outlined
hosts = shown["charts"]["validate-hosts"]
red = "rgb(198, 40, 40)"
p2p = {i: f for i, f in hosts["fills"].items() if i.startswith("bar-p2p-")}
assert len(p2p) == 4, p2p
assert [i for i, f in p2p.items() if f == red] == ["bar-p2p-node2"], p2p
assert "threshold-p2p" in hosts["ids"], hosts["ids"]
stragglers = [i for i in shown["charts"]["validate-stragglers"]["ids"] if i.startswith("bar-straggler-")]
assert len(stragglers) == len(report["ranks"]) == 4, stragglers
assert shown["tables"]["hosts"]["rows"] == 4 and shown["tables"]["links"]["rows"] == 6, shown["tables"]
print("validate page: SLOW, culprit node2, 12 cells,", len(outlined), "outlined, 4 host bars")
PY
/usr/bin/python3 "$REPORT_PY" --text "$SCRATCH/slow.json" > "$SCRATCH/slow.txt" || fail "report --text failed"
cat "$SCRATCH/slow.txt"
contains "$SCRATCH/slow.txt" "verdict SLOW; culprits: node2"
grep -qE '^node2! ' "$SCRATCH/slow.txt" || fail "the text matrix does not mark node2's row"
grep -E '^node2! ' "$SCRATCH/slow.txt" | grep -qF '*' || fail "the text matrix marks none of node2's links"
no_leftovers
no_namespace_leftovers

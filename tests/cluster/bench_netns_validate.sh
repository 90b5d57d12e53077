#!/usr/bin/env bash
# cohort-bench validate on 4 namespace hosts (one rank each, started by cohortrun): with equal
# 400 Mbit/s links it passes (exit 0, verdict PASS, nobody named); with host 2's link limited to
# a quarter of that it names node2 - and only node2 - as SLOW in its summary and its JSON
# report, and exits non-zero. Each run must finish within 60 s.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/netns.sh"
source "$(dirname "$0")/lib/shape_host.sh"
BENCH=$BUILD/bench/cohort-bench
[[ -x $BENCH ]] || fail "$BENCH is not built"
command -v python3 > /dev/null || fail "python3 is needed to read the JSON report"

NODES=4
make_cluster $NODES
for ((i = 0; i < NODES; i++)); do shape_host $i 400mbit; done

port=29600
validate() {  # validate NAME: one validate job on every host; exit codes in CODES[], seconds in TOOK
  local name=$1 i started
  port=$((port + 1))
  started=$(now)
  for ((i = 0; i < NODES; i++)); do
    start_node $i "$SCRATCH/$name.node$i.log" --nnodes $NODES --nproc-per-node 1 \
      --rdzv-endpoint "$(address 0):$port" --rdzv-id "$name" --no-python \
      "$BENCH" validate -J "$SCRATCH/$name.json" --tag "$TAG"
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
validate slow
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
no_leftovers
no_namespace_leftovers

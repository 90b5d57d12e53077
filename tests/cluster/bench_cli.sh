#!/usr/bin/env bash
# cohort-bench as users run it, on this host: the table has nccl-tests' 13 columns and footer,
# the -J report parses (python3's json) with per-iteration statistics, and the exit codes are
# nccl-tests' - 0, 7 for a deliberately corrupted result (COHORT_BENCH_CORRUPT) or an average
# bus bandwidth below COHORT_BENCH_MIN_BW, 2 for bad flags and variables. `topo` names each
# rank's NIC (COHORT_SOCKET_IFNAME honoured). Then one sweep and one validate under cohortrun
# (ranks from RANK / WORLD_SIZE / COHORT_STORE_ADDR).
source "$(dirname "$0")/lib/common.sh"
BENCH=$BUILD/bench/cohort-bench
[[ -x $BENCH ]] || fail "$BENCH is not built"
command -v python3 > /dev/null || fail "python3 is needed to read the JSON report"

bench() {  # bench LOG ARGS...: runs cohort-bench; its exit code in STATUS
  local log=$1
  shift
  STATUS=0
  "$BENCH" "$@" --tag "$TAG" > "$log" 2>&1 || STATUS=$?
}

echo "== a clean sweep: 13 columns, footer, JSON, exit 0"
bench "$SCRATCH/ok.log" allreduce --nranks 3 -b 8 -e 64K -f 8 -n 4 -w 1 -J "$SCRATCH/ok.json"
[[ $STATUS == 0 ]] || { cat "$SCRATCH/ok.log"; fail "clean sweep exited $STATUS"; }
contains "$SCRATCH/ok.log" "# Out of bounds values : 0 OK"
contains "$SCRATCH/ok.log" "# Avg bus bandwidth    : "
python3 - "$SCRATCH/ok.log" "$SCRATCH/ok.json" <<'PY' || fail "table or JSON report malformed"
import json, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
assert [int(r[0]) for r in rows] == [8, 64, 512, 4096, 32768], rows
for r in rows:
    assert len(r) == 13, r
    assert r[2:5] == ["float", "sum", "-1"], r
    assert r[8] == "0" and r[12] == "0", r
    float(r[5]), float(r[6]), float(r[7]), float(r[9]), float(r[10]), float(r[11])
report = json.load(open(sys.argv[2]))
assert report["collective"] == "allreduce" and report["nranks"] == 3
assert [row["size"] for row in report["results"]] == [8, 64, 512, 4096, 32768]
for row in report["results"]:
    for column in ("out_of_place", "in_place"):
        it = row[column]["iterations"]
        assert it["samples"] == 4 and it["min_us"] <= it["p50_us"] <= it["p99_us"] <= it["max_us"], it
        assert row[column]["wrong"] == 0
footer = [l for l in open(sys.argv[1]) if l.startswith("# Avg bus bandwidth")][0]
assert abs(float(footer.split(":")[1]) - report["avg_bus_bandwidth_gbps"]) <= 1e-4 * max(1, report["avg_bus_bandwidth_gbps"]), footer
assert report["exit_code"] == 0
PY

echo "== a corrupted result: #wrong counts it, exit 7"
COHORT_BENCH_CORRUPT=1:5 bench "$SCRATCH/corrupt.log" reduce_scatter --nranks 2 -b 4K -e 4K -n 2 -w 1 -J "$SCRATCH/corrupt.json"
[[ $STATUS == 7 ]] || { cat "$SCRATCH/corrupt.log"; fail "corrupted result: exit $STATUS, expected 7"; }
contains "$SCRATCH/corrupt.log" "# Out of bounds values : 10 FAILED"
python3 - "$SCRATCH/corrupt.log" "$SCRATCH/corrupt.json" <<'PY' || fail "corrupted result not counted per column"
import json, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
assert len(rows) == 1 and rows[0][8] == "5" and rows[0][12] == "5", rows
report = json.load(open(sys.argv[2]))
assert report["out_of_bounds"] == 10 and report["exit_code"] == 7
PY

echo "== bandwidth below COHORT_BENCH_MIN_BW: exit 7"
COHORT_BENCH_MIN_BW=100000 bench "$SCRATCH/minbw.log" sendrecv --nranks 2 -b 1K -e 1K -n 2 -w 1
[[ $STATUS == 7 ]] || { cat "$SCRATCH/minbw.log"; fail "min bandwidth: exit $STATUS, expected 7"; }
contains "$SCRATCH/minbw.log" "# Out of bounds values : 0 OK"
contains "$SCRATCH/minbw.log" "FAILED (below COHORT_BENCH_MIN_BW=100000 GB/s)"
COHORT_BENCH_MIN_BW=0.000001 bench "$SCRATCH/minbw_ok.log" sendrecv --nranks 2 -b 1M -e 1M -n 2 -w 1
[[ $STATUS == 0 ]] || { cat "$SCRATCH/minbw_ok.log"; fail "min bandwidth met: exit $STATUS"; }

echo "== bad flags and variables: exit 2 with the reason"
bench "$SCRATCH/bad.log" allreduce --nranks 2 -d uint64
[[ $STATUS == 2 ]] || fail "-d uint64: exit $STATUS"
contains "$SCRATCH/bad.log" "libcohort has no uint64 type"
COHORT_BENCH_MIN_BW=fast bench "$SCRATCH/badenv.log" allreduce --nranks 2
[[ $STATUS == 2 ]] || fail "bad COHORT_BENCH_MIN_BW: exit $STATUS"
contains "$SCRATCH/badenv.log" "COHORT_BENCH_MIN_BW=\"fast\" is not valid"
bench "$SCRATCH/badroot.log" broadcast --nranks 2 -r 5 -b 8 -e 8
[[ $STATUS == 2 ]] || fail "root outside the ranks: exit $STATUS"
contains "$SCRATCH/badroot.log" "-r 5 is not a rank of 2"

echo "== -d all -o all: one table, every type and op libcohort has"
bench "$SCRATCH/all.log" allreduce --nranks 2 -b 64 -e 64 -n 1 -w 0 -d all -o all
[[ $STATUS == 0 ]] || { cat "$SCRATCH/all.log"; fail "-d all -o all exited $STATUS"; }
contains "$SCRATCH/all.log" "# skipped (libcohort has no such type or op): uint32, uint64, fp8_e4m3, fp8_e5m2, mulsum"
rows=$(grep -cv '^#' "$SCRATCH/all.log")
[[ $rows == 40 ]] || { cat "$SCRATCH/all.log"; fail "-d all -o all printed $rows rows, expected 8 types x 5 ops"; }

echo "== topo: this host's NICs and each rank's nearest one"
bench "$SCRATCH/topo.log" topo --nranks 2
[[ $STATUS == 0 ]] || { cat "$SCRATCH/topo.log"; fail "topo exited $STATUS"; }
contains "$SCRATCH/topo.log" "# 2 ranks on 1 host"
contains "$SCRATCH/topo.log" "links the tuner assumes: inside hosts shm (2 us, 4 GB/s)"
COHORT_TRANSPORTS=tcp bench "$SCRATCH/topo_tcp.log" topo --nranks 2
contains "$SCRATCH/topo_tcp.log" "links the tuner assumes: inside hosts tcp (25 us, 1 GB/s)"
# --transports as the variable, and a sweep's header names the channel.
bench "$SCRATCH/sweep_tcp.log" sendrecv --nranks 2 -b 8 -e 8 -n 2 -w 1 --transports tcp
contains "$SCRATCH/sweep_tcp.log" "# links the tuner assumes: inside hosts tcp"
contains "$SCRATCH/topo.log" "  rdma "
python3 - "$SCRATCH/topo.log" <<'PY' || { cat "$SCRATCH/topo.log"; fail "topo's NICs do not hold together"; }
import re, sys
lines = open(sys.argv[1]).read().splitlines()
nics = {l.split()[1]: l.split() for l in lines if l.startswith("  nic  ")}
ranks = [re.match(r"  rank (\d+)  local \d+  numa \S+  cpus \S+  nic (\S+) (\S+)  rdma (\S+)$", l)
         for l in lines if l.startswith("  rank ")]
assert len(ranks) == 2 and all(ranks), lines
for rank in ranks:
    name, ip = rank.group(2), rank.group(3)
    # the chosen NIC has its own line, is up and carries the rank's IP
    assert name in nics and nics[name][2] == "up" and nics[name][3] == ip, (name, nics)
PY
COHORT_SOCKET_IFNAME==lo bench "$SCRATCH/topo_lo.log" topo --nranks 2
[[ $STATUS == 0 ]] || { cat "$SCRATCH/topo_lo.log"; fail "topo with COHORT_SOCKET_IFNAME==lo exited $STATUS"; }
contains "$SCRATCH/topo_lo.log" "  rank 1  local 1"
contains "$SCRATCH/topo_lo.log" "nic lo 127.0.0.1  rdma"
contains "$SCRATCH/topo_lo.log" "  nic  lo         up   127.0.0.1"
COHORT_IB_HCA=mlx5_0:one bench "$SCRATCH/topo_bad.log" topo --nranks 1
[[ $STATUS != 0 ]] || fail "a malformed COHORT_IB_HCA was accepted"
contains "$SCRATCH/topo_bad.log" "COHORT_IB_HCA=\"mlx5_0:one\""

echo "== under cohortrun: a sweep and a single-node validate"
status=0
"$COHORTRUN" --standalone --nproc-per-node 2 --no-python "$BENCH" alltoall -b 1K -e 16K -f 4 -n 2 -w 1 --tag "$TAG" > "$SCRATCH/launched.log" 2>&1 || status=$?
[[ $status == 0 ]] || { cat "$SCRATCH/launched.log"; fail "sweep under cohortrun exited $status"; }
contains "$SCRATCH/launched.log" "Out of bounds values : 0 OK"
status=0
"$COHORTRUN" --standalone --nproc-per-node 2 --no-python "$BENCH" validate --intra-bytes 1M -J "$SCRATCH/validate.json" --tag "$TAG" > "$SCRATCH/validate.log" 2>&1 || status=$?
[[ $status == 0 ]] || { cat "$SCRATCH/validate.log"; fail "validate on one node exited $status"; }
contains "$SCRATCH/validate.log" "# Verdict: PASS"
python3 - "$SCRATCH/validate.json" <<'PY' || fail "validate's JSON report"
import json, sys
report = json.load(open(sys.argv[1]))
assert report["verdict"] == "PASS" and report["exit_code"] == 0
node = report["nodes"][0]
assert node["ranks"] == 2 and node["intra_allreduce_busbw_gbps"] > 0 and node["memcpy_gbps"] > 0, node
assert node["inventory"]["cores"] >= 1 and "nics" in node["inventory"] and "rdma" in node["inventory"]
assert len(report["ranks"]) == 2 and all(r["compute_best_us"] > 0 for r in report["ranks"])
assert report["cluster_allreduce"]["algorithm"] == "ring" and report["cluster_allreduce"]["busbw_gbps"] > 0
PY
no_leftovers

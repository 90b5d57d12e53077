#!/usr/bin/env bash
# The rendezvous scale benchmark, scaled down to what a test run affords: 128 simulated agents
# join on the embedded coordinator and on etcd (one member on loopback), heartbeat for 2 s, and
# each prints its figures. The real run (64 to 1,024 agents beside torch's c10d rendezvous) is
# bench/compare/rdzv_scale.py; its results are in bench/RESULTS.md.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/etcd.sh"
SCALE=$BUILD/bench/cohort-rdzv-scale
[[ -x $SCALE ]] || fail "$SCALE is not built"

check() {  # check JSON-LINE BACKEND: the figures are there and the bounds hold (loose: shared CPUs)
  /usr/bin/python3 - "$1" "$2" <<'PY' || fail "bad figures: $1"
import json, sys
figures = json.loads(sys.argv[1])
assert figures["backend"] == sys.argv[2] and figures["agents"] == 128, figures
assert 0 < figures["rendezvous_s"] < 10, figures
assert figures["heartbeat_s"] >= 2 and 0 <= figures["coordinator_cpu_percent"] < 50, figures
print(f"{sys.argv[2]}: 128 agents held the world in {figures['rendezvous_s']} s; coordinator "
      f"{figures['coordinator_cpu_percent']}% of a core while they heartbeat")
PY
}

out=$("$SCALE" --backend embedded --agents 128 --heartbeat-seconds 2 --timeout 60) || fail "embedded run failed"
check "$out" embedded
start_etcd_loopback
out=$("$SCALE" --backend etcd --endpoints "$ETCD_ENDPOINTS" --etcd-pid "${ETCD_PIDS[0]}" \
        --agents 128 --heartbeat-seconds 2 --timeout 60) || fail "etcd run failed"
check "$out" etcd
stop_etcd
